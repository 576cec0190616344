"""Stage 1: a coarse mask from a box. SAM, GrabCut, or the user's own masks, chosen in one place.

:func:`choose_stage1` is the one rule every command applies to what the user asked for (``--stage1``,
``--sam-checkpoint``, ``--sam-type``, ``--coarse-mask``/``--coarse-dir``); it loads nothing, so a mistake is
one line before any work. :meth:`Stage1.build` then gives the object the predictor runs: ``set_image`` once,
``predict(boxes) -> (masks, scores or None)``. :func:`build_stage1` does both.

SAM comes from Meta's ``segment-anything`` package (never a vendored copy): built with
``checkpoint=None`` and loaded with ``torch.load(map_location="cpu", weights_only=True)``, frozen, in eval
mode. The mask kept is ``masks[0]`` of ``multimask_output=True`` by default (the released refiner was
trained on masks made that way); ``mask_choice="best"`` keeps the highest predicted IoU instead.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import read_state_dict
from ..contract import box_pixel_bounds, tight_box  # noqa: F401  (boxes as channels: the contract's rule)
from ..defaults import MASK_CHOICES, SAM_TYPES, STAGE1_METHODS
from ..errors import CheckpointError, IS5NetError
from .boxes import format_box

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


# ------------------------------------------------------------------------------------- GrabCut stage
GRABCUT_SEED = 0


class GrabCutStage:
    """Stage 1 without weights: OpenCV's GrabCut, initialised with the box (a classical box-prompted segmenter).

    Same shape as :class:`SamStage` (``set_image`` once, ``predict(boxes) -> (masks, scores)``), so the
    predictor runs it in SAM's place and ``is5net serve``/``predict --stage1 grabcut`` need no downloaded
    weights. GrabCut has no confidence: ``scores`` is None.

    GrabCut works on the box grown by ``margin`` (its pixels outside the box are the background samples) and,
    when that crop's longer side is over ``max_side``, on a copy scaled down to it: its cost grows with the
    pixels times ``iterations``, and a coarse mask needs no more (the refiner sees 1024² at most). OpenCV's
    GrabCut seeds its k-means from a per-thread random generator; it is reseeded with ``seed`` before each
    box, so the same image and box give the same mask in any process or thread.
    """

    def __init__(
        self,
        iterations: int = 5,
        max_side: int = 320,
        margin: float = 0.1,
        device: str | torch.device = "cpu",
        seed: int = GRABCUT_SEED,
    ):
        if iterations < 1 or max_side < 16 or margin < 0:
            raise IS5NetError("GrabCut needs iterations >= 1, max_side >= 16 and margin >= 0")
        self.iterations, self.max_side, self.margin, self.seed = int(iterations), int(max_side), float(margin), seed
        self.device = torch.device(device)
        self._rgb: Optional[np.ndarray] = None

    def set_image(self, rgb: np.ndarray, rgb_tensor: Optional[torch.Tensor] = None) -> None:
        """Keep ``rgb`` (HxWx3 uint8, as displayed): GrabCut has no per-image embedding to compute."""
        self._rgb = np.ascontiguousarray(rgb)

    def predict(self, boxes: np.ndarray) -> tuple[torch.Tensor, None]:
        """Masks for ``boxes`` (``N x 4`` XYXY, original pixels, already validated) of the current image.

        Returns ``(masks, None)``: ``masks`` ``N x H x W`` bool on :attr:`device`.
        """
        if self._rgb is None:
            raise IS5NetError("call set_image(image) before predict")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        masks = np.stack([self._one(b) for b in boxes]) if len(boxes) else np.zeros((0, *self._rgb.shape[:2]), bool)
        return torch.from_numpy(masks).to(self.device), None

    def _one(self, box: np.ndarray) -> np.ndarray:
        import cv2

        h, w = self._rgb.shape[:2]
        x0, y0, x1, y1 = box_pixel_bounds(box)
        mx, my = max(8, round(self.margin * (x1 - x0))), max(8, round(self.margin * (y1 - y0)))
        cx0, cy0, cx1, cy1 = max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, w), min(y1 + my, h)
        out = np.zeros((h, w), bool)
        crop = self._rgb[cy0:cy1, cx0:cx1]
        scale = min(1.0, self.max_side / max(crop.shape[:2]))
        small = (
            crop
            if scale == 1.0
            else cv2.resize(
                crop,
                (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                interpolation=cv2.INTER_AREA,
            )
        )
        sh, sw = small.shape[:2]
        # The box in the (scaled) crop, kept one pixel inside it so that GrabCut always has background
        # samples (a box over the whole image has none outside it, and GrabCut's k-means fails on none).
        rx0 = min(max(int((x0 - cx0) * scale), 1), sw - 2)
        ry0 = min(max(int((y0 - cy0) * scale), 1), sh - 2)
        rx1 = max(min(int(math.ceil((x1 - cx0) * scale)), sw - 1), rx0 + 1)
        ry1 = max(min(int(math.ceil((y1 - cy0) * scale)), sh - 1), ry0 + 1)
        if sw < 3 or sh < 3:
            out[y0:y1, x0:x1] = True  # too small to model: the box is the best coarse mask there is
            return out
        label = np.zeros((sh, sw), np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)
        try:
            cv2.grabCut(
                cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                label,
                (rx0, ry0, rx1 - rx0, ry1 - ry0),
                bgd,
                fgd,
                self.iterations,
                cv2.GC_INIT_WITH_RECT,
            )
        except cv2.error as exc:  # e.g. a flat crop whose colour models cannot be fitted
            log.debug("GrabCut failed on box %s (%s); using the box as the coarse mask", format_box(box), exc)
            out[y0:y1, x0:x1] = True
            return out
        fg = ((label == cv2.GC_FGD) | (label == cv2.GC_PR_FGD)).astype(np.uint8) * 255
        if scale != 1.0:
            fg = cv2.resize(fg, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
        out[cy0:cy1, cx0:cx1] = fg > 127
        out[:, :x0] = out[:, x1:] = False  # GrabCut's background outside the box, exact at full resolution
        out[:y0] = out[y1:] = False
        return out


# ------------------------------------------------------------------------------------ the one choice
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
