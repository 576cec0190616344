"""Synthetic DIS-like data and a simulated SAM, for the weight-free, data-free demo and for tests.

Nothing here downloads anything: textures come from ``skimage.data`` (shipped with scikit-image).

What the generator makes (:func:`generate_sample`)
--------------------------------------------------
An ``HxWx3`` uint8 RGB image of 2 to 4 objects of the kinds that make DIS hard, drawn over a real texture,
with the exact mask of **one** of them (the target) as GT:

- ``"wires"``:   a thick body (pole, box or blob) with 3-7 curved cables (cubic Bezier, 1-3 px wide);
- ``"twig"``:    a recursively branching twig whose branches taper from a thick trunk to 1 px tips;
- ``"lattice"``: a (rotated) frame, rectangular or round, filled with a grid, fence or diagonal mesh of
  1-3 px bars with small cells;
- ``"ring"``:    rings and frames with holes: an annulus (maybe with an inner ring and bridges), a window
  frame with mullions, a plate perforated by round holes, or a chain of links;
- ``"wheel"``:   a rim (seen in perspective: an ellipse), a hub and 6-28 spokes 1-3 px wide, maybe a fork.

All objects of an image share one appearance (a colour chosen for contrast with the background, modulated by
a second texture, a shading gradient and pixel noise); with probability 0.2 the distractors get another such
colour. As in DIS5K, the target is the photo's main object: it is placed first (at a uniformly random free
position), spans 62-85% of the image side and is the largest object both in pixels and in tight-box area
(each distractor, 25-45% of the side, is redrawn smaller until it has at most 60% of the target's pixels and
box area). So a plain IS-Net can find the target by saliency (a real baseline, as in the paper), while the
distractors keep the box meaningful. The layout rules: objects never touch (a gap of at least 3 px), and at
most 8% of any object's pixels fall inside another object's tight box, so the target's box never contains a
distractor (overlap at most slightly). ``target_scale`` makes the target another size instead (10-25 % of
the side of a 1024 px photo is the small-object split of ``is5net demo --highres``); the distractors' range
follows it, and the same rules keep them smaller.

Widths of thin parts are in pixels (1-3 px whatever the image size; rasterised exactly: the pixels whose
centres lie within width/2 of the centre line); thick parts (>= 4-5 px) scale with the object. Drawing is
aliased, so the GT is exactly the object's own pixels.

Image size: the default 160x160 keeps a narrow IS-Net trainable on 2 CPU cores in minutes (the 1/8-width
``is5net_tiny`` trains at roughly 20-25 images/s on one core at 128-160 px) while objects stay large enough
for 1-3 px parts to be a real fraction of each mask (about 40% of a wires mask, 55% of a twig, 30% of a
lattice, 25% of a wheel, about 0 for rings, whose difficulty is their holes: see :func:`thin_fraction`).
Any size >= 64 works; generation takes about 15-25 ms per image at 128-160 px, 50 ms at 256 px and 180 ms at
1024 px (a small target).

Dataset on disk (:func:`make_synthetic_dataset`)
------------------------------------------------
DIS5K layout: ``root/DIS-TR``, ``root/DIS-VD``, ``root/DIS-TE1``, each with ``im/<stem>.png`` (lossless PNG by
default: JPEG ringing would blur 1 px wires; ``image_format="jpg"`` writes quality-95 JPEG instead),
``gt/<stem>.png`` (8-bit, 0/255) and, unless ``coarse=False``, ``coarse/<stem>.png`` from
:func:`simulate_coarse_mask`. Stems are ``<index>_<kind>`` (``00007_lattice``), so results can be broken
down by kind. ``synthetic.json`` in each split records, per stem: kind, target box, distractor kinds.
Same seed gives byte-identical files; the three splits use independent random streams.

Simulated SAM (:func:`simulate_coarse_mask`)
--------------------------------------------
A model of SAM's typical failures, computed from the GT: see its docstring. Everything made with it must be
labelled :data:`SIMULATED_SAM_LABEL`.

Where things are: the objects are drawn in :mod:`is5net.demo.shapes`, the simulated SAM lives in
:mod:`is5net.demo.simulated_sam`; this module composes the photos and writes the dataset, and its names
(``__all__``) are the generator's whole public face.
"""

from __future__ import annotations

import functools
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np
from scipy import ndimage

from ..contract import tight_box  # re-exported: the one rule (None for an empty mask)
from ..eval.thin import thin_parts
from ..io import PathLike, atomic_write_bytes, atomic_write_text, save_png
from .shapes import OBJECT_KINDS, SeedLike, as_rng, draw_object
from .simulated_sam import SIMULATED_SAM_LABEL, simulate_coarse_mask, write_coarse_masks

__all__ = [
    "SIMULATED_SAM_LABEL",
    "OBJECT_KINDS",
    "SPLIT_DIRS",
    "DEFAULT_SIZE",
    "SyntheticSample",
    "generate_sample",
    "draw_object",
    "make_synthetic_dataset",
    "simulate_coarse_mask",
    "write_coarse_masks",
    "tight_box",
    "thin_fraction",
    "count_holes",
    "mask_iou",
    "kind_from_stem",
]

#: split name -> DIS5K folder name
SPLIT_DIRS = {"train": "DIS-TR", "val": "DIS-VD", "test": "DIS-TE1"}
# Independent random streams per split: image i of split s uses default_rng([seed, _SPLIT_SALT[s], i]).
_SPLIT_SALT = {"train": 0x7452, "val": 0x5644, "test": 0x5445}
# Photos drawn at another target scale get their own streams (default_rng([seed, split salt, _SCALED_SALT, i])),
# and so do their simulated coarse masks (seed + _SCALED_SALT << 32), independent of the main data's.
_SCALED_SALT = 0x534D

DEFAULT_SIZE = 160

Box = tuple[int, int, int, int]


def _hw(size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        h, w = (int(v) for v in size)
    if h < 64 or w < 64:
        raise ValueError(f"synthetic images must be at least 64x64, got {h}x{w}")
    return h, w


# ----------------------------------------------------------------------------------------------------------
# measurements


def thin_fraction(mask: np.ndarray, width: int = 3) -> float:
    """Fraction of the foreground in structures at most ``width`` px wide (``is5net.eval.thin.thin_parts``); 0
    if empty."""
    m = np.asarray(mask) > 0
    n = int(m.sum())
    if n == 0:
        return 0.0
    return float(thin_parts(m, width).sum()) / n


def count_holes(mask: np.ndarray, box: Optional[Sequence[int]] = None, min_area: int = 1) -> int:
    """Number of holes: 4-connected background components enclosed by the foreground.

    Only the part inside ``box`` (XYXY, exclusive end; default: the tight box) is looked at, and the region
    outside the box counts as open background, so a component touching the box border is not a hole.
    Holes smaller than ``min_area`` pixels are not counted.
    """
    m = np.asarray(mask) > 0
    if box is None:
        box = tight_box(m)
        if box is None:
            return 0
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = np.pad(m[y0:y1, x0:x1], 1)
    labels, n = ndimage.label(~crop)  # default structure: 4-connectivity
    if n == 0:
        return 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    outside = labels[0, 0]
    return int(sum(1 for k in range(1, n + 1) if k != outside and sizes[k] >= min_area))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks (foreground = value > 0); 1.0 when both are empty."""
    a = np.asarray(a) > 0
    b = np.asarray(b) > 0
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes: {a.shape} and {b.shape}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else float((a & b).sum()) / union


def kind_from_stem(stem: str) -> Optional[str]:
    """The object kind encoded in a synthetic stem (``"00007_lattice"`` -> ``"lattice"``), else ``None``."""
    tail = stem.rsplit("_", 1)[-1]
    return tail if tail in OBJECT_KINDS else None


# ----------------------------------------------------------------------------------------------------------
# textures


@functools.lru_cache(maxsize=1)
def _textures() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(grey textures as float32 HxW in [0, 1], colour photos as float32 HxWx3 in [0, 255]) from skimage.data."""
    from skimage import data

    grey = {name: getattr(data, name)().astype(np.float32) / 255.0 for name in ("brick", "grass", "gravel")}
    photos = {name: getattr(data, name)().astype(np.float32) for name in ("astronaut", "coffee", "chelsea", "rocket")}
    return grey, photos


def _random_crop(src: np.ndarray, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of ``src`` at a random zoom, resized to ``h x w``, randomly flipped/transposed."""
    sh, sw = src.shape[:2]
    zoom = rng.uniform(0.6, 1.6)
    ch = min(sh, max(16, int(round(h * zoom))))
    cw = min(sw, max(16, int(round(w * zoom))))
    y = int(rng.integers(0, sh - ch + 1))
    x = int(rng.integers(0, sw - cw + 1))
    crop = np.ascontiguousarray(src[y : y + ch, x : x + cw])
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    interp = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interp)


def _background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, str]:
    grey, photos = _textures()
    if rng.random() < 0.5:
        name = str(rng.choice(sorted(photos)))
        img = _random_crop(photos[name], rng, h, w)
        img = img * rng.uniform(0.8, 1.15) + rng.uniform(-20, 20)
    else:
        name = str(rng.choice(sorted(grey)))
        t = _random_crop(grey[name], rng, h, w)
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        c1 = rng.uniform(0, 255, 3)
        c2 = np.clip(c1 + rng.normal(0, 70, 3), 0, 255)
        img = c1[None, None, :] + (c2 - c1)[None, None, :] * t[:, :, None]
    return np.clip(img, 0, 255).astype(np.float32), name


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray, n_candidates: int = 6) -> np.ndarray:
    """A colour far from most background pixels (maximises the 10th percentile of the RGB distance)."""
    px = bg[::4, ::4].reshape(-1, 3)
    cands = rng.uniform(0, 255, (n_candidates, 3))
    d = np.linalg.norm(px[None, :, :] - cands[:, None, :], axis=2)
    score = np.percentile(d, 10, axis=1)
    return cands[int(np.argmax(score))]


def _object_layer(rng: np.random.Generator, h: int, w: int, colour: np.ndarray, exclude: str) -> np.ndarray:
    """The appearance of objects: ``colour`` modulated by a texture (not the background's) and a gradient."""
    grey, _ = _textures()
    names = [n for n in sorted(grey) if n != exclude]
    t = _random_crop(grey[str(rng.choice(names))], rng, h, w)
    t = (t - t.mean()) / max(1e-6, float(t.std()))
    t = np.clip(t, -2.0, 2.0)
    amp = rng.uniform(10, 24)
    tint = rng.uniform(0.6, 1.0, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = rng.normal(0, 1, 2)
    grad = (g[0] * (yy / h - 0.5) + g[1] * (xx / w - 0.5)) * rng.uniform(0, 30)
    layer = colour[None, None, :] + (amp * t)[:, :, None] * tint[None, None, :] + grad[:, :, None]
    return np.clip(layer, 0, 255).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# composition


@dataclass(frozen=True)
class SyntheticSample:
    """One synthetic image.

    image: ``HxWx3`` uint8 RGB.
    gt: ``HxW`` uint8, 255 on the target object's pixels, 0 elsewhere.
    box: the target's tight box ``(x0, y0, x1, y1)``, pixels, exclusive end.
    kind: the target's kind.
    distractors: ``HxW`` uint8 0/255, the union of the other objects (never overlapping ``gt``).
    distractor_kinds: their kinds.
    distractor_masks: each distractor's own ``HxW`` bool mask, in the order of ``distractor_kinds``.
    """

    image: np.ndarray
    gt: np.ndarray
    box: Box
    kind: str
    distractors: np.ndarray
    distractor_kinds: tuple[str, ...]
    distractor_masks: tuple[np.ndarray, ...] = ()


_MAX_BOX_OVERLAP = 0.08  # max fraction of an object's pixels inside another object's tight box
_GAP = 3  # min px between objects
#: The target's size (longer side of its canvas, as a fraction of the image's shorter side) and the
#: distractors'. As in DIS5K, the box's object is the photo's main object: a plain IS-Net (no prompt) can
#: find it by saliency, and so is a real baseline; distractors stay, smaller, so the box still matters.
_TARGET_SCALE = (0.62, 0.85)
_DISTRACTOR_SCALE = (0.25, 0.45)
#: With another ``target_scale`` (e.g. a small object in a large photo) the distractors' range follows the
#: target's, at about the main data's ratios (0.25 / 0.62, 0.45 / 0.85), so they stay smaller than the target.
_DISTRACTOR_OF_TARGET = (0.4, 0.55)
#: A distractor is redrawn smaller until both its pixel count and its tight-box area are at most this
#: fraction of the target's: the target is the largest object by either measure.
_MAX_DISTRACTOR_RATIO = 0.6
_MIN_CANVAS = 16  # px: the smallest object drawn (distractors in a 64 px image)


def _scales(target_scale: Optional[Sequence[float]]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The target's and the distractors' scale ranges for ``target_scale`` (``None``: the main data's)."""
    if target_scale is None:  # the constants themselves, so the default photos stay byte-identical
        return _TARGET_SCALE, _DISTRACTOR_SCALE
    lo, hi = (float(v) for v in target_scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"target_scale must be 0 < lo <= hi <= 1, got {target_scale!r}")
    return (lo, hi), (lo * _DISTRACTOR_OF_TARGET[0], hi * _DISTRACTOR_OF_TARGET[1])


def _place_objects(
    rng: np.random.Generator, h: int, w: int, kinds: list[str], target_scale: Optional[Sequence[float]] = None
) -> list[Optional[np.ndarray]]:
    """Full-image bool masks for ``kinds``; ``None`` for a distractor that did not fit.

    ``kinds[0]`` (the target) is placed first, at a uniformly random position, and always fits: it is
    redrawn smaller until it does. Distractors follow in random order, each redrawn smaller until it is at
    most ``_MAX_DISTRACTOR_RATIO`` of the target in pixels and in box area, and it fits. The rules: objects
    keep ``_GAP`` px apart, and at most ``_MAX_BOX_OVERLAP`` of an object's pixels lie in another's tight box.
    ``target_scale``: see :func:`generate_sample`.
    """
    out: list[Optional[np.ndarray]] = [None] * len(kinds)
    placed: list[tuple[np.ndarray, Box]] = []  # (full mask, tight box)
    occupied = np.zeros((h, w), bool)
    order = [0] + [int(i) for i in rng.permutation(np.arange(1, len(kinds)))]
    target_pixels = target_area = 0
    t_scale, d_scale = _scales(target_scale)
    for idx in order:
        scale = rng.uniform(*t_scale) if idx == 0 else rng.uniform(*d_scale)
        aspect = math.exp(rng.uniform(-0.3, 0.3))
        n_draws = 6 if idx == 0 else 4
        for draw in range(n_draws):
            if idx == 0 and target_scale is not None:
                local = _target_in_range(kinds[0], rng, t_scale, aspect, h, w)
            else:
                local = _draw_trimmed(kinds[idx], rng, scale * (0.8**draw) * min(h, w), aspect, h, w)
            if local is None:
                continue
            lh, lw = local.shape
            n = int(local.sum())
            if idx != 0 and (
                n > _MAX_DISTRACTOR_RATIO * target_pixels or lh * lw > _MAX_DISTRACTOR_RATIO * target_area
            ):
                continue  # too big next to the target: smaller at the next draw
            at = _free_position(rng, local, occupied, placed)
            if at is None:
                continue
            y, x = at
            full = np.zeros((h, w), bool)
            full[y : y + lh, x : x + lw] = local
            out[idx] = full
            placed.append((full, (x, y, x + lw, y + lh)))
            occupied |= full
            if idx == 0:
                target_pixels, target_area = n, lh * lw
            break
    return out


def _draw_trimmed(
    kind: str, rng: np.random.Generator, side: float, aspect: float, h: int, w: int
) -> Optional[np.ndarray]:
    """An object of ``kind`` drawn in a canvas of about ``side`` px at ``aspect``, cut to its tight box."""
    oh = max(_MIN_CANVAS, min(h - 2, int(round(side / math.sqrt(aspect)))))
    ow = max(_MIN_CANVAS, min(w - 2, int(round(side * math.sqrt(aspect)))))
    local = draw_object(kind, rng, oh, ow)
    lb = tight_box(local)
    return None if lb is None else local[lb[1] : lb[3], lb[0] : lb[2]]


def _target_in_range(
    kind: str, rng: np.random.Generator, scale: tuple[float, float], aspect: float, h: int, w: int
) -> Optional[np.ndarray]:
    """The target cut to its tight box, redrawn (at most 12 times) until the box's longer side is within
    ``scale`` of the image's shorter side: a canvas's object need not fill it, nor its aspect keep its side."""
    lo, hi = (v * min(h, w) for v in scale)
    for _try in range(12):
        local = _draw_trimmed(kind, rng, rng.uniform(*scale) * min(h, w), aspect, h, w)
        if local is not None and lo <= max(local.shape) <= hi:
            return local
    return None


def _free_position(
    rng: np.random.Generator, local: np.ndarray, occupied: np.ndarray, placed: list[tuple[np.ndarray, Box]]
) -> Optional[tuple[int, int]]:
    """Top-left ``(y, x)`` of a random position (25 tries) where ``local`` keeps ``_GAP`` px from what is
    ``occupied`` and overlaps no ``placed`` object's box, nor they its, by more than ``_MAX_BOX_OVERLAP``."""
    h, w = occupied.shape
    lh, lw = local.shape
    grow = np.ones((2 * _GAP + 1, 2 * _GAP + 1), np.uint8)
    grown = cv2.dilate(np.pad(local, _GAP).astype(np.uint8), grow) > 0  # offset by -_GAP
    for _pos in range(25):
        y = int(rng.integers(0, h - lh + 1))
        x = int(rng.integers(0, w - lw + 1))
        gy0, gx0 = y - _GAP, x - _GAP
        cy0, cx0 = max(0, gy0), max(0, gx0)
        cy1, cx1 = min(h, gy0 + grown.shape[0]), min(w, gx0 + grown.shape[1])
        if (grown[cy0 - gy0 : cy1 - gy0, cx0 - gx0 : cx1 - gx0] & occupied[cy0:cy1, cx0:cx1]).any():
            continue
        if not _boxes_overlap(local, y, x, placed):
            return y, x
    return None


def _boxes_overlap(local: np.ndarray, y: int, x: int, placed: list[tuple[np.ndarray, Box]]) -> bool:
    """Whether ``local`` at ``(y, x)`` has more than ``_MAX_BOX_OVERLAP`` of its pixels in a placed object's
    tight box, or a placed object as much of its pixels in ``local``'s."""
    lh, lw = local.shape
    n = int(local.sum())
    for other, (ox0, oy0, ox1, oy1) in placed:
        ix0, iy0, ix1, iy1 = max(x, ox0), max(y, oy0), min(x + lw, ox1), min(y + lh, oy1)
        if ix0 < ix1 and iy0 < iy1:
            if local[iy0 - y : iy1 - y, ix0 - x : ix1 - x].sum() > _MAX_BOX_OVERLAP * n:
                return True
            if other[iy0:iy1, ix0:ix1].sum() > _MAX_BOX_OVERLAP * other.sum():
                return True
    return False


def _paint(rng: np.random.Generator, target: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The photo: a background texture, the target in a colour chosen for contrast with it and the distractors
    in a similar colour (another one, one time in five), then pixel noise."""
    h, w = target.shape
    bg, bg_name = _background(rng, h, w)
    colour = _contrasting_colour(rng, bg)
    layer = _object_layer(rng, h, w, colour, exclude=bg_name)
    img = bg.copy()
    img[target] = layer[target]
    if rng.random() < 0.2:
        colour2 = _contrasting_colour(rng, bg)
    else:
        colour2 = np.clip(colour + rng.normal(0, 10, 3), 0, 255)
    img[others] = (layer + (colour2 - colour)[None, None, :])[others]
    img += rng.normal(0, rng.uniform(0.5, 4.0), img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def generate_sample(
    seed: SeedLike = 0,
    size: Union[int, Sequence[int]] = DEFAULT_SIZE,
    kind: Optional[str] = None,
    n_distractors: Optional[int] = None,
    target_scale: Optional[Sequence[float]] = None,
) -> SyntheticSample:
    """Generate one DIS-like image with its target mask, deterministically from ``seed``.

    Args:
        seed: an int (or a ``numpy.random.Generator``, which is advanced).
        size: ``S`` for ``SxS`` or ``(H, W)``; at least 64.
        kind: the target's kind (one of :data:`OBJECT_KINDS`); random when ``None``.
        n_distractors: 1-3 other objects (random when ``None``); fewer when they do not fit, never fewer
            than 1 for ``n_distractors >= 1``.
        target_scale: ``(lo, hi)``: the longer side of the target's tight box is within this fraction of the
            image's shorter side (redrawn until it is). ``None``: the main object of a DIS5K photo (its
            canvas 62-85 % of the side, smaller only where it does not fit). The distractors' range follows
            the target's (:data:`_DISTRACTOR_OF_TARGET`), and they stay smaller than it by the same rules.
            ``(0.10, 0.25)`` in a large photo is the small-object case of ``is5net demo --highres``.

    Returns:
        a :class:`SyntheticSample`.
    """
    rng = as_rng(seed)
    h, w = _hw(size)
    if kind is None:
        kind = str(rng.choice(OBJECT_KINDS))
    elif kind not in OBJECT_KINDS:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {OBJECT_KINDS}")
    if n_distractors is None:
        n_distractors = int(rng.integers(1, 4))
    for _round in range(20):
        kinds = [kind] + [str(k) for k in rng.choice(OBJECT_KINDS, size=n_distractors)]
        masks = _place_objects(rng, h, w, kinds, target_scale)
        if masks[0] is not None and (n_distractors == 0 or any(m is not None for m in masks[1:])):
            break
    else:  # pragma: no cover - the layout always fits in practice
        raise RuntimeError("could not place the synthetic objects")
    target = masks[0]
    distractors = [m for m in masks[1:] if m is not None]
    d_kinds = tuple(k for k, m in zip(kinds[1:], masks[1:]) if m is not None)
    others = np.zeros((h, w), bool)
    for m in distractors:
        others |= m
    image = _paint(rng, target, others)
    gt = target.astype(np.uint8) * 255
    box = tight_box(gt)
    assert box is not None
    return SyntheticSample(
        image=image,
        gt=gt,
        box=box,
        kind=kind,
        distractors=others.astype(np.uint8) * 255,
        distractor_kinds=d_kinds,
        distractor_masks=tuple(distractors),
    )


def _save_image(path: Path, image: np.ndarray, fmt: str) -> None:
    """Write an RGB image atomically: PNG (lossless, fast zlib level 1) or JPEG (quality 95, no chroma
    subsampling)."""
    from PIL import Image

    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(image).save(buf, format="JPEG", quality=95, subsampling=0)
    atomic_write_bytes(path, buf.getvalue())


def _write_split(
    d: Path,
    split: str,
    n: int,
    seed: int,
    hw: tuple[int, int],
    image_format: str,
    progress: bool,
    target_scale: Optional[Sequence[float]] = None,
) -> list[str]:
    """``n`` samples of ``split`` into ``d/im``, ``d/gt`` and ``d/synthetic.json``; returns their stems, sorted."""
    (d / "im").mkdir(parents=True, exist_ok=True)
    (d / "gt").mkdir(parents=True, exist_ok=True)
    meta: dict = {}
    indices = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"synthetic {d.name}", unit="img")
    for i in indices:
        kind = OBJECT_KINDS[i % len(OBJECT_KINDS)]
        stream = [seed, _SPLIT_SALT[split], i] if target_scale is None else [seed, _SPLIT_SALT[split], _SCALED_SALT, i]
        s = generate_sample(np.random.default_rng(stream), hw, kind=kind, target_scale=target_scale)
        stem = f"{i:05d}_{kind}"
        _save_image(d / "im" / f"{stem}.{image_format}", s.image, image_format)
        save_png(d / "gt" / f"{stem}.png", s.gt)
        meta[stem] = {"kind": s.kind, "box": list(s.box), "distractor_kinds": list(s.distractor_kinds)}
    header = {"seed": seed, "split": split, "size": list(hw), "items": meta}
    if target_scale is not None:  # only then: the main data's file stays as it was
        header["target_scale"] = [float(v) for v in target_scale]
    atomic_write_text(d / "synthetic.json", json.dumps(header, indent=1, sort_keys=True) + "\n")
    return sorted(meta)


def make_synthetic_dataset(
    root: PathLike,
    seed: int = 0,
    n_train: int = 200,
    n_val: int = 40,
    n_test: int = 60,
    size: Union[int, Sequence[int]] = DEFAULT_SIZE,
    *,
    image_format: str = "png",
    coarse: bool = True,
    progress: bool = False,
    coarse_options: Optional[dict] = None,
    target_scale: Optional[Sequence[float]] = None,
) -> dict:
    """Write a synthetic DIS-like dataset in the DIS5K layout under ``root``.

    ``root/DIS-TR`` (``n_train`` images), ``root/DIS-VD`` (``n_val``), ``root/DIS-TE1`` (``n_test``), each with
    ``im/<stem>.<png|jpg>``, ``gt/<stem>.png`` (uint8 0/255), ``coarse/<stem>.png`` (simulated SAM, see
    :func:`simulate_coarse_mask`; skipped with ``coarse=False``) and ``synthetic.json`` (per stem: kind,
    box, distractor kinds, size). Stems are ``<index:05d>_<kind>``; target kinds cycle through
    :data:`OBJECT_KINDS`, so every split is balanced. Image ``i`` of a split is drawn from
    ``numpy.random.default_rng([seed, <split salt>, i])``: same seed -> byte-identical files; the splits are
    independent. Files are written atomically; files already there with the same names are replaced.

    ``target_scale``: the target's size range (:func:`generate_sample`; ``None``: the main object of a photo).
    Another range draws every photo and coarse mask from streams of its own, so a small-object set written
    beside the main data with the same seed is independent of it.

    Returns ``{"root", "seed", "size", "label" (for the coarse masks), "splits": {name: {"dir", "count",
    "stems"}}}``.
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    root = Path(root)
    h, w = _hw(size)
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    summary: dict = {"root": str(root), "seed": int(seed), "size": [h, w], "splits": {}}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"n_{split} must be >= 0")
        d = root / SPLIT_DIRS[split]
        stems = _write_split(d, split, n, int(seed), (h, w), image_format, progress, target_scale)
        summary["splits"][SPLIT_DIRS[split]] = {"dir": str(d), "count": n, "stems": stems}
    if coarse:
        summary["label"] = SIMULATED_SAM_LABEL
        coarse_seed = int(seed) if target_scale is None else int(seed) + (_SCALED_SALT << 32)
        write_coarse_masks(
            root, coarse_seed, splits=[SPLIT_DIRS[s] for s in counts], progress=progress, options=coarse_options
        )
    return summary
