"""Throughput of ``is5net predict`` over a folder: images per second, decoding ahead in a thread vs not.

    python benchmarks/bench_batch.py                          # 32 JPEG photos of 1600x1200, the tiny refiner
    python benchmarks/bench_batch.py --images 64 --refiner full --device cuda
    python benchmarks/bench_batch.py --save cutout            # + foreground estimation (pymatting)

Makes a folder of JPEG photos (skimage's real photos, resized and shifted so no two are alike) with one coarse
mask each (``--coarse-mask``: no SAM weights), a refiner with random weights (``tiny``: tests' size,
``full``: the official IS5Net, 1024 input), then runs the real command (``is5net.cli.main``) over it with
``--prefetch 0`` (each image decoded in the loop, between model calls) and ``--prefetch 2`` (decoded ahead
in the background thread), ``--repeats`` times each, alternating, into fresh output folders. Reports the
median images/s of each and their ratio. The wall time is the whole command (model loading included, the
same for both), so the ratio is a lower bound on the loop's own gain. Not asserted by any test.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(root: Path, n: int, size: tuple[int, int]) -> tuple[Path, Path]:
    from skimage import data

    photos, coarse = root / "photos", root / "coarse"
    photos.mkdir(parents=True)
    coarse.mkdir()
    sources = [data.coffee(), data.astronaut(), data.chelsea(), data.rocket()]
    w, h = size
    for k in range(n):
        rgb = np.asarray(Image.fromarray(sources[k % len(sources)]).resize((w, h), Image.Resampling.BILINEAR))
        rgb = np.roll(rgb, shift=11 * k, axis=1)
        Image.fromarray(rgb).save(photos / f"photo_{k:04d}.jpg", quality=92)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 5 : 4 * h // 5, w // 5 : 4 * w // 5] = 255
        Image.fromarray(mask).save(coarse / f"photo_{k:04d}.png")
    return photos, coarse


def make_refiner(root: Path, kind: str) -> Path:
    import torch

    from is5net.checkpoint import RefinerConfig, save_refiner
    from is5net.modeling import build_model

    torch.manual_seed(0)
    model = build_model("is5net_tiny" if kind == "tiny" else "is5net").eval()
    path = root / f"refiner_{kind}.safetensors"
    save_refiner(model, path, RefinerConfig.for_model(model, input_size=256 if kind == "tiny" else 1024))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", default="1600x1200", help="photo size WxH")
    parser.add_argument("--refiner", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", choices=("mask", "cutout"), default="mask")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args()

    from is5net.cli import main as is5net_main

    logging.getLogger("is5net").setLevel(logging.WARNING)
    w, h = (int(v) for v in args.size.lower().split("x"))
    root = Path(tempfile.mkdtemp(prefix="is5net-bench-batch-"))
    try:
        photos, coarse = make_folder(root, args.images, (w, h))
        refiner = make_refiner(root, args.refiner)
        base = [
            str(photos),
            "--box",
            f"{w // 6},{h // 6},{5 * w // 6},{5 * h // 6}",
            "--checkpoint",
            str(refiner),
            "--coarse-mask",
            str(coarse),
            "--device",
            args.device,
            "--backend",
            "torch",
            "--save",
            args.save,
            "-q",
        ]
        # Warm-up: file cache, lazy imports, pymatting's kernels, the device.
        is5net_main(["predict", *base, "-o", str(root / "warm"), "--prefetch", "0"])
        walls: dict[int, list[float]] = {0: [], 2: []}
        for r in range(args.repeats):
            for depth in (0, 2):
                out = root / f"out_{depth}_{r}"
                t0 = time.perf_counter()
                rc = is5net_main(["predict", *base, "-o", str(out), "--prefetch", str(depth)])
                walls[depth].append(time.perf_counter() - t0)
                if rc != 0:
                    raise SystemExit(f"predict exited {rc}")
                shutil.rmtree(out)
        rate = {d: args.images / statistics.median(v) for d, v in walls.items()}
        result = {
            "images": args.images,
            "size": f"{w}x{h}",
            "refiner": args.refiner,
            "device": args.device,
            "save": args.save,
            "cpus": os.cpu_count(),
            "images_per_s_decode_in_loop": round(rate[0], 2),
            "images_per_s_decode_ahead": round(rate[2], 2),
            "ratio": round(rate[2] / rate[0], 3),
            "walls_s": {str(d): [round(x, 2) for x in v] for d, v in walls.items()},
        }
        print(f"{args.images} photos {w}x{h}, refiner {args.refiner} on {args.device}, --save {args.save}:")
        print(f"  decoded in the loop (--prefetch 0): {rate[0]:7.2f} images/s")
        print(f"  decoded ahead      (--prefetch 2): {rate[2]:7.2f} images/s   ratio {rate[2] / rate[0]:.2f}x")
        print(json.dumps(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
