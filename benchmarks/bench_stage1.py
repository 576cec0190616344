"""Each stage-1 family on the CPU: the image embedding, then a further box, ours against the package's predictor.

    python benchmarks/bench_stage1.py [--names hq-sam:vit_tiny sam2:tiny sam:vit_b] [--repeats 5]

Random weights of the official shapes, saved and loaded through ``choose_stage1(...).build`` (the coffee photo,
one box). ``set_image`` is timed once; a further box is the median over ``--repeats`` calls of our stage's
``predict`` and of the package predictor's own ``predict`` with the call docs/stage1.md names, alternated so a
busy machine's drift falls on both alike. HQ-SAM's stage makes its decoder's HQ features once per image (the
package's decoder makes them on every call), which is the difference on that row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from skimage import data

from is5net.inference.stage1 import FAMILIES, choose_stage1

BOX = np.array([100, 50, 500, 350])
PACKAGE_CALL = {
    "sam": {"multimask_output": True},
    "hq-sam": {"multimask_output": False, "hq_token_only": True},
    "sam2": {"multimask_output": True},
}


def _stage(name: str, folder: str):
    family, stage_type = name.split(":")
    torch.manual_seed(0)
    model = FAMILIES[family].build(stage_type)
    path = os.path.join(folder, f"{family}_{stage_type}.pt")
    torch.save({"model": model.state_dict()} if family == "sam2" else model.state_dict(), path)
    del model
    return choose_stage1(name, path).build("cpu")


def bench(name: str, repeats: int, folder: str) -> str:
    stage = _stage(name, folder)
    rgb = data.coffee()
    t0 = time.perf_counter()
    stage.set_image(rgb)
    embed = time.perf_counter() - t0
    stage.predict(BOX[None])  # the first box (HQ-SAM: its HQ features)
    ours, package = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        stage.predict(BOX[None])
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        stage.predictor.predict(box=BOX, **PACKAGE_CALL[name.split(":")[0]])
        package.append(time.perf_counter() - t0)
    ms = [1000 * statistics.median(v) for v in (ours, package)]
    return f"{name}: set_image {embed * 1000:.0f} ms; a further box {ms[0]:.0f} ms (package predictor {ms[1]:.0f} ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", nargs="+", default=["hq-sam:vit_tiny", "sam2:tiny", "sam:vit_b"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.names:
            print(bench(name, args.repeats, folder), flush=True)


if __name__ == "__main__":
    main()
