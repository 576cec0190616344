"""Stage 1 without weights: OpenCV's GrabCut, initialised with the box."""

from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np
import torch

from ...contract import box_pixel_bounds
from ...errors import IS5NetError
from ..boxes import format_box

log = logging.getLogger("is5net")

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
