"""The ``is5net`` command line: one program, one subcommand per job (like rembg and SAM's scripts).

Each subcommand is one module of :mod:`is5net.commands`: its ``add_arguments(parser)`` declares the arguments
(its docstring is the command's ``--help`` description) and its ``run(args) -> int`` turns them into calls of
the library. Those modules import nothing heavy at module level (their ``run`` does), so ``is5net --help``,
``is5net <cmd> --help`` and ``--version`` cost a few dozen milliseconds, not the seconds and ~750 MB of
importing torch. This file also turns user errors into one line on stderr and a non-zero exit, and Ctrl-C at
any moment into one line and exit status 130.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import signal
import sys
import threading
from typing import Callable, NamedTuple

from . import __version__, interrupts
from .commands import (
    cache_sam,
    check_data,
    convert_isnet,
    demo,
    doctor,
    export_onnx,
    predict,
    serve,
    train,
    weights,
)
from .commands import (
    eval as eval_,
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class Command(NamedTuple):
    module: str  # is5net.commands.<name>: holds run(args) -> int (its heavy imports happen inside run)
    arguments: Callable[[argparse.ArgumentParser], None]  # declares the arguments; its docstring describes
    help: str  # the one line shown by `is5net --help`


COMMANDS: dict[str, Command] = {
    "demo": Command(
        "is5net.commands.demo",
        demo.add_arguments,
        "the paper's result in miniature: built-in data, train IS-Net and IS5Net, compare",
    ),
    "predict": Command(
        "is5net.commands.predict",
        predict.add_arguments,
        "segment images with a box prompt (SAM + IS5Net, or a given coarse mask)",
    ),
    "convert-isnet": Command(
        "is5net.commands.convert_isnet",
        convert_isnet.add_arguments,
        "turn 3-channel IS-Net weights into 5-channel IS5Net weights",
    ),
    "eval": Command(
        "is5net.commands.eval",
        eval_.add_arguments,
        "score predicted masks against ground truth with the six DIS metrics",
    ),
    "check-data": Command(
        "is5net.commands.check_data",
        check_data.add_arguments,
        "check a dataset: unreadable files, missing pairs, size mismatches, empty GTs",
    ),
    "train": Command(
        "is5net.commands.train",
        train.add_arguments,
        "train IS5Net / IS-Net: GT-encoder phase, then the refiner (AMP, torchrun, exact resume)",
    ),
    "cache-sam": Command(
        "is5net.commands.cache_sam",
        cache_sam.add_arguments,
        "precompute the SAM masks of every training sample (resumable, torchrun)",
    ),
    "serve": Command(
        "is5net.commands.serve",
        serve.add_arguments,
        "a web page and HTTP API: draw a box in the browser, get the mask (pip install 'is5net[serve]')",
    ),
    "export-onnx": Command(
        "is5net.commands.export_onnx",
        export_onnx.add_arguments,
        "export the refiner to ONNX (metadata, checked against torch on a real image)",
    ),
    "weights": Command(
        "is5net.commands.weights",
        weights.add_arguments,
        "official weight files: list, verify, download one on request (resumable, checksummed)",
    ),
    "doctor": Command(
        "is5net.commands.doctor",
        doctor.add_arguments,
        "versions, device, backends, extras and weight files: what works and what to fix",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="is5net",
        description="Box-prompted, highly accurate dichotomous image segmentation: "
        "SAM gives a coarse mask, a 5-channel IS-Net refines it.",
    )
    parser.add_argument("--version", action="version", version=f"is5net {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=command.help,
            description=inspect.cleandoc(command.arguments.__doc__ or command.help),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.arguments(p)
    return parser


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and hasattr(args, "overrides") and all("=" in u and not u.startswith("-") for u in unknown):
        # argparse gives a positional list only its first run: `train lr=1e-4 --out X max_steps=10` is one list.
        args.overrides = [*args.overrides, *unknown]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    _configure_logging(args.verbose)
    if not args.command:
        parser.print_help()
        return EXIT_USER_ERROR
    from .errors import IS5NetError

    try:
        module = importlib.import_module(COMMANDS[args.command].module)
        return int(module.run(args) or 0)
    except IS5NetError as exc:
        print(f"is5net {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        print(f"is5net {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def _configure_logging(verbose: bool) -> None:
    """Our messages (the ``is5net`` logger and its children) on stderr, from INFO (DEBUG with ``-v``).

    Only ours: the root logger stays at WARNING, so the INFO chatter of the libraries we import (torch logs
    cache statistics at exit, for one) stays out of the user's terminal. As :func:`logging.basicConfig`,
    nothing is changed when the root logger already has handlers (an application or pytest set it up).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("is5net: %(message)s"))
    root.addHandler(handler)
    logging.getLogger("is5net").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run ``is5net`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Ctrl-C is caught here, around everything (parser building, the command's imports, the work), so it
    reads as one line and 130 at any moment, never a traceback through whatever was importing.
    """
    interrupts.reset()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, interrupts.on_sigint)
    try:
        code = _main(argv)
        if interrupts.pending():
            raise KeyboardInterrupt  # swallowed somewhere below, but the user did press Ctrl-C
        return code
    except KeyboardInterrupt:
        return _interrupted(argv)
    except Exception:
        # A Ctrl-C that lands inside a native library's import comes out as that library's error (openvino's
        # "ImportError: initialization failed"): the interrupt is the cause, so it is reported as one.
        if interrupts.pending():
            return _interrupted(argv)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _interrupted(argv: list[str] | None) -> int:
    command = next((a for a in (sys.argv[1:] if argv is None else argv) if a in COMMANDS), None)
    print(f"is5net{' ' + command if command else ''}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def entry() -> None:
    """The ``is5net`` program (console script and ``python -m is5net``): :func:`main`, then exit.

    What is left after the run (joining library threads, flushing caches at interpreter shutdown) cannot be
    interrupted into a traceback or a death by signal: a Ctrl-C then ends the process at once with the same
    one line and 130, and an interrupted run leaves without that shutdown (its outputs are committed
    atomically, so nothing is half-written).
    """
    code = main()

    def late_interrupt(signum, frame) -> None:
        print("is5net: interrupted", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)

    signal.signal(signal.SIGINT, late_interrupt)
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    sys.exit(code)


if __name__ == "__main__":
    entry()
