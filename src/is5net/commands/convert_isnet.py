"""Turn 3-channel IS-Net weights (``isnet.pth``, ``isnet-general-use.pth``) into a 5-channel IS5Net.

The RGB filters are copied and the coarse-mask and box channels start at zero, so the result computes
exactly what IS-Net did: a starting point for ``is5net train``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..defaults import DEFAULT_INPUT_SIZE
from ..errors import IS5NetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Turn 3-channel IS-Net weights (``isnet.pth``, ``isnet-general-use.pth``) into a 5-channel IS5Net."""
    parser.add_argument("input", type=Path, help="IS-Net checkpoint (.pth or .safetensors, 3 input channels)")
    parser.add_argument(
        "output", type=Path, help="where to write the IS5Net weights (.safetensors; never the input file)"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=DEFAULT_INPUT_SIZE,
        metavar="S",
        help=f"input size stored in the metadata: a multiple of 32, at least 32 (default {DEFAULT_INPUT_SIZE})",
    )


def run(args: argparse.Namespace) -> int:
    # Every check before reading the weights: a bad option costs nothing and writes nothing.
    from ..checkpoint import check_input_size, convert_isnet_to_is5net

    check_input_size(args.input_size, "--input-size")
    if args.output.suffix != ".safetensors":
        raise IS5NetError(f"{args.output}: the output must be a .safetensors file")
    if args.output.is_dir():
        raise IS5NetError(f"{args.output}: is a directory; name the .safetensors file to write")
    convert_isnet_to_is5net(args.input, args.output, args.input_size)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
