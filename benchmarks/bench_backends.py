"""The refiner on a CPU: official eager torch vs our torch fast path, ONNX Runtime and OpenVINO.

One model (the official 5-channel IS-Net at full width, random weights with calibrated BatchNorm and
output statistics, so the agreement numbers mean something), one 1024² input built from real photos, batch
1 and 8. Each backend is timed in the same run as the official code and compared with it: ms per image,
ratio to the official time, max |diff| of the sigmoid output, IoU of the masks at 0.5. OpenVINO runs twice:
asked for fp32 (what is5net uses unless --precision bf16) and with its own default, which is bf16 on CPUs
with bf16 units (avx512_bf16, AMX); the precision each compiled model reports is printed.

``--checkpoint`` adds the same agreement check on a trained refiner (e.g. the demo's
``is5net-demo/is5net/refiner.safetensors``) at its own input size: random weights say nothing about how far
bf16 moves a real mask. The machine's load (load average, the busiest processes) is printed before and
after, since the CPU may be shared.

    python benchmarks/bench_backends.py                                  # 1024², batch 1 and 8
    python benchmarks/bench_backends.py --batches 1 --iters 3 \\
        --checkpoint is5net-demo/is5net/refiner.safetensors --json backends.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import calibrate_batchnorm, calibrate_output, real_input, time_ms, torch_defaults  # noqa: E402
from is5net.checkpoint import RefinerConfig  # noqa: E402
from is5net.export import export_refiner  # noqa: E402
from is5net.inference.backends import OnnxRuntimeBackend, OpenVINOBackend, TorchBackend, installed  # noqa: E402
from is5net.modeling import build_model  # noqa: E402

CPU = torch.device("cpu")


def agreement(ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    """max |diff| of two sigmoid maps and the IoU of their masks at 0.5 (both empty: 1)."""
    diff = (ref.float() - out.float()).abs().max().item()
    a, b = ref > 0.5, out > 0.5
    union = (a | b).sum().item()
    return diff, 1.0 if union == 0 else (a & b).sum().item() / union


def machine_load(label: str) -> dict:
    """Load average and the busiest processes now (others may share the CPU), printed and returned."""
    load = os.getloadavg()
    try:
        ps = subprocess.run(
            ["ps", "-eo", "pcpu,etime,comm", "--sort=-pcpu"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[1:7]
    except (OSError, subprocess.SubprocessError):
        ps = []
    busiest = [" ".join(line.split()) for line in ps]
    print(
        f"[{label}] load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; "
        f"busiest: {'; '.join(busiest)}"
    )
    return {"load": load, "busiest": busiest}


def variants(model: torch.nn.Module, onnx_path: Path) -> dict:
    """name -> (callable x -> sigmoid map, description), each built once."""
    out = {}
    fast = TorchBackend(model, CPU, "fp32", fast=True)
    out["torch fast path"] = (lambda x: torch.sigmoid(fast(x)), fast.description + ", BatchNorm folded")
    if installed("onnxruntime"):
        ort = OnnxRuntimeBackend(onnx_path)
        out["onnxruntime"] = (lambda x: torch.sigmoid(ort(x)), ort.description)
    if installed("openvino"):
        for label, precision in (("openvino fp32", "fp32"), ("openvino default", None)):
            ov = OpenVINOBackend(onnx_path, precision=precision)
            out[label] = ((lambda b: lambda x: torch.sigmoid(b(x)))(ov), ov.description)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=2, help="timed runs per variant (median; batch 8: at most 2)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path, help="also check agreement on this trained refiner")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = build_model("is5net")
    calibrate_batchnorm(model, 5, size=256)
    calibrate_output(model, real_input(2, 5, 256))
    model.config = RefinerConfig.for_model(model, input_size=args.size)  # the export reads the input size here
    results: dict = {
        "machine": machine_load("before"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "is5net.onnx"
        export_refiner(model, onnx_path, dynamic_batch=True)
        runs = variants(model, onnx_path)
        print(
            f"official 5-channel IS-Net, random weights, {args.size}², torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads"
        )
        for name, (_, desc) in runs.items():
            print(f"  {name}: {desc}")
        print(f"{'batch':>5} {'variant':>17} {'ms/img':>9} {'vs official':>11} {'max|diff|':>10} {'IoU@0.5':>8}")
        for batch in [int(b) for b in args.batches.split(",")]:
            x = real_input(batch, 5, args.size)
            iters = args.iters if batch == 1 else min(args.iters, 2)
            with torch_defaults(), torch.no_grad():

                def official(x=x):
                    return torch.sigmoid(model(x)[0][0])  # eager, all six side outputs, as the official forward

                reference = official()
                base = time_ms(official, CPU, iters, args.warmup) / batch
            results["rows"].append(
                dict(batch=batch, variant="official", ms_per_image=base, ratio=1.0, max_diff=0.0, iou=1.0)
            )
            print(f"{batch:>5} {'official':>17} {base:>9.1f} {1.0:>10.2f}x {0.0:>10.2e} {1.0:>8.4f}", flush=True)
            for name, (fn, desc) in runs.items():
                out = fn(x)
                ms = time_ms(lambda fn=fn, x=x: fn(x), CPU, iters, args.warmup) / batch
                diff, iou = agreement(reference, out)
                results["rows"].append(
                    dict(
                        batch=batch,
                        variant=name,
                        backend=desc,
                        ms_per_image=ms,
                        ratio=base / ms,
                        max_diff=diff,
                        iou=iou,
                    )
                )
                print(f"{batch:>5} {name:>17} {ms:>9.1f} {base / ms:>10.2f}x {diff:>10.2e} {iou:>8.4f}", flush=True)
    if args.checkpoint:
        results["trained"] = trained_agreement(args.checkpoint)
    results["machine_after"] = machine_load("after")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def trained_agreement(checkpoint: Path) -> list[dict]:
    """Agreement with the official arithmetic on a trained refiner, at its own input size, 8 real inputs."""
    from is5net.checkpoint import load_refiner

    refiner = load_refiner(checkpoint)
    size = refiner.config.input_size
    x = real_input(8, refiner.in_ch, size)
    with torch.no_grad():
        reference = torch.sigmoid(refiner(x)[0][0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "trained.onnx"
        export_refiner(refiner, onnx_path, dynamic_batch=True)
        print(f"trained refiner {checkpoint} ({refiner.config.model}, {size}²), 8 inputs: agreement with torch eager")
        checks = dict(variants(refiner, onnx_path))
        bf16 = TorchBackend(refiner, CPU, "bf16")
        checks["torch bf16 autocast"] = (lambda x: torch.sigmoid(bf16(x)), bf16.description)
        for name, (fn, desc) in checks.items():
            diff, iou = agreement(reference, fn(x))
            per_image = [agreement(reference[i], fn(x[i : i + 1])[0])[1] for i in range(len(x))]
            rows.append(dict(variant=name, backend=desc, max_diff=diff, iou=iou, min_iou_per_image=min(per_image)))
            print(f"  {name:>20} ({desc}): max |diff| {diff:.2e}, IoU {iou:.5f}, worst image {min(per_image):.5f}")
    return rows


if __name__ == "__main__":
    main()
