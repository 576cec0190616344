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

    def predict(self, boxes: np.ndarray, points=None, point_labels=None) -> tuple[torch.Tensor, None]:
        """Masks for ``boxes`` (``N x 4`` XYXY, original pixels, already validated) of the current image.

        ``points``/``point_labels``: each box's clicks (the layout of :meth:`SamStage.predict`): sure
        foreground (1) and sure background (0) seeds, discs of :func:`click_radius` pixels.
        Returns ``(masks, None)``: ``masks`` ``N x H x W`` bool on :attr:`device`.
        """
        from .prompts import clicks_of

        if self._rgb is None:
            raise IS5NetError("call set_image(image) before predict")
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        for what, value in (("points", points), ("point_labels", point_labels)):
            if value is not None and len(value) != len(boxes):
                raise IS5NetError(f"{what}: one entry per box expected ({len(boxes)}), got {len(value)}")
        if not len(boxes):
            return torch.zeros((0, *self._rgb.shape[:2]), dtype=torch.bool, device=self.device), None
        masks = np.stack([self._one(b, *clicks_of(points, point_labels, i)) for i, b in enumerate(boxes)])
        return torch.from_numpy(masks).to(self.device), None

    def _one(self, box: np.ndarray, coords: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None):
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
        seeds = None
        if coords is not None:  # clicks in the scaled crop's pixels, radius at least one pixel there
            radius = max(1, round(click_radius(box) * scale))
            seeds = [((cx - cx0) * scale, (cy - cy0) * scale, lab, radius) for (cx, cy), lab in zip(coords, labels)]
        fg = self._grabcut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), (rx0, ry0, rx1 - rx0, ry1 - ry0), seeds, box)
        if fg is None:
            out[y0:y1, x0:x1] = True
            return out
        if scale != 1.0:
            fg = cv2.resize(fg, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_LINEAR)
        out[cy0:cy1, cx0:cx1] = fg > 127
        out[:, :x0] = out[:, x1:] = False  # GrabCut's background outside the box, exact at full resolution
        out[:y0] = out[y1:] = False
        return out

    def _grabcut(self, bgr: np.ndarray, rect: tuple, seeds, box) -> Optional[np.ndarray]:
        """GrabCut's foreground (uint8 0/255) in ``bgr``: the box's rectangle, then the clicks' seeds.

        After the rectangle pass, each click relabels GrabCut's map (:func:`apply_click`) and GrabCut runs
        again from that map (``GC_INIT_WITH_MASK``), so its colour models learn from the clicks. None if
        GrabCut cannot model the crop at all.
        """
        import cv2

        label = np.zeros(bgr.shape[:2], np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(self.seed)
        try:
            cv2.grabCut(bgr, label, rect, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error as exc:  # e.g. a flat crop whose colour models cannot be fitted
            log.debug("GrabCut failed on box %s (%s); using the box as the coarse mask", format_box(box), exc)
            return None
        if seeds:
            for x, y, lab, radius in seeds:
                apply_click(bgr, label, int(round(x)), int(round(y)), int(lab), int(radius))
            try:
                cv2.grabCut(bgr, label, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            except cv2.error as exc:  # e.g. no foreground left to model: the relabelled map stands
                log.debug("GrabCut with clicks failed on box %s (%s)", format_box(box), exc)
        return ((label == cv2.GC_FGD) | (label == cv2.GC_PR_FGD)).astype(np.uint8) * 255


def apply_click(bgr: np.ndarray, label: np.ndarray, x: int, y: int, positive: int, radius: int) -> None:
    """Relabel GrabCut's map ``label`` (in place) for a click at (x, y) (docs/stage1.md, "GrabCut seeds").

    The region under the click, the pixels connected to it within ``CLICK_COLOUR_TOLERANCE`` of its colour
    that GrabCut put on the other side, becomes probable foreground (a positive click) or probable
    background (a negative one), and a disc of ``radius`` around it sure foreground or sure background.
    Only the disc would leave the region's colour in the other side's model, and GrabCut would keep the
    rest of the region where it was: a negative click on one part of a mask would remove a dot, not the part.
    """
    import cv2

    h, w = label.shape
    if not (0 <= x < w and 0 <= y < h):
        cv2.circle(label, (x, y), radius, int(cv2.GC_FGD if positive else cv2.GC_BGD), thickness=-1)
        return
    fg = (label == cv2.GC_FGD) | (label == cv2.GC_PR_FGD)
    region = np.zeros((h + 2, w + 2), np.uint8)
    tol = (CLICK_COLOUR_TOLERANCE,) * 3
    flags = 4 | cv2.FLOODFILL_FIXED_RANGE | cv2.FLOODFILL_MASK_ONLY | (255 << 8)
    cv2.floodFill(bgr.copy(), region, (x, y), 0, tol, tol, flags)
    region = region[1:-1, 1:-1] > 0
    if positive:
        label[region & ~fg & (label != cv2.GC_BGD)] = cv2.GC_PR_FGD
    else:
        label[region & fg & (label != cv2.GC_FGD)] = cv2.GC_PR_BGD
    cv2.circle(label, (x, y), radius, int(cv2.GC_FGD if positive else cv2.GC_BGD), thickness=-1)


# A click's seed: a disc of this fraction of the box's longer side, at least CLICK_MIN_RADIUS pixels
# (docs/stage1.md, "GrabCut seeds"): big enough to hold a few colour samples, small beside the object.
CLICK_RADIUS_FRACTION = 0.02
CLICK_MIN_RADIUS = 3
# The colour step (per channel, 0..255) that still joins a pixel to the region under a click.
CLICK_COLOUR_TOLERANCE = 24


def click_radius(box) -> int:
    """The radius in original pixels of a click's seed disc for ``box`` (XYXY)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return max(CLICK_MIN_RADIUS, round(CLICK_RADIUS_FRACTION * max(x1 - x0, y1 - y0)))
