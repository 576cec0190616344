"""The ``is5net`` command line: one program, one subcommand per job (like rembg and SAM's scripts).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them up and turns user errors into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import IS5NetError

# name -> (module, one-line help). Modules are imported only when their command runs or --help is built.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("is5net.demo", "the paper's result in miniature: built-in data, train IS-Net and IS5Net, compare"),
    "predict": ("is5net.predict_cli", "segment images with a box prompt (SAM + IS5Net, or a given coarse mask)"),
    "convert-isnet": ("is5net.convert_cli", "turn 3-channel IS-Net weights into 5-channel IS5Net weights"),
    "eval": ("is5net.evaluate", "score predicted masks against ground truth with the six DIS metrics"),
    "check-data": ("is5net.data.check", "check a dataset: unreadable files, missing pairs, size mismatches, empty GTs"),
    "train": ("is5net.train.cli", "train IS5Net / IS-Net: GT-encoder phase, then the refiner (AMP, torchrun, exact resume)"),
    "cache-sam": ("is5net.data.sam_cache", "precompute the SAM masks of every training sample (resumable, torchrun)"),
}

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="is5net",
        description="Box-prompted, highly accurate dichotomous image segmentation: "
        "SAM gives a coarse mask, a 5-channel IS-Net refines it.",
    )
    parser.add_argument("--version", action="version", version=f"is5net {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().split("\n\n")[0])
        module.add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and hasattr(args, "overrides") and all("=" in u and not u.startswith("-") for u in unknown):
        # argparse gives a positional list only its first run: `train lr=1e-4 --out X max_steps=10` is one list.
        args.overrides = [*args.overrides, *unknown]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="is5net: %(message)s",
        stream=sys.stderr,
    )
    if not args.command:
        parser.print_help()
        return EXIT_USER_ERROR
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except IS5NetError as exc:
        print(f"is5net {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"is5net {args.command}: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"is5net {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
