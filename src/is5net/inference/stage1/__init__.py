"""Stage 1: a coarse mask from a box. SAM, GrabCut, or the user's own masks, chosen in one place.

:func:`choose_stage1` is the one rule every command applies to what the user asked for (``--stage1``,
``--sam-checkpoint``, ``--sam-type``, ``--coarse-mask``/``--coarse-dir``); it loads nothing, so a mistake is
one line before any work. :meth:`Stage1.build` then gives the object the predictor runs: ``set_image`` once,
``predict(boxes) -> (masks, scores or None)``. :func:`build_stage1` does both.

Modules: :mod:`.sam` (segment-anything), :mod:`.grabcut` (OpenCV), :mod:`.choice` (the one decision).
"""

from ...contract import box_pixel_bounds, tight_box  # noqa: F401  (boxes as channels: the contract's rule)
from ...defaults import MASK_CHOICES, SAM_TYPES, STAGE1_METHODS
from .choice import Stage1, build_stage1, choose_stage1
from .grabcut import GRABCUT_SEED, GrabCutStage
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

__all__ = [
    "MASK_CHOICES",
    "SAM_TYPES",
    "STAGE1_METHODS",
    "GRABCUT_SEED",
    "TINY_SAM_SEED",
    "GrabCutStage",
    "SamStage",
    "Stage1",
    "build_sam",
    "build_sam_tiny",
    "build_stage1",
    "choose_stage1",
    "infer_sam_type",
    "load_sam",
    "require_sam_checkpoint",
    "seeded_tiny_sam",
]
