"""Stage 1 through SAM 2 (Meta's ``sam2`` package): ``build_sam2`` and ``SAM2ImagePredictor``.

Types ``tiny``, ``small``, ``base_plus``, ``large`` are the SAM 2.1 configs
``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``; a SAM 2.0 checkpoint (no ``no_obj_embed_spatial``) gets
the matching ``configs/sam2/`` config, so both releases load strictly. SAM 2 resizes the image to a
1024² square on its own (``resize`` does not apply). The kept mask follows ``mask_choice`` over
``multimask_output=True`` as for SAM (``masks[0]`` by default). docs/stage1.md.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Optional

import numpy as np
import torch
from torch import nn

from ...defaults import MASK_CHOICES
from ...errors import IS5NetError
from .registry import FAMILIES, import_package
from .sam import keep_mask, run_groups

_CONFIG_SUFFIX = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def sam2_config(sam2_type: str, state_dict: Optional[dict] = None) -> str:
    """The package's config name of ``sam2_type``: SAM 2.1's, or SAM 2.0's for a 2.0 checkpoint."""
    if sam2_type not in _CONFIG_SUFFIX:
        raise IS5NetError(f"unknown SAM 2 type {sam2_type!r}; choose one of {', '.join(FAMILIES['sam2'].types)}")
    suffix = _CONFIG_SUFFIX[sam2_type]
    if state_dict is not None and "no_obj_embed_spatial" not in state_dict:
        return f"configs/sam2/sam2_hiera_{suffix}.yaml"
    return f"configs/sam2.1/sam2.1_hiera_{suffix}.yaml"


def build_sam2_model(sam2_type: str, state_dict: Optional[dict] = None) -> nn.Module:
    """An untrained SAM 2 of ``sam2_type`` on the CPU (``build_sam2`` with no checkpoint, its default
    post-processing), for the registry to load weights into."""
    build = import_package("sam2", "sam2.build_sam").build_sam2
    with _quiet():
        return build(sam2_config(sam2_type, state_dict), None, device="cpu")


@contextlib.contextmanager
def _quiet():
    """Without torch's deprecation warning for the package's torch.jit.script: nothing for our user to do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
        yield


class Sam2Stage:
    """Stage 1 through ``SAM2ImagePredictor``: ``set_image`` once, then boxes and clicks, batched by click count.

    :attr:`model` is the ``SAM2Base`` (``model.image_encoder`` is what :meth:`set_image` runs, through
    ``model.forward_image``). Prompts go through the predictor's own ``_prep_prompts`` and ``_predict``
    (what its ``predict`` calls), so each box's mask is the predictor's for that box and its clicks.
    """

    def __init__(self, model: nn.Module, mask_choice: str = "first", resize: str = "pil"):
        if mask_choice not in MASK_CHOICES:
            raise IS5NetError(f"mask choice {mask_choice!r}: choose one of {', '.join(MASK_CHOICES)}")
        predictor = import_package("sam2", "sam2.sam2_image_predictor").SAM2ImagePredictor
        self.model = self.sam = model
        with _quiet():  # its transforms are torch.jit.script-ed
            self.predictor = predictor(model)
        self.mask_choice = mask_choice
        self.resize = resize  # SAM 2 resizes to its square input itself

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def set_image(self, rgb: np.ndarray, rgb_tensor: Optional[torch.Tensor] = None) -> None:
        """Compute the image features of ``rgb`` (HxWx3 uint8 RGB)."""
        self.predictor.set_image(np.ascontiguousarray(rgb))

    @torch.inference_mode()
    def predict(self, boxes: np.ndarray, points=None, point_labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`~.sam.SamStage.predict`: ``(masks N x H x W bool, scores N float32)``."""
        if not self.predictor._is_image_set:
            raise IS5NetError("call set_image(image) before predict")
        return run_groups(self, boxes, points, point_labels, tuple(self.predictor._orig_hw[-1]))

    def decode(self, boxes: np.ndarray, coords: Optional[np.ndarray], labels: Optional[np.ndarray]):
        p = self.predictor
        _, coords_t, labels_t, box_t = p._prep_prompts(coords, labels, boxes, None, normalize_coords=True)
        masks, iou, _ = p._predict(coords_t, labels_t, box_t, None, multimask_output=True)
        return keep_mask(masks, iou, self.mask_choice)
