"""What a click costs in ``is5net serve``: a box with clicks vs the box alone, on one cached image.

    python benchmarks/bench_clicks.py [--repeats 30]

Tiny random SAM and refiner (CPU, torch backend), the real server on a loopback port (``tests/test_serve_support``),
the coffee photo uploaded once. The two kinds of request alternate, so a busy machine's drift falls on both
alike. A click goes to SAM's prompt encoder beside the box: it should cost what the box alone costs, with the
image encoded once for every request (the last number printed).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

BOX = [120, 80, 480, 340]


def _models(folder: Path) -> list:
    from is5net.checkpoint import save_refiner
    from is5net.inference.stage1 import build_sam_tiny
    from tiny import make_tiny_refiner

    torch.manual_seed(0)
    torch.save(build_sam_tiny().state_dict(), folder / "sam.pth")
    save_refiner(make_tiny_refiner(5), folder / "refiner.safetensors")
    return ["--checkpoint", folder / "refiner.safetensors", "--sam-checkpoint", folder / "sam.pth"]


def main() -> None:
    from test_serve_support import RunningServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, format="PNG")
    with (
        tempfile.TemporaryDirectory() as tmp,
        RunningServer([*_models(Path(tmp)), "--device", "cpu", "--backend", "torch", "-q"]) as server,
    ):
        client = httpx.Client(base_url=server.url, timeout=120)
        image = ("coffee.png", buf.getvalue(), "image/png")
        url = f"/api/images/{client.post('/api/images', files={'image': image}).json()['id']}/segment"

        def ms(body: dict) -> float:
            t0 = time.perf_counter()
            r = client.post(url, json=body)
            assert r.status_code == 200, r.text
            return (time.perf_counter() - t0) * 1000

        box, clicked = [], []
        for k in range(args.repeats):
            box.append(ms({"boxes": [BOX]}))
            clicked.append(ms({"boxes": [BOX], "points": [[300, 200], [200 + k, 150]], "point_labels": [1, 0]}))
        print(
            f"box alone p50 {statistics.median(box):.1f} ms; box + 2 clicks p50 {statistics.median(clicked):.1f} ms "
            f"({args.repeats} each); image encodings: {server.engine.segmenter.encoder_runs}"
        )


if __name__ == "__main__":
    main()
