"""Full-resolution regions: refine at the box's own resolution (``box``), or in native-resolution tiles (``tiles``).

The crop and tile rules are the input contract's (:mod:`is5net.contract`, docs/input-contract.md
"Regions"); this module only schedules the work: which crop or tile goes through the refiner when, and how
the results are put back together. Tiles are streamed a batch at a time into two accumulators of the
working size, so peak memory does not grow with the number of tiles.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..contract import (
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    DEFAULT_TILE_SCALE,
    blend_weight,
    crop_window,
    needs_tiles,
    normalize_input,
    resize_prompt,
    resize_rgb,
    shift_box,
    soft_masks,
    tile_starts,
    work_scale,
)

Logits = Callable[[torch.Tensor], torch.Tensor]  # N x C x S x S normalised input -> N x 1 x S x S logits


class RegionRefiner:
    """Runs the ``box`` and ``tiles`` regions for one refiner.

    ``logits``: the refiner's forward (input already normalised); ``input_size``: its ``S``; ``mean``/``std``:
    its normalisation; ``tile_batch``: tiles per forward pass (the bound on what is held at once).
    """

    def __init__(
        self, logits: Logits, input_size: int, mean: Sequence[float], std: Sequence[float], tile_batch: int = 4
    ):
        self.logits = logits
        self.size = int(input_size)
        self.mean, self.std = list(mean), list(std)
        self.tile_batch = max(1, int(tile_batch))
        self.largest_batch = 0  # the most tiles ever refined at once (tests check the streaming bound)

    def _input(self, rgb: torch.Tensor, coarse: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
        """``1 x 5 x S x S``: the contract's input for a ``3 x h x w`` uint8 crop, its mask and its box."""
        x = torch.cat((resize_rgb(rgb, self.size), resize_prompt(coarse, box, self.size)))
        return normalize_input(x, self.mean, self.std, inplace=True)[None]

    def box(
        self,
        rgb: torch.Tensor,
        coarse: torch.Tensor,
        box: Sequence[float],
        channel_box: Sequence[float],
        margin: float = DEFAULT_MARGIN,
    ) -> np.ndarray:
        """The ``box`` region: the crop around ``box`` refined as a whole image, pasted into an all-0 map.

        ``rgb``: ``3 x H x W`` uint8; ``coarse``: ``H x W`` bool (both on the refiner's device); ``box``: the
        user's box (it decides the crop); ``channel_box``: the box drawn into the box channel.
        Returns ``H x W`` float32 in [0, 1], equal inside the crop to running the whole-image contract on
        the cropped image, the cropped coarse mask and the shifted box.
        """
        h, w = rgb.shape[-2:]
        x0, y0, x1, y1 = crop_window(box, h, w, margin)
        crop_rgb, crop_mask = rgb[:, y0:y1, x0:x1], coarse[y0:y1, x0:x1]
        x = self._input(crop_rgb, crop_mask, shift_box(channel_box, (x0, y0)))
        crop_map = soft_masks(self.logits(x), (y1 - y0, x1 - x0))[0]
        out = np.zeros((h, w), np.float32)
        out[y0:y1, x0:x1] = crop_map.cpu().numpy()
        return out

    def tiles(
        self,
        rgb: torch.Tensor,
        coarse: torch.Tensor,
        box: Sequence[float],
        channel_box: Sequence[float],
        margin: float = DEFAULT_MARGIN,
        max_side: int = DEFAULT_MAX_SIDE,
        tile_scale: float = DEFAULT_TILE_SCALE,
    ) -> np.ndarray:
        """The ``tiles`` region: the crop around ``box``, refined in tiles at full resolution.

        1. The crop at ``tile_scale`` times its own resolution (:func:`~is5net.contract.work_scale`: less only
           if its longer side would exceed ``max_side``) is cut into overlapping ``S x S`` tiles, each with its
           part of the coarse mask and of the box channel; their probabilities are blended with
           :func:`~is5net.contract.blend_weight`.
        2. Context (:meth:`_fine`): a tile sees too little to tell the object from a look-alike beside it, so
           only the parts of the fine map connected to the coarse mask (stage 1's answer to *which* object)
           are kept, and of its undecided pixels (< 0.5) only those beside what is kept.
        A crop no larger than ``S`` at its working scale (:func:`~is5net.contract.needs_tiles`) is refined in
        one pass, as the ``box`` region does it, then goes through the same context rule. Returns ``H x W``
        float32 in [0, 1].
        """
        h, w = rgb.shape[-2:]
        x0, y0, x1, y1 = crop_window(box, h, w, margin)
        crop_hw = (y1 - y0, x1 - x0)
        crop_rgb, crop_mask = rgb[:, y0:y1, x0:x1], coarse[y0:y1, x0:x1]
        cbox = shift_box(channel_box, (x0, y0))
        if not needs_tiles(crop_hw, self.size, max_side, tile_scale):
            one = soft_masks(self.logits(self._input(crop_rgb, crop_mask, cbox)), crop_hw)[0]
            fine = _with_context(one, crop_mask, crop_hw)
        else:
            fine = self._fine(crop_rgb, crop_mask, cbox, work_scale(crop_hw, max_side, tile_scale))
        out = np.zeros((h, w), np.float32)
        out[y0:y1, x0:x1] = fine.cpu().numpy()
        return out

    def _fine(self, rgb: torch.Tensor, mask: torch.Tensor, box: Sequence[float], s: float) -> torch.Tensor:
        """The crop's tiles at working scale ``s``, then the context rule, back at the crop's resolution and
        min-max normalised: ``h x w`` float32 in [0, 1].

        The coarse mask anchors the context (measured in ``benchmarks/demo_sweep.md``, "High resolution"): a
        low-resolution pass of the refiner over the whole crop, the first anchor, paints look-alikes inside
        the box that the coarse mask leaves out, and the tiles then kept them.
        """
        crop_hw = tuple(rgb.shape[-2:])
        work_hw = (max(1, round(crop_hw[0] * s)), max(1, round(crop_hw[1] * s)))
        work_rgb = rgb if s == 1.0 else resize_rgb(rgb, work_hw).round().clamp(0, 255).to(torch.uint8)
        work_mask = mask if s == 1.0 else _resize_bool(mask, work_hw)
        return _with_context(self._blend_tiles(work_rgb, work_mask, [v * s for v in box]), work_mask, crop_hw)

    def _blend_tiles(self, rgb: torch.Tensor, mask: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
        """Sigmoid probabilities of overlapping tiles, weight-averaged: ``h x w`` float32 in [0, 1]."""
        h, w = rgb.shape[-2:]
        th, tw = min(self.size, h), min(self.size, w)
        num = torch.zeros((h, w), dtype=torch.float32, device=rgb.device)
        den = torch.zeros((h, w), dtype=torch.float32, device=rgb.device)
        weight = blend_weight(self.size, rgb.device)
        weight = F.interpolate(weight[None, None], size=(th, tw), mode="bilinear", align_corners=False)[0, 0]
        windows = [(ty, tx) for ty in tile_starts(h, th) for tx in tile_starts(w, tw)]
        for start in range(0, len(windows), self.tile_batch):
            batch = windows[start : start + self.tile_batch]
            x = torch.cat(
                [
                    self._input(
                        rgb[:, ty : ty + th, tx : tx + tw], mask[ty : ty + th, tx : tx + tw], shift_box(box, (tx, ty))
                    )
                    for ty, tx in batch
                ]
            )
            self.largest_batch = max(self.largest_batch, len(batch))
            prob = torch.sigmoid(self.logits(x).float())
            prob = F.interpolate(prob, size=(th, tw), mode="bilinear", align_corners=False)[:, 0]
            for (ty, tx), p in zip(batch, prob):
                num[ty : ty + th, tx : tx + tw] += p * weight
                den[ty : ty + th, tx : tx + tw] += weight
        return blend(num, den)


def _with_context(fine: torch.Tensor, mask: torch.Tensor, crop_hw: tuple[int, int]) -> torch.Tensor:
    """The context rule on a map of the crop at any working scale (``mask``: the coarse mask at that scale):
    the parts connected to the coarse mask kept, back at ``crop_hw``, detached grey dropped, min-max
    normalised."""
    fine = _resize_map(_keep_connected(fine, mask), crop_hw)
    fine = _drop_detached_grey(fine)
    lo, hi = float(fine.min()), float(fine.max())
    return (fine - lo) / (hi - lo) if hi > lo else torch.zeros_like(fine)


def blend(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """The weighted average of the tiles: ``num / den`` where tiles covered the pixel (every pixel is)."""
    return num / den.clamp_min(1e-12)


def _resize_map(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]


def _resize_bool(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return _resize_map(m.float(), size) > 0.5


def _keep_connected(fine: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """``fine`` with its foreground components (8-connected, ``> 0.5``) that do not touch ``anchor`` zeroed."""
    from scipy import ndimage

    fg = (fine > 0.5).cpu().numpy()
    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n == 0:
        return fine
    touching = np.unique(labels[anchor.cpu().numpy() & fg])
    keep = np.zeros(n + 1, bool)
    keep[touching] = True
    keep[0] = True  # background pixels keep their (low) soft values
    if not anchor.any():
        return fine  # an empty coarse mask names no object to anchor to: leave the fine map alone
    return fine * torch.from_numpy(keep[labels]).to(fine.device)


#: How far (crop pixels) an undecided pixel may lie from the kept foreground and still keep its probability.
GREY_REACH = 1


def _drop_detached_grey(fine: torch.Tensor, reach: int = GREY_REACH) -> torch.Tensor:
    """``fine`` with its pixels under 0.5 that are more than ``reach`` pixels from every pixel >= 0.5 set to 0.

    Why: the tiles leave a haze of low probabilities on texture edges and around look-alikes, detached from
    anything they decided is the object; in the blend it is neither object nor background, and a cut-out
    would carry it as a faint veil. The grey along the kept parts' edges (their soft outline) stays. A map
    with nothing >= 0.5 is left as it is: there is nothing to tell the haze from the object.
    """
    from scipy import ndimage

    fg = (fine >= 0.5).cpu().numpy()
    if not fg.any():
        return fine
    near = ndimage.binary_dilation(fg, structure=ndimage.generate_binary_structure(2, 1), iterations=reach)
    return fine * torch.from_numpy(near).to(fine.device)
