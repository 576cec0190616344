"""What ``is5net serve`` costs over calling the predictor in-process: latency and throughput.

    python benchmarks/bench_serve.py                      # tiny random models, CPU, the coffee photo
    python benchmarks/bench_serve.py --sam-checkpoint vit_l --checkpoint dis-sam --device cuda --image photo.jpg

The server is the real command (``python -m is5net serve``) in its own process on a loopback port; the
client is httpx. Three numbers, each against the same work done in-process (same models, same backend):

- **first box** (cold): ``POST /api/segment`` with an image the server has not seen (every request a new
  photo: one pixel differs, so the content hash does) vs in-process: decode the file, ``set_image``,
  ``predict``, PNG-encode the mask;
- **next boxes** (warm): ``POST /api/images/{id}/segment`` on a cached image vs ``predict`` + PNG encoding;
- **throughput**: ``--clients`` clients sending warm requests at once, requests per second (vs in-process
  one after another).

Each server answer also carries ``Server-Timing``: the milliseconds its worker spent on the model work
(decode, embed, segment, png). The client's latency minus that is the overhead measured within the very same
request, which a busy machine disturbs far less than two separate runs (reported as "overhead").

The ratio server / in-process is the server's overhead (HTTP, multipart or JSON, the worker hand-off). With
tiny models a request is a few milliseconds of model work, so the overhead shows at its largest there. The
in-process calls run in one worker thread, as the server runs its model calls: on a busy machine torch's
intra-op threads started from the main thread can be many times slower than from a worker (measured here:
seconds against a tenth of one), which would flatter the server. ``--threads`` sets torch's thread count on
both sides (default: torch's own).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from is5net.checkpoint import load_refiner, save_refiner
from is5net.inference.outputs import mask_uint8
from is5net.inference.predictor import IS5NetPredictor
from is5net.inference.stage1 import load_sam, seeded_tiny_sam
from is5net.io import encode_png, load_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import calibrate_batchnorm  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="refiner (default: a tiny random IS5Net, input 256)")
    p.add_argument("--sam-checkpoint", help="SAM weights (default: the seeded random tiny SAM)")
    p.add_argument("--image", type=Path, help="photo (default: skimage's coffee, 600x400)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="auto", help="the refiner's runtime, for both sides (default auto)")
    p.add_argument("--repeats", type=int, default=20, help="requests per latency measurement (default 20)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients for throughput (default 4)")
    p.add_argument("--requests", type=int, default=40, help="warm requests per throughput run (default 40)")
    p.add_argument("--threads", type=int, help="torch intra-op threads on both sides (default: torch's own)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    return p.parse_args()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary(values: list[float]) -> dict:
    return {"p50_ms": round(percentile(values, 50), 2), "p95_ms": round(percentile(values, 95), 2), "n": len(values)}


def tiny_refiner_file(folder: Path) -> Path:
    from is5net.checkpoint import RefinerConfig
    from is5net.modeling import build_model

    torch.manual_seed(0)
    model = build_model("is5net_tiny")
    calibrate_batchnorm(model, 5)
    model.config = RefinerConfig.for_model(model, input_size=256)
    return save_refiner(model, folder / "is5net_tiny.safetensors")


def variants(photo: np.ndarray, n: int) -> list[bytes]:
    """``n`` PNGs of the photo, each with one pixel changed: new content (a cache miss), the same work."""
    out = []
    for k in range(n):
        rgb = photo.copy()
        rgb[0, k % rgb.shape[1], 0] ^= 1
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        out.append(buf.getvalue())
    return out


def boxes_for(photo: np.ndarray, n: int) -> list[list[int]]:
    h, w = photo.shape[:2]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        out.append([x0, y0, int(rng.integers(x0 + w // 4, w)), int(rng.integers(y0 + h // 4, h))])
    return out


def in_process(args, refiner_path: Path, sam_path, files: list[bytes], boxes: list, tmp: Path) -> dict:
    """The reference: the server's work done by direct calls, in one worker thread (see the module's doc)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(_in_process, args, refiner_path, sam_path, files, boxes, tmp).result()


def _in_process(args, refiner_path: Path, sam_path, files: list[bytes], boxes: list, tmp: Path) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sam = seeded_tiny_sam() if sam_path is None else load_sam(None, sam_path)
    predictor = IS5NetPredictor(sam, load_refiner(refiner_path), device=device, backend=args.backend)
    paths = []
    for k, data in enumerate(files):
        path = tmp / f"in{k}.png"
        path.write_bytes(data)
        paths.append(path)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    cold, warm = [], []
    for k, path in enumerate([paths[0], *paths]):  # the first one warms everything up, unrecorded
        t0 = time.perf_counter()
        predictor.set_image(load_image(path))
        encode_png(mask_uint8(predictor.predict(box=boxes[k % len(boxes)]).mask))
        sync()
        if k:
            cold.append((time.perf_counter() - t0) * 1000)
    for k in range(args.repeats + 1):
        t0 = time.perf_counter()
        encode_png(mask_uint8(predictor.predict(box=boxes[k % len(boxes)]).mask))
        sync()
        if k:
            warm.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    for k in range(args.requests):
        encode_png(mask_uint8(predictor.predict(box=boxes[k % len(boxes)]).mask))
    sync()
    return {
        "cold": summary(cold),
        "warm": summary(warm),
        "throughput_rps": round(args.requests / (time.perf_counter() - t0), 2),
    }


def start_server(args, refiner_path: Path, sam_path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "is5net",
        "serve",
        "--checkpoint",
        str(refiner_path),
        "--device",
        args.device,
        "--backend",
        args.backend,
        "--port",
        str(port),
        "--queue",
        str(max(8, 2 * args.clients)),
        "-q",
    ]
    cmd += ["--sam-checkpoint", str(sam_path)] if sam_path else ["--sam-type", "tiny"]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, url)
    return proc, url


def wait_until_serving(proc: subprocess.Popen, url: str, limit_s: float = 300) -> None:
    """Return once the server at ``url`` answers /api/health; exit with its stderr if it dies or never does."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            httpx.get(f"{url}/api/health", timeout=2).raise_for_status()
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start: {proc.stderr.read()}") from None
            time.sleep(0.1)


WORK = ("decode", "embed", "segment", "png")


def work_ms(response: httpx.Response) -> float:
    """The model work of one answer, from its ``Server-Timing`` header (``name;dur=ms, ...``)."""
    total = 0.0
    for item in response.headers.get("server-timing", "").split(","):
        name, _, dur = item.strip().partition(";dur=")
        if name in WORK:
            total += float(dur)
    return total


def through_server(args, url: str, files: list[bytes], boxes: list) -> dict:
    client = httpx.Client(base_url=url, timeout=600)
    cold, warm, cold_over, warm_over = [], [], [], []
    for k, data in enumerate([files[0], *files]):
        t0 = time.perf_counter()
        r = client.post(
            "/api/segment",
            files={"image": ("photo.png", data, "image/png")},
            data={"box": ",".join(map(str, boxes[k % len(boxes)]))},
        )
        r.raise_for_status()
        if k:
            cold.append((time.perf_counter() - t0) * 1000)
            cold_over.append(cold[-1] - work_ms(r))
    image_id = r.headers["x-image-id"]
    segment = f"/api/images/{image_id}/segment"
    for k in range(args.repeats + 1):
        t0 = time.perf_counter()
        r = client.post(segment, json={"boxes": [boxes[k % len(boxes)]]})
        r.raise_for_status()
        if k:
            warm.append((time.perf_counter() - t0) * 1000)
            warm_over.append(warm[-1] - work_ms(r))

    statuses: list[int] = []
    lock = threading.Lock()
    counter = iter(range(args.requests))

    def worker():
        with httpx.Client(base_url=url, timeout=600) as c:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                status = c.post(segment, json={"boxes": [boxes[k % len(boxes)]]}).status_code
                with lock:
                    statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    return {
        "cold": summary(cold),
        "warm": summary(warm),
        "cold_overhead": summary(cold_over),
        "warm_overhead": summary(warm_over),
        "throughput_rps": round(statuses.count(200) / took, 2),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
    }


def main() -> None:
    args = parse_args()
    if args.image is not None:
        photo = load_image(args.image)
    else:
        from skimage import data

        photo = data.coffee()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        refiner_path = Path(args.checkpoint) if args.checkpoint else tiny_refiner_file(tmp)
        sam_path = args.sam_checkpoint
        files = variants(photo, args.repeats)
        boxes = boxes_for(photo, 16)
        reference = in_process(args, refiner_path, sam_path, files, boxes, tmp)
        proc, url = start_server(args, refiner_path, sam_path)
        try:
            served = through_server(args, url, files, boxes)
            health = httpx.get(f"{url}/api/health").json()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    ratio = {k: round(served[k]["p50_ms"] / reference[k]["p50_ms"], 3) for k in ("cold", "warm")}
    ratio["throughput"] = round(reference["throughput_rps"] / served["throughput_rps"], 3)
    result = {
        "device": args.device,
        "backend": health["refiner"].get("runtime"),
        "stage1": health["stage1"]["detail"],
        "refiner": health["refiner"]["detail"],
        "image": list(photo.shape[:2]),
        "clients": args.clients,
        "in_process": reference,
        "server": served,
        "server_over_in_process_p50": ratio,
        "cache": health["cache"],
    }
    print(
        f"stage 1: {result['stage1']}; refiner: {result['refiner']} ({result['backend']}); "
        f"image {photo.shape[1]}x{photo.shape[0]}; {args.device}"
    )
    print(
        "| | in-process p50 / p95 (ms) | server p50 / p95 (ms) | server / in-process (p50) "
        "| overhead in the request p50 / p95 (ms) |"
    )
    print("|---|---|---|---|---|")
    for key, label in (("cold", "first box (new image)"), ("warm", "next box (cached image)")):
        a, b, o = reference[key], served[key], served[f"{key}_overhead"]
        print(
            f"| {label} | {a['p50_ms']} / {a['p95_ms']} | {b['p50_ms']} / {b['p95_ms']} | {ratio[key]} "
            f"| {o['p50_ms']} / {o['p95_ms']} ({o['p50_ms'] / b['p50_ms']:.1%} of p50) |"
        )
    print(
        f"| throughput, {args.clients} clients (req/s) | {reference['throughput_rps']} | "
        f"{served['throughput_rps']} | {ratio['throughput']} (time per request) | |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
