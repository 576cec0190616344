"""Score predicted masks against ground truth with the six DIS metrics (maxFβ, Fβw, M, Sα, Eφm, HCEγ).

Folder mode: ``is5net eval --pred DIR --gt DIR`` pairs the masks of the two folders by file stem (``a.png`` with
``a.jpg`` is a pair), scores every pair and prints a table; ``--json`` / ``--csv`` / ``--per-image`` write the
numbers. A GT without a prediction, a prediction without a GT, or two masks of different sizes is an error
(``--allow-missing`` scores the pairs there are and reports how many were missing).

Dataset mode: ``is5net eval --data DIS5K [--subsets ...] --method ...`` runs a method over DIS5K subsets and
writes the paper's Table I (implemented in :mod:`is5net.eval.dis5k`).

The metrics are defined in :mod:`is5net.eval.metrics`; dataset numbers are aggregated exactly as ``pysodmetrics``
does over the same images (e.g. maxF is the max over thresholds of the image-averaged F curve).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import IS5NetError
from ..eval import metrics as M
from ..eval.report import check_output_files, per_image_csv, table_csv, table_markdown
from ..eval.scoring import evaluate_folders
from ..io import atomic_write_text

logger = logging.getLogger("is5net")

#: Options that belong to dataset mode only.
_DATASET_OPTIONS = (
    "subsets",
    "method",
    "checkpoint",
    "sam_checkpoint",
    "sam_type",
    "coarse_dir",
    "out",
    "resume",
    "device",
    "region",
    "box_jitter",
    "backend",
)


def run(args: argparse.Namespace) -> int:
    folder_mode = args.pred is not None or args.gt is not None
    if args.data is not None:
        if folder_mode:
            raise IS5NetError("--data (dataset mode) and --pred/--gt (folder mode) cannot be used together")
        from ..eval import dis5k as dataset

        return int(dataset.run_dataset(args) or 0)

    if not folder_mode:
        raise IS5NetError("give --pred DIR and --gt DIR to score a folder of masks, or --data DIR to score DIS5K")
    if args.pred is None or args.gt is None:
        raise IS5NetError("--pred and --gt go together: give both folders")
    given = [
        f"--{name.replace('_', '-')}" for name in _DATASET_OPTIONS if getattr(args, name, None) not in (None, False)
    ]
    if given:
        raise IS5NetError(f"{', '.join(given)} only apply to dataset mode (--data)")

    metrics = M.resolve_metrics(args.metrics)
    check_output_files({"--json": args.json, "--csv": args.csv, "--per-image": args.per_image})

    summary, rows = evaluate_folders(
        args.pred,
        args.gt,
        metrics=metrics,
        workers=args.workers,
        allow_missing=args.allow_missing,
        progress=not args.quiet,
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
