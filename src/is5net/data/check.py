"""Check a dataset before training: every file decoded, every image paired with a GT of its size.

``is5net check-data ROOT [--subsets A,B]`` (ROOT: a DIS5K root or a folder with ``im/`` and ``gt/``)
prints one line per problem, ``<kind>: <path>: <detail>``, sorted by path, then a summary, and exits 1;
a clean dataset prints one ``OK`` line with its counts and exits 0. Kinds: ``missing_gt``,
``missing_image``, ``duplicate_stem``, ``unreadable`` (corrupt, truncated, not an image), ``size_mismatch``
(image vs GT width/height after EXIF orientation) and ``empty_gt`` (no GT pixel > 127).
"""

from __future__ import annotations

from collections import Counter

from .pairs import PROBLEM_KINDS, parse_subsets, split_good_pairs, subset_names

EXIT_PROBLEMS = 1


def run(args) -> int:
    subsets = parse_subsets(args.subsets)
    names = subsets if subsets else subset_names(args.root)
    good, problems = split_good_pairs(args.root, subsets, workers=args.workers, progress=not args.quiet)
    per_subset = Counter(p.subset for p in good)
    counts = ", ".join(f"{name} {per_subset.get(name, 0)}" for name in sorted(names))
    if not problems:
        print(f"OK: {len(good)} pairs ({counts}), no problems")
        return 0
    for problem in problems:
        print(problem)
    kinds = Counter(p.kind for p in problems)
    by_kind = ", ".join(f"{kinds[k]} {k}" for k in PROBLEM_KINDS if kinds[k])
    print(f"{len(problems)} problem(s) in {args.root}: {by_kind}; {len(good)} good pairs ({counts})")
    return EXIT_PROBLEMS
