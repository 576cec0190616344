"""``is5net cache-sam``: fill the on-disk cache of stage-1 masks for training (is5net.data.sam_cache).

Any stage-1 model family caches (``--stage1 hq-sam``, ``sam2``, ...; docs/stage1.md): its masks are kept apart
from SAM's (the cache is keyed on the family and the weights), and ``is5net train`` with the same
``--stage1`` and ``--stage1-checkpoint`` finds them.
"""

from __future__ import annotations

import argparse

from ..defaults import DEFAULT_CACHE_NAME, JITTER_FRACTION, MASK_CHOICES, MIN_COMPONENT_FRACTION, STAGE1_FAMILIES
from .options import stage1_checkpoint_argument, stage1_name_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The on-disk cache of stage-1 masks (SAM, HQ-SAM, SAM 2) for training, and ``is5net cache-sam`` to fill it."""
    parser.add_argument(
        "--data",
        required=True,
        metavar="ROOT",
        help="a DIS5K root (DIS-TR/im, DIS-TR/gt, ...) or a folder with im/ and gt/",
    )
    stage1_checkpoint_argument(parser, "; may be left out only with --stage1 sam:tiny (a random test SAM)")
    stage1_name_arguments(parser, grabcut=False)
    parser.add_argument("--cache", metavar="DIR", help=f"cache folder (default: ROOT/{DEFAULT_CACHE_NAME})")
    parser.add_argument("--subsets", metavar="A,B", help="subsets to cache, e.g. DIS-TR,DIS-VD (default: all found)")
    parser.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default="first",
        help="SAM / SAM 2 mask kept: first = masks[0] (the reference, default) or best = highest predicted IoU "
        "(HQ-SAM keeps its HQ token's mask)",
    )
    parser.add_argument(
        "--jitter",
        type=int,
        default=0,
        metavar="K",
        help="also cache K jittered boxes per sample (as training with --jitter K uses; default 0)",
    )
    parser.add_argument(
        "--jitter-fraction",
        type=float,
        default=JITTER_FRACTION,
        metavar="F",
        help=f"largest move of a box side, as a fraction of the box side (default {JITTER_FRACTION})",
    )
    parser.add_argument(
        "--min-fraction",
        type=float,
        default=MIN_COMPONENT_FRACTION,
        metavar="F",
        help=f"GT enrichment: smallest component, as a fraction of the image (default {MIN_COMPONENT_FRACTION})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the box jitter (default 0)")
    parser.add_argument(
        "--no-enrich", dest="enrich", action="store_false", help="whole GT masks only, no per-component samples"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument(
        "--batch-boxes", type=int, default=16, metavar="N", help="boxes per stage-1 decoder call (default 16)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.pairs import parse_subsets
    from ..data.sam_cache import cache_sam, cache_summary
    from ..inference.stage1 import choose_stage1

    # The stage-1 rule before the dataset is read: a missing checkpoint is the first thing said.
    choose_stage1(args.stage1, args.sam_checkpoint, args.sam_type, coarse_option=None, offered=STAGE1_FAMILIES)
    stats = cache_sam(
        args.data,
        stage1=args.stage1,
        sam_checkpoint=args.sam_checkpoint,
        sam_type=args.sam_type,
        cache_dir=args.cache,
        subsets=parse_subsets(args.subsets),
        mask_choice=args.mask_choice,
        jitter=args.jitter,
        enrich=args.enrich,
        device=args.device,
        batch_boxes=args.batch_boxes,
        progress=not args.quiet,
        min_fraction=args.min_fraction,
        jitter_fraction=args.jitter_fraction,
        seed=args.seed,
    )
    if stats["rank"] == 0:
        print(cache_summary(stats))
    return 0
