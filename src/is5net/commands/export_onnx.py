"""``is5net export-onnx CKPT OUT.onnx``: the refiner as ONNX, checked against torch before it is kept.

The check runs the exported file in ONNX Runtime and the checkpoint in plain torch (BatchNorm unfolded,
float32: the official arithmetic) on the same input, built by the predictor from a real photograph
(scikit-image's astronaut) with a box and a coarse mask, and compares the sigmoid outputs (max |diff|) and
the final masks (IoU of the soft masks > 0.5, at the image's size, as ``predict`` makes them). Over the
tolerance, the file is removed and the exit status is 1: a model that disagrees with torch is never left
where a deployment would pick it up.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..errors import IS5NetError

log = logging.getLogger("is5net")

# The exported graph has BatchNorm folded into the convolutions, the reference has not: the same math in
# another order. On tiny models that is ~1e-7 in the sigmoid; on the full-width IS5Net with calibrated
# statistics up to ~5e-3 (benchmarks/bench_backends.py, mask IoU 1.0). A wrong graph is off by tenths and
# moves the mask. float16 weights round each weight by up to 2^-11 relative: looser bounds.
TOLERANCE = {False: (1e-2, 0.999), True: (5e-2, 0.99)}  # fp16 -> (max |diff| of the sigmoid, least IoU)
CHECK_BOXES = [[140, 15, 380, 300], [40, 160, 470, 512]]  # the astronaut's head; her upper body


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Export the refiner to ONNX, with its input contract in the model's metadata, and check it.

    The graph takes the normalised N x C x S x S input and gives side output 1's logits (before sigmoid);
    input size, channels, mean, std and region are in the model's metadata_props. After writing, ONNX
    Runtime and torch run on a real image (skimage's astronaut) and max |diff| and mask IoU are printed; over
    the tolerance the file is not kept and the exit status is 1.
    """
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="refiner: official .pth, our .safetensors, or a name "
        "under IS5NET_HOME (dis-sam, isnet, isnet-general-use)",
    )
    parser.add_argument("output", type=Path, metavar="OUT.onnx", help="where to write the ONNX model")
    parser.add_argument("--dynamic-batch", action="store_true", help="a free batch dimension (default: batch 1)")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 11..21 (default 17)")
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="store the weights in float16 (half the file); runtimes still compute in float32",
    )
    parser.add_argument(
        "--sam-decoder",
        metavar="SAM",
        help="also export SAM's prompt decoder (segment_anything's SamOnnxModel) from these SAM "
        "weights (PATH or vit_b/vit_l/vit_h under IS5NET_HOME) to OUT.sam_decoder.onnx, "
        "checked the same way",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the check's verdict")


def check_input(refiner, batch: int):
    """``(rgb, x)``: the astronaut and the refiner input for ``batch`` of :data:`CHECK_BOXES`, each box with an
    elliptical coarse mask inside it (a stage-1 mask of about the right shape)."""
    import numpy as np
    from skimage import data

    from ..inference.predictor import IS5NetPredictor

    rgb = data.astronaut()
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    boxes = [CHECK_BOXES[i % len(CHECK_BOXES)] for i in range(batch)]
    masks = []
    for x0, y0, x1, y1 in boxes:
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2.4, (y1 - y0) / 2.4
        masks.append(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0)
    predictor = IS5NetPredictor(None, refiner, device="cpu", fast=False)
    predictor.set_image(rgb)
    return rgb, predictor.refiner_input(boxes, masks)


def compare(reference, candidate, size) -> tuple[float, float]:
    """``(max |diff| of the sigmoid, least mask IoU over the batch)`` of two logits tensors ``N x 1 x S x S``;
    the masks are the contract's soft masks at ``size`` thresholded at 0.5."""
    import torch

    from ..contract import soft_masks

    diff = float((torch.sigmoid(reference) - torch.sigmoid(candidate)).abs().max())
    a = soft_masks(reference, size) > 0.5
    b = soft_masks(candidate, size) > 0.5
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))  # both empty: agree
    return diff, float(iou.min())


def float64_sigmoid(refiner, x):
    """The refiner's sigmoid output computed in float64: the yardstick of float32 rounding."""
    import copy

    import torch

    with torch.inference_mode():
        return torch.sigmoid(copy.deepcopy(refiner).double().forward_logits(x.double()))


def run(args: argparse.Namespace) -> int:
    try:
        return _export(args)
    except _CheckFailed:
        print(
            "is5net export-onnx: error: the exported model disagrees with torch; it was not kept",
            file=sys.stderr,
        )
        return 1


class _CheckFailed(Exception):
    pass


def _export(args: argparse.Namespace) -> int:
    import importlib.util

    import torch

    from ..checkpoint import load_refiner
    from ..export import check_opset, export_refiner
    from ..inference.backends import OnnxRuntimeBackend
    from ..io import atomic_path
    from ..weights import resolve_weights

    for package in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            raise IS5NetError(f"export-onnx needs {package}: pip install 'is5net[onnx]'")
    opset = check_opset(args.opset)
    if args.output.suffix.lower() != ".onnx":
        raise IS5NetError(f"{args.output}: name the output <name>.onnx")
    checkpoint = resolve_weights(args.checkpoint)
    if args.output.resolve() == checkpoint.resolve():
        raise IS5NetError(f"{args.output} is the checkpoint itself; name a new file")
    refiner = load_refiner(checkpoint)
    batch = 2 if args.dynamic_batch else 1
    max_diff, min_iou = TOLERANCE[bool(args.fp16)]

    started = time.perf_counter()
    with atomic_path(args.output) as tmp:
        export_refiner(refiner, tmp, opset=opset, dynamic_batch=args.dynamic_batch, fp16=args.fp16)
        if not getattr(args, "quiet", False):  # -q: only the check's verdict, which is the result
            print(
                f"is5net export-onnx: exported {args.output.name} ({tmp.stat().st_size / 2**20:.1f} MiB, opset {opset}, "
                f"{'dynamic batch' if args.dynamic_batch else 'batch 1'}, {'fp16' if args.fp16 else 'fp32'} weights) "
                f"in {time.perf_counter() - started:.1f}s; checking it against torch ...",
                file=sys.stderr,
            )
        rgb, x = check_input(refiner, batch)
        with torch.inference_mode():
            reference = refiner.float().eval().forward_logits(x)
        candidate = torch.from_numpy(OnnxRuntimeBackend(tmp).run(x.numpy()))
        diff, iou = compare(reference, candidate, rgb.shape[:2])
        close = diff <= max_diff
        floor_note = ""
        if not close and iou >= min_iou:
            # Some weights (random ones with calibrated BatchNorm, at least) make the network itself sensitive
            # to float32 rounding, and two float32 computations then differ by more than any fixed figure.
            # The export passes if it is as close to the float64 result as torch's own float32 is (twice, as
            # float16 weights or another summation order may err the other way).
            exact = float64_sigmoid(refiner, x)
            torch_err = float((torch.sigmoid(reference).double() - exact).abs().max())
            onnx_err = float((torch.sigmoid(candidate).double() - exact).abs().max())
            close = onnx_err <= max(max_diff, 2 * torch_err)
            floor_note = f"; from float64: onnxruntime {onnx_err:.2e}, torch float32 {torch_err:.2e}"
        verdict = "ok" if close and iou >= min_iou else "FAILED"
        print(
            f"check on skimage's astronaut, batch {batch}: onnxruntime vs torch: max |diff| of the sigmoid "
            f"{diff:.2e} (tolerance {max_diff:g}{floor_note}), mask IoU {iou:.5f} (at least {min_iou:g}): {verdict}"
        )
        if verdict != "ok":
            raise _CheckFailed()
    if args.sam_decoder:
        _export_sam_decoder(args, opset)
    return 0


def sam_decoder_path(output: Path) -> Path:
    """``OUT.onnx`` -> ``OUT.sam_decoder.onnx`` beside it."""
    return output.with_name(output.stem + ".sam_decoder.onnx")


def _export_sam_decoder(args: argparse.Namespace, opset: int) -> None:
    from ..export import check_sam_decoder, export_sam_decoder
    from ..inference.stage1 import load_sam
    from ..io import atomic_path
    from ..weights import resolve_weights

    if args.sam_decoder == "tiny":
        sam = load_sam("tiny", None)  # a random test SAM: for trying the path without weights
    else:
        sam = load_sam(None, resolve_weights(args.sam_decoder))
    out = sam_decoder_path(args.output)
    with atomic_path(out) as tmp:
        export_sam_decoder(sam, tmp, opset=opset)
        diff, iou = check_sam_decoder(sam, tmp)
        verdict = "ok" if diff <= 1e-3 and iou >= 0.999 else "FAILED"
        print(
            f"SAM prompt decoder -> {out.name}: onnxruntime vs torch: max |diff| of the sigmoid {diff:.2e} "
            f"(tolerance 0.001), mask IoU {iou:.5f} (at least 0.999): {verdict}"
        )
        if verdict != "ok":
            raise _CheckFailed()
