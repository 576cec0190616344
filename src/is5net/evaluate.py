"""Score predicted masks against ground truth with the six DIS metrics (maxFβ, Fβw, M, Sα, Eφm, HCEγ).

Folder mode: ``is5net eval --pred DIR --gt DIR`` pairs the masks of the two folders by file stem (``a.png`` with
``a.jpg`` is a pair), scores every pair and prints a table; ``--json`` / ``--csv`` / ``--per-image`` write the
numbers. A GT without a prediction, a prediction without a GT, or two masks of different sizes is an error
(``--allow-missing`` scores the pairs there are and reports how many were missing).

Dataset mode: ``is5net eval --data DIS5K [--subsets ...] --method ...`` runs a method over DIS5K subsets and
writes the paper's Table I (implemented in :mod:`is5net.eval_dataset`).

The metrics are defined in :mod:`is5net.metrics`; dataset numbers are aggregated exactly as ``pysodmetrics``
does over the same images (e.g. maxF is the max over thresholds of the image-averaged F curve).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import metrics as M
from .errors import IS5NetError
from .io import atomic_write_text, list_images, load_mask, stored_and_displayed_size

logger = logging.getLogger(__name__)

#: Column headings of the Markdown table (the paper's symbols) with the better direction.
LABELS: dict[str, str] = {
    "maxF": "maxFβ ↑",
    "wF": "Fβw ↑",
    "MAE": "M ↓",
    "Sm": "Sα ↑",
    "meanEm": "Eφm ↑",
    "HCE": "HCEγ ↓",
    "meanF": "meanFβ ↑",
    "mIoU": "mIoU ↑",
    "maxEm": "maxEφ ↑",
}

#: Options that belong to dataset mode only.
_DATASET_OPTIONS = (
    "subsets", "method", "checkpoint", "sam_checkpoint", "sam_type", "coarse_dir", "out", "resume", "device"
)

_LIST_MAX = 10


# ---------------------------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> int:
    folder_mode = args.pred is not None or args.gt is not None
    if args.data is not None:
        if folder_mode:
            raise IS5NetError("--data (dataset mode) and --pred/--gt (folder mode) cannot be used together")
        try:
            from . import eval_dataset
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.eval_dataset":
                raise IS5NetError("dataset mode (--data) is not available in this installation") from None
            raise
        return int(eval_dataset.run_dataset(args) or 0)

    if not folder_mode:
        raise IS5NetError("give --pred DIR and --gt DIR to score a folder of masks, or --data DIR to score DIS5K")
    if args.pred is None or args.gt is None:
        raise IS5NetError("--pred and --gt go together: give both folders")
    given = [f"--{name.replace('_', '-')}" for name in _DATASET_OPTIONS if getattr(args, name, None) not in (None, False)]
    if given:
        raise IS5NetError(f"{', '.join(given)} only apply to dataset mode (--data)")

    metrics = M.resolve_metrics(args.metrics)
    outputs = [p for p in (args.json, args.csv, args.per_image) if p]
    _check_outputs(outputs)

    summary, rows = evaluate_folders(
        args.pred, args.gt, metrics=metrics, workers=args.workers, allow_missing=args.allow_missing,
        progress=not args.quiet
    )

    name = Path(args.pred).resolve().name or str(args.pred)
    print(table_markdown({name: summary}, metrics=metrics, show_n=True))
    missing = summary.get("missing_pred", 0) + summary.get("missing_gt", 0)
    if missing:
        logger.warning(
            "scored %d pairs; skipped %d GT mask(s) without a prediction and %d prediction(s) without a GT",
            summary["n"],
            summary.get("missing_pred", 0),
            summary.get("missing_gt", 0),
        )

    if args.json:
        doc = dict(summary)
        doc["pred_dir"] = str(args.pred)
        doc["gt_dir"] = str(args.gt)
        atomic_write_text(args.json, json.dumps(doc, indent=2) + "\n")
    if args.csv:
        atomic_write_text(args.csv, table_csv({name: summary}, metrics=metrics))
    if args.per_image:
        atomic_write_text(args.per_image, per_image_csv(rows, metrics=metrics))
    return 0


def _check_outputs(paths: Sequence[str]) -> None:
    """Fail before the (long) scoring if an output cannot be written."""
    seen = set()
    for p in paths:
        path = Path(p)
        if path.is_dir():
            raise IS5NetError(f"{path}: is a directory, expected an output file name")
        key = os.path.abspath(path)
        if key in seen:
            raise IS5NetError(f"{path}: given for two outputs")
        seen.add(key)


# ------------------------------------------------------------------------------------ folder scoring


def pair_folders(pred_dir, gt_dir, allow_missing: bool = False) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair masks by stem: returns ``(pairs, gt_without_pred, pred_without_gt)``, pairs sorted by stem.

    Unpaired files raise :class:`IS5NetError` (listing them) unless ``allow_missing``.
    """
    preds = list_images(pred_dir)
    gts = list_images(gt_dir)
    no_pred = sorted(set(gts) - set(preds))
    no_gt = sorted(set(preds) - set(gts))
    if (no_pred or no_gt) and not allow_missing:
        parts = []
        if no_pred:
            parts.append(f"{len(no_pred)} GT mask(s) in {gt_dir} have no prediction in {pred_dir}: "
                         + _short_list(gts[s].name for s in no_pred))
        if no_gt:
            parts.append(f"{len(no_gt)} prediction(s) in {pred_dir} have no GT in {gt_dir}: "
                         + _short_list(preds[s].name for s in no_gt))
        raise IS5NetError("; ".join(parts) + " (pairs are matched by file stem; --allow-missing scores the rest)")
    pairs = [(stem, preds[stem], gts[stem]) for stem in sorted(set(preds) & set(gts))]
    if not pairs:
        raise IS5NetError(f"no prediction in {pred_dir} shares a file stem with a GT mask in {gt_dir}")
    return pairs, no_pred, no_gt


def _short_list(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_LIST_MAX])
    return shown + (f", ... and {len(names) - _LIST_MAX} more" if len(names) > _LIST_MAX else "")


def _mask_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), from the header only."""
    try:
        return stored_and_displayed_size(path)[1]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise IS5NetError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def _check_sizes(pairs: Sequence[tuple[str, Path, Path]]) -> None:
    bad = []
    for _, pred, gt in pairs:
        ps, gs = _mask_size(pred), _mask_size(gt)
        if ps != gs:
            bad.append(f"{pred.name} is {ps[0]}x{ps[1]} but {gt.name} is {gs[0]}x{gs[1]}")
    if bad:
        raise IS5NetError(f"{len(bad)} prediction(s) differ in size from their GT (WxH): " + _short_list(bad))


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
    _check_sizes(pairs)
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


# --------------------------------------------------------------------------------------------- tables


def _columns(rows: Mapping[str, Mapping], metrics: M.MetricsArg) -> list[str]:
    if metrics is not None:
        return list(M.resolve_metrics(metrics))
    present = set()
    for r in rows.values():
        present.update(k for k in r if k in M.ALL_METRICS)
    return [k for k in M.ALL_METRICS if k in present]


def format_value(key: str, value) -> str:
    """Table cell: HCE as an integer, the rest with three decimals; missing values as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.0f}" if key == "HCE" else f"{float(value):.3f}"


def table_markdown(
    rows: Mapping[str, Mapping], metrics: M.MetricsArg = None, index_name: str = "", show_n: bool = False
) -> str:
    """A Markdown table, one row per ``{row_name: metrics_dict}`` entry, columns in Table I order.

    ``metrics`` picks the columns (default: the metric keys present in any row). ``show_n`` adds the image count.
    E.g. Table I: ``table_markdown({"DIS-TE1": r1, ..., "DIS-TE4": r4, "DIS-TE": mean_row([r1, r2, r3, r4])},
    metrics="paper")``.
    """
    cols = _columns(rows, metrics)
    header = [index_name] + [LABELS[c] for c in cols] + (["n"] if show_n else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, r in rows.items():
        cells = [str(name)] + [format_value(c, r.get(c)) for c in cols]
        if show_n:
            cells.append(str(r.get("n", "-")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: Mapping[str, Mapping], metrics: M.MetricsArg = None, index_name: str = "name") -> str:
    """The same table as CSV: ``name``, the metric keys (full precision) and ``n`` when the rows have it."""
    cols = _columns(rows, metrics)
    with_n = any("n" in r for r in rows.values())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([index_name] + cols + (["n"] if with_n else []))
    for name, r in rows.items():
        w.writerow([name] + [_csv_value(r.get(c)) for c in cols] + ([r.get("n", "")] if with_n else []))
    return buf.getvalue()


def per_image_csv(rows: Sequence[Mapping], metrics: M.MetricsArg = None,
                  index: Sequence[str] = ("stem", "pred", "gt")) -> str:
    """Per-image rows (from :func:`evaluate_folders`) as CSV: the ``index`` columns, then the metric keys."""
    cols = list(M.resolve_metrics(metrics))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(index) + cols)
    for r in rows:
        w.writerow([r[k] for k in index] + [_csv_value(r.get(c)) for c in cols])
    return buf.getvalue()


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return str(v)
    return repr(float(v))


def mean_row(rows: Iterable[Mapping], metrics: M.MetricsArg = None) -> dict:
    """Unweighted mean of several result dicts (e.g. ``DIS-TE`` = mean of DIS-TE1..4, as the paper reports).

    Each metric is the plain mean of the rows' values (not re-weighted by image count); ``n`` is the sum.
    """
    rows = list(rows)
    if not rows:
        raise IS5NetError("no rows to average")
    cols = _columns({str(i): r for i, r in enumerate(rows)}, metrics)
    out: dict = {}
    for c in cols:
        vals = [float(r[c]) for r in rows if r.get(c) is not None]
        if len(vals) != len(rows):
            raise IS5NetError(f"cannot average {c}: missing in some rows")
        out[c] = sum(vals) / len(vals)
    if all("n" in r for r in rows):
        out["n"] = sum(int(r["n"]) for r in rows)
    return out
