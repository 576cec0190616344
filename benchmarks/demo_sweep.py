"""Measure one variant of ``is5net demo`` on the VALIDATION split (DIS-VD), never on the test split.

Each run generates the demo's synthetic data (the current generator; ``--coarse k=v`` overrides
``simulate_coarse_mask``'s defaults), trains the refiner(s) with the demo's own runner
(``is5net.demo.experiment``) on the demo's schedule (``--quick`` or the full one) with any training setting
or data size overridden (``--set``), scores them with the real ``is5net eval`` code on DIS-VD, and appends
one JSON line (settings, metrics, thin recall, seconds) to ``--log``. The test split is not even generated
(``n_test = 0``).

DIS-VD also picks the training's best-maxF checkpoint (as ``is5net train`` does), so its numbers are a
little optimistic for every variant alike; the comparison between variants is what this is for.

    python benchmarks/demo_sweep.py --name cosine --set lr_schedule=cosine --set warmup_steps=50
    python benchmarks/demo_sweep.py --name coarse-worse --coarse dilate_px=3 --methods is5net,isnet
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import yaml

DATA_SIZES = ("size", "n_train", "n_val")
KEYS = ["maxF", "wF", "MAE", "Sm", "meanEm", "HCE"]


def _parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="start from the quick schedule")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a training setting (is5net train's KEY=VALUE) for every model, or a data size: " + ", ".join(DATA_SIZES),
    )
    ap.add_argument("--coarse", action="append", default=[], metavar="KEY=VALUE", help="a simulate_coarse_mask keyword")
    ap.add_argument("--methods", default="is5net", help="comma list of coarse, isnet, is5net (coarse always)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default /tmp/demo_sweep/NAME-sSEED)")
    ap.add_argument("--no-gt-encoder", action="store_true", help="IS5Net without the GT-encoder phase")
    ap.add_argument("--isnet-gt-encoder", action="store_true", help="IS-Net with the GT-encoder phase")
    ap.add_argument("--eval-only", action="store_true", help="score the checkpoints already in --out")
    ap.add_argument("--log", type=Path, default=Path(__file__).with_name("demo_sweep.jsonl"))
    return ap.parse_args(argv)


def schedule_with(base, items: list[str]):
    """The demo's schedule with ``KEY=VALUE`` items applied: data sizes to the data, the rest to the training
    of every model (checked against ``TrainConfig``'s settings); never a test split."""
    from is5net.train.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    sizes, settings = {}, {}
    for item in items:
        k, v = item.split("=", 1)
        if k not in known and k not in DATA_SIZES:
            sys.exit(f"unknown setting {k!r}; known: {', '.join(DATA_SIZES + tuple(sorted(known)))}")
        (sizes if k in DATA_SIZES else settings)[k] = yaml.safe_load(v)
    return dataclasses.replace(base, n_test=0, **sizes, train={**base.train, **settings})


def main(argv=None) -> int:
    args = _parse_args(argv)

    from is5net.demo import miniature
    from is5net.demo.experiment import Experiment, clear, train_row

    sched = schedule_with(miniature.QUICK if args.quick else miniature.FULL, args.set)
    coarse_opts = {k: yaml.safe_load(v) for k, v in (c.split("=", 1) for c in args.coarse)}
    out = args.out or Path("/tmp/demo_sweep") / f"{args.name}-s{args.seed}"
    exp = Experiment(out, sched, args.seed, "cpu", progress=False, split="DIS-VD")
    if not args.eval_only:
        exp.make_data(coarse_options=coarse_opts or None)
    methods = [m for m in args.methods.split(",") if m and m != "coarse"]
    gt_encoder = {"is5net": not args.no_gt_encoder, "isnet": args.isnet_gt_encoder}
    ckpts = {}
    for m in methods:
        if args.eval_only:
            ckpts[m] = out / m / "refiner.safetensors"
            continue
        ckpts[m] = train_row(exp.row(m, m, gt_encoder=gt_encoder[m], feature_loss=gt_encoder[m]), progress=False)
    train_s = time.perf_counter() - exp.started
    eval_dir = out / "eval"
    view = exp.coarse_view(eval_dir / "coarse_masks")
    runs = {"coarse": dict(method="sam", checkpoint=None, coarse_dir=view)}
    for m in methods:
        runs[m] = dict(method=m, checkpoint=ckpts[m], coarse_dir=view if m == "is5net" else None)
    for name in runs:
        clear(eval_dir / name)
    res = exp.score(eval_dir, runs)
    thin = exp.thin_recall(eval_dir, runs)
    row = {
        "name": args.name,
        "seed": args.seed,
        "schedule": miniature.reported_schedule(sched),
        "settings": {m: sched.settings(m) for m in methods},
        "coarse": coarse_opts,
        "gt_encoder": gt_encoder,
        "train_seconds": round(train_s, 1),
        "seconds": exp.seconds(),
        "results": {m: {**{k: res[m][k] for k in KEYS}, "thin_recall": thin[m]["thin_recall"]} for m in runs},
    }
    with open(args.log, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{args.name} seed {args.seed}: {row['seconds']} s (training {row['train_seconds']} s)")
    print("method   " + " ".join(f"{k:>7}" for k in KEYS + ["thin"]))
    for m, r in row["results"].items():
        print(f"{m:8} " + " ".join(f"{r[k]:7.3f}" for k in KEYS + ["thin_recall"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
