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

from ...defaults import MASK_CHOICES, SAM_TYPES
from ...errors import IS5NetError

log = logging.getLogger("is5net")


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


def build_sam_for(sam_type: str, state_dict: Optional[dict] = None) -> nn.Module:
    """The registry's builder (:mod:`.registry`): :func:`build_sam` (SAM has one version per type)."""
    return build_sam(sam_type)


def infer_sam_type(state_dict: dict[str, torch.Tensor], path: str | os.PathLike = "<state dict>") -> str:
    """Read the SAM type off a checkpoint's shapes; one line if it holds no SAM (HQ-SAM and SAM 2 named)."""
    from .registry import identify

    return identify(state_dict, path, "sam")[1]


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
    if checkpoint is not None:
        from .registry import load_model

        return load_model("sam", sam_type, checkpoint, device)
    sam = build_sam_tiny()
    sam.sam_type, sam.stage1_family = "tiny", "sam"
    sam.eval().requires_grad_(False)
    return sam.to(device)


TINY_SAM_SEED = 0


def seeded_tiny_sam() -> nn.Module:
    """The random tiny test SAM, seeded (without touching the global RNG) so every process builds the same."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SAM_SEED)
        return load_sam("tiny", None, device="cpu")


class SamStage:
    """Stage 1: one image embedding per image, then N boxes (and their clicks) through SAM's decoder.

    ``resize``: ``"pil"`` (default) resizes the image on the CPU exactly as ``SamPredictor.set_image`` does,
    so the masks are the reference pipeline's; ``"torch"`` resizes on the device (``apply_image_torch``:
    antialiased bilinear; several times faster for large photos on a GPU, but other pixels, hence masks that
    can differ from the reference's).

    :attr:`model` is the torch model (``model.image_encoder`` is what :meth:`set_image` runs); :attr:`sam`
    is the same object, under its older name. Prompts are transformed as ``SamPredictor.predict`` does
    (NumPy, float64), so each box's mask is the package predictor's for that box and its clicks.
    """

    predictor_class = ("sam", "segment_anything", "SamPredictor")  # family, module, class

    def __init__(self, sam: nn.Module, mask_choice: str = "first", resize: str = "pil"):
        from .registry import import_package

        if mask_choice not in MASK_CHOICES:
            raise IS5NetError(f"mask choice {mask_choice!r}: choose one of {', '.join(MASK_CHOICES)}")
        if resize not in ("pil", "torch"):
            raise IS5NetError(f"resize {resize!r}: choose pil or torch")
        family, module, name = self.predictor_class
        self.sam = self.model = sam
        self.predictor = getattr(import_package(family, module), name)(sam)
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
    def predict(self, boxes: np.ndarray, points=None, point_labels=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for ``boxes`` (``N x 4`` XYXY, original pixels) of the current image, and their clicks.

        ``points``: None, or a length-N sequence whose item i is None or a ``K_i x 2`` array of (x, y)
        original pixels for box i; ``point_labels``: the same layout, 1 = foreground, 0 = background.
        Returns ``(masks, scores)``: ``masks`` ``N x H x W`` bool on the SAM device (original size),
        ``scores`` ``N`` float32 (SAM's predicted IoU of the kept mask).
        """
        if not self.predictor.is_image_set:
            raise IS5NetError("call set_image(image) before predict")
        return run_groups(self, boxes, points, point_labels, self.predictor.original_size)

    def decode(self, boxes: np.ndarray, coords: Optional[np.ndarray], labels: Optional[np.ndarray]):
        """``(masks G x H x W, scores G)`` of ``G`` boxes with ``K`` clicks each (``coords`` G x K x 2 or None)."""
        masks, iou = self._decoder_call(*self._prompts(boxes, coords, labels), multimask_output=True)
        return keep_mask(masks, iou, self.mask_choice)

    def _prompts(self, boxes, coords, labels):
        t, size, dev = self.predictor.transform, self.predictor.original_size, self.device
        box_t = torch.as_tensor(t.apply_boxes(boxes, size), dtype=torch.float, device=dev)
        if coords is None:
            return None, None, box_t
        coords_t = torch.as_tensor(t.apply_coords(coords, size), dtype=torch.float, device=dev)
        return coords_t, torch.as_tensor(labels, dtype=torch.int, device=dev), box_t

    def _decoder_call(self, coords_t, labels_t, box_t, **kw):
        masks, iou, _ = self.predictor.predict_torch(coords_t, labels_t, box_t, **kw)
        return masks, iou


def keep_mask(masks: torch.Tensor, iou: torch.Tensor, mask_choice: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept mask of each of ``G`` multimask outputs (``G x C x H x W``): ``masks[:, 0]`` (``first``, the
    reference's) or the highest predicted IoU (``best``); with its score."""
    if mask_choice == "best":
        idx = iou.argmax(dim=1)
    else:
        idx = torch.zeros(iou.shape[0], dtype=torch.long, device=iou.device)
    rows = torch.arange(iou.shape[0], device=iou.device)
    return masks[rows, idx], iou[rows, idx].float()


def run_groups(stage, boxes, points, point_labels, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``stage.decode`` once per group of boxes with the same number of clicks; masks in box order."""
    from .prompts import click_groups

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    masks = torch.zeros((n, *size), dtype=torch.bool, device=stage.device)
    scores = torch.zeros(n, dtype=torch.float32, device=stage.device)
    for idx, coords, labels in click_groups(n, points, point_labels):
        m, s = stage.decode(boxes[idx], coords, labels)
        index = torch.as_tensor(idx, device=stage.device)
        masks[index], scores[index] = m.to(torch.bool), s.float()
    return masks, scores


def require_sam_checkpoint(
    sam_checkpoint, sam_type: Optional[str], alternative: Optional[str] = None, name: str = "sam"
) -> None:
    """The one rule for running a stage-1 model: a checkpoint is needed, except for SAM's random ``tiny``.

    ``alternative``: the other ways to a coarse mask the command offers, named in the error so the user
    sees every way out. ``name``: the stage-1 name asked for.
    """
    if sam_checkpoint is None and not (name.partition(":")[0] == "sam" and sam_type == "tiny"):
        other = f", or {alternative}" if alternative else ""
        example = {"hq-sam": "sam_hq_vit_l", "sam2": "sam2.1_hiera_tiny"}.get(name.partition(":")[0], "vit_l")
        raise IS5NetError(
            f"stage 1 ({name}) needs weights: --stage1-checkpoint PATH (alias --sam-checkpoint; or a name "
            f"under IS5NET_HOME, e.g. {example}){other}; only --stage1 sam:tiny (a random test SAM) goes without"
        )
