"""The on-disk cache of stage-1 masks for training, and ``is5net cache-sam`` to fill it.

Compute the stage-1 mask of every training sample's (image, box) once, before training: a frozen SAM (or
HQ-SAM, SAM 2: any family of docs/stage1.md), the reference call (``multimask_output=True``, ``masks[0]``
by default; HQ-SAM's HQ token), one image embedding per image and all its boxes in batched decoder calls.
Resumable (entries already there are skipped), and sharded across processes by ``torchrun``.

Usage::

    is5net cache-sam --data DIS5K --sam-checkpoint vit_l                       # one process
    is5net cache-sam --data DIS5K --stage1 hq-sam --stage1-checkpoint sam_hq_vit_l
    torchrun --standalone --nproc_per_node 8 -m is5net.cli cache-sam --data DIS5K --sam-checkpoint vit_l

Cache key and layout
--------------------
An entry is keyed by everything its pixels depend on, so nothing stale is ever reused:

- the image's **content** hash: sha256 of the file's bytes, first 16 hex digits (a changed image, even
  under the same name, is a new key; a renamed or copied one is not);
- the **box** ``x0, y0, x1, y1`` (ints, exclusive end: :mod:`is5net.data.samples`);
- the **stage-1 family** (``sam``, ``hq-sam``, ``sam2``) and the **weights** hash: sha256 of the checkpoint
  file, first 16 hex digits (for the random ``tiny`` test SAM, made with no checkpoint, a hash of its state
  dict: :func:`state_dict_hash`). A checkpoint holds one type of one family, so the weights fix the type;
  the family is named in the folder all the same, so HQ-SAM's or SAM 2's masks of a dataset are never
  taken for SAM's (SAM's folders keep their old names, so existing caches stay valid);
- the **mask choice**: ``first`` (``masks[0]``, the reference) or ``best`` (highest predicted IoU).

Layout::

    CACHE_DIR/<sam_hash>_<mask_choice>/info.json                      what SAM made these (for people)
    CACHE_DIR/<sam_hash>_<mask_choice>/<image_hash>/<x0>_<y0>_<x1>_<y1>.png
    CACHE_DIR/<family>-<weights_hash>_<mask_choice>/...               hq-sam, sam2: the same inside

Each PNG is the mask at the image's original size (as displayed, EXIF applied), 8-bit grayscale 0/255.
SAM's predicted IoU of the kept mask is stored in the same file, as the PNG text chunk ``sam_score``
(:meth:`SamMaskCache.get_with_score`), so mask and score can never disagree. Every file is written
atomically (a temporary file renamed over the target): an interrupted run leaves complete entries only,
and a rerun computes just what is missing. The default ``CACHE_DIR`` is ``ROOT/.sam-cache``.

The image is resized for SAM as ``SamPredictor.set_image`` does (Pillow, on the CPU, ``resize="pil"`` of
:class:`~is5net.inference.stage1.SamStage`) whatever the device, so that masks do not depend on where they were
computed.
"""

from __future__ import annotations

import hashlib
import io as _io
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
from PIL import Image, PngImagePlugin

from ..contract import binary_mask, tight_box
from ..defaults import DEFAULT_CACHE_NAME, JITTER_FRACTION, MIN_COMPONENT_FRACTION
from ..distributed import ProcessGroup
from ..errors import IS5NetError
from ..inference.stage1 import FAMILIES, MASK_CHOICES, SAM_TYPES, choose_stage1
from ..io import atomic_write_bytes, atomic_write_text, load_image, load_mask, mask_to_uint8
from .pairs import Pair, find_pairs
from .samples import Sample, pair_samples

log = logging.getLogger("is5net")

PathLike = Union[str, os.PathLike]
Box = tuple[int, int, int, int]

HASH_LEN = 16
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
# Seed of the random tiny test SAM when no checkpoint is given (every process builds the same one).


# ------------------------------------------------------------------------------------------ hashing
_hash_memo: dict[tuple, str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: PathLike) -> str:
    """The sha256 of a file's bytes (64 hex digits).

    Memoised within the process per (real path, device, inode, size, mtime, ctime), so asking again for
    an unchanged file costs one ``stat``; any rewrite of the file is hashed afresh.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise IS5NetError(f"{path}: no such file") from None
    key = (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _hash_lock:
        found = _hash_memo.get(key)
    if found is not None:
        return found
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_memo[key] = digest
    return digest


def image_hash(path: PathLike) -> str:
    """The cache key of an image file: the first 16 hex digits of the sha256 of its bytes."""
    return file_sha256(path)[:HASH_LEN]


def sam_checkpoint_hash(path: PathLike) -> str:
    """The cache key of a SAM checkpoint file: the first 16 hex digits of the sha256 of its bytes."""
    return file_sha256(path)[:HASH_LEN]


def state_dict_hash(state_dict: dict) -> str:
    """16 hex digits over a state dict's sorted names, dtypes, shapes and values (for SAMs with no file)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:HASH_LEN]


def sam_hash(sam_checkpoint: Optional[PathLike] = None, sam_type: Optional[str] = None, stage1: str = "sam") -> str:
    """The weights part of the cache key: the checkpoint file's hash, or for ``tiny`` with no checkpoint the
    hash of the seeded random tiny SAM's state dict. ``sam_checkpoint`` may be a name under IS5NET_HOME."""
    source = choose_stage1(stage1, sam_checkpoint, sam_type, coarse_option=None, offered=tuple(FAMILIES))
    if source.checkpoint is None:
        return state_dict_hash(source.load_sam().state_dict())
    return sam_checkpoint_hash(source.checkpoint)


def default_cache_dir(root: PathLike) -> Path:
    """``ROOT/.sam-cache``."""
    return Path(root) / DEFAULT_CACHE_NAME


def _norm_box(box: Sequence) -> Box:
    vals = [float(v) for v in box]
    if len(vals) != 4 or not all(v.is_integer() for v in vals):
        raise ValueError(f"cache boxes are four integers x0,y0,x1,y1, got {list(box)!r}")
    x0, y0, x1, y1 = (int(v) for v in vals)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {(x0, y0, x1, y1)} is empty")
    return x0, y0, x1, y1


# -------------------------------------------------------------------------------------------- cache
class SamMaskCache:
    """The masks of one SAM (``sam_hash``) with one ``mask_choice``, under ``cache_dir`` (module docstring).

    ``image`` arguments are an image file path (``Path``, or a ``str`` that is not 16 hex digits; its
    content hash is computed and memoised) or an image hash as given by :func:`image_hash`.
    Masks are ``HxW`` uint8 0/255 at the image's original size.
    """

    def __init__(self, cache_dir: PathLike, sam_hash: str, mask_choice: str = "first", family: str = "sam"):
        if mask_choice not in MASK_CHOICES:
            raise IS5NetError(f"mask choice {mask_choice!r}: choose one of {', '.join(MASK_CHOICES)}")
        if not re.fullmatch(r"[0-9a-f]+", str(sam_hash)):
            raise ValueError(f"sam_hash must be hex digits, got {sam_hash!r}")
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
        self.cache_dir = Path(cache_dir)
        self.sam_hash = str(sam_hash)
        self.mask_choice = mask_choice
        self.family = family
        prefix = "" if family == "sam" else f"{family}-"  # SAM's folders keep their names (module docstring)
        self.root = self.cache_dir / f"{prefix}{self.sam_hash}_{mask_choice}"

    @classmethod
    def for_sam(
        cls,
        cache_dir: PathLike,
        sam_checkpoint: Optional[PathLike] = None,
        sam_type: Optional[str] = None,
        mask_choice: str = "first",
        stage1: str = "sam",
    ) -> "SamMaskCache":
        """The cache of the ``stage1`` model (a name: ``sam``, ``hq-sam:vit_b``, ...) in ``sam_checkpoint``
        (path or IS5NET_HOME name; None only for SAM's ``tiny``)."""
        family = stage1.partition(":")[0]
        return cls(
            cache_dir, sam_hash(sam_checkpoint, sam_type, stage1), mask_choice, family if family in FAMILIES else "sam"
        )

    def __repr__(self) -> str:
        return f"SamMaskCache({str(self.root)!r})"

    @staticmethod
    def image_key(image: Union[PathLike, str]) -> str:
        if isinstance(image, str) and _HEX16.match(image):
            return image
        return image_hash(image)

    def path(self, image_hash: str, box: Sequence[int]) -> Path:
        """Where the entry of (image hash, box) lives (whether or not it exists)."""
        if not _HEX16.match(str(image_hash)):
            raise ValueError(f"image_hash must be 16 hex digits, got {image_hash!r}")
        x0, y0, x1, y1 = _norm_box(box)
        return self.root / image_hash / f"{x0}_{y0}_{x1}_{y1}.png"

    def sample_path(self, sample: Sample) -> Path:
        return self.path(self.image_key(sample.pair.image), sample.box)

    def has(self, image: Union[PathLike, str], box: Sequence[int]) -> bool:
        return self.path(self.image_key(image), box).is_file()

    def get_with_score(
        self, image: Union[PathLike, str], box: Sequence[int]
    ) -> Optional[tuple[np.ndarray, Optional[float]]]:
        """``(mask, score)`` (mask ``HxW`` uint8 0/255; score SAM's predicted IoU or None), or None if absent.

        An unreadable entry (damaged by hand, since writes are atomic) counts as absent, with a warning.
        """
        p = self.path(self.image_key(image), box)
        try:
            with Image.open(p) as img:
                img.load()
                score_text = (getattr(img, "text", None) or {}).get("sam_score")
                arr = np.asarray(img.convert("L") if img.mode != "L" else img, dtype=np.uint8).copy()
        except FileNotFoundError:
            return None
        except (OSError, SyntaxError, ValueError) as exc:
            log.warning("%s: unreadable cache entry, ignored (%s)", p, exc)
            return None
        try:
            score = float(score_text) if score_text is not None else None
        except ValueError:
            score = None
        return arr, score

    def get(self, image: Union[PathLike, str], box: Sequence[int]) -> Optional[np.ndarray]:
        """The cached mask (``HxW`` uint8 0/255) of (image, box), or None if it is not cached."""
        found = self.get_with_score(image, box)
        return None if found is None else found[0]

    def get_sample(self, sample: Sample) -> Optional[np.ndarray]:
        return self.get(sample.pair.image, sample.box)

    def put(
        self, image: Union[PathLike, str], box: Sequence[int], mask: np.ndarray, score: Optional[float] = None
    ) -> Path:
        """Store ``mask`` (``HxW``: bool, 0/1, 0/255 or float in [0, 1]; stored as 0/255) atomically."""
        p = self.path(self.image_key(image), box)
        m = mask_to_uint8(mask)
        m = binary_mask(m).astype(np.uint8) * 255
        info = PngImagePlugin.PngInfo()
        if score is not None:
            info.add_text("sam_score", repr(float(score)))
        buf = _io.BytesIO()
        Image.fromarray(m, mode="L").save(buf, format="PNG", pnginfo=info)
        atomic_write_bytes(p, buf.getvalue())
        return p

    def missing(self, samples: Iterable[Sample]) -> list[Sample]:
        """The samples whose (image, box) entry is not in the cache, in the given order."""
        return [s for s in samples if not self.sample_path(s).is_file()]

    def write_info(self, **fields) -> None:
        """Write ``info.json`` (which SAM, which mask choice) once, for people browsing the cache."""
        p = self.root / "info.json"
        if p.exists():
            return
        data = {
            "sam_hash": self.sam_hash,
            "mask_choice": self.mask_choice,
            "mask": "uint8 0/255 PNG, original size",
            "score": "PNG text chunk sam_score (SAM's predicted IoU)",
            **fields,
        }
        atomic_write_text(p, json.dumps(data, indent=2) + "\n")


# -------------------------------------------------------------------------------------- distributed
class _Dist(ProcessGroup):
    """torchrun sharding, or sharding by hand outside torchrun (``rank`` of ``world_size``)."""

    def __init__(self, rank: int, world_size: int, device):
        super().__init__(device)
        if not self.active:
            if world_size < 1 or not 0 <= rank < world_size:
                raise IS5NetError(f"rank {rank} / world size {world_size}: need 0 <= rank < world_size")
            self.rank, self.world_size = int(rank), int(world_size)


# --------------------------------------------------------------------------------------- cache_sam
_COUNTS = ("pairs", "images", "samples", "entries", "computed", "reused", "skipped", "empty")


def cache_sam(
    root: PathLike,
    sam_checkpoint: Optional[PathLike] = None,
    sam_type: Optional[str] = None,
    cache_dir: Optional[PathLike] = None,
    subsets: Optional[Sequence[str]] = None,
    mask_choice: str = "first",
    jitter: int = 0,
    enrich: bool = True,
    device=None,
    batch_boxes: int = 16,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    min_fraction: float = MIN_COMPONENT_FRACTION,
    jitter_fraction: float = JITTER_FRACTION,
    seed: int = 0,
    stage1: str = "sam",
) -> dict:
    """Fill the stage-1 mask cache for every sample of the dataset at ``root``; return counts.

    ``stage1``: the stage-1 name (``sam``, ``hq-sam``, ``sam2:tiny``, ...: docs/stage1.md) whose model in
    ``sam_checkpoint`` makes the masks.

    Samples are those of :func:`~is5net.data.samples.enumerate_samples` with the same ``enrich``,
    ``jitter``, ``min_fraction``, ``jitter_fraction`` and ``seed`` (training must use the same values to
    find its masks), plus the tight box of each whole GT (what validation and evaluation prompt with, even
    where enrichment replaced the whole mask by its lone component). Per image: its entries already cached are reused; if any is missing, the image is
    embedded once and the missing boxes go through SAM ``batch_boxes`` at a time.

    Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the process group is initialised here (gloo
    on the CPU, NCCL on CUDA with the device from ``LOCAL_RANK``) unless it already is, and images are
    sharded ``pairs[rank::world_size]``; otherwise ``rank``/``world_size`` shard by hand (separate jobs).
    Pairs whose GT or image cannot be read, or whose sizes differ, are skipped with a warning (run
    ``is5net check-data``); empty GTs give no sample.

    Returns a dict: ``pairs``, ``images`` (embedded), ``samples``, ``entries`` (distinct (image, box)),
    ``computed``, ``reused``, ``skipped`` (pairs), ``empty`` (pairs with an empty GT), summed over all
    processes; plus ``cache`` (the cache's folder), ``rank`` and ``world_size``.
    """
    from ..runtime import resolve_device

    _check_options(mask_choice, sam_type, batch_boxes, jitter)
    root = Path(root)
    pairs = find_pairs(root, subsets)  # checks the layout before any process group is made
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
    dist = _Dist(rank, world_size, resolve_device(device))
    try:
        stage, cache = _open_cache(dist, stage1, sam_checkpoint, sam_type, cache_dir, mask_choice)
        mine = pairs[dist.rank :: dist.world_size]
        options = dict(
            enrich=enrich, jitter=jitter, min_fraction=min_fraction, jitter_fraction=jitter_fraction, seed=seed
        )
        counts = _cache_pairs(mine, stage, cache, batch_boxes, options, progress and dist.rank == 0, dist.world_size)
        totals = dict(zip(_COUNTS, dist.sum([counts[k] for k in _COUNTS])))
        dist.barrier()
        totals.update(cache=str(cache.root), rank=dist.rank, world_size=dist.world_size)
        return totals
    finally:
        dist.close()


def _check_options(mask_choice: str, sam_type: Optional[str], batch_boxes: int, jitter: int) -> None:
    if mask_choice not in MASK_CHOICES:
        raise IS5NetError(f"mask choice {mask_choice!r}: choose one of {', '.join(MASK_CHOICES)}")
    if sam_type is not None and not any(sam_type in f.types for f in FAMILIES.values()):
        raise IS5NetError(f"unknown SAM type {sam_type!r}; choose one of {', '.join(SAM_TYPES)}")
    if batch_boxes < 1:
        raise IS5NetError(f"batch_boxes must be >= 1, got {batch_boxes}")
    if jitter < 0:
        raise IS5NetError(f"jitter must be >= 0, got {jitter}")


def _open_cache(dist: ProcessGroup, stage1: str, sam_checkpoint, sam_type, cache_dir: Path, mask_choice: str):
    """``(stage, cache)``: the stage-1 model on this process's device, and the cache of its masks
    (``info.json`` written by rank 0)."""
    source = choose_stage1(stage1, sam_checkpoint, sam_type, coarse_option=None, offered=tuple(FAMILIES))
    stage = source.build(dist.device, mask_choice, resize="pil")
    model = stage.model
    if source.checkpoint is None:
        s_hash, sam_desc = state_dict_hash(model.state_dict()), source.describe()
    else:
        s_hash, sam_desc = sam_checkpoint_hash(source.checkpoint), source.checkpoint.name
    cache = SamMaskCache(cache_dir, s_hash, mask_choice, source.method)
    if dist.rank == 0:
        cache.write_info(sam=sam_desc, sam_type=getattr(model, "sam_type", sam_type), family=source.method)
    return stage, cache


def _cache_pairs(
    pairs: list[Pair], stage, cache: SamMaskCache, batch_boxes: int, options: dict, progress: bool, world_size: int
) -> dict:
    """Cache the masks of ``pairs`` (this process's share); their counts."""
    counts = dict.fromkeys(_COUNTS, 0)
    counts["pairs"] = len(pairs)
    bar = None
    if progress:
        from tqdm import tqdm

        desc = f"cache-sam{' (rank 0)' if world_size > 1 else ''}"
        bar = tqdm(total=len(pairs), desc=desc, unit="img", dynamic_ncols=True)
    for pair in pairs:
        _cache_pair(pair, stage, cache, counts, batch_boxes, options)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(computed=counts["computed"], reused=counts["reused"], refresh=False)
    if bar is not None:
        bar.close()
    return counts


def cache_summary(stats: dict) -> str:
    """The one line ``is5net cache-sam`` ends on: what :func:`cache_sam` cached, computed and reused, and where."""
    extra = ""
    if stats["skipped"] or stats["empty"]:
        extra = f"; {stats['skipped']} pair(s) skipped, {stats['empty']} empty GT(s) (see is5net check-data)"
    return (
        f"cache-sam: {stats['entries']} masks for {stats['samples']} samples of {stats['pairs']} pairs: "
        f"{stats['computed']} computed, {stats['reused']} reused{extra} -> {stats['cache']}"
        + (f" ({stats['world_size']} processes)" if stats["world_size"] > 1 else "")
    )


def _cache_pair(pair: Pair, stage, cache: SamMaskCache, counts: dict, batch_boxes: int, options: dict) -> None:
    try:
        gt = load_mask(pair.gt)
    except IS5NetError as exc:
        log.warning("skipped %s: %s", pair.stem, exc)
        counts["skipped"] += 1
        return
    samples = pair_samples(pair, gt, **options)
    if not samples:
        log.warning("%s: empty GT (no pixel > 127): no sample", pair.gt)
        counts["empty"] += 1
        return
    counts["samples"] += len(samples)
    ihash = image_hash(pair.image)
    # Plus the tight box of the whole GT, unjittered: the prompt of validation and of `is5net eval`, which
    # enrichment drops when a lone component stands in for the whole mask.
    boxes = list(dict.fromkeys([s.box for s in samples] + [tight_box(gt)]))
    counts["entries"] += len(boxes)
    todo = [b for b in boxes if not cache.path(ihash, b).is_file()]
    counts["reused"] += len(boxes) - len(todo)
    if not todo:
        return
    try:
        rgb = load_image(pair.image, gt.shape[:2])
    except IS5NetError as exc:
        log.warning("skipped %s: %s", pair.stem, exc)
        counts["skipped"] += 1
        counts["entries"] -= len(todo)
        return
    if rgb.shape[:2] != gt.shape[:2]:
        log.warning(
            "skipped %s: image is %dx%d but GT %dx%d (WxH)",
            pair.stem,
            rgb.shape[1],
            rgb.shape[0],
            gt.shape[1],
            gt.shape[0],
        )
        counts["skipped"] += 1
        counts["entries"] -= len(todo)
        return
    stage.set_image(rgb)
    counts["images"] += 1
    for i in range(0, len(todo), batch_boxes):
        chunk = todo[i : i + batch_boxes]
        masks, scores = stage.predict(np.asarray(chunk, dtype=np.float32))
        masks_np = masks.to("cpu").numpy()
        for box, m, s in zip(chunk, masks_np, scores.tolist()):
            cache.put(ihash, box, m, s)
            counts["computed"] += 1
