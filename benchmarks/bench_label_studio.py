"""What answering Label Studio costs beyond the API: ``/label-studio/predict`` against ``/api/images/{id}/segment``.

Both run the same models on the same photo and box (tiny random SAM + tiny refiner, so that the difference,
not the models, shows): the Label Studio route also reads and hashes the task's file (here from
``--label-studio-root``) and encodes the mask in Label Studio's RLE instead of a PNG::

    python benchmarks/bench_label_studio.py --size 2000x3000 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the servers and tiny models of the tests

from label_studio_support import LABEL_CONFIG  # noqa: E402
from test_serve_support import RunningServer  # noqa: E402
from tiny import make_tiny_refiner  # noqa: E402

RECT = {"x": 46.5, "y": 29, "width": 7.5, "height": 67, "rotation": 0, "rectanglelabels": ["Object"]}


def models(folder: Path) -> list[str]:
    from is5net.checkpoint import save_refiner
    from is5net.inference.stage1 import build_sam_tiny

    torch.manual_seed(0)
    torch.save(build_sam_tiny().eval().state_dict(), folder / "sam_tiny.pth")
    save_refiner(make_tiny_refiner(5), folder / "refiner.safetensors")
    return ["--checkpoint", str(folder / "refiner.safetensors"), "--sam-checkpoint", str(folder / "sam_tiny.pth")]


def timed(call, repeat: int) -> tuple[float, list[float]]:
    """The first call's seconds (decode + embedding) and the later ones' (the embedding cached)."""
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        r = call()
        times.append(time.perf_counter() - t0)
        r.raise_for_status()
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="2000x3000", help="the photo's HxW (skimage's rocket, resized)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    from skimage import data
    from skimage.transform import resize

    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp:
        folder = Path(tmp)
        photo = folder / "photo.png"
        Image.fromarray((resize(data.rocket(), (h, w), anti_aliasing=True) * 255).astype(np.uint8)).save(photo)
        region = {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "value": RECT}
        body = {"tasks": [{"id": 1, "data": {"image": photo.name}}], "project": "1.1", "label_config": LABEL_CONFIG,
                "params": {"context": {"result": [region]}}}  # fmt: skip
        box = [RECT["x"] * w / 100, RECT["y"] * h / 100, (RECT["x"] + RECT["width"]) * w / 100,
               (RECT["y"] + RECT["height"]) * h / 100]  # fmt: skip
        argv = [*models(folder), "--device", "cpu", "-q", "--label-studio", "--label-studio-root", str(folder)]
        with RunningServer(argv) as server:
            client = httpx.Client(base_url=server.url, timeout=600)
            ls_first, ls = timed(lambda: client.post("/label-studio/predict", json=body), args.repeat)
            image_id = client.post("/api/images", files={"image": photo.open("rb")}).json()["id"]
            segment = {"boxes": [box], "threshold": 0.5}
            _, api = timed(lambda: client.post(f"/api/images/{image_id}/segment", json=segment), args.repeat)
    print(f"{h}x{w} photo, tiny models, {torch.get_num_threads()} threads, median of {args.repeat}:")
    print(f"  /label-studio/predict   first {ls_first:.2f} s (decode + embedding), then {statistics.median(ls):.3f} s")
    print(f"  /api/images/ID/segment  {statistics.median(api):.3f} s (PNG answer, same models and box)")


if __name__ == "__main__":
    main()
