"""The server's model side: one inference worker, a bounded queue, and the LRU cache of image embeddings.

Everything that touches a model, decodes an image or encodes a PNG runs in **one** worker thread, off the
event loop: so ``/api/health`` and the page's files answer while a long request runs, the models see one
request at a time (they are not thread-safe, and the device is one), and memory holds at most one image
being decoded besides the cache. A request waits for the worker at most ``timeout`` seconds (503 after);
when ``queue`` requests are already waiting or running, a new one is refused at once (429, Retry-After).

The cache keeps, per uploaded image (keyed by the SHA-256 of the file's bytes), a predictor whose image is
set: SAM's embedding and the resized RGB input. A second box on the same photo then costs SAM's decoder and
the refiner only. Entries are dropped least recently used first once their total size passes ``cache_bytes``
(the newest entry is always kept: a cache that could not hold one image would make ``/api/images`` useless).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import math
import threading
import time
import warnings
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..contract import binary_mask, check_mask_size
from ..errors import IS5NetError
from ..inference.boxes import validate_box, validate_clicks
from ..inference.outputs import cutout_rgba, mask_uint8, union_uint8
from ..inference.predictor import IS5NetPredictor, Prediction, PredictorOptions, build_predictor, stage1_predict
from ..io import encode_png, image_file_problem, load_image, load_mask
from .errors import ApiError
from .stopping import ServerStopping, Stopping

log = logging.getLogger("is5net.serve")

FORMATS = ("png", "cutout", "json")
MAX_BOXES = 64  # per request: each box is a refiner pass


# ------------------------------------------------------------------------------------- what is served
@dataclass
class Models:
    """What ``is5net serve`` loaded: the refiner (None: serve the stage-1 mask), how to make a stage 1, labels."""

    refiner: Optional[nn.Module]
    make_stage: Callable[[], Any]  # a fresh stage-1 object (SamStage or GrabCutStage) per cached image
    device: torch.device
    precision: str = "fp32"
    backend: str = "auto"  # the refiner's runtime, chosen as `is5net predict` chooses it
    regions: dict = field(default_factory=dict)  # region, margin, max_side, tile_scale: IS5NetPredictor's
    stage1: dict = field(default_factory=dict)  # name, detail (shown by /api/health and the page)
    refiner_info: dict = field(default_factory=dict)  # name, detail, synthetic_only, note
    calibration: Any = None  # --precision int8: the calibration set (is5net.inference.quantize)


class StageOnly:
    """``--refiner none``: the stage-1 mask is the answer (as 0/1 soft map, so it saves as 0/255)."""

    def __init__(self, stage: Any):
        self.sam_stage = stage
        self.original_size: Optional[tuple[int, int]] = None
        self._rgb: Optional[np.ndarray] = None

    def set_image(self, rgb: np.ndarray) -> None:
        self.sam_stage.set_image(rgb)
        self._rgb = rgb
        self.original_size = rgb.shape[:2]

    @torch.inference_mode()
    def predict_batch(self, boxes, coarse_masks=None, region=None, points=None, point_labels=None) -> list[Prediction]:
        """As :meth:`IS5NetPredictor.predict_batch`; ``region`` is the refiner's, so it is ignored here."""
        h, w = self.original_size
        checked = [validate_box(b, w, h) for b in boxes]
        clicks = validate_clicks(points, point_labels, len(checked), w, h)
        if clicks is not None and coarse_masks is not None:
            raise IS5NetError("clicks prompt stage 1, and a given coarse mask takes its place: give one or the other")
        if coarse_masks is not None:
            masks, scores = [binary_mask(m) for m in coarse_masks], [None] * len(checked)
        else:
            masks_t, scores_t = stage1_predict(self.sam_stage, np.stack(checked), clicks)
            masks = list(masks_t.cpu().numpy().astype(bool))
            scores = [None] * len(checked) if scores_t is None else [float(s) for s in scores_t.cpu()]
        preds = [Prediction(m.astype(np.float32), m, s, b.tolist()) for m, s, b in zip(masks, scores, checked)]
        for pred, c in zip(preds, clicks or ()):
            if c is not None:
                pred.points, pred.point_labels = c[0].tolist(), c[1].tolist()
        return preds


class Segmenter:
    """Makes one image-bound predictor per image, all sharing the loaded models (worker thread only)."""

    def __init__(self, models: Models):
        self.models = models
        self._base: Optional[IS5NetPredictor] = None
        if models.refiner is not None:
            # Built once (BatchNorm folded, moved to the device); each image gets a shallow copy of it with its
            # own stage 1, so an image's state (embedding, resized RGB) lives in its copy, in the cache.
            options = PredictorOptions(
                device=models.device,
                precision=models.precision,
                backend=models.backend,
                calibration=models.calibration,
                **models.regions,
            )
            self._base = build_predictor(models.refiner, models.make_stage(), options)
            models.refiner_info["region"] = self._base.region
            models.refiner_info["runtime"] = str(self._base.backend)
        self.encoder_runs = 0  # stage-1 image embeddings computed (what the cache saves)

    def new_predictor(self, rgb: np.ndarray):
        if self._base is None:
            predictor: Any = StageOnly(self.models.make_stage())
        else:
            predictor = copy.copy(self._base)
            predictor.sam_stage = self.models.make_stage()
        predictor.set_image(rgb)
        self.encoder_runs += 1
        return predictor

    def held_bytes(self, predictor) -> int:
        """Bytes of the arrays and tensors an image-bound predictor holds beyond the shared models.

        Buffers are counted once by their memory address: the predictor's uint8 image and a CPU tensor made
        from it with ``torch.from_numpy`` are one buffer.
        """
        shared = {_buffer(v)[0] for v in vars(self._base).values()} if self._base is not None else set()
        seen: dict[int, int] = {}
        for obj in (predictor, predictor.sam_stage, getattr(predictor.sam_stage, "predictor", None)):
            for value in vars(obj).values() if obj is not None else ():
                ptr, size = _buffer(value)
                if ptr and ptr not in shared:
                    seen[ptr] = max(seen.get(ptr, 0), size)
        return sum(seen.values())


def _buffer(value) -> tuple[int, int]:
    """(address, bytes) of the memory behind a tensor or an array; (0, 0) for anything else."""
    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    if isinstance(value, np.ndarray):
        base = value
        while isinstance(base.base, np.ndarray):
            base = base.base
        return base.__array_interface__["data"][0], base.nbytes
    return 0, 0


@dataclass
class ImageEntry:
    id: str
    rgb: np.ndarray
    predictor: Any
    nbytes: int

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


class ImageCache:
    """LRU of :class:`ImageEntry` by content hash, within ``limit`` bytes (thread-safe)."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self._entries: OrderedDict[str, ImageEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: str) -> Optional[ImageEntry]:
        """The entry of ``key`` (now the most recently used), or None; a hit is counted (a miss by the loader)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
            return entry

    def put(self, entry: ImageEntry) -> None:
        with self._lock:
            self._entries[entry.id] = entry
            self._entries.move_to_end(entry.id)
            while len(self._entries) > 1 and self._bytes() > self.limit:
                old, _ = self._entries.popitem(last=False)
                self.evictions += 1
                log.debug("cache: evicted image %s", old[:12])

    def _bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def stats(self) -> dict:
        with self._lock:
            return {
                "images": len(self._entries),
                "bytes": self._bytes(),
                "limit_bytes": self.limit,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }


# --------------------------------------------------------------------------------------------- engine
@dataclass
class Limits:
    max_upload_bytes: int
    max_pixels: int
    cache_bytes: int
    queue: int
    timeout_s: float
    max_uploads: int = 16  # request bodies being received at once (each may hold max_upload_bytes on disk)
    upload_timeout_s: float = 120.0  # the longest a request body may take to arrive


class Engine:
    """The worker, the queue bound, the cache; the HTTP layer (``app.py``) calls its async methods."""

    def __init__(self, models: Models, limits: Limits, tmp_dir: Path):
        self.models = models
        self.limits = limits
        self.tmp_dir = tmp_dir
        self.segmenter = Segmenter(models)
        self.cache = ImageCache(limits.cache_bytes)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="is5net-infer")
        self._lock = threading.Lock()
        self._pending = 0  # requests waiting for or holding the worker
        self._job_seconds = 1.0  # running mean of a job's time, for Retry-After
        self.stopping = Stopping()
        # Pillow refuses images over twice its own limit before any size check of ours could answer; let it
        # go up to ours (only ever raised, as io.py does), so the limit the user set is the one that counts.
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limits.max_pixels:
            Image.MAX_IMAGE_PIXELS = limits.max_pixels

    @property
    def pending(self) -> int:
        return self._pending

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def run(self, fn: Callable, *args) -> Any:
        """Run ``fn(*args)`` in the worker; 429 when the queue is full, 503 after the request timeout."""
        with self._lock:
            if self._pending >= self.limits.queue:
                retry = max(1, math.ceil(self._job_seconds * self._pending))
                raise ApiError(
                    429,
                    f"busy: {self._pending} requests are queued (--queue {self.limits.queue}); retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                )
            self._pending += 1
        submitted = time.perf_counter()
        future: Future = self._executor.submit(self._timed, fn, args, submitted)
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(self._wait(future), timeout=self.limits.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # a job not started yet never runs; a running one finishes, unanswered
            retry = max(1, math.ceil(self._job_seconds * max(1, self._pending)))
            raise ApiError(
                503,
                f"the request took longer than the server's timeout of {self.limits.timeout_s:g} s (--timeout)",
                headers={"Retry-After": str(retry)},
            ) from None

    async def _wait(self, future: Future) -> Any:
        """The job's result; if the server stops meanwhile, a job not started is dropped (503 at once) and a
        running one has until the end of the grace (:mod:`.stopping`)."""
        try:
            return await self.stopping.race(asyncio.wrap_future(future), drop_at_stop=True)
        except ServerStopping:
            if future.cancel() or future.cancelled():
                raise
        return await self.stopping.race(asyncio.wrap_future(future))

    def _timed(self, fn: Callable, args: tuple, submitted: float) -> Any:
        started = time.perf_counter()
        try:
            result = fn(*args)
        finally:
            took = time.perf_counter() - started
            self._job_seconds = 0.8 * self._job_seconds + 0.2 * took
        if isinstance(result, dict) and "timings_ms" in result:
            result["timings_ms"]["queue"] = round((started - submitted) * 1000, 2)
        return result

    def _done(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    # ------------------------------------------------------------------------------ jobs (worker thread)
    def load(self, path: Path, digest: str, filename: str) -> dict:
        """The cached entry of an uploaded image (decoding it and computing its embedding on a miss)."""
        timings: dict[str, float] = {}
        entry = self.cache.get(digest)
        if entry is not None:
            return {"entry": entry, "cached": True, "timings_ms": timings}
        self.cache.misses += 1  # only the worker thread writes it
        t0 = time.perf_counter()
        rgb = self._decode(path, filename)
        t1 = time.perf_counter()
        predictor = self.segmenter.new_predictor(rgb)
        t2 = time.perf_counter()
        entry = ImageEntry(digest, rgb, predictor, self.segmenter.held_bytes(predictor))
        self.cache.put(entry)
        timings.update(decode=round((t1 - t0) * 1000, 2), embed=round((t2 - t1) * 1000, 2))
        return {"entry": entry, "cached": False, "timings_ms": timings}

    def _decode(self, path: Path, filename: str) -> np.ndarray:
        """The upload as HxWx3 uint8 (EXIF applied) or the error for the client: 415, 413 or 422."""
        if image_file_problem(path) is not None:
            raise ApiError(415, f"{filename}: not an image this server can read (JPEG, PNG, WebP, TIFF, BMP, ...)")
        limit = self.limits.max_pixels
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    width, height = img.size
        except Image.DecompressionBombError:
            width = height = None
        if width is None or width * height > limit:
            size = "too many pixels" if width is None else f"{width}x{height} = {width * height:,} pixels"
            raise ApiError(413, f"{filename}: {size}, over the server's limit of {limit:,} (--max-pixels)")
        try:
            return load_image(path, max_pixels=limit)
        except IS5NetError as exc:
            raise ApiError(422, str(exc).replace(str(path), filename)) from None

    def segment(
        self,
        entry: ImageEntry,
        boxes: list,
        threshold,
        fmt: str,
        coarse: Optional[tuple[Path, str]] = None,
        timings: Optional[dict] = None,
        region: Optional[str] = None,
        clicks: Optional[list] = None,
    ) -> dict:
        """Masks for ``boxes`` of a cached image, as the ``fmt`` answer (PNG bytes or a JSON-able dict).

        ``region``: what the refiner sees (docs/input-contract.md, "Regions"); None: the server's default.
        ``clicks``: one entry per box, ``(points, point_labels)`` or None (:func:`~is5net.inference.boxes.clicks_of_boxes`);
        they prompt stage 1 with the box, on the cached embedding (nothing is encoded again).
        """
        timings = dict(timings or {})
        if clicks is not None and coarse is not None:
            raise ApiError(422, "clicks prompt stage 1, and coarse_mask takes its place: give one or the other")
        coarse_masks = None
        if coarse is not None:
            path, filename = coarse
            if image_file_problem(path) is not None:
                raise ApiError(415, f"{filename}: the coarse mask is not an image this server can read")
            try:
                m = load_mask(path, max_pixels=self.limits.max_pixels)
            except IS5NetError as exc:
                raise ApiError(422, str(exc).replace(str(path), filename)) from None
            try:
                check_mask_size(m.shape, entry.rgb.shape, f"{filename}: the coarse mask")
            except IS5NetError as exc:
                raise ApiError(422, str(exc)) from None
            coarse_masks = [m] * len(boxes)
        t0 = time.perf_counter()
        points, labels = ([None if c is None else c[i] for c in clicks] for i in (0, 1)) if clicks else (None, None)
        try:
            preds = entry.predictor.predict_batch(
                boxes, coarse_masks, region=region, points=points, point_labels=labels
            )
        except IS5NetError as exc:
            raise ApiError(422, str(exc)) from None
        t1 = time.perf_counter()
        masks = [mask_uint8(p.mask, threshold) for p in preds]  # exactly what `is5net predict` saves
        timings["segment"] = round((t1 - t0) * 1000, 2)
        if fmt == "json":
            out = [
                {"box": p.box, "score": p.sam_score, "mask": base64.b64encode(encode_png(m)).decode("ascii")}
                for p, m in zip(preds, masks)
            ]
            for answer, p in zip(out, preds):
                if p.points is not None:  # the clicks as stage 1 got them
                    answer.update(points=p.points, point_labels=p.point_labels)
            timings["png"] = round((time.perf_counter() - t1) * 1000, 2)
            return {"id": entry.id, "width": entry.width, "height": entry.height, "masks": out, "timings_ms": timings}
        union = union_uint8(masks)
        data = encode_png(union if fmt == "png" else cutout_rgba(entry.rgb, union))
        timings["png"] = round((time.perf_counter() - t1) * 1000, 2)
        return {"png": data, "timings_ms": timings}

    def load_and_segment(
        self,
        path: Path,
        digest: str,
        filename: str,
        boxes: list,
        threshold,
        fmt: str,
        coarse: Optional[tuple[Path, str]],
        region: Optional[str] = None,
        clicks: Optional[list] = None,
    ) -> dict:
        loaded = self.load(path, digest, filename)
        result = self.segment(loaded["entry"], boxes, threshold, fmt, coarse, loaded["timings_ms"], region, clicks)
        result["cached"] = loaded["cached"]
        return result

    # -------------------------------------------------------------------------------------- status
    def health(self) -> dict:
        return {
            "cache": {**self.cache.stats(), "encoder_runs": self.segmenter.encoder_runs},
            "queue": {"pending": self._pending, "limit": self.limits.queue},
        }
