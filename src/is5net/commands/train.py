"""Train IS5Net (or IS-Net) the paper's way: GT encoder first, then the refiner with feature supervision.

``key=value`` overrides any setting (model, input_size, batch_size, lr, max_steps, val_every, seed, device,
workers, ...); ``preset=isnet`` is the original IS-Net recipe. Run under ``torchrun`` for several GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import IS5NetError


def run(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.loop import train

    cli = {
        k: v
        for k, v in {
            "data": args.data,
            "val": args.val,
            "coarse_dir": args.coarse_dir,
            "sam_checkpoint": args.sam_checkpoint,
            "sam_type": args.sam_type,
            "cache": args.cache,
        }.items()
        if v is not None
    }
    if args.skip_bad:
        cli["skip_bad"] = True
    if args.resume is not None:
        run_dir = args.resume
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise IS5NetError(f"--resume {run_dir}: no config.yaml there (not a run directory)")
        import yaml

        base = yaml.safe_load(saved.read_text()) or {}
        base.update(cli)
        config = load_config(args.config, args.overrides, base=base)
        if args.out is not None and args.out.resolve() != run_dir.resolve():
            raise IS5NetError("--resume RUN_DIR continues in RUN_DIR; drop --out or make them equal")
    else:
        if args.out is None:
            raise IS5NetError("give --out RUN_DIR (or --resume RUN_DIR)")
        config = load_config(args.config, args.overrides, base=cli)
        run_dir = args.out
    if args.sam_checkpoint:
        from ..weights import resolve_weights

        config.sam_checkpoint = str(resolve_weights(args.sam_checkpoint))
    out = train(config, run_dir, resume=args.resume is not None, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"is5net train: done -> {out}{_outcome(Path(run_dir) / 'summary.json')}", file=sys.stderr)
    return 0


def _outcome(summary_path: Path) -> str:
    """`` (N steps; best validation maxF x, MAE y; ...)`` from the run's summary, so the last line says how it went."""
    try:
        refiner = json.loads(summary_path.read_text()).get("refiner") or {}
    except (OSError, ValueError):
        return ""
    parts = [f"{refiner['steps']} steps"] if "steps" in refiner else []
    if refiner.get("best_maxF", -1) >= 0:
        parts.append(f"best validation maxF {refiner['best_maxF']:.4f}, MAE {refiner['best_MAE']:.4f}")
    if refiner.get("stopped_early"):
        parts.append("stopped early")
    if refiner.get("skipped_batches"):
        parts.append(f"{refiner['skipped_batches']} non-finite batch(es) skipped")
    return f" ({'; '.join(parts)})" if parts else ""
