"""Stage 1 through HQ-SAM (``segment-anything-hq``, the authors' package): its builders, its predictor.

HQ-SAM is SAM with a high-quality output token (HQ token) in the mask decoder, fed by early and final ViT
features. Its predictor's ``predict(..., multimask_output, hq_token_only)`` always returns ONE mask per
box: with ``hq_token_only=True`` the HQ token's mask alone; with False the HQ mask's logits added to SAM's
(its best-scoring multimask output when ``multimask_output=True``, its single output otherwise). The
authors suggest ``hq_token_only=True`` for images with a single object, and their DIS evaluation scores
the HQ token's mask: that is the mask kept here (``multimask_output=False, hq_token_only=True``), so
``mask_choice`` does not change it. The score is the predicted IoU of SAM's single-output token (the HQ
token has no IoU head). docs/stage1.md.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ...errors import IS5NetError
from .registry import FAMILIES, import_package
from .sam import SamStage


def build_hq_sam(hq_type: str, state_dict: Optional[dict] = None) -> nn.Module:
    """An untrained HQ-SAM of ``hq_type`` (``vit_tiny``, ``vit_b``, ``vit_l``, ``vit_h``), from the package's registry."""
    if hq_type not in FAMILIES["hq-sam"].types:
        raise IS5NetError(f"unknown HQ-SAM type {hq_type!r}; choose one of {', '.join(FAMILIES['hq-sam'].types)}")
    registry = import_package("hq-sam").sam_model_registry
    return registry[hq_type](checkpoint=None)


class HQSamStage(SamStage):
    """:class:`~.sam.SamStage` over HQ-SAM: the same embedding and prompts, the HQ token's mask kept.

    ``hq_token_only=False`` keeps the HQ-corrected SAM mask instead (the authors' setting for scenes of
    many objects). The decoder's HQ features (its ``embedding_encoder`` of the image embedding plus its
    ``compress_vit_feat`` of the early ViT features) depend on the image alone: the package's decoder makes
    them again for every call, this stage once per image (a third of a decoder call on a CPU), then runs
    the decoder's own ``predict_masks`` and keeps what its ``forward`` keeps, so the masks are the
    predictor's (the tests compare them).
    """

    predictor_class = ("hq-sam", "segment_anything_hq", "SamPredictor")

    def __init__(self, sam: nn.Module, mask_choice: str = "first", resize: str = "pil", hq_token_only: bool = True):
        super().__init__(sam, mask_choice, resize)
        self.hq_token_only = bool(hq_token_only)
        self._hq_features: Optional[torch.Tensor] = None

    def set_image(self, rgb: np.ndarray, rgb_tensor: Optional[torch.Tensor] = None) -> None:
        self._hq_features = None
        super().set_image(rgb, rgb_tensor)

    def decode(self, boxes: np.ndarray, coords: Optional[np.ndarray], labels: Optional[np.ndarray]):
        coords_t, labels_t, box_t = self._prompts(boxes, coords, labels)
        model, p = self.model, self.predictor
        decoder = model.mask_decoder
        if self._hq_features is None:
            early = p.interm_features[0].permute(0, 3, 1, 2)  # the first global-attention block's output
            self._hq_features = decoder.embedding_encoder(p.features) + decoder.compress_vit_feat(early)
        points = None if coords_t is None else (coords_t, labels_t)
        sparse, dense = model.prompt_encoder(points=points, boxes=box_t, masks=None)
        logits, iou = decoder.predict_masks(
            image_embeddings=p.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            hq_features=self._hq_features,
        )
        # multimask_output=False: SAM's single-output token (index 0) and its IoU; the HQ token is the last.
        hq = logits[:, -1]
        kept = hq if self.hq_token_only else logits[:, 0] + hq
        masks = model.postprocess_masks(kept[:, None], p.input_size, p.original_size)[:, 0]
        return masks > model.mask_threshold, iou[:, 0].float()
