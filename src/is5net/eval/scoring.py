"""Scoring: per-image statistics of (prediction, GT) pairs, in worker processes, and folder evaluation.

Dataset numbers are aggregated exactly as ``pysodmetrics`` does over the same images (e.g. maxF is the max
over thresholds of the image-averaged F curve): :mod:`is5net.eval.metrics`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from ..errors import IS5NetError
from ..io import load_mask
from . import metrics as M
from .folders import check_sizes, pair_folders

logger = logging.getLogger(__name__)


def _score_pair(task: tuple[str, str, str, tuple[str, ...]]) -> dict:
    """Worker: load one pair and return its per-image statistics (module level, so spawn can pickle it)."""
    stem, pred_path, gt_path, metrics = task
    pred = load_mask(pred_path)
    gt = load_mask(gt_path)
    if pred.shape != gt.shape:
        raise IS5NetError(
            f"{Path(pred_path).name} is {pred.shape[1]}x{pred.shape[0]} but {Path(gt_path).name} is "
            f"{gt.shape[1]}x{gt.shape[0]} (WxH)"
        )
    return M.compute_image_metrics(pred, gt, metrics)


def _init_worker() -> None:
    try:  # one thread per process: the parallelism is across images
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001 - cv2 is optional here; scoring works without the setting
        logger.debug("could not limit OpenCV threads in a worker", exc_info=True)


def score_pairs(
    tasks: Sequence[tuple[str, str, str]],
    metrics: M.MetricsArg = None,
    workers: int = 1,
    progress: bool = True,
    desc: str = "eval",
) -> list[dict]:
    """Per-image statistics for ``(stem, pred_path, gt_path)`` tasks, in task order.

    ``workers > 1`` scores in that many spawned processes (``0`` = one per CPU core). Reusable by dataset mode.
    """
    keys = M.resolve_metrics(metrics)
    jobs = [(stem, str(p), str(g), keys) for stem, p, g in tasks]
    if workers is None or workers <= 0:
        workers = os.cpu_count() or 1
    workers = max(1, min(int(workers), len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=None if progress else True, leave=False)
    try:
        if workers == 1:
            out = []
            for job in jobs:
                out.append(_score_pair(job))
                bar.update(1)
            return out
        chunksize = max(1, min(16, len(jobs) // (workers * 8)))
        ex = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )
        try:
            out = []
            for stats in ex.map(_score_pair, jobs, chunksize=chunksize):
                out.append(stats)
                bar.update(1)
        except BaseException:
            ex.shutdown(wait=True, cancel_futures=True)
            raise
        ex.shutdown(wait=True)
        return out
    finally:
        bar.close()


def evaluate_folders(
    pred_dir,
    gt_dir,
    metrics: M.MetricsArg = None,
    workers: int = 1,
    allow_missing: bool = False,
    progress: bool = False,
) -> tuple[dict, list[dict]]:
    """Score every prediction in ``pred_dir`` against the GT of the same stem in ``gt_dir``.

    Returns ``(summary, per_image_rows)``: ``summary`` maps each metric key to its dataset value (aggregated as
    ``pysodmetrics`` does), plus ``n`` (pairs scored), ``missing_pred`` (GT masks without a prediction) and
    ``missing_gt`` (predictions without a GT), the last two non-zero only with ``allow_missing``.
    ``per_image_rows`` holds, per pair in stem order, ``stem``, ``pred``, ``gt`` (paths) and that image's own
    numbers (:func:`is5net.metrics.image_summary`).

    Raises :class:`IS5NetError` for unpaired files (unless ``allow_missing``), a size mismatch, an unreadable
    mask, or no pairs at all.
    """
    keys = M.resolve_metrics(metrics)
    pairs, no_pred, no_gt = pair_folders(pred_dir, gt_dir, allow_missing=allow_missing)
    check_sizes(pairs)
    stats = score_pairs(pairs, keys, workers=workers, progress=progress)
    summary = M.aggregate(stats, keys)
    summary["missing_pred"] = len(no_pred)
    summary["missing_gt"] = len(no_gt)
    rows = []
    for (stem, pred, gt), s in zip(pairs, stats):
        row: dict = {"stem": stem, "pred": str(pred), "gt": str(gt)}
        row.update(M.image_summary(s, keys))
        rows.append(row)
    return summary, rows
