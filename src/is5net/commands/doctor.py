"""``is5net doctor``: versions, device, backends, extras and weight files; what works and what to fix."""

from __future__ import annotations

import argparse

from .. import doctor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """What this installation can do: versions, device and threads, backends and extras, weight files
    under IS5NET_HOME (verified), and what to do about anything missing."""
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not hash the weight files (the size is still checked): faster for big files",
    )


def run(args: argparse.Namespace) -> int:
    report = doctor.collect(verify=not args.no_verify)
    print(doctor.format_report(report))
    return 1 if report["problems"] else 0
