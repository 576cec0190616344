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
from .registry import FAMILIES, identify, load_model, parse_name, require_package, with_article
from .sam import TINY_SAM_SEED, require_sam_checkpoint, seeded_tiny_sam

log = logging.getLogger("is5net")

_METAVAR = {"--coarse-mask": "FILE|DIR", "--coarse-dir": "DIR"}


@dataclass(frozen=True)
class Stage1:
    """A checked stage-1 choice; nothing is loaded until :meth:`build`.

    ``method``: a model family (``"sam"``, ``"hq-sam"``, ``"sam2"``: ``checkpoint`` a file, or None for the
    seeded random tiny test SAM), ``"grabcut"`` (no weights), or ``"given"`` (the user's coarse masks at
    ``masks``, a file or a folder: no stage runs). ``sam_type``: the family's type (None: read off the
    checkpoint when loaded).
    """

    method: str
    sam_type: Optional[str] = None
    checkpoint: Optional[Path] = None
    masks: Optional[Path] = None

    @property
    def family(self) -> Optional[str]:
        """The model family, or None for GrabCut and given masks."""
        return self.method if self.method in FAMILIES else None

    @property
    def name(self) -> str:
        """The stage-1 name (``hq-sam:vit_tiny``; the family alone while the type is unread)."""
        return f"{self.method}:{self.sam_type}" if self.family and self.sam_type else self.method

    def load_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The frozen model of a family choice (the seeded tiny SAM when no checkpoint was given)."""
        if self.family is None:
            raise IS5NetError(f"stage 1 {self.method!r} has no model to load")
        if self.checkpoint is None:
            return seeded_tiny_sam().to(device)
        return load_model(self.method, self.sam_type, self.checkpoint, device=device)

    load_sam = load_model  # its name from when SAM was the only family

    def build(
        self,
        device: str | torch.device = "cpu",
        mask_choice: str = "first",
        resize: str = "pil",
        backend: Optional[str] = None,
        precision: Optional[str] = None,
        **kw,
    ):
        """The stage the predictor runs (None for ``given``: the caller passes the masks). ``backend`` and
        ``precision``: :meth:`factory`'s. ``kw``: for the family's stage class (e.g. ``hq_token_only``)."""
        return self.factory(device, mask_choice, resize, backend, precision, **kw)()

    def factory(
        self,
        device: str | torch.device = "cpu",
        mask_choice: str = "first",
        resize: str = "pil",
        backend: Optional[str] = None,
        precision: Optional[str] = None,
        **kw,
    ):
        """A function making fresh stages that share one loaded model (a server holds one per cached image).

        ``backend``/``precision``: the predictor's (``--backend``, ``--precision``); a runtime other than torch
        also runs the model's image encoder (docs/speed.md). Only weights from a checkpoint go through it: the
        seeded tiny SAM is a stand-in for tests, kept in torch. ``kw`` goes to the family's stage class, the
        one place a stage option enters (GrabCut has no model and takes none of them).
        """
        if self.method == "grabcut":
            return partial(GrabCutStage, device=device)
        if self.method == "given":
            return lambda: None
        model = self.load_model(device)
        if backend not in (None, "torch") and self.checkpoint is not None:
            from ..encoder_runtime import accelerate_stage1

            model = accelerate_stage1(model, backend, precision)
        return partial(FAMILIES[self.method].stage_class(), model, mask_choice, resize, **kw)

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
    """The stage-1 decision every command makes the same way: a model family, GrabCut, or masks from files.

    ``method``: a stage-1 name, ``FAMILY`` or ``FAMILY:TYPE`` (``--stage1``), or ``grabcut``.
    ``sam_checkpoint``: ``--stage1-checkpoint`` (alias ``--sam-checkpoint``), a path or a name under
    IS5NET_HOME. ``sam_type``: ``--sam-type`` (the type, as ``FAMILY:TYPE`` gives it; the two must agree).
    ``coarse``: what the user gave for ``coarse_option`` (``--coarse-mask``/``--coarse-dir``; None when the
    command has no such option or it was not given). ``offered``: the methods the command offers.
    ``check_type`` reads the checkpoint now, so a family or type that does not fit fails before any work.
    A missing package is one line naming the extra, before anything is read.
    """
    family, named_type = parse_name(method, offered)
    if family == "grabcut":
        if sam_checkpoint is not None or coarse is not None:
            given = "--stage1-checkpoint" + (f" and {coarse_option}" if coarse_option else "")
            raise IS5NetError(f"--stage1 grabcut makes the coarse mask itself: give it without {given}")
        return Stage1("grabcut")
    if coarse is not None:
        if sam_checkpoint is not None:
            raise IS5NetError(
                f"give either --stage1-checkpoint (run stage 1) or {coarse_option} (masks from files), not both"
            )
        if sam_type is not None or named_type is not None:
            log.warning("the stage-1 type is not used with %s", coarse_option)
        return Stage1("given", masks=Path(coarse))
    stage_type = _one_type(family, named_type, sam_type)
    require_package(family, _name(family, stage_type))
    require_sam_checkpoint(sam_checkpoint, stage_type, _ways(coarse_option, offered), _name(family, stage_type))
    if sam_checkpoint is None:
        return Stage1("sam", "tiny")
    path = _resolve(sam_checkpoint)
    if check_type:
        stage_type = _checked_type(family, path, stage_type)
    return Stage1(family, stage_type, path)


def _name(family: str, stage_type: Optional[str]) -> str:
    return f"{family}:{stage_type}" if stage_type else family


def _one_type(family: str, named_type: Optional[str], sam_type: Optional[str]) -> Optional[str]:
    """The type ``--stage1 FAMILY:TYPE`` and ``--sam-type`` give together (one line if they disagree)."""
    if sam_type is None:
        return named_type
    if named_type is not None and named_type != sam_type:
        raise IS5NetError(f"--stage1 {family}:{named_type} and --sam-type {sam_type} disagree: give one of them")
    if sam_type not in FAMILIES[family].types:
        raise IS5NetError(
            f"--sam-type {sam_type!r} is no {FAMILIES[family].title} type: choose one of "
            f"{', '.join(FAMILIES[family].types)} (or --stage1 FAMILY:TYPE)"
        )
    return sam_type


def _ways(coarse_option: Optional[str], offered: Sequence[str]) -> str:
    """The other ways to a coarse mask a command offers, for the message when weights are missing."""
    ways = (
        [f"{coarse_option} {_METAVAR.get(coarse_option, 'PATH')} for coarse masks from files"] if coarse_option else []
    )
    if "grabcut" in offered:
        ways.append("--stage1 grabcut, which needs none")
    return " or ".join(ways)


def _resolve(sam_checkpoint) -> Path:
    from ...weights import resolve_weights

    return resolve_weights(sam_checkpoint)


def _checked_type(family: str, path: Path, stage_type: Optional[str]) -> str:
    _, found = identify(read_state_dict(path)[0], path, family)
    if stage_type is not None and stage_type != found:
        title = with_article(FAMILIES[family].title)
        raise IS5NetError(f"{path}: this is {title} {found} checkpoint, but --stage1 {family}:{stage_type} was given")
    return found


def build_stage1(method: str = "sam", sam_checkpoint=None, sam_type: Optional[str] = None, device="cpu", **kw):
    """:func:`choose_stage1` then :meth:`Stage1.build`: the stage for ``method`` (no coarse masks from files).

    ``kw``: ``mask_choice`` and ``resize`` (and the family's stage options) for :meth:`Stage1.build`.
    """
    return choose_stage1(method, sam_checkpoint, sam_type, coarse_option=None).build(device, **kw)
