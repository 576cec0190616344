"""Training samples: (pair, box, GT) triples with GT enrichment and box jitter.

Boxes are ``(x0, y0, x1, y1)`` ints, XYXY in pixels of the image as displayed (EXIF applied), with an
**exclusive** end: the box covers rows ``y0 .. y1-1`` and columns ``x0 .. x1-1`` (the box channel's
convention, docs/input-contract.md). The GT foreground is ``gt > 127`` (:data:`is5net.contract.FG_THRESHOLD`).

GT enrichment (docs/training.md, the reference training recipe)
-------------------------------------------------------
The GT foreground is split into 8-connected components (``skimage.measure.label(connectivity=2)``, labels
1..n in raster order of each component's first pixel, so deterministic). A component *qualifies* when it
covers at least ``min_fraction`` (0.4 %) of the image's pixels. Then, per pair:

- 2 or more qualifying components: the whole mask (``component=None``, tight box of all the foreground,
  small components included) **and** one sample per qualifying component (``component=label``: its own
  tight box, its GT = that component alone, hence its own SAM mask);
- exactly 1 qualifying component: that component alone (its box and GT leave out the specks around it),
  as the reference's enrichment script writes it: the whole mask is kept only beside 2 or more;
- no qualifying component (only small pieces): the whole mask, so that no image is lost to training
  (the reference script would write nothing for it);
- an empty GT: no sample (logged; ``is5net check-data`` reports it).

Without enrichment (``enrich=False``: validation, ``--coarse-dir``, the IS-Net preset) every pair gives the
whole mask.

Box jitter (beyond the paper)
-----------------------------
So that the refiner tolerates loose user boxes, each (pair, component) can also get ``K`` jittered boxes
(``jitter=K``): samples with ``jitter = 0 .. K``, ``0`` being the tight box. See :func:`jitter_box`.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from ..contract import FG_THRESHOLD, binary_mask, tight_box
from ..defaults import JITTER_FRACTION, MIN_COMPONENT_FRACTION
from ..errors import IS5NetError
from ..io import load_mask
from .pairs import Pair

log = logging.getLogger("is5net")

Box = tuple[int, int, int, int]

#: Probability that a side of a jittered box moves outward (else inward).
OUTWARD_PROBABILITY = 0.8


@dataclass(frozen=True)
class Sample:
    """One training sample.

    ``box``: the SAM prompt and box channel, ``(x0, y0, x1, y1)`` ints, exclusive end.
    ``component``: None = the whole GT mask; else the 1-based label of one 8-connected GT component
    (labels of ``skimage.measure.label(gt > 127, connectivity=2)``).
    ``jitter``: 0 = the tight box of the sample's GT; ``k >= 1`` = the k-th jittered box.
    """

    pair: Pair
    box: Box
    component: Optional[int]
    jitter: int

    @property
    def key(self) -> str:
        """A stable id: ``<subset>/<stem>/<all|c<label>>/j<k>`` (e.g. ``DIS-TR/1#Accessories/c2/j0``)."""
        comp = "all" if self.component is None else f"c{self.component}"
        return f"{self.pair.subset}/{self.pair.stem}/{comp}/j{self.jitter}"


def _identity_int(identity: str) -> int:
    return int.from_bytes(hashlib.sha256(identity.encode("utf-8")).digest()[:8], "little")


def sample_identity(pair: Pair, component: Optional[int]) -> str:
    """The string that seeds a (pair, component)'s jitter: ``<subset>/<stem>/<all|c<label>>``."""
    return f"{pair.subset}/{pair.stem}/{'all' if component is None else f'c{component}'}"


def jitter_box(
    box: Sequence[int],
    k: int,
    image_size: tuple[int, int],
    max_fraction: float = JITTER_FRACTION,
    seed: int = 0,
    identity: str = "",
) -> Box:
    """The k-th jittered version of ``box`` (exclusive-end XYXY ints); ``k = 0`` returns ``box`` unchanged.

    ``image_size``: ``(height, width)`` (i.e. ``mask.shape``). Each side moves independently, outward with
    probability :data:`OUTWARD_PROBABILITY` and inward otherwise, by ``round(u * side)`` pixels with
    ``u`` uniform in ``[0, max_fraction]`` and ``side`` the box's width (for x0, x1) or height (for y0,
    y1); the result is clipped to the image and never empty (at least 1 px wide and high, overlapping
    the original box). Deterministic: the random stream is seeded by ``(seed, identity, k)`` (no global
    RNG, no Python ``hash``), so every process and every run gets the same boxes.
    """
    x0, y0, x1, y1 = (int(v) for v in box)
    height, width = int(image_size[0]), int(image_size[1])
    if k < 0:
        raise ValueError(f"jitter index must be >= 0, got {k}")
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"box {(x0, y0, x1, y1)} is empty or not inside the {width}x{height} image")
    if k == 0 or max_fraction <= 0:
        return x0, y0, x1, y1
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, _identity_int(identity), int(k)])
    u = rng.uniform(0.0, float(max_fraction), size=4)
    outward = rng.random(4) < OUTWARD_PROBABILITY
    bw, bh = x1 - x0, y1 - y0
    d = [int(round(u[0] * bw)), int(round(u[1] * bh)), int(round(u[2] * bw)), int(round(u[3] * bh))]
    s = [1 if o else -1 for o in outward]
    nx0 = min(max(x0 - s[0] * d[0], 0), width - 1)
    ny0 = min(max(y0 - s[1] * d[1], 0), height - 1)
    nx1 = max(min(x1 + s[2] * d[2], width), 1)
    ny1 = max(min(y1 + s[3] * d[3], height), 1)
    # Never empty, never disjoint from the original box: an inward move stops at the opposite side's
    # pixel, and if both sides moved inward past each other the box shrinks to the original's middle.
    nx0, ny0 = min(nx0, x1 - 1), min(ny0, y1 - 1)
    nx1, ny1 = max(nx1, x0 + 1), max(ny1, y0 + 1)
    if nx1 <= nx0:
        nx0, nx1 = _widen(nx0, nx1, x0, x1)
    if ny1 <= ny0:
        ny0, ny1 = _widen(ny0, ny1, y0, y1)
    return nx0, ny0, nx1, ny1


def _widen(a: int, b: int, orig_a: int, orig_b: int) -> tuple[int, int]:
    """An empty interval [a, b) (b <= a) made non-empty around the middle of the original [orig_a, orig_b)."""
    mid = (orig_a + orig_b - 1) // 2
    return min(a, mid), max(b, mid + 1)


def gt_components(gt: np.ndarray) -> tuple[np.ndarray, int]:
    """``(labels, n)``: 8-connected components of ``gt > 127`` (``gt`` uint8 HxW), labels 1..n, 0 = background."""
    from skimage.measure import label

    labels, n = label(binary_mask(gt), connectivity=2, return_num=True)
    return labels, int(n)


def pair_samples(
    pair: Pair,
    gt: np.ndarray,
    enrich: bool = True,
    jitter: int = 0,
    min_fraction: float = MIN_COMPONENT_FRACTION,
    jitter_fraction: float = JITTER_FRACTION,
    seed: int = 0,
) -> list[Sample]:
    """The samples of one pair given its GT (``HxW`` uint8 0..255); see the module docstring. Empty GT: ``[]``."""
    fg = binary_mask(gt)
    if not fg.any():
        return []
    shape = fg.shape
    targets: list[tuple[Optional[int], Box]] = [(None, tight_box(fg))]
    if enrich:
        labels, n = gt_components(gt)
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        min_area = float(min_fraction) * fg.size
        qualifying = [c for c in range(1, n + 1) if areas[c] >= min_area]
        components = [(c, tight_box(labels == c)) for c in qualifying]
        if len(qualifying) >= 2:
            targets += components
        elif len(qualifying) == 1:
            targets = components
    out: list[Sample] = []
    for component, box in targets:
        ident = sample_identity(pair, component)
        for k in range(int(jitter) + 1):
            b = jitter_box(box, k, shape, max_fraction=jitter_fraction, seed=seed, identity=ident)
            out.append(Sample(pair=pair, box=b, component=component, jitter=k))
    return out


def enumerate_samples(
    pairs: Sequence[Pair],
    enrich: bool = True,
    jitter: int = 0,
    min_fraction: float = MIN_COMPONENT_FRACTION,
    jitter_fraction: float = JITTER_FRACTION,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> list[Sample]:
    """Every sample of ``pairs``, in pair order, then whole mask, components by label, jitter 0..K.

    Reads each GT once (``workers`` threads). Deterministic for given arguments. A GT that cannot be read
    is an :class:`IS5NetError` (run ``is5net check-data``; :func:`~is5net.data.pairs.split_good_pairs`
    gives only pairs that decode); an empty GT gives no sample and a warning.
    """
    if jitter < 0:
        raise IS5NetError(f"jitter must be >= 0, got {jitter}")

    def one(pair: Pair) -> list[Sample]:
        gt = _read_gt(pair)
        found = pair_samples(
            pair,
            gt,
            enrich=enrich,
            jitter=jitter,
            min_fraction=min_fraction,
            jitter_fraction=jitter_fraction,
            seed=seed,
        )
        if not found:
            log.warning("%s: empty GT (no pixel > %d): no sample", pair.gt, FG_THRESHOLD)
        return found

    out: list[Sample] = []
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        results: Iterable[list[Sample]] = pool.map(one, pairs)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(pairs), desc="samples", unit="pair", dynamic_ncols=True)
        for found in results:
            out.extend(found)
    return out


def _read_gt(pair: Pair) -> np.ndarray:
    try:
        return load_mask(pair.gt)
    except IS5NetError as exc:
        raise IS5NetError(f"{exc} (run `is5net check-data` to list every bad file)") from None


def sample_gt(sample: Sample, gt: Optional[np.ndarray] = None) -> np.ndarray:
    """The sample's GT as an ``HxW`` bool array: ``gt > 127`` (whole mask) or only its component.

    ``gt``: the pair's GT (``HxW`` uint8) if already loaded; else it is read from ``sample.pair.gt``.
    """
    if gt is None:
        gt = _read_gt(sample.pair)
    if sample.component is None:
        return binary_mask(gt)
    labels, n = gt_components(gt)
    if not 1 <= sample.component <= n:
        raise IS5NetError(
            f"{sample.pair.gt}: has {n} components, sample {sample.key} wants component {sample.component} (GT changed?)"
        )
    return labels == sample.component
