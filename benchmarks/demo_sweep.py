"""Measure one variant of ``is5net demo`` on the VALIDATION split (DIS-VD), never on the test split.

Each run generates the demo's synthetic data (the current generator; ``--coarse k=v`` overrides
``simulate_coarse_mask``'s defaults), trains the refiner(s) with the demo's own ``_train`` on a schedule
that starts from the demo's (``--quick`` or the full one) with any field overridden, scores them with the
real ``is5net eval`` code on DIS-VD, and appends one JSON line (settings, metrics, thin recall, seconds) to
``--log``. The test split is not even generated (``n_test = 0``).

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="start from the quick schedule")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a Schedule field")
    ap.add_argument("--coarse", action="append", default=[], metavar="KEY=VALUE", help="a simulate_coarse_mask keyword")
    ap.add_argument("--methods", default="is5net", help="comma list of coarse, isnet, is5net (coarse always)")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default /tmp/demo_sweep/NAME-sSEED)")
    ap.add_argument("--no-gt-encoder", action="store_true", help="IS5Net without the GT-encoder phase")
    ap.add_argument("--isnet-gt-encoder", action="store_true", help="IS-Net with the GT-encoder phase")
    ap.add_argument("--eval-only", action="store_true", help="score the checkpoints already in --out")
    ap.add_argument("--log", type=Path, default=Path(__file__).with_name("demo_sweep.jsonl"))
    args = ap.parse_args(argv)

    import torch

    from is5net.demo import miniature as demo
    from is5net.demo.synthetic import make_synthetic_dataset

    torch.set_num_threads(1)
    base = demo.QUICK if args.quick else demo.FULL
    fields = {f.name: f.type for f in dataclasses.fields(base)}
    changes = {}
    for item in args.set:
        k, v = item.split("=", 1)
        if k not in fields:
            sys.exit(f"unknown Schedule field {k!r}; known: {', '.join(fields)}")
        changes[k] = yaml.safe_load(v)
    sched = dataclasses.replace(base, n_test=0, **changes)
    coarse_opts = {k: yaml.safe_load(v) for k, v in (c.split("=", 1) for c in args.coarse)}
    out = args.out or Path("/tmp/demo_sweep") / f"{args.name}-s{args.seed}"
    data = out / "data"
    started = time.perf_counter()
    if not args.eval_only:
        make_synthetic_dataset(
            data,
            seed=args.seed,
            n_train=sched.n_train,
            n_val=sched.n_val,
            n_test=0,
            size=sched.size,
            coarse_options=coarse_opts or None,
        )
    methods = [m for m in args.methods.split(",") if m and m != "coarse"]
    ckpts = {}
    for m in methods:
        if args.eval_only:
            ckpts[m] = out / m / "refiner.safetensors"
            continue
        ckpts[m] = demo._train(
            data,
            out / m,
            sched,
            args.seed,
            in_ch=3 if m == "isnet" else 5,
            device="cpu",
            progress=False,
            gt_encoder=args.isnet_gt_encoder if m == "isnet" else not args.no_gt_encoder,
        )
    train_s = time.perf_counter() - started
    view = demo._coarse_view(data, out / "eval" / "coarse_masks", split="DIS-VD")
    runs = {"coarse": ("sam", None, view)}
    for m in methods:
        runs[m] = (m, ckpts[m], view if m == "is5net" else None)
    res = demo._evaluate(data, out / "eval", runs, "cpu", False, split="DIS-VD")
    thin = demo._thin_recall(data, out / "eval", list(runs), split="DIS-VD")
    keys = ["maxF", "wF", "MAE", "Sm", "meanEm", "HCE"]
    row = {
        "name": args.name,
        "seed": args.seed,
        "schedule": dataclasses.asdict(sched),
        "coarse": coarse_opts,
        "gt_encoder": {"is5net": not args.no_gt_encoder, "isnet": args.isnet_gt_encoder},
        "train_seconds": round(train_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "results": {m: {**{k: res[m][k] for k in keys}, "thin_recall": thin[m]["thin_recall"]} for m in runs},
    }
    with open(args.log, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{args.name} seed {args.seed}: {row['seconds']} s (training {row['train_seconds']} s)")
    print("method   " + " ".join(f"{k:>7}" for k in keys + ["thin"]))
    for m, r in row["results"].items():
        print(f"{m:8} " + " ".join(f"{r[k]:7.3f}" for k in keys + ["thin_recall"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
