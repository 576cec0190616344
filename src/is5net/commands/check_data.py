"""Check a dataset before training: every file decoded, every image paired with a GT of its size.

``is5net check-data ROOT [--subsets A,B]`` (ROOT: a DIS5K root or a folder with ``im/`` and ``gt/``)
prints one line per problem, ``<kind>: <path>: <detail>``, sorted by path, then a summary, and exits 1;
a clean dataset prints one ``OK`` line with its counts and exits 0. Kinds: ``missing_gt``,
``missing_image``, ``duplicate_stem``, ``unreadable`` (corrupt, truncated, not an image), ``size_mismatch``
(image vs GT width/height after EXIF orientation) and ``empty_gt`` (no GT pixel > 127).
"""

from __future__ import annotations

import argparse

EXIT_PROBLEMS = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Check a dataset before training: every file decoded, every image paired with a GT of its size."""
    parser.add_argument(
        "root", metavar="ROOT", help="a DIS5K root (DIS-TR/im, DIS-TR/gt, ...) or a folder with im/ and gt/"
    )
    parser.add_argument("--subsets", metavar="A,B", help="subsets to check, e.g. DIS-TR,DIS-VD (default: all found)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="decoding threads (default: up to 8)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.pairs import check_data, parse_subsets

    found = check_data(args.root, parse_subsets(args.subsets), workers=args.workers, progress=not args.quiet)
    print(found.report())
    return 0 if found.ok else EXIT_PROBLEMS
