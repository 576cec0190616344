"""Argument groups and types that several commands share, declared once (imports nothing heavy)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import (
    BACKEND_CHOICES,
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    MASK_CHOICES,
    REGIONS,
    SAM_TYPES,
    STAGE1_METHODS,
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
    """--device / --precision / --backend: where and how the models run (predict and serve alike, so a
    server's masks are predict's)."""
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="the refiner's runtime: auto (default: on a CPU the fastest installed one that "
        "matches the reference: openvino, then onnxruntime, then torch; torch on CUDA), "
        "torch, onnxruntime, openvino (pip install 'is5net[onnx]')",
    )


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


def stage1_arguments(parser, coarse_mask: bool) -> None:
    """--stage1 / --sam-checkpoint / --sam-type / --mask-choice (and --coarse-mask): how the coarse mask is made
    (is5net.inference.stage1.choose_stage1 checks what they say together)."""
    group = parser.add_mutually_exclusive_group() if coarse_mask else parser
    group.add_argument(
        "--sam-checkpoint",
        metavar="PATH|NAME",
        help="SAM weights (sam_vit_*.pth) or a name under IS5NET_HOME (vit_b, vit_l, vit_h)",
    )
    if coarse_mask:
        group.add_argument(
            "--coarse-mask",
            type=Path,
            metavar="FILE|DIR",
            help="stage-1 mask(s) from any method instead of SAM: a file (one image) or a directory "
            "of masks named like the images (<stem>.png, or <stem>_<k>.png per box)",
        )
    parser.add_argument(
        "--stage1",
        choices=STAGE1_METHODS,
        default="sam",
        help="stage 1: sam (default) or grabcut (OpenCV's GrabCut from the box: no weights needed)",
    )
    parser.add_argument("--sam-type", choices=SAM_TYPES, help="SAM architecture (default: read off the checkpoint)")
    parser.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default="first",
        help="SAM mask kept: first (masks[0], what the released refiner was trained on) or best score",
    )
