"""A soak run of ``is5net serve``: N clients for M minutes of mixed good, bad and slow requests, on loopback.

    python benchmarks/soak_serve.py                          # 4 clients, 1 minute
    python benchmarks/soak_serve.py --clients 8 --minutes 5 --json soak.json

The server is the real command (``python -m is5net serve --stage1 grabcut``) with a tiny random refiner
checkpoint this script writes, in its own process on 127.0.0.1 (nothing else is ever contacted), its
temporary folder in a private ``TMPDIR``. Each client loops until the time or the request count runs out,
drawing each request from a fixed mix:

- **good**: ``POST /api/segment`` (one of a few photos, a random box) or ``POST /api/images/{id}/segment``
  (JSON, the cache);
- **bad**: one of the malformed requests of ``tests/test_serve_faults.py``'s classes (a 257-character
  boundary, JSON nested 100,000 deep, a 400-digit box, a body cut short, not an image, ...): each must be a
  4xx;
- **slow**: a raw socket that announces a body, sends part of it and stalls: the server must answer 408
  after ``--upload-timeout`` and free its slot and file.

It prints the count of each status per kind, p50/p99 latency per kind, the server's RSS and open files at
start, after warm-up and at the end, the temporary files left (while running and after exit), and whether
its log held a traceback. The goal: no 5xx, no transport errors, no temporary file left, RSS flat after
warm-up.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import tiny_refiner_file, wait_until_serving  # noqa: E402

W, H = 320, 240
UPLOAD_TIMEOUT = 2.0  # the server's --upload-timeout: a slow client waits this long for its 408


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--minutes", type=float, default=1.0, help="how long the clients send (default 1)")
    p.add_argument("--max-requests", type=int, default=20_000, help="stop after this many requests in all")
    p.add_argument("--warmup", type=float, default=0.2, help="fraction of the run counted as warm-up (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args()


# ------------------------------------------------------------------------------------------ the requests
def photos(n: int = 6) -> list[bytes]:
    """A few distinct PNG photos (a disc on a gradient, one pixel apart), so the cache holds several."""
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) * 255 // (W + H)], -1).astype(np.uint8)
    base[(xx - W // 2) ** 2 + (yy - H // 2) ** 2 < 60**2] = (200, 40, 40)
    out = []
    for k in range(n):
        img = base.copy()
        img[0, k] = (k, k, k)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def part(name: str, value: bytes, filename: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


MULTIPART, JSON = "multipart/form-data; boundary=B", "application/json"
CACHED = "/api/images/" + "0" * 64 + "/segment"
BAD = [  # (path, content type, body): one of each class the server once answered 5xx or mishandled
    ("/api/segment", "multipart/form-data; boundary=" + "b" * 257, b"--" + b"b" * 257),
    (CACHED, JSON, b"[" * 100_000 + b"]" * 100_000),
    (CACHED, JSON, b'{"boxes": ' + b"[" * 990 + b"]" * 990 + b"}"),
    (CACHED, JSON, b'{"boxes": [[' + b"1" * 400 + b", 2, 3, 4]]}"),
    ("/api/segment", MULTIPART, part("box", b"1" * 400 + b",2,3,4") + b"--B--\r\n"),
    ("/api/segment", MULTIPART, part("box", b"1,2,3,4") + part("image", b"\x89PNG", "a.png")[:-2]),
    ("/api/images", MULTIPART, part("image", b"not an image", "a.png") + b"--B--\r\n"),
    (CACHED, JSON, b"\xff\xfe\xfd{"),
    (CACHED, JSON, b'{"boxes": [[1, 2, 3, 4]], "threshold": 1e999}'),
    ("/api/segment", "text/plain", b"hello"),
]


def slow_upload(port: int) -> tuple[int, float]:
    """A client that sends part of a body and stalls: (status, seconds until the server answered)."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=UPLOAD_TIMEOUT + 30) as sock:
        sock.sendall(
            b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + MULTIPART.encode() + b"\r\n"
            b"Content-Length: 200000\r\n\r\n" + part("image", b"\0" * 50_000, "slow.png")[:-2]
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, time.perf_counter() - t0


class Client(threading.Thread):
    """One client: draws good, bad and slow requests until ``stop`` is set or ``budget`` runs out."""

    def __init__(self, k: int, url: str, port: int, images: list[bytes], seed: int, stop, budget, records):
        super().__init__(daemon=True)
        self.url, self.port, self.images, self.stop, self.budget, self.records = (
            url,
            port,
            images,
            stop,
            budget,
            records,
        )
        self.rng = random.Random(seed * 1000 + k)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            ids = [http.post("/api/images", files={"image": ("p.png", p)}).json()["id"] for p in self.images[:2]]
            while not self.stop.is_set() and self.budget.take():
                kind, t0 = self.rng.choices(("good", "bad", "slow"), (65, 27, 8))[0], time.perf_counter()
                try:
                    if kind == "slow":
                        status, seconds = slow_upload(self.port)
                        self.records.append((kind, status, seconds * 1000))
                        continue
                    r = self.good(http, ids) if kind == "good" else self.bad(http)
                    status = r.status_code
                except (httpx.HTTPError, OSError) as exc:
                    status = f"transport error ({exc.__class__.__name__})"
                self.records.append((kind, status, (time.perf_counter() - t0) * 1000))

    def good(self, http: httpx.Client, ids: list[str]) -> httpx.Response:
        x0, y0 = self.rng.randrange(0, W // 2), self.rng.randrange(0, H // 2)
        box = [x0, y0, x0 + self.rng.randrange(40, W // 2), y0 + self.rng.randrange(30, H // 2)]
        if self.rng.random() < 0.4:
            return http.post(f"/api/images/{self.rng.choice(ids)}/segment", json={"boxes": [box]})
        image = self.rng.choice(self.images)
        data = {"box": ",".join(map(str, box)), "format": self.rng.choice(("png", "cutout", "json"))}
        return http.post("/api/segment", data=data, files={"image": ("p.png", image, "image/png")})

    def bad(self, http: httpx.Client) -> httpx.Response:
        path, ctype, body = self.rng.choice(BAD)
        return http.post(path, content=body, headers={"content-type": ctype})


class Budget:
    """The run's request count, shared by the clients."""

    def __init__(self, n: int):
        self.left, self.lock = n, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            self.left -= 1
            return self.left >= 0


# ---------------------------------------------------------------------------------------- the server
def start_server(refiner: Path, tmp_root: Path) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "is5net", "serve", "--stage1", "grabcut", "--checkpoint", str(refiner)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--cache-mb", "64", "-q"]
    cmd += ["--upload-timeout", str(UPLOAD_TIMEOUT)]
    env = {**os.environ, "TMPDIR": str(tmp_root)}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    wait_until_serving(proc, f"http://127.0.0.1:{port}")
    return proc, port


def server_state(pid: int, tmp_root: Path) -> dict:
    """The server's resident memory (MiB), open file descriptors, and files in its temporary folder."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    return {
        "rss_mib": round(rss_kib / 1024, 1),
        "open_files": len(os.listdir(f"/proc/{pid}/fd")),
        "temp_files": sum(1 for p in tmp_root.rglob("*") if p.is_file()),
    }


# ------------------------------------------------------------------------------------------- the run
def soak(args: argparse.Namespace, port: int, pid: int, tmp_root: Path) -> dict:
    records: list = []
    stop, budget, images = threading.Event(), Budget(args.max_requests), photos()
    clients = [
        Client(k, f"http://127.0.0.1:{port}", port, images, args.seed, stop, budget, records)
        for k in range(args.clients)
    ]
    states = {"start": server_state(pid, tmp_root)}
    t0 = time.monotonic()
    for c in clients:
        c.start()
    seconds = args.minutes * 60
    stop.wait(seconds * args.warmup)
    states["after_warmup"] = server_state(pid, tmp_root)
    stop.wait(seconds * (1 - args.warmup))
    stop.set()
    for c in clients:
        c.join(timeout=UPLOAD_TIMEOUT + 120)
    took = time.monotonic() - t0
    time.sleep(0.5)  # the last answers' temporary files are removed as their requests end
    states["end"] = server_state(pid, tmp_root)
    return {"records": records, "states": states, "seconds": round(took, 1)}


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 1) if values else float("nan")


def figures(run: dict) -> dict:
    records = run["records"]
    by_kind = {}
    for kind in ("good", "bad", "slow"):
        rows = [r for r in records if r[0] == kind]
        latencies = [r[2] for r in rows]
        by_kind[kind] = {
            "n": len(rows),
            "statuses": dict(sorted(Counter(str(r[1]) for r in rows).items())),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
        }
    statuses = Counter(r[1] for r in records)
    return {
        "requests": len(records),
        "seconds": run["seconds"],
        "by_kind": by_kind,
        "5xx": sum(n for s, n in statuses.items() if isinstance(s, int) and s >= 500),
        "transport_errors": sum(n for s, n in statuses.items() if not isinstance(s, int)),
        "server": run["states"],
    }


def report(fig: dict, exit_info: dict) -> None:
    print(f"{fig['requests']} requests in {fig['seconds']} s")
    print(f"{'kind':6} {'n':>6} {'p50 ms':>9} {'p99 ms':>9}  statuses")
    for kind, row in fig["by_kind"].items():
        print(f"{kind:6} {row['n']:>6} {row['p50_ms']:>9} {row['p99_ms']:>9}  {row['statuses']}")
    print(f"5xx: {fig['5xx']}, transport errors: {fig['transport_errors']}")
    for when, st in fig["server"].items():
        print(
            f"server {when:12}: RSS {st['rss_mib']} MiB, open files {st['open_files']}, temp files {st['temp_files']}"
        )
    print(
        f"after Ctrl-C: exit status {exit_info['returncode']}, files left under TMPDIR "
        f"{exit_info['files_left']}, traceback in the log: {exit_info['traceback']}"
    )


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-serve-") as tmp:
        tmp = Path(tmp)
        refiner = tiny_refiner_file(tmp)
        tmp_root = tmp / "server-tmp"
        tmp_root.mkdir()
        proc, port = start_server(refiner, tmp_root)
        try:
            fig = figures(soak(args, port, proc.pid, tmp_root))
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
        exit_info = {
            "returncode": proc.returncode,
            "files_left": sum(1 for _ in tmp_root.rglob("*")),
            "traceback": "Traceback" in err,
        }
    report(fig, exit_info)
    if args.json:
        args.json.write_text(json.dumps({**fig, "exit": exit_info, "args": vars(args)}, indent=1, default=str) + "\n")
    bad = fig["5xx"] or fig["transport_errors"] or exit_info["files_left"] or fig["server"]["end"]["temp_files"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
