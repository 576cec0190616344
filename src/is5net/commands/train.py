"""Train IS5Net (or IS-Net) the paper's way: GT encoder first, then the refiner with feature supervision.

``key=value`` overrides any setting (model, input_size, batch_size, lr, max_steps, val_every, seed, device,
workers, ...); ``preset=isnet`` is the original IS-Net recipe. Run under ``torchrun`` for several GPUs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import IS5NetError
from .options import stage1_checkpoint_argument, stage1_name_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Train IS5Net (or IS-Net) the paper's way: GT encoder first, then the refiner with feature supervision.

    Which caps govern which phase: phase 1 (GT encoder) stops when its validation maxF exceeds
    gt_encoder_target_maxf (0.99), after early_stop validations without progress, or at gt_encoder_max_steps
    (default min(20000, max_steps)); phase 2 (refiner) stops after early_stop validations without progress in
    maxF or MAE, or at max_steps. early_stop=0: no plateau stop. region=image|box|tiles (crop_margin,
    max_side): what each sample shows the refiner, recorded in the checkpoint for predict.
    """
    parser.add_argument(
        "--data", help="DIS5K root (trains on DIS-TR, validates on DIS-VD) or a folder with im/ and gt/"
    )
    parser.add_argument("--out", type=Path, help="run directory (config, log, checkpoints, refiner.safetensors)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    parser.add_argument("--config", type=Path, help="YAML file of settings")
    parser.add_argument("--val", help="validation folder (im/ + gt/) when --data is not a DIS5K root")
    stage1 = parser.add_mutually_exclusive_group()
    stage1.add_argument(
        "--coarse-dir",
        help="coarse masks from any stage-1 method: DIR/<subset>/<stem>.png or "
        "DIR/<stem>.png ('dataset' = each subset's coarse/ folder)",
    )
    stage1_checkpoint_argument(stage1, ": the stage-1 weights whose masks `is5net cache-sam` cached")
    stage1_name_arguments(parser, default=None, grabcut=False)
    parser.add_argument("--cache", help="stage-1 mask cache directory (default: DATA/.sam-cache)")
    parser.add_argument("--skip-bad", action="store_true", help="train on the good pairs of a dataset with problems")
    parser.add_argument(
        "-q", "--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bars"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="setting overrides, e.g. lr=1e-4 max_steps=1000"
    )


def run(args: argparse.Namespace) -> int:
    from ..train.config import load_config, resumed_config
    from ..train.loop import train
    from ..train.runlog import outcome

    given = {
        k: v
        for k, v in {
            "data": args.data,
            "val": args.val,
            "coarse_dir": args.coarse_dir,
            "sam_checkpoint": args.sam_checkpoint,
            "sam_type": args.sam_type,
            "stage1": args.stage1,
            "cache": args.cache,
        }.items()
        if v is not None
    }
    if args.skip_bad:
        given["skip_bad"] = True
    if args.resume is not None:
        run_dir = args.resume
        config = resumed_config(run_dir, args.config, args.overrides, given)
        if args.out is not None and args.out.resolve() != run_dir.resolve():
            raise IS5NetError("--resume RUN_DIR continues in RUN_DIR; drop --out or make them equal")
    else:
        if args.out is None:
            raise IS5NetError("give --out RUN_DIR (or --resume RUN_DIR)")
        config = load_config(args.config, args.overrides, base=given)
        run_dir = args.out
    if args.sam_checkpoint:
        from ..weights import resolve_weights

        config.sam_checkpoint = str(resolve_weights(args.sam_checkpoint))
    out = train(config, run_dir, resume=args.resume is not None, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"is5net train: done -> {out}{outcome(run_dir)}", file=sys.stderr)
    return 0
