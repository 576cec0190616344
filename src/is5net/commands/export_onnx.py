"""``is5net export-onnx CKPT OUT.onnx``: the refiner as ONNX, checked against torch before it is kept.

The check (is5net.inference.export_check) compares ONNX Runtime with torch on a real photograph. Over the
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

    from ..checkpoint import load_refiner
    from ..export import check_opset, export_refiner
    from ..inference.export_check import check_refiner_onnx
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
        passed, line = check_refiner_onnx(refiner, tmp, 2 if args.dynamic_batch else 1, args.fp16)
        print(line)
        if not passed:
            raise _CheckFailed()
    if args.sam_decoder:
        _export_sam_decoder(args, opset)
    return 0


def sam_decoder_path(output: Path) -> Path:
    """``OUT.onnx`` -> ``OUT.sam_decoder.onnx`` beside it."""
    return output.with_name(output.stem + ".sam_decoder.onnx")


def _export_sam_decoder(args: argparse.Namespace, opset: int) -> None:
    from ..export import export_sam_decoder
    from ..inference.export_check import check_sam_decoder_onnx
    from ..inference.stage1 import choose_stage1
    from ..io import atomic_path

    tiny = args.sam_decoder == "tiny"  # the random test SAM: for trying the path without weights
    source = choose_stage1("sam", None if tiny else args.sam_decoder, "tiny" if tiny else None, coarse_option=None)
    sam = source.load_sam()
    out = sam_decoder_path(args.output)
    with atomic_path(out) as tmp:
        export_sam_decoder(sam, tmp, opset=opset)
        passed, line = check_sam_decoder_onnx(sam, tmp)
        print(f"SAM prompt decoder -> {out.name}: {line}")
        if not passed:
            raise _CheckFailed()
