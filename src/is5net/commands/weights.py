"""``is5net weights list | verify | download NAME``: the official weight files (is5net.weights)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import IS5NetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The official weight files: list them, verify the ones under IS5NET_HOME, download one on request.

    Nothing is downloaded except by `is5net weights download NAME`. Downloads show a progress bar, resume a
    partial file (HTTP Range), are checked against the size and checksums the publisher gives, and are moved
    into place only when they pass. Files published only on Google Drive get the steps to place them.
    """
    # -q before or after the action (`weights -q download vit_b` or `weights download vit_b -q`).
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="every known file: name, size, checksum, where it is published, whether present")
    verify = sub.add_parser("verify", help="check the files under IS5NET_HOME (size and checksums)")
    verify.add_argument("names", nargs="*", metavar="NAME", help="only these (default: every file present)")
    download = sub.add_parser("download", help="download NAME into IS5NET_HOME (or --to DIR)")
    download.add_argument("name", metavar="NAME", help="vit_b, vit_l, vit_h (the others are on Google Drive)")
    download.add_argument("--to", type=Path, metavar="DIR", help="folder to put the file in (default: IS5NET_HOME)")
    download.add_argument(
        "--mirror",
        metavar="URL",
        help="fetch <URL>/<file name> instead of the publisher's address (checked the same way)",
    )
    download.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")


def _size(n) -> str:
    return "?" if n is None else f"{n / 2**20:,.0f} MiB"


def run(args: argparse.Namespace) -> int:
    from ..weights import OFFICIAL, download, find, official, verify_file, weights_home

    home = weights_home()
    if args.weights_command == "list":
        print(f"IS5NET_HOME = {home}")
        entries = list(OFFICIAL.values())
        wn, wf, wc = (max(len(getattr(e, a)) for e in entries) for a in ("name", "filename", "checks"))
        print(f"{'name':<{wn}} {'file':<{wf}} {'size':>10}  {'checked against':<{wc}} {'present':<8} source")
        for entry in entries:
            path = find(entry, home)
            source = entry.url or f"Google Drive only: {entry.page}"
            print(
                f"{entry.name:<{wn}} {entry.filename:<{wf}} {_size(entry.size):>10}  {entry.checks:<{wc}} "
                f"{'yes' if path else 'no':<8} {source}"
            )
        return 0
    if args.weights_command == "verify":
        entries = [official(n) for n in args.names] if args.names else list(OFFICIAL.values())
        failed, seen = 0, 0
        for entry in entries:
            path = find(entry, home)
            if path is None:
                if args.names:
                    print(f"{entry.name}: missing (no {entry.patterns[0]} under {home})")
                    failed += 1
                continue
            seen += 1
            verdict = verify_file(entry, path)
            print(f"{entry.name}: {path.name}: {'ok' if verdict.ok else 'FAILED'}: {verdict.detail}")
            failed += not verdict.ok
        if not seen and not args.names:
            print(f"no official weight file under {home}; `is5net weights list` shows them")
        return 1 if failed else 0
    if args.weights_command == "download":
        path = download(args.name, to=args.to, mirror=args.mirror, quiet=args.quiet)
        print(f"is5net weights: {path} verified and in place", file=sys.stderr)
        return 0
    raise IS5NetError(f"unknown action {args.weights_command!r}")
