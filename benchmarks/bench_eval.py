"""Speed of `is5net eval` folder scoring: synthetic 1024x1024 prediction/GT pairs, all six DIS metrics.

    python benchmarks/bench_eval.py            # 200 pairs, workers 1 and 2
    python benchmarks/bench_eval.py --n 20     # quicker

Writes the pairs as PNGs to a temporary folder and scores them with ``evaluate_folders`` (loading included) at
each worker count, next to a plain reference: the ``pysodmetrics`` meters stepped directly in one process on
arrays already in memory. Prints images per second, a per-metric breakdown on a few images, and an
extrapolation to DIS-TE (2000 images) on 8 cores from the measured per-process rate and 2-worker efficiency.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import draw, filters, morphology

from is5net import evaluate
from is5net.eval import metrics as M


def synthetic_pair(rng: np.random.Generator, size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """A GT with filled shapes and thin structures, and a plausible soft prediction of it (uint8 0..255)."""
    gt = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, 4)):  # big filled shapes
        r, c = rng.integers(size // 5, 4 * size // 5, 2)
        rr, cc = draw.ellipse(
            r,
            c,
            rng.integers(40, size // 4),
            rng.integers(40, size // 4),
            shape=gt.shape,
            rotation=rng.uniform(0, np.pi),
        )
        gt[rr, cc] = True
    for _ in range(rng.integers(0, 3)):  # polygons
        pts = rng.integers(0, size, (rng.integers(3, 8), 2))
        rr, cc = draw.polygon(pts[:, 0], pts[:, 1], shape=gt.shape)
        gt[rr, cc] = True
    lines = np.zeros_like(gt)
    for _ in range(rng.integers(5, 40)):  # thin structures: wires, legs, mesh
        r0, c0, r1, c1 = rng.integers(0, size, 4)
        lines[draw.line(r0, c0, r1, c1)] = True
    lines = morphology.binary_dilation(lines, morphology.disk(int(rng.integers(0, 3))))
    gt |= lines
    if rng.random() < 0.3:  # a grid
        step = int(rng.integers(20, 60))
        grid = np.zeros_like(gt)
        grid[::step, :] = True
        grid[:, ::step] = True
        r, c = rng.integers(0, size // 2, 2)
        gt[r : r + size // 3, c : c + size // 3] |= grid[r : r + size // 3, c : c + size // 3]

    pred = gt.copy()
    op = rng.integers(0, 3)
    if op == 1:
        pred = morphology.binary_dilation(pred, morphology.disk(int(rng.integers(1, 6))))
    elif op == 2:
        pred = morphology.binary_erosion(pred, morphology.disk(int(rng.integers(1, 3))))
    pred = np.roll(pred, tuple(rng.integers(-4, 5, 2)), axis=(0, 1))
    for _ in range(rng.integers(0, 4)):  # false positive blobs
        rr, cc = draw.disk(tuple(rng.integers(0, size, 2)), rng.integers(5, 60), shape=gt.shape)
        pred[rr, cc] = True
    soft = filters.gaussian(pred.astype(np.float32), sigma=float(rng.uniform(0.8, 4.0)))
    soft = np.clip(soft * rng.uniform(0.7, 1.0) + rng.normal(0, 0.03, soft.shape), 0, 1)
    return np.round(soft * 255).astype(np.uint8), gt.astype(np.uint8) * 255


def make_folders(root: Path, n: int, size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    (root / "pred").mkdir()
    (root / "gt").mkdir()
    pairs = []
    for i in range(n):
        pred, gt = synthetic_pair(rng, size)
        Image.fromarray(pred).save(root / "pred" / f"{i:05d}.png")
        Image.fromarray(gt).save(root / "gt" / f"{i:05d}.png")
        pairs.append((pred, gt))
    return pairs


def plain_reference(pairs) -> float:
    """The pysodmetrics meters stepped directly (one process, arrays in memory); seconds."""
    import py_sod_metrics as sod

    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = sod.Fmeasure()
    meters = [fm, sod.Emeasure(), sod.WeightedFmeasure(), sod.MAE(), sod.Smeasure()]
    hce = sod.HumanCorrectionEffortMeasure()
    for pred, gt in pairs:
        for m in meters:
            m.step(pred, gt)
        hce.step((pred > 128).astype(np.float64), gt > 128, normalize=False)
    return time.perf_counter() - t


def breakdown(pairs, k: int = 5) -> dict[str, float]:
    """Mean seconds per image for each metric alone (curve metrics share one statistic)."""
    out = {}
    for name in ("maxF", "meanEm", "wF", "MAE", "Sm", "HCE", "mIoU"):
        t = time.perf_counter()
        for pred, gt in pairs[:k]:
            M.compute_image_metrics(pred, gt, name)
        out[name] = (time.perf_counter() - t) / min(k, len(pairs))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of pairs (default 200)")
    ap.add_argument("--size", type=int, default=1024, help="side of the square masks (default 1024)")
    ap.add_argument("--workers", default="1,2", help="worker counts to time (default 1,2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-images", type=int, default=2000, help="extrapolate to this many images (DIS-TE)")
    ap.add_argument("--target-cores", type=int, default=8, help="... on this many cores")
    args = ap.parse_args(argv)
    worker_counts = [int(w) for w in args.workers.split(",")]

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.n} pairs of {args.size}x{args.size}, "
        f"metrics: {', '.join(M.PAPER_METRICS)} (+ extras)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        pairs = make_folders(root, args.n, args.size, args.seed)
        print(
            f"made the pairs in {time.perf_counter() - t:.1f} s; "
            f"GT foreground {np.mean([g.mean() / 255 for _, g in pairs]):.1%} on average"
        )

        per = breakdown(pairs)
        print("per image, each metric alone: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in per.items()))

        ref = plain_reference(pairs)
        print(f"{'plain pysodmetrics, 1 process, in memory':<44} {ref:7.1f} s  {args.n / ref:6.2f} img/s")

        rates = {}
        results = {}
        for w in worker_counts:
            t = time.perf_counter()
            summary, _ = evaluate.evaluate_folders(root / "pred", root / "gt", workers=w, progress=False)
            dt = time.perf_counter() - t
            rates[w] = args.n / dt
            results[w] = summary
            print(f"{f'evaluate_folders, workers={w} (with PNG loading)':<44} {dt:7.1f} s  {rates[w]:6.2f} img/s")
        first = results[worker_counts[0]]
        assert all(r == first for r in results.values()), "worker counts disagree"
        print("summary: " + ", ".join(f"{k}={first[k]:.4g}" for k in M.PAPER_METRICS))

    base = rates[min(rates)] / min(rates)  # images/s of one process
    eff = 1.0
    if len(rates) > 1:
        w = max(rates)
        eff = rates[w] / (w * base)
        print(f"parallel efficiency at {w} workers: {eff:.0%} (2 shared cores here)")
    one_core = args.target_images / base
    linear = one_core / args.target_cores
    print(
        f"extrapolated, {args.target_images} images: {one_core / 60:.1f} min on one core; on {args.target_cores} "
        f"cores {linear / 60:.1f} min if scaling is linear (pairs are independent), "
        f"{linear / min(eff, 1.0) / 60:.1f} min at the efficiency measured here "
        f"(which includes ~seconds of process start-up per worker and other load on the shared cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
