"""Argument groups and types that several commands share, declared once (imports nothing heavy)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import (
    BACKEND_CHOICES,
    CALIBRATION_COUNT,
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    MASK_CHOICES,
    PRECISION_CHOICES,
    REGIONS,
    SAM_TYPES,
    STAGE1_FAMILIES,
    TILE_SCALE_RANGE,
)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a pixel limit, a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def tile_scale_arg(text: str) -> float:
    """argparse type: the tiles region's working scale, within ``TILE_SCALE_RANGE``."""
    low, high = TILE_SCALE_RANGE
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from {low:g} to {high:g}, got {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected a number from {low:g} to {high:g}, got {text}")
    return value


def fraction_arg(text: str) -> float:
    """A number from 0 to 1 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def runtime_arguments(parser) -> None:
    """--device / --precision / --calibration / --backend: where and how the models run (predict and serve
    alike, so a server's masks are predict's)."""
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    precision_arguments(parser)
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="the refiner's runtime: auto (default: on a CPU the fastest installed one that "
        "matches the reference: openvino, then onnxruntime, then torch; torch on CUDA), "
        "torch, onnxruntime, openvino (pip install 'is5net[onnx]')",
    )


def precision_arguments(parser) -> None:
    """--precision and int8's --calibration / --calibration-count (docs/deployment.md, "Precision")."""
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default="auto",
        help="auto (default): the refiner in bf16 where OpenVINO runs it on a CPU with native bf16 "
        "(AMX/AVX512_BF16: about 3.7x fp32, same accuracy on the demo), else fp32; fp32: the reference's exact "
        "numbers; bf16 (torch autocast, OpenVINO's bf16 hint); fp16 (CUDA); int8: the refiner quantised with "
        "NNCF, run by OpenVINO on the CPU (quantised once, kept under IS5NET_HOME)",
    )
    parser.add_argument(
        "--calibration",
        dest="calibration_dir",
        type=Path,
        metavar="DIR",
        help="int8: calibrate on these pairs (im/ + gt/, optional coarse/: stage-1 masks; DIS5K layout too) "
        "instead of the demo's built-in data (the default)",
    )
    parser.add_argument(
        "--calibration-count",
        type=positive_int,
        default=CALIBRATION_COUNT,
        metavar="N",
        help=f"int8: calibration images used (default {CALIBRATION_COUNT})",
    )


def calibration_from_args(args):
    """The int8 calibration set the arguments name (None unless ``--precision int8``), its folder checked now,
    before any model loads: --calibration DIR, or the demo's data (is5net.demo.calibration)."""
    if getattr(args, "precision", None) != "int8":
        if getattr(args, "calibration_dir", None) is not None:
            from ..errors import IS5NetError

            raise IS5NetError("--calibration calibrates --precision int8; add --precision int8 or leave it out")
        return None
    from ..demo.calibration import calibration_set

    return calibration_set(args.calibration_dir, args.calibration_count, progress=not getattr(args, "quiet", False))


def region_arguments(parser, max_side: bool = True) -> None:
    """--region / --margin / --max-side: what part of the image the refiner sees (docs/input-contract.md)."""
    parser.add_argument(
        "--region",
        choices=REGIONS,
        default=None,
        help="image: the whole image at the model's input size (the paper's); box: the box plus "
        "--margin, at the model's input size, pasted back; tiles: that crop at native "
        "resolution in tiles (default: what the checkpoint was trained for; official: image)",
    )
    parser.add_argument(
        "--margin",
        type=fraction_arg,
        default=DEFAULT_MARGIN,
        metavar="F",
        help="box and tiles: grow the box by F of its width and height on each side, at least 16 px "
        f"(default {DEFAULT_MARGIN})",
    )
    if max_side:
        parser.add_argument(
            "--max-side",
            type=positive_int,
            default=DEFAULT_MAX_SIDE,
            metavar="N",
            help=f"tiles: refine at native resolution up to N pixels on the crop's longer side (default {DEFAULT_MAX_SIDE})",
        )
        parser.add_argument(
            "--tile-scale",
            type=tile_scale_arg,
            default=None,
            metavar="K",
            help="tiles: refine the crop at K times its own resolution (2: IS-Net's half-resolution finest "
            "output lands on the photo's pixels; default: what the checkpoint was trained with, official: 1)",
        )


def stage1_names_help() -> str:
    """The stage-1 names for --help: FAMILY[:TYPE|...] each, then grabcut (docs/stage1.md)."""
    return ", ".join(f"{f}[:{'|'.join(types)}]" for f, types in STAGE1_FAMILIES.items()) + ", grabcut"


def stage1_checkpoint_argument(parser, help_tail: str = "") -> None:
    """--stage1-checkpoint (alias --sam-checkpoint, its name from before HQ-SAM and SAM 2)."""
    parser.add_argument(
        "--stage1-checkpoint",
        "--sam-checkpoint",
        dest="sam_checkpoint",
        metavar="PATH|NAME",
        help="stage-1 weights (sam_vit_*.pth, sam_hq_vit_*.pth, sam2.1_hiera_*.pt) or a name under IS5NET_HOME "
        f"(vit_l, sam_hq_vit_tiny, sam2.1_hiera_tiny, ...: is5net weights list){help_tail}",
    )


def stage1_name_arguments(parser, default: str | None = "sam", grabcut: bool = True) -> None:
    """--stage1 NAME and --sam-type T (alias of --stage1 sam:T), checked by choose_stage1 (one line)."""
    parser.add_argument(
        "--stage1",
        default=default,
        metavar="NAME",
        help=f"stage 1: {stage1_names_help() if grabcut else stage1_names_help().removesuffix(', grabcut')} "
        f"(default {default or 'sam'}; without :TYPE the type is read off the checkpoint"
        + ("; grabcut: OpenCV's GrabCut from the box, no weights)" if grabcut else ")"),
    )
    parser.add_argument("--sam-type", choices=SAM_TYPES, help="the same as --stage1 sam:TYPE")


def stage1_arguments(parser, coarse_mask: bool) -> None:
    """--stage1 / --stage1-checkpoint / --sam-type / --mask-choice (and --coarse-mask): how the coarse mask is
    made (is5net.inference.stage1.choose_stage1 checks what they say together)."""
    group = parser.add_mutually_exclusive_group() if coarse_mask else parser
    stage1_checkpoint_argument(group)
    if coarse_mask:
        group.add_argument(
            "--coarse-mask",
            type=Path,
            metavar="FILE|DIR",
            help="stage-1 mask(s) from any method instead of SAM: a file (one image) or a directory "
            "of masks named like the images (<stem>.png, or <stem>_<k>.png per box)",
        )
    stage1_name_arguments(parser)
    mask_choice_argument(parser)


def mask_choice_argument(parser) -> None:
    parser.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default="first",
        help="SAM / SAM 2 mask kept: first (masks[0], what the released refiner was trained on) or best score "
        "(HQ-SAM keeps its HQ token's mask: docs/stage1.md)",
    )
