"""Thin-structure recall: how much of the GT's finest detail (wires, spokes, bars <= 3 px wide) a mask keeps.

The six DIS metrics (:mod:`~is5net.eval.metrics`) barely move when a 1-3 px wire is lost: it is a small share
of any mask's pixels. This one counts only those pixels. Masks are binarised at 0.5 (``>= 128`` of the raw
8-bit maps, as mIoU), and :func:`thin_parts` says which GT pixels are thin. Recall alone rewards a map that
over-covers, so the counts also give the predicted pixels outside the GT (``extra``) beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from scipy import ndimage

from ..io import load_mask

#: Structures at most this many pixels wide are thin.
THIN_WIDTH = 3
#: A raw 8-bit map is foreground from here on (0.5 of 255, as mIoU's ``IOU_PRED_THRESHOLD``).
MASK_THRESHOLD = 128


def thin_parts(mask: np.ndarray, width: int = THIN_WIDTH) -> np.ndarray:
    """Foreground pixels that belong to structures at most ``width`` px wide (``HxW`` bool).

    These are the pixels a morphological opening with a Euclidean disk of diameter ``width + 1`` removes: a
    pixel survives when some disk of that diameter inside the mask covers it. The opening is computed exactly
    with distance transforms on a 2x nearest-neighbour upsampling (so the diameter may be even). A straight
    bar ``w`` px wide is entirely thin for ``w <= width`` and not thin (except near its corners) otherwise.
    """
    m = np.asarray(mask) > 0
    if not m.any():
        return np.zeros_like(m)
    up = np.pad(np.repeat(np.repeat(m, 2, axis=0), 2, axis=1), 2)
    radius = float(width) + 0.5  # in half pixels: the disk of diameter width + 1 (original pixels)
    inside = ndimage.distance_transform_edt(up)
    centres = inside > radius
    if not centres.any():
        opened = np.zeros_like(up)
    else:
        opened = ndimage.distance_transform_edt(~centres) <= radius
    opened &= up
    kept = opened[2:-2, 2:-2].reshape(m.shape[0], 2, m.shape[1], 2).any(axis=(1, 3))
    return m & ~kept


class ThinRecall:
    """Thin-structure recall over a set of images, stepped one image at a time (as ``DISMetrics``).

    Sums over all images, not a mean of per-image recalls: an image with three thin pixels weighs what its
    three pixels weigh.
    """

    def __init__(self, width: int = THIN_WIDTH):
        self.width = width
        # thin found, thin in GT, thick found, thick in GT, predicted outside the GT, GT
        self.counts = [0] * 6

    def step(self, pred: np.ndarray, gt: np.ndarray, thin: Optional[np.ndarray] = None) -> None:
        """Add one image: 8-bit maps ``pred`` and ``gt``; ``thin``, the GT's thin pixels, when already known."""
        p = np.asarray(pred) >= MASK_THRESHOLD
        g = np.asarray(gt) >= MASK_THRESHOLD
        if thin is None:
            thin = thin_parts(g, self.width)
        thick = g & ~thin
        for i, n in enumerate(((p & thin).sum(), thin.sum(), (p & thick).sum(), thick.sum(), (p & ~g).sum(), g.sum())):
            self.counts[i] += int(n)

    def results(self) -> dict[str, float]:
        """``thin_recall``, ``thick_recall``, ``thin_pixels`` (how many thin GT pixels there were) and ``extra``
        (predicted pixels outside the GT per GT pixel); a recall of nothing is 0."""
        thin_hit, thin, thick_hit, thick, extra, gt = self.counts
        return {
            "thin_recall": thin_hit / max(thin, 1),
            "thick_recall": thick_hit / max(thick, 1),
            "thin_pixels": thin,
            "extra": extra / max(gt, 1),
        }


def thin_recall_of_folders(
    gt_dir: Path, pred_dirs: Mapping[str, Path], width: int = THIN_WIDTH
) -> dict[str, dict[str, float]]:
    """:class:`ThinRecall` of each named folder of predicted PNGs against the GT PNGs of ``gt_dir`` (paired by
    file name; each GT's thin pixels are found once for all the folders)."""
    meters = {name: ThinRecall(width) for name in pred_dirs}
    for gt_path in sorted(Path(gt_dir).glob("*.png")):
        gt = load_mask(gt_path)
        thin = thin_parts(gt >= MASK_THRESHOLD, width)
        for name, folder in pred_dirs.items():
            meters[name].step(load_mask(Path(folder) / gt_path.name), gt, thin)
    return {name: meter.results() for name, meter in meters.items()}
