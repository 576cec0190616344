"""Score predicted masks against ground truth with the six DIS metrics (maxFβ, Fβw, M, Sα, Eφm, HCEγ).

Folder mode: ``is5net eval --pred DIR --gt DIR`` pairs the masks of the two folders by file stem (``a.png`` with
``a.jpg`` is a pair), scores every pair and prints a table; ``--json`` / ``--csv`` / ``--per-image`` write the
numbers. A GT without a prediction, a prediction without a GT, or two masks of different sizes is an error
(``--allow-missing`` scores the pairs there are and reports how many were missing); implemented in
:mod:`is5net.eval.folder_mode`.

Dataset mode: ``is5net eval --data DIS5K [--subsets ...] --method ...`` runs a method over DIS5K subsets and
writes the paper's Table I (implemented in :mod:`is5net.eval.dis5k`).

The metrics are defined in :mod:`is5net.eval.metrics`; dataset numbers are aggregated exactly as ``pysodmetrics``
does over the same images (e.g. maxF is the max over thresholds of the image-averaged F curve).
"""

from __future__ import annotations

import argparse

from ..defaults import ALL_METRICS, BACKEND_CHOICES
from ..errors import IS5NetError
from .options import calibration_from_args, fraction_arg, precision_arguments, region_arguments

#: Options that belong to dataset mode only.
_DATASET_OPTIONS = (
    "subsets",
    "method",
    "checkpoint",
    "sam_checkpoint",
    "sam_type",
    "stage1",
    "coarse_dir",
    "out",
    "resume",
    "device",
    "region",
    "box_jitter",
    "backend",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Score predicted masks against ground truth with the six DIS metrics (maxFβ, Fβw, M, Sα, Eφm, HCEγ)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    folder = parser.add_argument_group("folder mode (score existing masks)")
    folder.add_argument("--pred", metavar="DIR", help="folder of predicted masks (8-bit grayscale, 0..255)")
    folder.add_argument("--gt", metavar="DIR", help="folder of ground-truth masks, paired with --pred by file stem")
    folder.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the pairs that exist instead of failing when a GT has no prediction or a prediction no GT",
    )
    folder.add_argument("--per-image", metavar="CSV", help="write every image's own numbers to this CSV file")

    common = parser.add_argument_group("output and speed (both modes)")
    common.add_argument("--json", metavar="FILE", help="write the numbers as one JSON object")
    common.add_argument("--csv", metavar="FILE", help="write the table as CSV (one row per folder or subset)")
    common.add_argument(
        "--metrics",
        metavar="LIST",
        default=None,
        help="comma-separated subset of " + ",".join(ALL_METRICS) + " (or 'paper' for the first six); "
        "default: all in folder mode, the paper's six in dataset mode. HCE is the slow one",
    )
    common.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes for scoring (0 = one per CPU core; default 1)",
    )

    ds = parser.add_argument_group("dataset mode (run a method on DIS5K and write Table I)")
    ds.add_argument("--data", metavar="DIR", help="DIS5K root holding DIS-VD, DIS-TE1..4 (each with im/ and gt/)")
    ds.add_argument("--subsets", metavar="LIST", help="comma-separated subsets to run (default: DIS-TE1..4 and DIS-TE)")
    ds.add_argument("--method", metavar="NAME", help="what to evaluate (e.g. is5net, sam, isnet); names the table row")
    ds.add_argument("--checkpoint", metavar="PATH", help="refiner checkpoint (official .pth or ours .safetensors)")
    from .options import stage1_checkpoint_argument

    stage1_checkpoint_argument(ds, ": the stage-1 model that makes the coarse mask")
    ds.add_argument(
        "--stage1",
        metavar="NAME",
        help="stage-1 model family[:type] of --stage1-checkpoint: sam (default), hq-sam, sam2 (docs/stage1.md)",
    )
    ds.add_argument(
        "--sam-type", metavar="TYPE", help="SAM architecture (vit_b, vit_l, vit_h; default: read off the checkpoint)"
    )
    ds.add_argument("--coarse-dir", metavar="DIR", help="take stage-1 masks from this folder instead of running SAM")
    ds.add_argument("--out", metavar="DIR", help="where predicted masks and tables are written")
    ds.add_argument("--resume", action="store_true", help="reuse predictions already in --out")
    ds.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    region_arguments(ds, max_side=False)
    ds.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=None,
        help="the refiner's runtime, as predict's --backend (default auto, so the masks scored are predict's)",
    )
    precision_arguments(ds)
    ds.add_argument(
        "--box-jitter",
        type=fraction_arg,
        default=0.0,
        metavar="F",
        help="move each edge of the GT's tight box by up to F of the box's side, as a hand-drawn or "
        "detected box would be (seeded; written in the table's caption; default 0: tight boxes)",
    )
    ds.add_argument("--jitter-seed", type=int, default=0, metavar="N", help="seed of --box-jitter (default 0)")


def run(args: argparse.Namespace) -> int:
    folder_mode = args.pred is not None or args.gt is not None
    if args.data is not None:
        if folder_mode:
            raise IS5NetError("--data (dataset mode) and --pred/--gt (folder mode) cannot be used together")
        from ..eval import dis5k as dataset

        args.calibration = calibration_from_args(args)  # --precision int8's set, its folder checked first
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
    from ..eval.folder_mode import run_folders

    run_folders(
        args.pred,
        args.gt,
        metrics=args.metrics,
        workers=args.workers,
        allow_missing=args.allow_missing,
        progress=not args.quiet,
        json_path=args.json,
        csv_path=args.csv,
        per_image_path=args.per_image,
    )
    return 0
