"""Training and validation datasets: samples -> normalised refiner inputs and GT, as the predictor builds them.

Each item is built by the input contract, :mod:`is5net.contract` (docs/input-contract.md), the code
:class:`is5net.IS5NetPredictor` builds its input with. The GT is resized the same way and kept soft (values
in [0, 1]), as the reference training does.

Randomness (flips, which jittered box) comes from ``(seed, epoch, index)`` alone, never from a global RNG,
so a run resumed at any step sees exactly the data an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..contract import (
    COARSE_CHANNEL,
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    DEFAULT_TILE_SCALE,
    check_mask_size,
    crop_window,
    normalize_input,
    resize_gt,
    resize_input,
    resize_prompt,
    resize_rgb,
    to_uint8,
    training_view,
)
from ..errors import IS5NetError
from ..io import atomic_write_bytes, encode_png, load_image, load_mask
from .coarse import CoarseMaskFolder
from .samples import Sample, sample_gt

log = logging.getLogger("is5net")


# ------------------------------------------------------------------------------------- coarse masks
class CoarseDir:
    """Coarse masks from any stage-1 method: one image per GT stem (as the reference code's ``mask/`` folders).

    Looks for ``DIR/<subset>/<stem>.*`` then ``DIR/<stem>.*`` (the rule of :mod:`is5net.data.coarse`); the
    special value ``DIR = "dataset"`` means each subset's own ``<subset>/coarse/`` folder (what
    ``is5net demo`` writes).
    """

    def __init__(self, directory: str | Path, data_root: Optional[Path] = None):
        self.directory = directory
        self.data_root = data_root
        self._folders: dict[Path, CoarseMaskFolder] = {}

    def _folder(self, root: Path) -> CoarseMaskFolder:
        if root not in self._folders:
            self._folders[root] = CoarseMaskFolder(root)
        return self._folders[root]

    def path(self, sample: Sample) -> Optional[Path]:
        if str(self.directory) == "dataset":
            return self._folder(sample.pair.gt.parent.parent / "coarse").find(sample.pair.stem)
        return self._folder(Path(self.directory)).find(sample.pair.stem, subset=sample.pair.subset)

    def get(self, sample: Sample) -> Optional[np.ndarray]:
        p = self.path(sample)
        return None if p is None else load_mask(p)

    def source(self, sample: Sample) -> Optional[Path]:
        """The file :meth:`get` reads (its contents key the resized-input cache)."""
        return self.path(sample)

    def missing(self, samples: Sequence[Sample]) -> list[Sample]:
        return [s for s in samples if self.path(s) is None]

    def describe(self) -> str:
        return f"coarse masks in {self.directory}"


class CoarseCache:
    """Coarse masks from the SAM-mask cache (``is5net cache-sam``)."""

    def __init__(self, cache):
        self.cache = cache

    def get(self, sample: Sample) -> Optional[np.ndarray]:
        return self.cache.get_sample(sample)

    def source(self, sample: Sample) -> Optional[Path]:
        p = self.cache.sample_path(sample)
        return p if p.is_file() else None

    def missing(self, samples: Sequence[Sample]) -> list[Sample]:
        return self.cache.missing(samples)

    def describe(self) -> str:
        return f"SAM-mask cache {self.cache.root}"


def check_coarse_complete(source, samples: Sequence[Sample], hint: str) -> None:
    """Refuse to train with missing coarse masks, naming the first few entries."""
    missing = source.missing(samples)
    if missing:
        names = ", ".join(s.key for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise IS5NetError(
            f"{len(missing)} of {len(samples)} coarse masks missing from {source.describe()}: {names}; {hint}"
        )


class InputCache:
    """Training inputs already resized to the input size, stored once so later epochs skip decode + resize.

    Decoding a DIS5K photo (about 2500 x 3700) and resizing its five channels to 1024² costs about half a
    second of one CPU core per sample; a cached sample loads in milliseconds. As the reference code's
    ``cache_size``, values are stored as uint8: the RGB and the soft GT and coarse channels are rounded to
    the nearest grey level (at most 0.5/255 from the uncached input), the re-binarised box channel is exact.

    Layout under ``root/v1-<S>/``: ``rgb/<key>.npy`` (``3 x S x S`` uint8) per image and
    ``masks/<key>.png`` per sample (L: GT; RGB: GT, coarse, box). Keys are sha256 digests of the *contents*
    of every file that went in (image, GT, coarse mask) plus the sample's component, box and the size, so
    an edited file or a new SAM mask gets a new entry and nothing stale is ever read. Writes are atomic; a
    damaged entry is recomputed.
    """

    VERSION = 1

    def __init__(self, root: str | Path, input_size: int):
        self.root = Path(root) / f"v{self.VERSION}-{int(input_size)}"
        self.input_size = int(input_size)

    def rgb_path(self, key: str) -> Path:
        return self.root / "rgb" / key[:2] / f"{key}.npy"

    def masks_path(self, key: str) -> Path:
        return self.root / "masks" / key[:2] / f"{key}.png"

    def load_rgb(self, key: str) -> Optional[np.ndarray]:
        p = self.rgb_path(key)
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable cache entry, recomputed (%s)", p, exc)
            return None
        if arr.shape != (3, self.input_size, self.input_size) or arr.dtype != np.uint8:
            log.warning("%s: cache entry of shape %s, recomputed", p, arr.shape)
            return None
        return arr

    def store_rgb(self, key: str, arr: np.ndarray) -> None:
        import io as _io

        buf = _io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        atomic_write_bytes(self.rgb_path(key), buf.getvalue())

    def load_masks(self, key: str, channels: int) -> Optional[np.ndarray]:
        p = self.masks_path(key)
        try:
            with Image.open(p) as img:
                arr = np.array(img, dtype=np.uint8)  # writable: torch wraps it as is
        except FileNotFoundError:
            return None
        except (OSError, SyntaxError, ValueError) as exc:
            log.warning("%s: unreadable cache entry, recomputed (%s)", p, exc)
            return None
        arr = arr[..., None] if arr.ndim == 2 else arr
        if arr.shape != (self.input_size, self.input_size, channels):
            log.warning("%s: cache entry of shape %s, recomputed", p, arr.shape)
            return None
        return arr

    def store_masks(self, key: str, arr: np.ndarray) -> None:
        """``arr``: ``S x S x C`` uint8, C = 1 (GT) or 3 (GT, coarse, box)."""
        mode = "L" if arr.shape[2] == 1 else "RGB"
        atomic_write_bytes(self.masks_path(key), encode_png(arr[..., 0] if mode == "L" else arr))

    def describe(self) -> str:
        return f"resized-input cache {self.root}"


def _digest(*parts) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:32]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class RefinerDataset(Dataset):
    """Training/validation items for a refiner.

    ``samples``: from :func:`is5net.data.samples.enumerate_samples`. Samples differing only in their
    jitter form one group; each item picks one jittered box per epoch (``k = 0`` is the tight box).
    ``coarse``: a :class:`CoarseDir` / :class:`CoarseCache`, or None for a 3-channel IS-Net.
    ``train``: random horizontal/vertical flips (``flips``) and jitter choice; else tight box, no flips.

    ``region``: what each item shows (:func:`is5net.contract.training_view`): the whole image, the box's
    crop (random margin scale in training, the exact ``margin`` in validation) or, for ``tiles``, that crop
    or a native-resolution tile of it; the resized-input cache is used for ``image`` only.

    Item: ``{"input": C x S x S float32, "gt": 1 x S x S float32 in [0, 1], "index": int}``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        coarse,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = True,
        flips: bool = True,
        seed: int = 0,
        cache_images: int = 0,
        input_cache: Optional[InputCache] = None,
        region: str = "image",
        margin: float = DEFAULT_MARGIN,
        max_side: int = DEFAULT_MAX_SIDE,
        tile_scale: float = DEFAULT_TILE_SCALE,
        coarse_cut: float = 0.0,
        coarse_hole: float = 0.0,
    ):
        groups: "OrderedDict[tuple, list[Sample]]" = OrderedDict()
        for s in samples:
            groups.setdefault((s.pair, s.component), []).append(s)
        self.groups = [sorted(g, key=lambda s: s.jitter) for g in groups.values()]
        self.coarse = coarse
        self.input_size = int(input_size)
        self.mean, self.std = list(mean), list(std)
        self.train, self.flips, self.seed = train, flips, int(seed)
        self.epoch = 0
        self._image_cache: "OrderedDict[Path, np.ndarray]" = OrderedDict()
        self._cache_images = int(cache_images)
        # A crop region draws a new crop every epoch: there is no fixed resized input to cache.
        self.input_cache = input_cache if region == "image" else None
        self.region, self.margin, self.max_side = region, float(margin), int(max_side)
        self.tile_scale = float(tile_scale)
        self.coarse_cut = float(coarse_cut)
        self.coarse_hole = float(coarse_hole)
        self._entry_keys: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self.groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _image(self, path: Path, match: tuple[int, int]) -> np.ndarray:
        if self._cache_images <= 0:
            return load_image(path, match)
        if path not in self._image_cache:
            self._image_cache[path] = load_image(path, match)
            while len(self._image_cache) > self._cache_images:
                self._image_cache.popitem(last=False)
        return self._image_cache[path]

    def view_window(self, index: int) -> Optional[tuple[int, int, int, int]]:
        """The crop a validation item shows, ``(x0, y0, x1, y1)`` in the image, or None for the whole image:
        where to paste its map so that validation scores what ``predict`` outputs."""
        if self.region == "image":
            return None
        sample = self.sample_for(index)
        gt = sample_gt(sample)
        return crop_window(sample.box, gt.shape[0], gt.shape[1], self.margin)

    def sample_for(self, index: int) -> Sample:
        group = self.groups[index]
        if self.train and len(group) > 1:
            return group[int(item_rng(self.seed, self.epoch, index).integers(len(group)))]
        return group[0]

    # ------------------------------------------------------------------ resized-input cache
    def entry_keys(self, sample: Sample) -> tuple[str, str]:
        """``(rgb key, masks key)`` of ``sample`` in the input cache, from the contents of its files."""
        found = self._entry_keys.get(sample.key)
        if found is None:
            from .sam_cache import file_sha256

            image_sha = file_sha256(sample.pair.image)
            gt_sha = file_sha256(sample.pair.gt)
            coarse_sha = "-"
            if self.coarse is not None:
                src = self.coarse.source(sample)
                if src is None:
                    raise IS5NetError(f"no coarse mask for {sample.key} in {self.coarse.describe()}")
                coarse_sha = file_sha256(src)
            size = self.input_size
            found = (
                _digest("rgb", size, image_sha),
                _digest("masks", size, image_sha, gt_sha, sample.component, tuple(sample.box), coarse_sha),
            )
            self._entry_keys[sample.key] = found
        return found

    def prepare_input_cache(self, threads: int = 8) -> None:
        """Hash every file once, here, so that loader workers (forked or spawned) inherit the keys."""
        if self.input_cache is None:
            return
        todo = [s for g in self.groups for s in g]
        with ThreadPoolExecutor(max(1, threads)) as pool:  # hashing releases the GIL
            list(pool.map(self.entry_keys, todo))  # each call stores its keys in self._entry_keys

    def _full_resolution(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        gt = sample_gt(sample)
        rgb = self._image(sample.pair.image, gt.shape)
        if gt.shape != rgb.shape[:2]:
            raise IS5NetError(
                f"{sample.pair.gt}: GT is {gt.shape[1]}x{gt.shape[0]}, image is {rgb.shape[1]}x{rgb.shape[0]}"
            )
        coarse = None
        if self.coarse is not None:
            coarse = self.coarse.get(sample)
            if coarse is None:
                raise IS5NetError(f"no coarse mask for {sample.key} in {self.coarse.describe()}")
            check_mask_size(coarse.shape, gt.shape, f"coarse mask of {sample.key}", of="image")
        return rgb, gt, coarse

    def _cached(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x in 0..255, y in [0, 1])`` from the cache, computing (and storing) what is missing.

        A fresh entry is rounded exactly as a stored one, so results never depend on what was cached.
        """
        cache = self.input_cache
        rgb_key, masks_key = self.entry_keys(sample)
        channels = 1 if self.coarse is None else 3
        rgb = cache.load_rgb(rgb_key)
        masks = cache.load_masks(masks_key, channels)
        if rgb is None or masks is None:
            full_rgb, gt, coarse = self._full_resolution(sample)
            if rgb is None:
                rgb = to_uint8(resize_rgb(full_rgb, self.input_size))
                cache.store_rgb(rgb_key, rgb)
            if masks is None:
                planes = [resize_gt(gt, self.input_size) * 255.0]
                if coarse is not None:
                    planes.append(resize_prompt(coarse, sample.box, self.input_size))
                masks = np.ascontiguousarray(to_uint8(torch.cat(planes)).transpose(1, 2, 0))
                cache.store_masks(masks_key, masks)
        planes = torch.from_numpy(masks).permute(2, 0, 1)
        x = torch.empty((3 + channels - 1, self.input_size, self.input_size), dtype=torch.float32)
        x[:3].copy_(torch.from_numpy(rgb))  # uint8 -> float32 in one pass, no intermediate copies
        if channels == 3:
            x[3:].copy_(planes[1:])
        return x, planes[:1].float().div_(255.0)

    def __getitem__(self, index: int) -> dict:
        sample = self.sample_for(index)
        if self.input_cache is not None:
            x, y = self._cached(sample)
        else:
            rgb, gt, coarse = self._full_resolution(sample)
            box = sample.box
            if self.region != "image":
                rng = item_rng(self.seed + 2, self.epoch, index) if self.train else None
                rgb, gt, coarse, box = training_view(
                    rgb, gt, coarse, box, self.region, self.input_size, rng, self.margin, self.max_side, self.tile_scale
                )
            x = resize_input(rgb, coarse, box, self.input_size)
            y = resize_gt(gt, self.input_size)
        if self.train and self.coarse_cut and x.shape[0] > COARSE_CHANNEL:
            rng = item_rng(self.seed + 3, self.epoch, index)
            if rng.random() < self.coarse_cut:
                cut_coarse_part(x[COARSE_CHANNEL], rng)
        if self.train and self.coarse_hole and x.shape[0] > COARSE_CHANNEL:
            rng = item_rng(self.seed + 5, self.epoch, index)
            if rng.random() < self.coarse_hole:
                hole_coarse_part(x[COARSE_CHANNEL], rng)
        x = normalize_input(x, self.mean, self.std, inplace=True)  # x is this item's own tensor
        if self.train and self.flips:
            hflip, vflip = item_rng(self.seed + 1, self.epoch, index).random(2) < 0.5
            dims = [d for d, on in ((2, hflip), (1, vflip)) if on]
            if dims:
                x, y = torch.flip(x, dims), torch.flip(y, dims)
        return {"input": x.contiguous(), "gt": y.contiguous(), "index": index}


#: The share of the coarse mask :func:`cut_coarse_part` hides, drawn uniformly in this range.
CUT_FRACTION = (0.2, 0.5)


def cut_coarse_part(plane: torch.Tensor, rng: np.random.Generator, fraction: tuple = CUT_FRACTION) -> None:
    """Hide a part of a coarse mask, in place: SAM's other failure on DIS objects, a whole part missed
    (docs/training.md, "Coarse-mask cut").

    ``plane``: the ``S x S`` coarse-mask channel in 0..255 (before normalisation). A straight cut at a random
    angle sets to 0 the ``U(*fraction)`` share of the mask's pixels (> 127) that lie furthest along the
    cut's normal: the tip of a branch, one side of a wheel. The GT is untouched, so the refiner learns to
    complete the object from the image where the mask stops short, which is the lesson thin parts teach too
    (the coarse mask never has them) but on thick parts as well, so it is learnt within a short training.
    """
    inside = plane > 127
    if not bool(inside.any()):
        return
    angle = rng.uniform(0.0, 2.0 * np.pi)
    keep = rng.uniform(1.0 - fraction[1], 1.0 - fraction[0])
    h, w = plane.shape
    ys = torch.arange(h, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, -1)
    along = float(np.cos(angle)) * xs + float(np.sin(angle)) * ys
    limit = torch.quantile(along[inside], float(keep))
    plane[along > limit] = 0.0


#: The share of the coarse mask :func:`hole_coarse_part` hides, drawn uniformly in this range.
HOLE_FRACTION = (0.1, 0.3)


def hole_coarse_part(plane: torch.Tensor, rng: np.random.Generator, fraction: tuple = HOLE_FRACTION) -> None:
    """Punch a round hole into a coarse mask, in place (docs/training.md, "Coarse-mask hole").

    ``plane``: the ``S x S`` coarse-mask channel in 0..255 (before normalisation). The ``U(*fraction)`` share
    of the mask's pixels (> 127) nearest to a random mask pixel is set to 0: a disc inside the object (a bite
    out of its edge where the centre lies near one). The straight cut (:func:`cut_coarse_part`) teaches
    carrying the object on past the mask's outer edge; this teaches the case inside it, the space between a
    wheel's hub and rim or a lattice SAM filled, where the mask says nothing and the object's thin parts
    cross the gap.
    """
    inside = plane > 127
    if not bool(inside.any()):
        return
    ys, xs = torch.nonzero(inside, as_tuple=True)
    i = int(rng.integers(len(ys)))
    share = rng.uniform(*fraction)
    h, w = plane.shape
    dy = torch.arange(h, dtype=torch.float32).view(-1, 1) - float(ys[i])
    dx = torch.arange(w, dtype=torch.float32).view(1, -1) - float(xs[i])
    dist = dy * dy + dx * dx
    radius = torch.quantile(dist[inside], float(share))
    plane[dist <= radius] = 0.0


class ResumableBatchSampler(Sampler):
    """Batches of a seeded per-epoch permutation, sharded across ranks, resumable mid-epoch.

    Epoch ``e`` uses the permutation ``default_rng([seed, e])``; rank ``r`` of ``W`` takes every ``W``-th
    batch-sized slice, so all ranks have the same number of full batches (the tail is dropped, as
    ``drop_last``). ``set_epoch(e, start_batch)`` skips the first ``start_batch`` batches (resume).
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch, self.start_batch = 0, 0
        if self.batches_per_epoch() == 0:
            raise IS5NetError(
                f"{n} training samples cannot fill one batch of {batch_size} x {world_size} "
                f"process(es); lower batch_size"
            )

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self):
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        global_batch = self.batch_size * self.world_size
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = perm[b * global_batch : (b + 1) * global_batch]
            yield chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch
