"""The one stage-1 choice every command makes: :class:`Stage1`, :func:`choose_stage1`, :func:`build_stage1`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ...checkpoint import read_state_dict
from ...defaults import STAGE1_METHODS
from ...errors import IS5NetError
from .grabcut import GrabCutStage
from .sam import TINY_SAM_SEED, SamStage, infer_sam_type, load_sam, require_sam_checkpoint, seeded_tiny_sam

log = logging.getLogger("is5net")

_METAVAR = {"--coarse-mask": "FILE|DIR", "--coarse-dir": "DIR"}


@dataclass(frozen=True)
class Stage1:
    """A checked stage-1 choice; nothing is loaded until :meth:`build`.

    ``method``: ``"sam"`` (``checkpoint`` a file, or None for the seeded random tiny test SAM), ``"grabcut"``
    (no weights), or ``"given"`` (the user's coarse masks at ``masks``, a file or a folder: no stage runs).
    """

    method: str
    sam_type: Optional[str] = None
    checkpoint: Optional[Path] = None
    masks: Optional[Path] = None

    def load_sam(self, device: str | torch.device = "cpu") -> nn.Module:
        """The frozen SAM of a ``sam`` choice (the seeded tiny one when no checkpoint was given)."""
        if self.checkpoint is None:
            return seeded_tiny_sam().to(device)
        return load_sam(self.sam_type, self.checkpoint, device=device)

    def build(self, device: str | torch.device = "cpu", mask_choice: str = "first", resize: str = "pil"):
        """The stage the predictor runs (None for ``given``: the caller passes the masks)."""
        return self.factory(device, mask_choice, resize)()

    def factory(self, device: str | torch.device = "cpu", mask_choice: str = "first", resize: str = "pil"):
        """A function making fresh stages that share one loaded model (a server holds one per cached image)."""
        if self.method == "grabcut":
            return partial(GrabCutStage, device=device)
        if self.method == "given":
            return lambda: None
        return partial(SamStage, self.load_sam(device), mask_choice, resize)

    def describe(self) -> str:
        if self.method == "grabcut":
            return "GrabCut (OpenCV, from the box; no weights)"
        if self.method == "given":
            return f"coarse masks from {self.masks}"
        return str(self.checkpoint) if self.checkpoint else f"random tiny SAM (seed {TINY_SAM_SEED})"


def choose_stage1(
    method: str = "sam",
    sam_checkpoint=None,
    sam_type: Optional[str] = None,
    coarse=None,
    coarse_option: Optional[str] = "--coarse-mask",
    check_type: bool = False,
    offered: Sequence[str] = STAGE1_METHODS,
) -> Stage1:
    """The stage-1 decision every command makes the same way: SAM, GrabCut, or coarse masks from files.

    ``coarse``: what the user gave for ``coarse_option`` (``--coarse-mask``/``--coarse-dir``; None when the
    command has no such option or it was not given). ``offered``: the methods the command offers.
    ``check_type`` reads the checkpoint's SAM type now, so a
    ``--sam-type`` that does not fit fails before any work.
    """
    if method not in offered:
        raise IS5NetError(f"--stage1 {method!r}: choose one of {', '.join(offered)}")
    if method == "grabcut":
        if sam_checkpoint is not None or coarse is not None:
            given = "--sam-checkpoint" + (f" and {coarse_option}" if coarse_option else "")
            raise IS5NetError(f"--stage1 grabcut makes the coarse mask itself: give it without {given}")
        return Stage1("grabcut")
    if coarse is not None:
        if sam_checkpoint is not None:
            raise IS5NetError(f"give either --sam-checkpoint (run SAM) or {coarse_option} (masks from files), not both")
        if sam_type is not None:
            log.warning("--sam-type is not used with %s", coarse_option)
        return Stage1("given", masks=Path(coarse))
    ways = (
        [f"{coarse_option} {_METAVAR.get(coarse_option, 'PATH')} for coarse masks from files"] if coarse_option else []
    )
    if "grabcut" in offered:
        ways.append("--stage1 grabcut, which needs none")
    require_sam_checkpoint(sam_checkpoint, sam_type, " or ".join(ways))
    if sam_checkpoint is None:
        return Stage1("sam", "tiny")
    return Stage1("sam", _checked_sam_type(sam_checkpoint, sam_type, check_type), _resolve(sam_checkpoint))


def _resolve(sam_checkpoint) -> Path:
    from ..weights import resolve_weights

    return resolve_weights(sam_checkpoint)


def _checked_sam_type(sam_checkpoint, sam_type: Optional[str], check_type: bool) -> Optional[str]:
    if not check_type:
        return sam_type
    path = _resolve(sam_checkpoint)
    found = infer_sam_type(read_state_dict(path)[0], path)
    if sam_type is not None and sam_type != found:
        raise IS5NetError(f"{path}: this is a {found} SAM checkpoint, but --sam-type {sam_type} was given")
    return found


def build_stage1(method: str = "sam", sam_checkpoint=None, sam_type: Optional[str] = None, device="cpu", **kw):
    """:func:`choose_stage1` then :meth:`Stage1.build`: the stage for ``method`` (no coarse masks from files).

    ``kw``: ``mask_choice`` and ``resize`` for SAM.
    """
    return choose_stage1(method, sam_checkpoint, sam_type, coarse_option=None).build(device, **kw)
