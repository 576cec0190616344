"""Folder mode of ``is5net eval``: score ``--pred`` against ``--gt``, print the table, write what was asked.

Dataset mode, which runs a method over DIS5K subsets first, is :mod:`is5net.eval.dis5k`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

from ..io import atomic_write_text
from . import metrics as M
from .report import check_output_files, per_image_csv, table_csv, table_markdown
from .scoring import evaluate_folders

logger = logging.getLogger("is5net")


def run_folders(
    pred_dir,
    gt_dir,
    metrics: M.MetricsArg = None,
    workers: int = 1,
    allow_missing: bool = False,
    progress: bool = True,
    json_path: Optional[str] = None,
    csv_path: Optional[str] = None,
    per_image_path: Optional[str] = None,
) -> dict:
    """Score the pairs of the two folders, print the table (and, with ``allow_missing``, warn of the files
    left out), write the JSON summary, the CSV table and the per-image CSV asked for; return the summary."""
    keys = M.resolve_metrics(metrics)
    check_output_files({"--json": json_path, "--csv": csv_path, "--per-image": per_image_path})
    summary, rows = evaluate_folders(
        pred_dir, gt_dir, metrics=keys, workers=workers, allow_missing=allow_missing, progress=progress
    )
    name = Path(pred_dir).resolve().name or str(pred_dir)
    print(table_markdown({name: summary}, metrics=keys, show_n=True))
    if summary.get("missing_pred", 0) + summary.get("missing_gt", 0):
        logger.warning(
            "scored %d pairs; skipped %d GT mask(s) without a prediction and %d prediction(s) without a GT",
            summary["n"],
            summary.get("missing_pred", 0),
            summary.get("missing_gt", 0),
        )
    if json_path:
        doc = dict(summary)
        doc["pred_dir"] = str(pred_dir)
        doc["gt_dir"] = str(gt_dir)
        atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    if csv_path:
        atomic_write_text(csv_path, table_csv({name: summary}, metrics=keys))
    if per_image_path:
        atomic_write_text(per_image_path, per_image_csv(rows, metrics=keys))
    return summary
