"""Stage 1: a coarse mask from a box (and clicks). SAM, HQ-SAM, SAM 2, GrabCut, or the user's own masks.

:func:`choose_stage1` is the one rule every command applies to what the user asked for (``--stage1 NAME``,
``--stage1-checkpoint``/``--sam-checkpoint``, ``--sam-type``, ``--coarse-mask``/``--coarse-dir``); it loads
nothing, so a mistake is one line before any work. :meth:`Stage1.build` then gives the object the
predictor runs: ``set_image`` once, ``predict(boxes, points=None, point_labels=None) -> (masks, scores or
None)``. :func:`build_stage1` does both. The names, checkpoints and the mask each family keeps:
docs/stage1.md.

Modules: :mod:`.registry` (the families as data, loading), :mod:`.sam` (segment-anything),
:mod:`.hq_sam` (segment-anything-hq), :mod:`.sam2` (sam2), :mod:`.grabcut` (OpenCV), :mod:`.prompts`
(clicks), :mod:`.choice` (the one decision). The HQ-SAM and SAM 2 packages are imported on use only.
"""

from ...contract import box_pixel_bounds, tight_box  # noqa: F401  (boxes as channels: the contract's rule)
from ...defaults import MASK_CHOICES, SAM_TYPES, STAGE1_METHODS, STAGE1_NAMES
from .choice import Stage1, build_stage1, choose_stage1
from .grabcut import CLICK_RADIUS_FRACTION, GRABCUT_SEED, GrabCutStage
from .hq_sam import HQSamStage, build_hq_sam
from .registry import FAMILIES, Family, load_model, parse_name, stage_for
from .sam import (
    TINY_SAM_SEED,
    SamStage,
    build_sam,
    build_sam_tiny,
    infer_sam_type,
    load_sam,
    require_sam_checkpoint,
    seeded_tiny_sam,
)
from .sam2 import Sam2Stage, build_sam2_model

__all__ = [
    "MASK_CHOICES",
    "SAM_TYPES",
    "STAGE1_METHODS",
    "STAGE1_NAMES",
    "CLICK_RADIUS_FRACTION",
    "FAMILIES",
    "GRABCUT_SEED",
    "TINY_SAM_SEED",
    "Family",
    "GrabCutStage",
    "HQSamStage",
    "SamStage",
    "Sam2Stage",
    "Stage1",
    "build_hq_sam",
    "build_sam",
    "build_sam2_model",
    "build_sam_tiny",
    "build_stage1",
    "choose_stage1",
    "infer_sam_type",
    "load_model",
    "load_sam",
    "parse_name",
    "require_sam_checkpoint",
    "seeded_tiny_sam",
    "stage_for",
]
