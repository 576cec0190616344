"""Stage 1 through Meta's ``segment-anything`` (never a vendored copy): build, load, the tiny test SAM, the stage.

SAM is built with ``checkpoint=None`` and loaded with ``torch.load(map_location="cpu", weights_only=True)``,
frozen, in eval mode. The mask kept is ``masks[0]`` of ``multimask_output=True`` by default (the released
refiner was trained on masks made that way); ``mask_choice="best"`` keeps the highest predicted IoU instead.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import read_state_dict
from ...defaults import MASK_CHOICES, SAM_TYPES
from ...errors import CheckpointError, IS5NetError

log = logging.getLogger("is5net")

# image-encoder embedding width -> registry name; the tiny test architecture is width 32.
_SAM_TYPE_BY_EMBED_DIM = {768: "vit_b", 1024: "vit_l", 1280: "vit_h", 32: "tiny"}


# ----------------------------------------------------------------------------------------------- SAM
def build_sam_tiny() -> nn.Module:
    """A tiny random SAM with the real architecture (for tests): ViT of width 32, depth 2, 1024 input."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim, image_size, patch = 32, 1024, 16
    grid = image_size // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=dim,
            img_size=image_size,
            mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(),
            window_size=14,
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def build_sam(sam_type: str) -> nn.Module:
    """An untrained SAM of a registry type (``vit_b``, ``vit_l``, ``vit_h``, ``tiny``)."""
    if sam_type == "tiny":
        return build_sam_tiny()
    from segment_anything import sam_model_registry

    if sam_type not in sam_model_registry or sam_type == "default":
        raise IS5NetError(f"unknown SAM type {sam_type!r}; choose one of {', '.join(SAM_TYPES)}")
    return sam_model_registry[sam_type](checkpoint=None)


def infer_sam_type(state_dict: dict[str, torch.Tensor], path: str | os.PathLike = "<state dict>") -> str:
    """Read the SAM type off a checkpoint's shapes (the image encoder's embedding width)."""
    w = state_dict.get("image_encoder.patch_embed.proj.weight")
    if w is None or "mask_decoder.iou_token.weight" not in state_dict:
        raise CheckpointError(f"{path}: expected a SAM checkpoint (sam_vit_*.pth), but it holds no SAM weights")
    sam_type = _SAM_TYPE_BY_EMBED_DIM.get(int(w.shape[0]))
    if sam_type is None:
        raise CheckpointError(
            f"{path}: a SAM image encoder of width {w.shape[0]} matches none of {', '.join(SAM_TYPES)}"
        )
    return sam_type


def load_sam(
    sam_type: Optional[str] = None,
    checkpoint: Optional[str | os.PathLike] = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A frozen SAM in eval mode, from a local checkpoint (never downloaded).

    ``sam_type``: ``vit_b``/``vit_l``/``vit_h``/``tiny``, or None to read it off the checkpoint's shapes.
    ``checkpoint``: ``sam_vit_*.pth`` (or a safetensors copy); None is allowed only for ``tiny`` (random).
    """
    require_sam_checkpoint(checkpoint, sam_type)
    if checkpoint is None:
        sam = build_sam_tiny()
    else:
        sd, _ = read_state_dict(checkpoint)
        found = infer_sam_type(sd, checkpoint)
        if sam_type is not None and sam_type != found:
            raise CheckpointError(
                f"{checkpoint}: this is a {found} SAM checkpoint, but --sam-type {sam_type} was given"
            )
        sam = build_sam(found)
        try:
            sam.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{checkpoint}: weights do not fit SAM {found}: {str(exc).splitlines()[0]}") from None
        sam.sam_type = found
    if not hasattr(sam, "sam_type"):
        sam.sam_type = sam_type
    sam.eval().requires_grad_(False)
    return sam.to(device)


TINY_SAM_SEED = 0


def seeded_tiny_sam() -> nn.Module:
    """The random tiny test SAM, seeded (without touching the global RNG) so every process builds the same."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SAM_SEED)
        return load_sam("tiny", None, device="cpu")


class SamStage:
    """Stage 1: one image embedding per image, then N boxes through SAM's decoder in one batched call.

    ``resize``: ``"pil"`` (default) resizes the image on the CPU exactly as ``SamPredictor.set_image`` does,
    so the masks are the reference pipeline's; ``"torch"`` resizes on the device (``apply_image_torch``:
    antialiased bilinear; several times faster for large photos on a GPU, but other pixels, hence masks that
    can differ from the reference's).
    """

    def __init__(self, sam: nn.Module, mask_choice: str = "first", resize: str = "pil"):
        from segment_anything import SamPredictor

        if mask_choice not in MASK_CHOICES:
            raise IS5NetError(f"mask choice {mask_choice!r}: choose one of {', '.join(MASK_CHOICES)}")
        if resize not in ("pil", "torch"):
            raise IS5NetError(f"resize {resize!r}: choose pil or torch")
        self.sam = sam
        self.predictor = SamPredictor(sam)
        self.mask_choice = mask_choice
        self.resize = resize

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @torch.inference_mode()
    def set_image(self, rgb: np.ndarray, rgb_tensor: Optional[torch.Tensor] = None) -> None:
        """Compute the image embedding of ``rgb`` (HxWx3 uint8). ``rgb_tensor``: the same image, 3xHxW on device."""
        if self.resize == "pil":
            self.predictor.set_image(rgb, image_format="RGB")
            return
        if rgb_tensor is None:
            rgb_tensor = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)
        # Not ResizeLongestSide.apply_image_torch: segment-anything 1.0 takes its target size from the batch
        # and channel dimensions there, so every image came out 341 x 1024 whatever its shape.
        t = self.predictor.transform
        size = t.get_preprocess_shape(rgb.shape[0], rgb.shape[1], t.target_length)
        transformed = F.interpolate(
            rgb_tensor[None].float(), size, mode="bilinear", align_corners=False, antialias=True
        )
        self.predictor.set_torch_image(transformed, rgb.shape[:2])

    @torch.inference_mode()
    def predict(self, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for ``boxes`` (``N x 4`` XYXY, original pixels) of the current image.

        Returns ``(masks, scores)``: ``masks`` ``N x H x W`` bool on the SAM device (original size),
        ``scores`` ``N`` float32 (SAM's predicted IoU of the kept mask).
        """
        boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=self.device).reshape(-1, 4)
        transformed = self.predictor.transform.apply_boxes_torch(boxes_t, self.predictor.original_size)
        masks, iou, _ = self.predictor.predict_torch(
            point_coords=None, point_labels=None, boxes=transformed, multimask_output=True
        )
        if self.mask_choice == "best":
            idx = iou.argmax(dim=1)
        else:
            idx = torch.zeros(iou.shape[0], dtype=torch.long, device=iou.device)
        rows = torch.arange(iou.shape[0], device=iou.device)
        return masks[rows, idx], iou[rows, idx].float()


def require_sam_checkpoint(sam_checkpoint, sam_type: Optional[str], alternative: Optional[str] = None) -> None:
    """The one rule for running SAM: a checkpoint is needed, except for the random ``tiny`` test SAM.

    ``alternative``: the other ways to a coarse mask the command offers, named in the error so the user
    sees every way out.
    """
    if sam_checkpoint is None and sam_type != "tiny":
        other = f", or {alternative}" if alternative else ""
        raise IS5NetError(
            f"stage 1 needs SAM weights: --sam-checkpoint PATH (or a name under IS5NET_HOME, "
            f"e.g. vit_l){other}; only --sam-type tiny (a random test SAM) goes without"
        )
