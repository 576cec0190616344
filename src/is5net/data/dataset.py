"""Training and validation datasets: samples -> normalised refiner inputs and GT, as the predictor builds them.

Each item is built exactly as :class:`is5net.IS5NetPredictor` builds its input (DESIGN §1): the image,
coarse mask and box channel at original size (0..255), resized to ``input_size`` (bilinear,
``align_corners=False``), the box channel re-binarised, divided by 255, mean subtracted, divided by std.
The GT is resized the same way and kept soft (values in [0, 1]), as the reference training does.

Randomness (flips, which jittered box) comes from ``(seed, epoch, index)`` alone, never from a global RNG,
so a run resumed at any step sees exactly the data an uninterrupted run would.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..errors import IS5NetError
from ..io import list_images, load_image, load_mask
from .pairs import FG_THRESHOLD
from .samples import Sample, sample_gt

log = logging.getLogger("is5net")


# ------------------------------------------------------------------------------------- coarse masks
class CoarseDir:
    """Coarse masks from any stage-1 method: one PNG per GT stem (as the reference code's ``mask/`` folders).

    Looks for ``DIR/<subset>/<stem>.*`` then ``DIR/<stem>.*``; the special value ``DIR = "dataset"`` means
    each subset's own ``<subset>/coarse/`` folder (what ``is5net demo`` writes).
    """

    def __init__(self, directory: str | Path, data_root: Optional[Path] = None):
        self.directory = directory
        self.data_root = data_root
        self._index: dict[Path, dict[str, Path]] = {}

    def _folder_listing(self, folder: Path) -> dict[str, Path]:
        if folder not in self._index:
            self._index[folder] = list_images(folder) if folder.is_dir() else {}
        return self._index[folder]

    def path(self, sample: Sample) -> Optional[Path]:
        stem, subset = sample.pair.stem, sample.pair.subset
        if str(self.directory) == "dataset":
            folders = [sample.pair.gt.parent.parent / "coarse"]
        else:
            d = Path(self.directory)
            folders = [d / subset, d]
        for folder in folders:
            found = self._folder_listing(folder).get(stem)
            if found is not None:
                return found
        return None

    def get(self, sample: Sample) -> Optional[np.ndarray]:
        p = self.path(sample)
        return None if p is None else load_mask(p)

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

    def missing(self, samples: Sequence[Sample]) -> list[Sample]:
        return self.cache.missing(samples)

    def describe(self) -> str:
        return f"SAM-mask cache {self.cache.root}"


def check_coarse_complete(source, samples: Sequence[Sample], hint: str) -> None:
    """Refuse to train with missing coarse masks, naming the first few entries."""
    missing = source.missing(samples)
    if missing:
        names = ", ".join(s.key for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise IS5NetError(f"{len(missing)} of {len(samples)} coarse masks missing from {source.describe()}: "
                          f"{names}; {hint}")


# ----------------------------------------------------------------------------------------- building
def build_input(
    rgb: np.ndarray,
    coarse: Optional[np.ndarray],
    box: Optional[Sequence[int]],
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """``C x S x S`` float32 refiner input (C = 3 without coarse/box, else 5), per DESIGN §1."""
    h, w = rgb.shape[:2]
    chans = [torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float()]
    if coarse is not None:
        box_mask = torch.zeros((1, h, w))
        x0, y0, x1, y1 = (int(v) for v in box)
        box_mask[0, y0:y1, x0:x1] = 255.0
        chans += [torch.from_numpy((coarse > FG_THRESHOLD).astype(np.float32) * 255.0)[None], box_mask]
    x = torch.cat(chans)[None]
    x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", align_corners=False)[0]
    if coarse is not None:
        x[4] = (x[4] > 127).float() * 255.0
    x = x / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (x - mean_t) / std_t


def resize_gt(gt: np.ndarray, input_size: int) -> torch.Tensor:
    """``1 x S x S`` soft GT in [0, 1] (bilinear resize of the binary mask)."""
    t = torch.from_numpy(gt.astype(np.float32))[None, None]
    return F.interpolate(t, size=(input_size, input_size), mode="bilinear", align_corners=False)[0]


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class RefinerDataset(Dataset):
    """Training/validation items for a refiner.

    ``samples``: from :func:`is5net.data.samples.enumerate_samples`. Samples differing only in their
    jitter form one group; each item picks one jittered box per epoch (``k = 0`` is the tight box).
    ``coarse``: a :class:`CoarseDir` / :class:`CoarseCache`, or None for a 3-channel IS-Net.
    ``train``: random horizontal/vertical flips (``flips``) and jitter choice; else tight box, no flips.

    Item: ``{"input": C x S x S float32, "gt": 1 x S x S float32 in [0, 1], "index": int}``.
    """

    def __init__(self, samples: Sequence[Sample], coarse, input_size: int, mean: Sequence[float],
                 std: Sequence[float], train: bool = True, flips: bool = True, seed: int = 0,
                 cache_images: int = 0):
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

    def __len__(self) -> int:
        return len(self.groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _image(self, path: Path) -> np.ndarray:
        if self._cache_images <= 0:
            return load_image(path)
        if path not in self._image_cache:
            self._image_cache[path] = load_image(path)
            while len(self._image_cache) > self._cache_images:
                self._image_cache.popitem(last=False)
        return self._image_cache[path]

    def sample_for(self, index: int) -> Sample:
        group = self.groups[index]
        if self.train and len(group) > 1:
            return group[int(item_rng(self.seed, self.epoch, index).integers(len(group)))]
        return group[0]

    def __getitem__(self, index: int) -> dict:
        sample = self.sample_for(index)
        rgb = self._image(sample.pair.image)
        gt = sample_gt(sample)
        if gt.shape != rgb.shape[:2]:
            raise IS5NetError(f"{sample.pair.gt}: GT is {gt.shape[1]}x{gt.shape[0]}, image is "
                              f"{rgb.shape[1]}x{rgb.shape[0]}")
        coarse = None
        if self.coarse is not None:
            coarse = self.coarse.get(sample)
            if coarse is None:
                raise IS5NetError(f"no coarse mask for {sample.key} in {self.coarse.describe()}")
            if coarse.shape != gt.shape:
                raise IS5NetError(f"coarse mask of {sample.key} is {coarse.shape[1]}x{coarse.shape[0]}, "
                                  f"image is {gt.shape[1]}x{gt.shape[0]}")
        x = build_input(rgb, coarse, sample.box, self.input_size, self.mean, self.std)
        y = resize_gt(gt, self.input_size)
        if self.train and self.flips:
            hflip, vflip = item_rng(self.seed + 1, self.epoch, index).random(2) < 0.5
            dims = [d for d, on in ((2, hflip), (1, vflip)) if on]
            if dims:
                x, y = torch.flip(x, dims), torch.flip(y, dims)
        return {"input": x.contiguous(), "gt": y.contiguous(), "index": index}


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
            raise IS5NetError(f"{n} training samples cannot fill one batch of {batch_size} x {world_size} "
                              f"process(es); lower batch_size")

    def batches_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __iter__(self):
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        global_batch = self.batch_size * self.world_size
        for b in range(self.start_batch, self.batches_per_epoch()):
            chunk = perm[b * global_batch:(b + 1) * global_batch]
            yield chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch
