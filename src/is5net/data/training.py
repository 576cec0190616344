"""A training run's data, decided before its first step: pairs -> checked pairs -> samples -> datasets.

- Layout: a DIS5K root trains on DIS-TR (else every subset but DIS-VD) and validates on DIS-VD; a folder
  with ``im/`` and ``gt/`` validates on ``--val`` or on a seeded ``val_fraction`` of its own pairs.
- Bad pairs (``is5net check-data``'s problems) stop the run, or are left out with ``--skip-bad``.
- Samples: GT enrichment and jittered boxes (:mod:`is5net.data.samples`), for the 5-channel refiner only.
- Coarse masks: from ``--coarse-dir``, or from the SAM-mask cache ``is5net cache-sam`` filled; every one is
  checked present before the first step, and a missing one names the ``cache-sam`` command that makes it.
- The resized-input cache (``data_cache``), when it can be written.

The settings come from :class:`is5net.train.config.TrainConfig` (:meth:`DataSettings.of`), which this
layer, below training, does not import.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..checkpoint import default_mean
from ..defaults import JITTER_FRACTION, MIN_COMPONENT_FRACTION
from ..errors import IS5NetError
from .dataset import CoarseCache, CoarseDir, InputCache, RefinerDataset, check_coarse_complete
from .pairs import Pair, find_pairs, is_dis5k_root, split_good_pairs, subset_names
from .samples import Sample, enumerate_samples

log = logging.getLogger("is5net")


@dataclass(frozen=True)
class DataSettings:
    """The training settings a run's data depends on (the fields of ``TrainConfig`` of the same names)."""

    data: Optional[str]
    val: Optional[str]
    skip_bad: bool
    val_fraction: float
    val_limit: int
    seed: int
    enrich: bool
    jitter: int
    min_fraction: float
    jitter_fraction: float
    coarse_dir: Optional[str]
    sam_checkpoint: Optional[str]
    sam_type: Optional[str]
    stage1: str
    mask_choice: str
    cache: Optional[str]
    data_cache: str
    cache_images: int
    input_size: int
    flips: bool
    region: str
    crop_margin: float
    max_side: int
    tile_scale: float
    coarse_cut: float
    coarse_hole: float

    @classmethod
    def of(cls, config) -> "DataSettings":
        """These settings of ``config`` (a ``TrainConfig``, or anything with the same attributes)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


@dataclass
class TrainingData:
    train: RefinerDataset
    val: Optional[RefinerDataset]
    skipped: int  # bad pairs left out (--skip-bad)
    description: str  # one line for the run's log


@dataclass
class _Samples:
    train: list[Sample]
    val: list[Sample]
    enrich: bool  # what training asks the SAM cache for: cache-sam must have been run with the same
    jitter: int


def prepare_data(s: DataSettings, in_ch: int) -> TrainingData:
    """Pairs -> checked pairs -> samples (enrichment, jitter) -> datasets with their coarse-mask source."""
    root = _data_root(s)
    train_subsets, val_subsets = _subsets(s, root)
    good, skipped = _good_pairs(s, root, train_subsets)
    good, val_pairs = _validation_split(s, root, val_subsets, good)
    samples = _samples(s, root, good, val_pairs, five=in_ch == 5)
    coarse = val_coarse = None
    if in_ch == 5:
        coarse, val_coarse = _coarse_sources(s, root, samples)
    mean, std = default_mean(in_ch), [1.0] * in_ch
    input_cache = make_input_cache(s, root)
    regions = dict(region=s.region, margin=s.crop_margin, max_side=s.max_side, tile_scale=s.tile_scale)
    train_ds = RefinerDataset(
        samples.train,
        coarse,
        s.input_size,
        mean,
        std,
        train=True,
        flips=s.flips,
        seed=s.seed,
        cache_images=s.cache_images,
        input_cache=input_cache,
        coarse_cut=s.coarse_cut,
        coarse_hole=s.coarse_hole,
        **regions,
    )
    val_ds = None
    if samples.val:
        val_ds = RefinerDataset(
            samples.val,
            val_coarse,
            s.input_size,
            mean,
            std,
            train=False,
            seed=s.seed,
            input_cache=input_cache,
            **regions,
        )
    if input_cache is not None:
        _prepare_input_cache(train_ds, val_ds)
    desc = (
        f"{len(train_ds)} training samples from {len(good)} images"
        f"{f' ({skipped} bad skipped)' if skipped else ''}, {len(samples.val)} validation images, "
        f"{coarse.describe() if coarse else 'no prompt (IS-Net)'}"
        f"{', ' + input_cache.describe() if input_cache else ''}"
    )
    return TrainingData(train_ds, val_ds, skipped, desc)


# ------------------------------------------------------------------------------------------- pairs
def _data_root(s: DataSettings) -> Path:
    if not s.data:
        raise IS5NetError("no training data: give --data ROOT (a DIS5K root or a folder with im/ and gt/)")
    root = Path(s.data)
    if not root.is_dir():
        raise IS5NetError(f"--data {root}: no such directory")
    return root


def _subsets(s: DataSettings, root: Path) -> tuple[Optional[list[str]], Optional[list[str]]]:
    """``(training subsets, validation subsets)`` of a DIS5K root; ``(None, None)`` for a plain folder."""
    if not is_dis5k_root(root):
        return None, None
    names = subset_names(root)
    train_subsets = ["DIS-TR"] if "DIS-TR" in names else [n for n in names if n != "DIS-VD"]
    val_subsets = ["DIS-VD"] if "DIS-VD" in names and s.val is None else None
    return train_subsets, val_subsets


def _good_pairs(s: DataSettings, root: Path, subsets: Optional[list[str]]) -> tuple[list[Pair], int]:
    """The training pairs that decode and match, and how many were left out (only with ``skip_bad``)."""
    good, problems = split_good_pairs(root, subsets)
    if not problems:
        return good, 0
    listing = "; ".join(str(p) for p in problems[:10]) + (" ..." if len(problems) > 10 else "")
    if not s.skip_bad:
        raise IS5NetError(
            f"{len(problems)} problem(s) in {root} (run `is5net check-data {root}`; "
            f"--skip-bad trains on the rest): {listing}"
        )
    skipped = len(find_pairs(root, subsets)) - len(good)
    log.warning("skipping %d bad pair(s) (--skip-bad): %s", skipped, listing)
    return good, skipped


def _validation_split(
    s: DataSettings, root: Path, val_subsets: Optional[list[str]], good: list[Pair]
) -> tuple[list[Pair], list[Pair]]:
    """``(training pairs, validation pairs)``: ``--val``, else DIS-VD, else ``val_fraction`` of ``good``."""
    if s.val is not None:
        val_pairs, problems = split_good_pairs(Path(s.val))
        if problems and not s.skip_bad:
            raise IS5NetError(f"{len(problems)} problem(s) in --val {s.val}: {'; '.join(str(p) for p in problems[:5])}")
        return good, val_pairs
    if val_subsets:
        val_pairs, problems = split_good_pairs(root, val_subsets)
        if problems and not s.skip_bad:
            raise IS5NetError(f"{len(problems)} problem(s) in DIS-VD: {'; '.join(str(p) for p in problems[:5])}")
        return good, val_pairs
    if s.val_fraction > 0:
        order = np.random.default_rng([s.seed, 7]).permutation(len(good))
        n_val = max(1, int(round(len(good) * s.val_fraction)))
        val_idx = set(order[:n_val].tolist())
        return [p for i, p in enumerate(good) if i not in val_idx], [p for i, p in enumerate(good) if i in val_idx]
    return good, []


# ----------------------------------------------------------------------------------------- samples
def _samples(s: DataSettings, root: Path, good: list[Pair], val_pairs: list[Pair], five: bool) -> _Samples:
    """Training samples (enriched, jittered: 5 channels only) and validation samples (whole GTs, tight boxes)."""
    enrich = s.enrich and five and s.coarse_dir is None  # one coarse PNG per stem cannot serve components
    if s.enrich and five and s.coarse_dir is not None:
        log.info("GT enrichment is off with --coarse-dir (one coarse mask per image)")
    jitter = s.jitter if five and s.coarse_dir is None else 0
    train = enumerate_samples(
        good, enrich=enrich, jitter=jitter, min_fraction=s.min_fraction, jitter_fraction=s.jitter_fraction, seed=s.seed
    )
    val = enumerate_samples(val_pairs, enrich=False, jitter=0, seed=s.seed) if val_pairs else []
    if s.val_limit and len(val) > s.val_limit:
        val = val[: s.val_limit]
    if not train:
        raise IS5NetError(f"no training samples in {root}")
    return _Samples(train, val, enrich, jitter)


# ------------------------------------------------------------------------------------ coarse masks
def _coarse_sources(s: DataSettings, root: Path, samples: _Samples):
    """``(training source, validation source)`` of the coarse masks, each checked complete."""
    if s.coarse_dir is not None:
        coarse = val_coarse = CoarseDir(s.coarse_dir)
        hint = val_hint = "expected one PNG per GT stem in DIR/<subset>/ or DIR/"
    else:
        if s.sam_checkpoint is None and s.sam_type != "tiny" and s.stage1 != "sam:tiny":
            raise IS5NetError(
                "IS5Net needs coarse masks: give --stage1-checkpoint (alias --sam-checkpoint; after "
                "`is5net cache-sam`) or --coarse-dir DIR"
            )
        coarse = val_coarse = _sam_cache(s, root)
        hint = val_hint = _cache_sam_command(s, root, _sample_options(s, samples))
        if s.val is not None:
            # `is5net cache-sam --data VAL` caches under VAL by default: look there for --val's masks.
            val_coarse = _sam_cache(s, Path(s.val))
            val_hint = _cache_sam_command(s, Path(s.val), "")
    check_coarse_complete(coarse, samples.train, hint)
    if samples.val:
        check_coarse_complete(val_coarse, samples.val, val_hint)
    return coarse, val_coarse


def _sam_cache(s: DataSettings, data_root: Path) -> CoarseCache:
    from .sam_cache import SamMaskCache, default_cache_dir

    cache_dir = Path(s.cache) if s.cache else default_cache_dir(data_root)
    return CoarseCache(SamMaskCache.for_sam(cache_dir, s.sam_checkpoint, s.sam_type, s.mask_choice, s.stage1))


def _sample_options(s: DataSettings, samples: _Samples) -> str:
    """The ``cache-sam`` options that change which boxes training asks for, so the cached entries are those."""
    options = "" if samples.enrich else " --no-enrich"
    if samples.enrich and s.min_fraction != MIN_COMPONENT_FRACTION:
        options += f" --min-fraction {s.min_fraction:g}"
    if samples.jitter:
        options += f" --jitter {samples.jitter}"
        if s.jitter_fraction != JITTER_FRACTION:
            options += f" --jitter-fraction {s.jitter_fraction:g}"
        if s.seed:
            options += f" --seed {s.seed}"
    return options


def _cache_sam_command(s: DataSettings, data_root: Path, sample_options: str) -> str:
    """What to run first when the cache lacks masks training needs."""
    return (
        f"run `is5net cache-sam --data {data_root}{' --stage1 ' + s.stage1 if s.stage1 != 'sam' else ''}"
        f"{' --sam-checkpoint ' + str(s.sam_checkpoint) if s.sam_checkpoint else ''}"
        f"{' --sam-type ' + s.sam_type if s.sam_type else ''}"
        f"{' --mask-choice ' + s.mask_choice if s.mask_choice != 'first' else ''}"
        f"{' --cache ' + str(s.cache) if s.cache else ''}{sample_options}` first"
    )


# ---------------------------------------------------------------------------------- resized inputs
def make_input_cache(s: DataSettings, root: Path) -> Optional[InputCache]:
    """The resized-input cache ``data_cache`` asks for, or None (off, or ``auto`` on a read-only dataset)."""
    setting = str(s.data_cache).strip()
    if setting.lower() in ("off", "none", "false", ""):
        return None
    directory = root / ".input-cache" if setting.lower() == "auto" else Path(setting)
    cache = InputCache(directory, s.input_size)
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
        probe = cache.root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if setting.lower() == "auto":
            log.warning(
                "no resized-input cache (%s is not writable: %s); set data_cache=DIR to have one",
                directory,
                exc.strerror or exc,
            )
            return None
        raise IS5NetError(f"data_cache={setting}: cannot write there ({exc.strerror or exc})") from None
    return cache


def _prepare_input_cache(*datasets: Optional[RefinerDataset]) -> None:
    t0 = time.perf_counter()
    for ds in datasets:
        if ds is not None:
            ds.prepare_input_cache()
    log.debug("input cache keys in %.1f s", time.perf_counter() - t0)
