"""Measure one variant of ``is5net demo --highres`` on the VALIDATION split (DIS-VD), never on the test split.

Each run generates the high-resolution demo's synthetic data (``is5net.demo.highres.FULL`` or ``QUICK``, with
``n_test = 0``: the test splits are not even generated), trains its two refiners (``image`` and ``tiles``)
with the demo's own runner on its schedule with any training setting overridden (``--set``, for both), scores
the coarse mask and IS5Net ``image`` / ``box`` / ``tiles`` with the demo's own ``highres.score_split`` on the
DIS-VD of both splits (``main`` and ``small``) at full resolution, and appends one JSON line to ``--log``: per
split the six metrics, thin recall, the maps binarised at 0.5, and where the thin GT pixels are lost (inside
vs outside the coarse mask, with their median probability, and the recall at 0.25).

The tiles' working scale is a training setting (``--set tile_scale=2``), recorded in the checkpoint and used
by the scoring. (The first round's ``tile_scale`` field in the log was an experiment-only override of the
scoring alone; rows from then on record the setting's value.)

    python benchmarks/highres_sweep.py --name base
    python benchmarks/highres_sweep.py --name w4 --set width=0.25 --set detail_weight=5
    python benchmarks/highres_sweep.py --name w4-x2 --set tile_scale=2 --set max_side=1024
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

# One rule for --set in both sweeps (this script runs from benchmarks/, which is then on sys.path).
from demo_sweep import KEYS, schedule_with  # noqa: E402

TRAINED = {"image": "is5net_image", "tiles": "is5net_tiles"}


def _parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="start from the quick schedule")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting or data size")
    ap.add_argument("--models", default="image,tiles", help="which refiners to train/score: image, tiles")
    ap.add_argument("--out", type=Path, default=None, help="work folder (default /tmp/highres_sweep/NAME-sSEED)")
    ap.add_argument("--eval-only", action="store_true", help="score the checkpoints already in --out")
    ap.add_argument("--log", type=Path, default=Path(__file__).with_name("highres_sweep.jsonl"))
    return ap.parse_args(argv)


def where_lost(data: Path, split: str, folders: dict[str, Path]) -> dict[str, dict]:
    """Per run: thin recall inside / outside the coarse mask, the median probability of the thin pixels
    there, and the thin recall at 0.25 (how much is grey rather than missing)."""
    from is5net.eval.thin import thin_parts
    from is5net.io import load_mask

    acc = {n: {"in": [], "out": []} for n in folders}
    for gt_path in sorted((data / split / "gt").glob("*.png")):
        gt = load_mask(gt_path) >= 128
        thin = thin_parts(gt)
        coarse = load_mask(data / split / "coarse" / gt_path.name) >= 128
        for n, folder in folders.items():
            p = load_mask(folder / gt_path.name)
            acc[n]["in"].append(p[thin & coarse])
            acc[n]["out"].append(p[thin & ~coarse])
    res = {}
    for n, a in acc.items():
        pin, pout = np.concatenate(a["in"]), np.concatenate(a["out"])
        both = np.concatenate([pin, pout])
        res[n] = {
            "thin_in_share": round(pin.size / max(both.size, 1), 3),
            "recall_in": round(float((pin >= 128).mean()) if pin.size else 0.0, 3),
            "recall_out": round(float((pout >= 128).mean()) if pout.size else 0.0, 3),
            "median_p_in": round(float(np.median(pin)) / 255 if pin.size else 0.0, 3),
            "median_p_out": round(float(np.median(pout)) / 255 if pout.size else 0.0, 3),
            "recall_at_025": round(float((both >= 64).mean()) if both.size else 0.0, 3),
        }
    return res


def binarised(gt_dir: Path, folders: dict[str, Path], work: Path) -> dict[str, dict]:
    """The six metrics of each run's maps binarised at 0.5 (is the soft map grey where its decisions are right?)."""
    from is5net.eval.scoring import evaluate_folders
    from is5net.io import load_mask, save_png

    res = {}
    for n, folder in folders.items():
        target = work / n
        target.mkdir(parents=True, exist_ok=True)
        for p in sorted(Path(folder).glob("*.png")):
            save_png(target / p.name, np.where(load_mask(p) >= 128, 255, 0).astype(np.uint8))
        summary, _ = evaluate_folders(target, gt_dir, metrics=KEYS, workers=1, progress=False)
        res[n] = {k: round(float(summary[k]), 4) for k in KEYS}
    return res


def main(argv=None) -> int:
    args = _parse_args(argv)

    from is5net.demo import highres
    from is5net.demo.experiment import Experiment, clear

    sched = schedule_with(highres.QUICK if args.quick else highres.FULL, args.set)
    small = dataclasses.replace(highres.QUICK_SMALL if args.quick else highres.FULL_SMALL, n_test=0)
    out = args.out or Path("/tmp/highres_sweep") / f"{args.name}-s{args.seed}"
    exp = Experiment(out, sched, args.seed, "cpu", progress=False, split="DIS-VD")
    models = [TRAINED[m] for m in args.models.split(",") if m]
    if args.eval_only:
        ckpts = {m: out / m / "refiner.safetensors" for m in models}
    else:
        exp.make_data()
        ckpts = exp.train({m: exp.row(m, m) for m in models}, here=models[-1])
    train_s = time.perf_counter() - exp.started
    small_data = out / "data-small"
    if not (small_data / "DIS-VD").is_dir():
        small_data = highres.make_small_data(exp, small)
    splits = {"main": (exp.data, out / "eval"), "small": (small_data, out / "eval-small")}
    row = {
        "name": args.name,
        "seed": args.seed,
        "tile_scale": sched.train.get("tile_scale", 1.0),
        "schedule": highres.reported_schedule(sched),
        "settings": {m: sched.settings(m) for m in models},
        "train_seconds": round(train_s, 1),
    }
    for split, (data, eval_dir) in splits.items():
        res = highres.score_split(exp, data, "DIS-VD", ckpts, eval_dir)
        folders = {n: eval_dir / n / "predictions" / "DIS-VD" for n in res}
        preds = {n: f for n, f in folders.items() if n != "coarse"}
        row[split] = {
            "results": {m: {**{k: res[m][k] for k in KEYS}, "thin_recall": res[m]["thin_recall"]} for m in res},
            "where_lost": where_lost(data, "DIS-VD", folders),
            "binarised": binarised(data / "DIS-VD" / "gt", preds, clear(eval_dir / "binarised")),
        }
    row["seconds"] = exp.seconds()
    with open(args.log, "a") as f:
        f.write(json.dumps(row) + "\n")
    _print(row)
    return 0


def _print(row: dict) -> None:
    print(f"{row['name']} seed {row['seed']}: {row['seconds']} s (training {row['train_seconds']} s)")
    for split in ("main", "small"):
        r = row[split]
        print(f"[{split}] method      " + " ".join(f"{k:>7}" for k in KEYS + ["thin"]))
        for m, v in r["results"].items():
            print(f"{m:20} " + " ".join(f"{v[k]:7.3f}" for k in KEYS + ["thin_recall"]))
        for m, v in r["binarised"].items():
            print(f"{m + ' @0.5':20} " + " ".join(f"{v[k]:7.3f}" for k in KEYS))


if __name__ == "__main__":
    raise SystemExit(main())
