"""Time and peak memory of one box on a large photo in each region (image, box, tiles), on this machine.

Each region runs in a fresh process (so its peak resident memory is its own), on a photo of
``--width x --height`` (default 6000x4000: skimage's astronaut scaled up) with a box around the middle
third and a coarse mask given (stage 1 is not part of what is measured). The refiner is the full-width
5-channel IS-Net at ``--size`` (random weights: time and memory do not depend on the weights' values).
The plain reference is the ``image`` region (the paper's): the other two are reported as ratios to it.

    python benchmarks/bench_regions.py                    # 6000x4000, 1024 input, CPU
    python benchmarks/bench_regions.py --size 512 --max-side 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_region(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch
    from skimage import data
    from skimage.transform import resize

    from is5net import IS5NetPredictor
    from is5net.checkpoint import RefinerConfig
    from is5net.modeling import build_model

    torch.manual_seed(0)
    refiner = build_model(args.model).eval()
    refiner.config = RefinerConfig.for_model(refiner, input_size=args.size)
    photo = (resize(data.astronaut(), (args.height, args.width), order=1) * 255).astype(np.uint8)
    box = [args.width // 3, args.height // 3, 2 * args.width // 3, 2 * args.height // 3]
    coarse = np.zeros((args.height, args.width), np.uint8)
    coarse[box[1] : box[3], box[0] : box[2]] = 255
    p = IS5NetPredictor(None, refiner, device="cpu", region=args.region, max_side=args.max_side, batch_size=1)
    p.set_image(photo)
    t0 = time.perf_counter()
    mask = p.predict(box=box, coarse_mask=coarse).mask
    seconds = time.perf_counter() - t0
    tiles = p._regions.largest_batch
    return {
        "region": args.region,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "mask_shape": list(mask.shape),
        "tile_batch": tiles,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--size", type=int, default=1024, help="the refiner's input size")
    ap.add_argument("--model", default="is5net", help="registry name (is5net, is5net_tiny ...)")
    ap.add_argument("--max-side", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--region", help=argparse.SUPPRESS)  # the child process's one region
    args = ap.parse_args()
    if args.region:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(one_region(args)))
        return
    rows = []
    for region in ("image", "box", "tiles"):
        cmd = [sys.executable, __file__, "--region", region] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "region"
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    ref = rows[0]
    print(
        f"\n{args.width}x{args.height} photo, one box (middle third), {args.model} at {args.size}², "
        f"{args.threads} threads, max side {args.max_side}:\n"
    )
    print("| region | time (s) | × image | peak memory (MiB) | × image |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['region']} | {r['seconds']:.1f} | {r['seconds'] / ref['seconds']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / ref['peak_rss_mib']:.2f} |"
        )


if __name__ == "__main__":
    main()
