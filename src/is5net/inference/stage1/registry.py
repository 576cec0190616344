"""The stage-1 model families as data (docs/stage1.md), and the one way a family's model is loaded.

A family (``sam``, ``hq-sam``, ``sam2``) is a row of :data:`FAMILIES`: the package that runs it (never a
vendored copy), the ``is5net`` extra that installs it, its types, the builder of an untrained model of a
type, and the stage class the predictor runs. Which family and type a checkpoint holds is read off its
keys and shapes by :func:`is5net.weights.stage1_kind` (below this layer, so ``is5net weights verify`` uses
the same rule). A name is ``FAMILY`` or ``FAMILY:TYPE`` (:func:`parse_name`); ``grabcut`` needs no row.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ...checkpoint import read_state_dict
from ...defaults import STAGE1_FAMILIES, STAGE1_NAMES
from ...errors import CheckpointError, IS5NetError
from ...weights import stage1_kind

log = logging.getLogger("is5net")


@dataclass(frozen=True)
class Family:
    """One stage-1 family. ``builder`` and ``stage`` are ``module:attribute`` in this package (imported on use).

    ``builder(type, state_dict)`` returns an untrained model of that type (``state_dict``: the weights about
    to be loaded, for families whose builder depends on a version: SAM 2 vs 2.1); ``stage`` is the class
    whose ``__init__(model, mask_choice, resize, **kw)`` gives the object the predictor runs.
    """

    name: str
    title: str
    package: str  # import name
    distribution: str  # pip name
    install: str  # what to pip install
    types: tuple[str, ...]
    builder: str
    stage: str
    files: str  # the official checkpoint file names, for messages

    def build(self, stage_type: str, state_dict: Optional[dict] = None) -> nn.Module:
        return _attr(self.builder)(stage_type, state_dict)

    def stage_class(self):
        return _attr(self.stage)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "sam", "SAM", "segment_anything", "segment-anything", "segment-anything",
            STAGE1_FAMILIES["sam"], "sam:build_sam_for", "sam:SamStage", "sam_vit_*.pth",
        ),
        Family(
            "hq-sam", "HQ-SAM", "segment_anything_hq", "segment-anything-hq", "'is5net[hq-sam]'",
            STAGE1_FAMILIES["hq-sam"], "hq_sam:build_hq_sam", "hq_sam:HQSamStage", "sam_hq_vit_*.pth",
        ),
        Family(
            "sam2", "SAM 2", "sam2", "sam2", "'is5net[sam2]'",
            STAGE1_FAMILIES["sam2"], "sam2:build_sam2_model", "sam2:Sam2Stage", "sam2.1_hiera_*.pt",
        ),
    )
}  # fmt: skip


def _attr(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def parse_name(name: str, offered=None) -> tuple[str, Optional[str]]:
    """``(family or "grabcut", type or None)`` of a stage-1 name; one line listing the names otherwise.

    ``offered``: the methods (families, ``grabcut``) a command offers; default all.
    """
    text = str(name).strip().lower()
    family, _, stage_type = text.partition(":")
    allowed = [n for n in STAGE1_NAMES if offered is None or n.partition(":")[0] in offered]
    if text not in allowed:
        raise IS5NetError(f"--stage1 {name!r}: choose one of {', '.join(allowed)}")
    return family, stage_type or None


def require_package(family: str, name: Optional[str] = None) -> None:
    """One line naming the extra to install when ``family``'s package is missing (checked without importing)."""
    fam = FAMILIES[family]
    try:
        present = importlib.util.find_spec(fam.package) is not None
    except (ImportError, ValueError):  # a package whose import was blocked or broken counts as missing
        present = False
    if not present:
        raise IS5NetError(_missing(fam, name))


def _missing(fam: Family, name: Optional[str]) -> str:
    return f"--stage1 {name or fam.name} needs {fam.distribution}: pip install {fam.install}"


def import_package(family: str, module: Optional[str] = None):
    """Import ``family``'s package (or its ``module``), quietly: a missing one is one line naming the extra.

    segment-anything-hq imports timm's old paths and re-registers timm's TinyViT names, each with a warning
    that says nothing to our user; they are silenced here, around that import only.
    """
    fam = FAMILIES[family]
    require_package(family)  # the package itself, even when a submodule of it was imported before
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="Overwriting tiny_vit", category=UserWarning)
            return importlib.import_module(module or fam.package)
    except ImportError:
        raise IS5NetError(_missing(fam, None)) from None


def identify(state_dict: dict, path: os.PathLike | str, family: str) -> tuple[str, str]:
    """``(family, type)`` of ``state_dict``; one line if it is no stage-1 model or another family's."""
    fam = FAMILIES[family]
    kind = stage1_kind(state_dict, path)
    if kind is None:
        raise CheckpointError(
            f"{path}: expected {with_article(fam.title)} checkpoint ({fam.files}), but it holds no {fam.title} weights"
        )
    if kind[0] != family:
        other = FAMILIES[kind[0]]
        raise CheckpointError(
            f"{path}: this is {with_article(other.title)} {kind[1]} checkpoint, not {fam.title}: "
            f"give --stage1 {kind[0]} (or {kind[0]}:{kind[1]})"
        )
    return kind


def with_article(title: str) -> str:
    """``title`` with its article, as said aloud: "a SAM", "an HQ-SAM"."""
    return f"{'an' if title.startswith('HQ') else 'a'} {title}"


def load_model(
    family: str,
    stage_type: Optional[str],
    checkpoint: os.PathLike | str,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A frozen model of ``family`` in eval mode from a local checkpoint (never downloaded).

    Weights are read by :func:`~is5net.checkpoint.read_state_dict` (``weights_only=True``, on the CPU;
    SAM 2's ``{"model": state_dict}`` unwrapped), the model is built with no checkpoint and loaded
    strictly. ``stage_type`` None: read off the checkpoint; given, it must be what the checkpoint holds.
    The model gets ``sam_type`` (its type) and ``stage1_family``.
    """
    fam = FAMILIES[family]
    require_package(family)
    sd, _ = read_state_dict(checkpoint)
    _, found = identify(sd, checkpoint, family)
    if stage_type is not None and stage_type != found:
        raise CheckpointError(
            f"{checkpoint}: this is {with_article(fam.title)} {found} checkpoint, but --stage1 {family}:{stage_type} "
            f"(or --sam-type {stage_type}) was given"
        )
    model = fam.build(found, sd)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{checkpoint}: weights do not fit {fam.title} {found}: {first}") from None
    model.sam_type, model.stage1_family = found, family
    model.eval().requires_grad_(False)
    return model.to(device)


def stage_for(model: nn.Module, mask_choice: str = "first", resize: str = "pil", **kw):
    """The stage of an already loaded model of any family: its ``stage1_family`` (set by :func:`load_model`),
    SAM's when unset (a SAM built by ``segment_anything`` itself)."""
    family = getattr(model, "stage1_family", "sam")
    return FAMILIES[family].stage_class()(model, mask_choice, resize, **kw)
