"""``is5net weights list | verify | download NAME``: the official weight files (is5net.weights)."""

from __future__ import annotations

import argparse
import sys

from ..errors import IS5NetError
from ..weights import OFFICIAL, download, find, official, verify_file, weights_home


def _size(n) -> str:
    return "?" if n is None else f"{n / 2**20:,.0f} MiB"


def run(args: argparse.Namespace) -> int:
    home = weights_home()
    if args.weights_command == "list":
        print(f"IS5NET_HOME = {home}")
        print(f"{'name':<18} {'file':<22} {'size':>10}  {'checked against':<46} {'present':<8} source")
        for entry in OFFICIAL.values():
            path = find(entry, home)
            source = entry.url or f"Google Drive only: {entry.page}"
            print(
                f"{entry.name:<18} {entry.filename:<22} {_size(entry.size):>10}  {entry.checks:<46} "
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
