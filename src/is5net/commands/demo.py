"""``is5net demo``: the paper's result in miniature (is5net.demo): the main run, ``--ablation``, ``--highres``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The paper's result in miniature, on built-in data, on a CPU, in minutes."""
    parser.add_argument("--out", type=Path, default=Path("is5net-demo"), help="output folder (default ./is5net-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a much smaller run (for CI): seconds, not minutes; too short to show the result",
    )
    parser.add_argument(
        "--sam-checkpoint",
        help="make the coarse masks with real SAM instead of the simulation "
        "(on a CPU this takes far longer: ~15 s per image for ViT-B)",
    )
    parser.add_argument("--sam-type", help="SAM type (default: read off the checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="the paper's ablation: the refiner trained with inputs RGB, +box, +mask, +mask+box and the last "
        "without the GT-encoder phase; writes ablation.json, ablation.md and ablation.png (about 15-25 minutes)",
    )
    parser.add_argument(
        "--highres",
        action="store_true",
        help="full-resolution regions in miniature: photos at 4x the model input, refiners for "
        "the image and tiles regions, one table of image / box / tiles and loose boxes",
    )


def run(args: argparse.Namespace) -> int:
    if getattr(args, "highres", False):
        from ..demo.highres import run_highres

        result = run_highres(args.out, seed=args.seed, quick=args.quick, device=args.device, progress=not args.quiet)
        print(result["table"] + "\n\n" + result["robustness_table"])
        print(f"\nWrote {args.out}/results.json, table.md and highres.png.")
        return 0
    if getattr(args, "ablation", False):
        from ..demo.ablation import run_ablation

        result = run_ablation(args.out, seed=args.seed, quick=args.quick, device=args.device, progress=not args.quiet)
        print(result["table"])
        print(f"\nWrote {args.out}/ablation.json, ablation.md and ablation.png.")
        return 0
    from ..demo.miniature import run_demo

    result = run_demo(
        args.out,
        seed=args.seed,
        quick=args.quick,
        sam_checkpoint=args.sam_checkpoint,
        sam_type=args.sam_type,
        device=args.device,
        progress=not args.quiet,
    )
    print(result["table"])
    print(f"\n{result['thin_table']}\n")
    print(f"Wrote {args.out}/results.json, table.md, comparison.png and the checkpoints.")
    print("Rerun one test image with the trained IS5Net:\n  " + result["predict_command"])
    return 0
