"""The refiner through OpenVINO at fp32, bf16 and int8: speed at 1024², accuracy on the demo's held-out split.

Speed: the official-size IS5Net (random weights with calibrated BatchNorm, as bench_backends.py), batch 1 at
1024², through is5net's own backends (``create_backend("openvino", precision=...)``): fp32 (what is5net asks
for by default), bf16 (``--precision bf16``), OpenVINO's own default hint, and int8 (``--precision int8``,
quantised once on the demo's calibration data; speed does not depend on which images calibrate). Each is
timed in turns with the others (``--iters`` rounds after a warm-up): median and fastest ms, ratio to fp32.

Accuracy: the demo's trained refiner (``is5net demo`` writes ``OUT/is5net/refiner.safetensors``) scored on the
demo's held-out split (``OUT/data/DIS-TE1``, with its simulated-SAM coarse masks) by ``is5net eval``'s own
code (all metrics), once per precision, all through OpenVINO, plus torch fp32 (the reference). int8 is
calibrated on the demo's default set (its training split's first 64 images: never the test split). Against
OpenVINO fp32: the change of maxFβ (goal: within .005) and of HCEγ (goal: within 5 %), and the IoU of the
masks at 0.5 (mean and least image; goal for a default: >= .99).

    python benchmarks/bench_precision.py --demo /tmp/demo_c --json precision.json
    python benchmarks/bench_precision.py --demo is5net-demo --skip-speed      # accuracy only (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import calibrate_batchnorm, calibrate_output, real_input, time_ms  # noqa: E402
from is5net.checkpoint import RefinerConfig  # noqa: E402
from is5net.demo.calibration import calibration_set  # noqa: E402
from is5net.inference.backends import create_backend  # noqa: E402
from is5net.modeling import build_model  # noqa: E402

CPU = torch.device("cpu")
PRECISIONS = ("fp32", "bf16", "int8")


def cpu_report() -> dict:
    """The CPU's model name, its bf16/int8 flags and what OpenVINO's CPU plug-in says it can do."""
    import openvino as ov

    name = platform.processor()
    flags: set[str] = set()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"Model name:\s*(.+)", lscpu)
        name = found.group(1).strip() if found else name
        flags = set(re.search(r"Flags:\s*(.+)", lscpu).group(1).split())
    except (OSError, subprocess.CalledProcessError, AttributeError):
        pass
    core = ov.Core()
    return {
        "model_name": name,
        "cores": os.cpu_count(),
        "flags": sorted(f for f in flags if f.startswith("amx") or f in ("avx512_bf16", "avx512_vnni", "avx_vnni")),
        "openvino_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
        "openvino_default_hint": str(core.get_property("CPU", "INFERENCE_PRECISION_HINT")),
        "load_average": os.getloadavg(),
    }


def full_size_refiner(size: int) -> torch.nn.Module:
    """The official IS5Net shape, random weights, realistic BatchNorm statistics and output spread."""
    torch.manual_seed(0)
    model = build_model("is5net")
    calibrate_batchnorm(model, 5, size=128)
    with torch.inference_mode():
        calibrate_output(model, real_input(1, 5, 256))
    model.config = RefinerConfig.for_model(model, input_size=size)
    return model.fold_batchnorm()  # as the predictor hands it to a backend


def speed(size: int, iters: int, count: int) -> list[dict]:
    """Each precision built once, then timed in turns (one call each per round, ``iters`` rounds): on a shared
    CPU a burst of load then hits every row alike. Median and fastest call per row, ratios of the medians."""
    refiner = full_size_refiner(size)
    x = real_input(1, 5, size).numpy()
    rows, backends = [], []
    for label, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("OpenVINO's default", None), ("int8", "int8")):
        started = time.perf_counter()
        calibration = calibration_set(None, count, progress=True) if precision == "int8" else None
        backend = create_backend("openvino", refiner, precision=precision, calibration=calibration)
        backend(x)  # warm-up: the first call allocates
        rows.append({"row": label, "reports": backend.precision, "build_s": round(time.perf_counter() - started, 1)})
        backends.append(backend)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(iters):
        for i, backend in enumerate(backends):
            times[i].append(time_ms(lambda: backend(x), CPU, iters=1, warmup=0))
    for r, t, backend in zip(rows, times, backends):
        r["ms"], r["min_ms"] = round(float(np.median(t)), 1), round(min(t), 1)
        print(f"  {r['row']:<20} {backend.description}: median {r['ms']:.1f} ms, fastest {r['min_ms']:.1f} ms")
    for r in rows:
        r["vs_fp32"] = round(rows[0]["ms"] / r["ms"], 2)
    return rows


def score(demo: Path, out: Path, count: int) -> dict:
    """Every metric of the demo's refiner on DIS-TE1 at each precision (OpenVINO) and torch fp32."""
    from is5net.eval.dis5k import evaluate_dataset

    checkpoint = demo / "is5net" / "refiner.safetensors"
    split = demo / "data" / "DIS-TE1"
    if not checkpoint.is_file() or not (split / "coarse").is_dir():
        raise SystemExit(f"{demo}: no demo run there (expected is5net/refiner.safetensors and data/DIS-TE1/coarse)")
    runs = {"torch fp32": ("torch", "fp32")} | {f"openvino {p}": ("openvino", p) for p in PRECISIONS}
    rows = {}
    for name, (backend, precision) in runs.items():
        calibration = calibration_set(None, count, progress=True) if precision == "int8" else None
        result = evaluate_dataset(
            demo / "data",
            ["DIS-TE1"],
            "is5net",
            checkpoint,
            out / name.replace(" ", "_"),
            coarse_dir=split / "coarse",
            device="cpu",
            metrics="all",
            progress=False,
            backend=backend,
            precision=precision,
            calibration=calibration,
        )
        rows[name] = dict(result["DIS-TE1"])
    return rows


def mask_iou(out: Path, name: str) -> tuple[float, float]:
    """Mean and least IoU (masks at 0.5) of run ``name``'s predictions with OpenVINO fp32's, image by image."""
    from is5net.io import load_mask

    ref_dir, dir_ = out / "openvino_fp32" / "predictions" / "DIS-TE1", out / name / "predictions" / "DIS-TE1"
    ious = []
    for ref in sorted(ref_dir.glob("*.png")):
        a, b = load_mask(ref) > 127, load_mask(dir_ / ref.name) > 127
        union = (a | b).sum()
        ious.append(1.0 if union == 0 else (a & b).sum() / union)
    return float(np.mean(ious)), float(np.min(ious))


def accuracy_table(rows: dict, out: Path) -> list[dict]:
    base = rows["openvino fp32"]
    table = []
    for name, r in rows.items():
        iou = mask_iou(out, name.replace(" ", "_"))
        entry = {"run": name, **{k: r[k] for k in ("maxF", "wF", "MAE", "Sm", "meanEm", "HCE") if k in r}}
        entry["d_maxF"] = round(r["maxF"] - base["maxF"], 4)
        entry["HCE_change_pct"] = round(100.0 * (r["HCE"] - base["HCE"]) / max(base["HCE"], 1e-9), 2)
        entry["iou_mean"], entry["iou_min"] = round(iou[0], 4), round(iou[1], 4)
        entry["goal"] = abs(entry["d_maxF"]) <= 0.005 and abs(entry["HCE_change_pct"]) <= 5.0
        table.append(entry)
    return table


def markdown(speed_rows: list[dict], acc_rows: list[dict], size: int) -> str:
    lines = []
    if speed_rows:
        lines += [f"| refiner {size}², batch 1, OpenVINO | reports | median ms | fastest ms | vs fp32 |"]
        lines += ["|---|---|---|---|---|"]
        lines += [
            f"| {r['row']} | {r['reports']} | {r['ms']:.0f} | {r['min_ms']:.0f} | {r['vs_fp32']:.2f}x |"
            for r in speed_rows
        ]
        lines.append("")
    if acc_rows:
        lines += [
            "| demo refiner, DIS-TE1 | maxFβ | HCEγ | Δ maxFβ | Δ HCEγ | mask IoU mean / least | goal |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in acc_rows:
            lines.append(
                f"| {r['run']} | {r['maxF']:.4f} | {r['HCE']:.2f} | {r['d_maxF']:+.4f} | {r['HCE_change_pct']:+.2f} % "
                f"| {r['iou_mean']:.4f} / {r['iou_min']:.4f} | {'yes' if r['goal'] else 'no'} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", type=Path, help="an `is5net demo` output folder (for the accuracy part)")
    ap.add_argument("--size", type=int, default=1024, help="input side of the speed part (default 1024)")
    ap.add_argument("--iters", type=int, default=7, help="timed rounds, one call per precision each (default 7)")
    ap.add_argument("--speed-calibration", type=int, default=8, help="int8 calibration images, speed part")
    ap.add_argument("--calibration-count", type=int, default=64, help="int8 calibration images, accuracy part")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--json", type=Path, help="write everything as JSON")
    args = ap.parse_args()

    report = {"cpu": cpu_report(), "torch_threads": torch.get_num_threads()}
    print(json.dumps(report["cpu"]), flush=True)
    report["speed"] = [] if args.skip_speed else speed(args.size, args.iters, args.speed_calibration)
    report["accuracy"] = []
    if args.demo is not None:
        with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
            rows = score(args.demo, Path(tmp), args.calibration_count)
            report["accuracy"] = accuracy_table(rows, Path(tmp))
        report["metrics"] = rows
    report["cpu"]["load_average_after"] = os.getloadavg()
    print(markdown(report["speed"], report["accuracy"], args.size))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
