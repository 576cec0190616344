"""Refiner forward speed: the official way (default settings, eager, NCHW, fp32) vs our fast path.

Fast path = what IS5NetPredictor runs: inference mode, BatchNorm folded into the convolutions,
channels_last, cuDNN autotuning and TF32 on CUDA; optional bf16 autocast and torch.compile.
Prints ms per image, the speed ratio and the agreement of the outputs (max |diff| of the sigmoid map,
IoU of the masks at 0.5), per batch size. Random weights with calibrated BatchNorm statistics on real
photos: speed does not depend on the weights' values.

    python benchmarks/bench_refiner.py --device cuda               # H100/H200: 1024², batch 1 and 8
    python benchmarks/bench_refiner.py --device cpu --iters 2      # this machine's CPU
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import calibrate_batchnorm, calibrate_output, real_input, time_ms, torch_defaults  # noqa: E402
from is5net.modeling import build_model  # noqa: E402
from is5net.runtime import enable_fast_cuda  # noqa: E402


def agreement(ref: torch.Tensor, out: torch.Tensor) -> tuple[float, float]:
    diff = (ref.float() - out.float()).abs().max().item()
    a, b = ref > 0.5, out > 0.5
    union = (a | b).sum().item()
    iou = 1.0 if union == 0 else (a & b).sum().item() / union
    return diff, iou


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="is5net", help="registry name (is5net, isnet, is5net_tiny ...)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", default="fast,bf16", help="comma list of: fast, bf16, compile, compile_bf16")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model).to(device)
    # Calibrate at the benchmark size on a GPU (cheap there), at 256² on a CPU.
    calib = args.size if device.type == "cuda" else min(args.size, 256)
    calibrate_batchnorm(model, model.in_ch, size=calib)
    calibrate_output(model, real_input(2, model.in_ch, calib).to(device))
    fused = model.fold_batchnorm()
    results = []
    print(
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}  "
        f"model: {args.model}  size: {args.size}²  torch {torch.__version__}"
    )
    print(f"{'batch':>5} {'variant':>13} {'ms/img':>9} {'speed-up':>9} {'max|diff|':>10} {'IoU@0.5':>8}")
    for batch in [int(b) for b in args.batches.split(",")]:
        x = real_input(batch, model.in_ch, args.size).to(device)

        with torch_defaults(), torch.no_grad():

            def official():
                return torch.sigmoid(model(x)[0][0])  # all six side outputs, as the official forward

            ref_out = official()
            base = time_ms(official, device, args.iters, args.warmup) / batch
        results.append(dict(batch=batch, variant="official", ms_per_image=base, speedup=1.0, max_diff=0.0, iou=1.0))
        print(f"{batch:>5} {'official':>13} {base:>9.2f} {1.0:>8.2f}x {0.0:>10.2e} {1.0:>8.4f}")
        if device.type == "cuda":
            # The official way already runs its convolutions in TF32 (PyTorch's default): its distance to
            # strict fp32 is the noise floor against which the fast path's agreement should be read.
            with torch_defaults(), torch.no_grad():
                torch.backends.cudnn.allow_tf32 = False
                strict = torch.sigmoid(model(x)[0][0])
            diff, iou = agreement(strict, ref_out)
            results.append(dict(batch=batch, variant="strict_fp32_vs_official", max_diff=diff, iou=iou))
            print(
                f"{batch:>5} {'strict fp32':>13} {'':>9} {'':>9} {diff:>10.2e} {iou:>8.4f}  (noise floor of the official way)"
            )

        for variant in args.variants.split(","):
            if device.type == "cuda":
                enable_fast_cuda()
            net = fused.to(memory_format=torch.channels_last)
            xin = x.contiguous(memory_format=torch.channels_last)
            dtype = torch.bfloat16 if "bf16" in variant else None
            fwd = torch.compile(net.forward_logits) if variant.startswith("compile") else net.forward_logits

            def fast():
                with (
                    torch.inference_mode(),
                    torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
                ):
                    return torch.sigmoid(fwd(xin).float())

            out = fast()
            ms = time_ms(fast, device, args.iters, args.warmup) / batch
            diff, iou = agreement(ref_out, out)
            results.append(
                dict(batch=batch, variant=variant, ms_per_image=ms, speedup=base / ms, max_diff=diff, iou=iou)
            )
            print(f"{batch:>5} {variant:>13} {ms:>9.2f} {base / ms:>8.2f}x {diff:>10.2e} {iou:>8.4f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
