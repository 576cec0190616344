"""The input contract: image + box + coarse mask -> the refiner's input; its output -> a mask.

This module is the one place that turns what a user (or a training sample) has into what the refiner
sees, and the refiner's logits back into a mask at the image's size. The predictor, the training and
validation datasets, evaluation, the demo and the benchmarks all call it, so a model trained by
``is5net train`` sees at inference exactly what it saw in training. The rules are written out in
``docs/input-contract.md``; in short (the reference DIS-SAM convention):

1. The 5-channel image ``R, G, B, coarse mask, box mask`` at the original size, values 0..255, masks
   0/255. The coarse mask is binarised by :func:`binary_mask`; the box channel covers the pixels of
   :func:`box_pixel_bounds` (rows ``y0..y1-1``, columns ``x0..x1-1``).
2. Resized to ``S x S`` (bilinear, ``align_corners=False``), channel by channel (which equals resizing the
   stacked image: bilinear resizing never mixes channels), the box channel re-binarised (``> 127``).
3. ``(x / 255 - mean) / std`` per channel (mean ``[0.5, 0.5, 0.5, 0, 0]``, std 1 by default).
4. Output: ``sigmoid(side_logits[0])`` resized back to ``H x W`` (bilinear), min-max normalised per map.

A 3-channel IS-Net uses step 1-3 with the RGB channels only.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .defaults import DEFAULT_MARGIN, DEFAULT_MAX_SIDE, DEFAULT_TILE_SCALE, REGIONS  # noqa: F401  (the rules are here)
from .errors import IS5NetError

__all__ = [
    "FG_THRESHOLD",
    "COARSE_CHANNEL",
    "BOX_CHANNEL",
    "Box",
    "binary_mask",
    "tight_box",
    "require_tight_box",
    "box_pixel_bounds",
    "box_channel",
    "resize_rgb",
    "resize_prompt",
    "resize_input",
    "resize_gt",
    "normalize_input",
    "build_input",
    "to_uint8",
    "soft_masks",
    "binarize",
]

#: An 8-bit mask pixel is foreground when its value is ``> FG_THRESHOLD`` (128..255), for GT and coarse
#: masks alike (docs/input-contract.md, "Masks").
FG_THRESHOLD = 127

#: Where the prompts sit in the 5-channel input ``R, G, B, coarse mask, box mask`` (step 1 above). With the
#: default normalisation (mean 0, std 1 for both) a prompt channel of the normalised input is in [0, 1].
COARSE_CHANNEL, BOX_CHANNEL = 3, 4

Box = tuple[int, int, int, int]
ArrayOrTensor = Union[np.ndarray, torch.Tensor]


# ------------------------------------------------------------------------------------------------ masks
def binary_mask(mask: ArrayOrTensor) -> np.ndarray:
    """Any mask -> ``HxW`` bool foreground, by one rule (docs/input-contract.md, "Masks").

    bool: as is. Floats: ``> 0.5`` (a map in [0, 1]). Integers: ``> 127`` (0..255 masks, the DIS PNGs),
    except an integer mask whose values are all 0 or 1 (a label map), whose 1s are the foreground; uint16
    masks are compared at the same fraction of their range (``> 32767``). An ``HxWx1`` array is squeezed.
    """
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.dtype == np.bool_:
        return m
    if np.issubdtype(m.dtype, np.floating):
        return m > 0.5
    if m.size and m.max() <= 1:
        return m > 0
    if m.dtype == np.uint16:
        return m > 32767
    return m > FG_THRESHOLD


def check_mask_size(shape: Sequence[int], expected: Sequence[int], what: str, of: str = "the image") -> None:
    """A coarse mask must have its image's size, ``H x W`` (docs/input-contract.md, "Masks"): it is never
    resized to fit, since a mask of another size belongs to another image. ``what`` and ``of`` name both."""
    if tuple(shape[:2]) != tuple(expected[:2]):
        raise IS5NetError(
            f"{what} is {shape[1]}x{shape[0]}, {of} is {expected[1]}x{expected[0]}: a coarse mask has its image's size"
        )


def tight_box(mask: ArrayOrTensor) -> Optional[Box]:
    """The tight box ``(x0, y0, x1, y1)`` of a mask's foreground: ints, exclusive end; None when empty.

    ``x1 = last column + 1`` and ``y1 = last row + 1``, so ``mask[y0:y1, x0:x1]`` holds all of the
    foreground. A non-bool mask is binarised by :func:`binary_mask` first. An empty mask has no box: the
    answer is None, and each caller says what that means for it (:func:`require_tight_box` refuses).
    """
    m = binary_mask(mask)
    if m.ndim != 2:
        raise ValueError(f"tight_box: expected an HxW mask, got shape {m.shape}")
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def require_tight_box(mask: ArrayOrTensor, what: str = "the mask") -> Box:
    """:func:`tight_box` for callers that cannot go on without a box: an empty mask is a ``ValueError``."""
    box = tight_box(mask)
    if box is None:
        raise ValueError(f"tight_box: {what} is empty (no foreground pixel), so it has no box")
    return box


# ------------------------------------------------------------------------------------------------ boxes
def box_pixel_bounds(box: Sequence[float]) -> Box:
    """The pixels a box covers as a channel: integer ``(x0, y0, x1, y1)``, exclusive end, at least 1 px.

    Coordinates are rounded to the nearest integer (a box ``[9.6, 0, 20.4, 10]`` covers columns 10..19),
    so integer boxes (training samples, the GT's tight box) are taken exactly.
    """
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def box_channel(box: Sequence[float], height: int, width: int, device=None) -> torch.Tensor:
    """``H x W`` float32 box mask: 255 on the box's pixels (:func:`box_pixel_bounds`), 0 elsewhere."""
    x0, y0, x1, y1 = box_pixel_bounds(box)
    channel = torch.zeros((height, width), dtype=torch.float32, device=device)
    channel[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 255.0
    return channel


# ------------------------------------------------------------------------------------------- resizing
def _resize(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``N x C x H x W`` -> ``N x C x size``, bilinear, ``align_corners=False`` (identity at scale 1)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)


def _square(input_size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(input_size, (int, np.integer)):
        return int(input_size), int(input_size)
    h, w = input_size
    return int(h), int(w)


def resize_rgb(rgb: ArrayOrTensor, input_size: Union[int, Sequence[int]]) -> torch.Tensor:
    """``HxWx3`` uint8 RGB (array, or a ``3xHxW`` uint8 tensor on any device) -> ``3 x S x S`` float32, 0..255."""
    if isinstance(rgb, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    else:
        t = rgb
    return _resize(t[None].float(), _square(input_size))[0]


def resize_prompt(
    coarse: ArrayOrTensor,
    boxes: Union[Sequence[float], Sequence[Sequence[float]]],
    input_size: Union[int, Sequence[int]],
) -> torch.Tensor:
    """The two prompt channels, resized: coarse mask and box mask, float32 0..255.

    ``coarse``: one ``H x W`` mask (any form :func:`binary_mask` reads) with one box -> ``2 x S x S``; or a
    ``N x H x W`` bool tensor (on any device) with N boxes -> ``N x 2 x S x S``. The box channel is
    re-binarised after resizing (``> 127`` -> 255), the coarse mask keeps its soft edge.
    """
    single = not isinstance(coarse, torch.Tensor) or coarse.ndim == 2
    if single:
        masks = coarse if isinstance(coarse, torch.Tensor) else torch.from_numpy(binary_mask(coarse))
        masks = masks.bool()[None]
        boxes = [boxes]
    else:
        masks = coarse.bool()
    n, h, w = masks.shape
    if len(boxes) != n:
        raise ValueError(f"{n} coarse masks but {len(boxes)} boxes")
    planes = torch.empty((n, 2, h, w), dtype=torch.float32, device=masks.device)
    planes[:, 0] = masks.float() * 255.0
    for i, b in enumerate(boxes):
        planes[i, 1] = box_channel(b, h, w, device=masks.device)
    planes = _resize(planes, _square(input_size)).clone()
    planes[:, 1] = (planes[:, 1] > 127).float() * 255.0
    return planes[0] if single else planes


def resize_input(
    rgb: ArrayOrTensor,
    coarse: Optional[ArrayOrTensor],
    box: Optional[Sequence[float]],
    input_size: Union[int, Sequence[int]],
) -> torch.Tensor:
    """``C x S x S`` float32 in 0..255 (C = 3 without a coarse mask, else 5): steps 1-2 of the contract."""
    chans = [resize_rgb(rgb, input_size)]
    if coarse is not None:
        if box is None:
            raise ValueError("a coarse mask comes with its box")
        chans.append(resize_prompt(coarse, box, input_size))
    return torch.cat(chans)


def normalize_input(
    x255: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False
) -> torch.Tensor:
    """Step 3: ``(x / 255 - mean) / std`` per channel of ``C x S x S`` or ``N x C x S x S`` (``mean``, ``std``: C each).

    ``inplace`` overwrites ``x255`` (same values, no new tensor): for a tensor the caller owns.
    """
    c = x255.shape[-3]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"input has {c} channels but mean/std have {len(mean)}/{len(std)}")
    mean_t = torch.tensor(list(mean), dtype=torch.float32, device=x255.device).view(-1, 1, 1)
    std_t = torch.tensor(list(std), dtype=torch.float32, device=x255.device).view(-1, 1, 1)
    if inplace:
        return x255.div_(255.0).sub_(mean_t).div_(std_t)
    return (x255 / 255.0 - mean_t) / std_t


def build_input(
    rgb: ArrayOrTensor,
    coarse: Optional[ArrayOrTensor],
    box: Optional[Sequence[float]],
    input_size: Union[int, Sequence[int]],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """The whole contract for one image and box: ``C x S x S`` float32 normalised refiner input."""
    return normalize_input(resize_input(rgb, coarse, box, input_size), mean, std, inplace=True)


def resize_gt(gt: ArrayOrTensor, input_size: Union[int, Sequence[int]]) -> torch.Tensor:
    """The training target: ``1 x S x S`` soft GT in [0, 1] (the binary mask resized bilinearly)."""
    t = torch.from_numpy(binary_mask(gt).astype(np.float32))[None, None]
    return _resize(t, _square(input_size))[0]


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """Round a float tensor in 0..255 to uint8 (half a grey level at most): the resized-input cache's form."""
    return t.round().clamp_(0, 255).to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------- output
def soft_masks(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Step 4: ``N x 1 x s x s`` logits -> ``N x H x W`` float32 maps in [0, 1] at the image's ``size``.

    ``sigmoid``, bilinear resize to ``size = (H, W)``, then min-max normalisation per map, as the reference
    evaluation. A constant map (no foreground to normalise) is all 0, never NaN.
    """
    prob = torch.sigmoid(logits.float())
    prob = F.interpolate(prob, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    flat = prob.reshape(prob.shape[0], -1)
    lo = flat.min(dim=1).values.view(-1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1)
    return torch.where(hi > lo, (prob - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(prob))


def binarize(mask: np.ndarray, threshold: Union[float, str] = 0.5) -> np.ndarray:
    """A soft map in [0, 1] -> bool: ``> threshold`` (0.5 by default), or Otsu's threshold (``"otsu"``)."""
    if threshold == "otsu":
        from skimage.filters import threshold_otsu

        if float(mask.max()) == float(mask.min()):
            return mask > 0.5
        threshold = float(threshold_otsu(mask))
    return mask > float(threshold)


# -------------------------------------------------------------------------------------------- regions
# What part of the image the refiner sees (docs/input-contract.md, "Regions"):
#   image: the whole image resized to S x S (the paper's convention; official checkpoints);
#   box:   the box grown by a margin, cropped, resized to S x S, and the result pasted back;
#   tiles: that crop at tile_scale x its resolution (up to a maximum side) in overlapping S x S tiles, blended,
#          only what is connected to the coarse mask kept (the object's context a tile cannot see).
MIN_MARGIN_PX = 16
TILE_OVERLAP = 0.25


def crop_window(
    box: Sequence[float], height: int, width: int, margin: float = DEFAULT_MARGIN, min_margin: int = MIN_MARGIN_PX
) -> Box:
    """The crop of the ``box`` region: ``(x0, y0, x1, y1)`` ints, exclusive end, inside the image.

    The box's pixels (:func:`box_pixel_bounds`) grown by ``margin`` of the box's width left and right and of
    its height top and bottom, each rounded to whole pixels and at least ``min_margin`` pixels, then clipped
    to the ``width x height`` image.
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = box_pixel_bounds(box)
    mx = max(int(round(margin * (x1 - x0))), int(min_margin))
    my = max(int(round(margin * (y1 - y0))), int(min_margin))
    return max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, int(width)), min(y1 + my, int(height))


def shift_box(box: Sequence[float], window: Sequence[int]) -> list[float]:
    """``box`` in the coordinates of the crop ``window`` (its top-left corner becomes the origin)."""
    return [float(box[0]) - window[0], float(box[1]) - window[1], float(box[2]) - window[0], float(box[3]) - window[1]]


def tile_starts(length: int, tile: int, overlap: float = TILE_OVERLAP) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``0..length`` with at least ``overlap`` between them.

    The first tile starts at 0 and the last ends at ``length``; the others are spread evenly between.
    """
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    n = -(-(length - tile) // stride) + 1
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def blend_weight(tile: int, device=None) -> torch.Tensor:
    """``tile x tile`` blending weights: a tent, highest in the middle, small but positive at the edges.

    Overlapping tiles are averaged with these weights (``sum(w * p) / sum(w)``), so a map that is the same
    in every tile comes out unchanged (no seam), and each pixel is decided mostly by the tile that sees it
    farthest from an edge.
    """
    ramp = torch.minimum(
        torch.arange(tile, dtype=torch.float32, device=device) + 0.5,
        tile - 0.5 - torch.arange(tile, dtype=torch.float32, device=device),
    )
    ramp = (ramp / (tile / 2.0)).clamp(min=1e-3)
    return ramp[:, None] * ramp[None, :]


def work_scale(
    crop_hw: tuple[int, int], max_side: int = DEFAULT_MAX_SIDE, tile_scale: float = DEFAULT_TILE_SCALE
) -> float:
    """The scale at which ``tiles`` refines a crop: ``tile_scale`` times its own resolution (1.0: native), less
    if that would make its longer side exceed ``max_side``.

    Why more than native: IS-Net's finest side output is at half its input's resolution, so a tile refined at
    native resolution draws a 1 px wire from a map at half of it (a blurred band); at ``tile_scale=2`` the
    output is at the photo's own resolution (docs/input-contract.md, "Regions").
    """
    return min(float(tile_scale), float(max_side) / float(max(crop_hw)))


def needs_tiles(
    crop_hw: tuple[int, int], input_size: int, max_side: int = DEFAULT_MAX_SIDE, tile_scale: float = DEFAULT_TILE_SCALE
) -> bool:
    """Whether a crop is refined in tiles: its working size is larger than the model input on its longer side.

    A crop only a little larger would lose little by being squeezed into one input, but on DIS-VD's small
    objects (crops of 1-2x the input) the tiles did better on every metric (benchmarks/demo_sweep.md, "High
    resolution, the second round")."""
    s = work_scale(crop_hw, max_side, tile_scale)
    return max(crop_hw) * s > input_size


def training_view(
    rgb: np.ndarray,
    gt: np.ndarray,
    coarse: Optional[np.ndarray],
    box: Sequence[float],
    region: str,
    input_size: int,
    rng: Optional[np.random.Generator] = None,
    margin: float = DEFAULT_MARGIN,
    max_side: int = DEFAULT_MAX_SIDE,
    tile_scale: float = DEFAULT_TILE_SCALE,
):
    """What a training sample shows the refiner for ``region``: ``(rgb, gt, coarse, box)`` to feed the contract.

    ``image``: everything as is. ``box``: the crop of :func:`crop_window`, with the margin drawn at random
    scale (``margin * 2**u``, ``u`` uniform in [-1, 1]) when ``rng`` is given (training), exactly ``margin``
    otherwise (validation, as ``predict``). ``tiles``: half of the draws are that ``box`` view (what a crop too
    small for tiles gets, and the ``box`` region of the same refiner), the other half one tile of the
    crop at its working scale (:func:`work_scale`; see :func:`_training_tile`); without ``rng``, the ``box``
    view.
    Arrays are ``HxWx3`` uint8, ``HxW`` bool GT, ``HxW`` coarse (any :func:`binary_mask` form) or None.
    """
    if region not in REGIONS:
        raise ValueError(f"region {region!r}: choose one of {', '.join(REGIONS)}")
    if region == "image":
        return rgb, gt, coarse, list(box)
    h, w = gt.shape[:2]
    m = margin if rng is None else margin * float(2.0 ** rng.uniform(-1.0, 1.0))
    x0, y0, x1, y1 = crop_window(box, h, w, m)
    crop = (slice(y0, y1), slice(x0, x1))
    rgb_c, gt_c = rgb[crop], gt[crop]
    coarse_c = None if coarse is None else coarse[crop]
    box_c = shift_box(box, (x0, y0))
    if (
        region == "box"
        or rng is None
        or rng.random() < 0.5
        or not needs_tiles(gt_c.shape, input_size, max_side, tile_scale)
    ):
        return rgb_c, gt_c, coarse_c, box_c
    return _training_tile(rgb_c, gt_c, coarse_c, box_c, input_size, rng, work_scale(gt_c.shape, max_side, tile_scale))


def _training_tile(rgb_c, gt_c, coarse_c, box_c, input_size: int, rng: np.random.Generator, s: float):
    """One tile of a crop as ``predict`` refines it at working scale ``s``: centred on a GT pixel 3 times in 4,
    so that tiles show the object's detail.

    ``s < 1``: the crop is scaled down first and an ``S x S`` tile cut from it. ``s >= 1``: a native window of
    ``S / s`` pixels is cut, which the contract's resize (bilinear, as ``predict`` resizes the working image)
    brings to ``S x S``: the same tile, without resizing the whole crop for every sample.
    """
    if s < 1.0:
        hw = (max(1, round(gt_c.shape[0] * s)), max(1, round(gt_c.shape[1] * s)))
        rgb_c = to_uint8(resize_rgb(rgb_c, hw)).transpose(1, 2, 0)
        gt_c = resize_gt(gt_c, hw)[0].numpy() > 0.5
        coarse_c = None if coarse_c is None else resize_gt(coarse_c, hw)[0].numpy() > 0.5
        box_c = [v * s for v in box_c]
        side = input_size
    else:
        side = max(1, int(round(input_size / s)))
    ch, cw = gt_c.shape
    th, tw = min(side, ch), min(side, cw)
    ys, xs = np.nonzero(gt_c)
    if ys.size and rng.random() < 0.75:
        i = int(rng.integers(ys.size))
        cy, cx = int(ys[i]), int(xs[i])
    else:
        cy, cx = int(rng.integers(ch)), int(rng.integers(cw))
    ty = min(max(cy - th // 2, 0), ch - th)
    tx = min(max(cx - tw // 2, 0), cw - tw)
    tile = (slice(ty, ty + th), slice(tx, tx + tw))
    return (rgb_c[tile], gt_c[tile], None if coarse_c is None else coarse_c[tile], shift_box(box_c, (tx, ty)))
