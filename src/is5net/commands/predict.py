"""Segment the objects in boxes: SAM gives a coarse mask, IS5Net refines it.

Inputs are image files, folders (``--recursive`` for their subfolders) and glob patterns. Outputs go to
``-o OUTDIR``, mirroring a folder's tree: one box gives ``<stem>.png``, several give ``<stem>_<k>.png`` (k
from 0), or one file with ``--combine union|labels``. Masks are the soft map x255 unless ``--threshold`` is
given. Either SAM (``--sam-checkpoint``) or ``--coarse-mask`` (any stage-1 method's masks) gives the coarse
mask; a 3-channel IS-Net checkpoint needs neither and ignores boxes (it says so).

Every input is checked before the models load (files named one by one, boxes, the boxes file, output names
that would overwrite an input): a mistake there is one line and exit status 2, with nothing written. Then
each image's outputs are written (atomically) as soon as it is done, so a long run keeps what it finished:
an image that fails (a truncated file, a box outside it, a missing coarse mask) is one line naming it and
the run goes on. ``index.json`` lists what was written (one entry per box).

With a folder or a pattern (or under torchrun) the run is a batch (:mod:`is5net.batch`): every finished
image is also one line of ``OUTDIR/index.jsonl``, appended after its files are in place, so a second run
skips what is done (``--overwrite`` redoes it) and a run killed at any moment is finished by the next one.
``torchrun --nproc_per_node N -m is5net.cli predict DIR ...`` shards the images over the processes.

Exit status: 0 all done, 1 some images failed (the others' outputs are written and listed; the failed ones
are named at the end), 2 a usage mistake (or, for files named one by one, nothing written).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..defaults import COMBINE_MODES, MAX_PIXELS_ENV, SAVE_KINDS
from ..errors import IS5NetError
from .options import calibration_from_args, positive_int, region_arguments, runtime_arguments, stage1_arguments

log = logging.getLogger("is5net")

EXIT_SOME_FAILED = 1  # some images failed; the others' outputs are written and listed
EXIT_NOTHING_DONE = 2  # the CLI's user-error status: nothing was written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Segment the objects in boxes: SAM gives a coarse mask, IS5Net refines it.

    Each image's outputs are written as soon as it is done; an image that cannot be read or segmented is
    reported in one line and the others still run (the exit status is then 1). A box with a negative
    coordinate is passed with '=': --box=-5,0,10,10 (argparse would read '-5,...' as an option).
    """
    _file_arguments(parser)
    _prompt_arguments(parser)
    _output_arguments(parser)


def _file_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, resume and how cut-outs are made."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="image files (any Pillow format), folders, or quoted glob patterns ('photos/*.jpg'); "
        "a folder or a pattern mirrors its tree under OUTDIR and keeps OUTDIR/index.jsonl, so "
        "a second run skips what is done",
    )
    parser.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="also the images in the folders' subfolders (and '**' in patterns)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="redo images that OUTDIR/index.jsonl lists as done (default: skip them)",
    )
    parser.add_argument(
        "--combine",
        choices=COMBINE_MODES,
        default="separate",
        help="several boxes: separate (one mask per box, <stem>_<k>.png), union (one mask), "
        "labels (one label PNG: 0 background, k+1 for box k; an overlap goes to the box "
        "whose soft mask is higher there)",
    )
    parser.add_argument(
        "--background",
        metavar="COLOR|IMAGE",
        help="cut-outs composited over this colour (name, #rrggbb, r,g,b) or image: RGB, no alpha",
    )
    parser.add_argument(
        "--foreground",
        choices=("estimate", "raw"),
        default="estimate",
        help="cut-out colours at soft edges: estimate (pymatting's foreground estimation, so hair "
        "does not carry the old background) or raw (the photo's pixels, as is5net serve)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=2,
        metavar="N",
        help="images decoded ahead in a background thread while the model runs (0: none)",
    )


def _prompt_arguments(parser: argparse.ArgumentParser) -> None:
    """Boxes, the refiner and stage 1."""
    parser.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="x0,y0,x1,y1",
        help="a box in pixels of the image as displayed (XYXY, exclusive end); repeat for several; "
        "applies to every IMAGE. A box starting with a negative number needs '=': "
        "--box=-5,0,10,10",
    )
    parser.add_argument(
        "--points",
        nargs="+",
        action=_ClicksOfLastBox,
        default=[],
        metavar="X,Y[:0]",
        help="clicks that refine the mask of the --box just before them, as SAM's point prompts: X,Y a "
        "foreground click, X,Y:0 a background one (pixels of the image as displayed), e.g. "
        "--box 10,20,300,400 --points 120,80 200,90:0 (put IMAGE before the options, or it is read as a "
        "click)",
    )
    parser.add_argument(
        "--boxes",
        type=Path,
        metavar="FILE",
        help="JSON mapping image file names (or stems) to lists of boxes (a box with clicks: "
        '{"box": [x0,y0,x1,y1], "points": [[x,y],...], "point_labels": [1,0,...]}), a COCO annotation '
        "file (its bbox fields, [x, y, w, h]), or a CSV with rows file,x0,y0,x1,y1",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH|NAME",
        help="refiner: DIS-SAM/IS-Net .pth or our .safetensors, or a name under IS5NET_HOME "
        "(dis-sam, isnet, isnet-general-use)",
    )
    stage1_arguments(parser, coarse_mask=True)


class _ClicksOfLastBox(argparse.Action):
    """``--points``: the clicks belong to the last ``--box`` given before them (argparse reads in order)."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = list(getattr(namespace, self.dest, None) or [])
        given.append((len(getattr(namespace, "box", None) or []) - 1, list(values)))
        setattr(namespace, self.dest, given)


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and what to write, and how the models run."""
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("is5net-out"),
        metavar="OUTDIR",
        help="output directory (default: ./is5net-out)",
    )
    runtime_arguments(parser)
    parser.add_argument(
        "--save",
        choices=SAVE_KINDS,
        default="mask",
        help="mask: grayscale PNG; cutout: RGBA PNG of the object; both: <name>.png and <name>_cutout.png",
    )
    parser.add_argument(
        "--threshold",
        metavar="T|otsu",
        help="binarise the mask at T in [0, 1] or at Otsu's threshold (default: keep the soft map)",
    )
    parser.add_argument(
        "--box-channel",
        choices=("user", "sam_mask"),
        default="user",
        help="box channel: the given box (paper) or the tight box of the SAM mask (reference notebook)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="boxes refined per forward pass")
    parser.add_argument(
        "--sam-resize",
        choices=("pil", "torch"),
        default="pil",
        help="pil: SAM's own resize (reference masks); torch: on the device (faster on a GPU for "
        "large photos, masks may differ slightly)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"refuse images with more than N pixels, a guard against decompression bombs "
        f"(default: ${MAX_PIXELS_ENV}, else about 89 million, Pillow's own limit)",
    )
    region_arguments(parser)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    prepared = _prepare(args)  # every check that needs no model: a mistake costs nothing and writes nothing
    refiner, checkpoint = _load_refiner(args)
    jobs = _plan(args, prepared, refiner, checkpoint)
    outcome = _segment(args, prepared, jobs, refiner)
    return _report(args, outcome, time.perf_counter() - started)


@dataclass
class _Prepared:
    found: object  # is5net.batch.Discovery
    cli_boxes: list
    file_boxes: Optional[dict]
    cli_clicks: list  # per --box: (points, point_labels) or None
    file_clicks: Optional[dict]
    coarse: object  # is5net.segment_files.GivenCoarseMasks or None
    outputs: object  # is5net.inference.outputs.OutputOptions
    max_pixels: Optional[int]
    several_processes: bool  # under torchrun

    @property
    def batch_mode(self) -> bool:  # journal, resume, mirrored tree
        return self.found.batch or self.several_processes


def _prepare(args: argparse.Namespace) -> _Prepared:
    """Options, boxes, images and output names checked before any model loads (exit 2 on a mistake)."""
    from .. import batch
    from ..inference.boxes import attach_clicks, load_prompts_file, parse_box
    from ..inference.outputs import OutputOptions, parse_background, parse_threshold
    from ..io import load_image, max_pixels
    from ..segment_files import GivenCoarseMasks, check_named_images, require_module

    threshold = parse_threshold(args.threshold)
    pixel_limit = max_pixels(args.max_pixels)  # a bad $IS5NET_MAX_PIXELS is refused here, before any work
    background = parse_background(args.background)
    if args.background is not None and args.save == "mask":
        raise IS5NetError("--background composites cut-outs: give it with --save cutout or --save both")
    if args.prefetch < 0:
        raise IS5NetError(f"--prefetch {args.prefetch}: expected 0 or more images")
    cli_boxes = [parse_box(b) for b in args.box]
    cli_clicks = attach_clicks(args.points, len(cli_boxes))
    file_boxes, file_clicks = load_prompts_file(args.boxes) if args.boxes else (None, None)
    clicked = any(cli_clicks) or any(c for per_image in (file_clicks or {}).values() for c in per_image)
    if clicked and args.coarse_mask is not None:
        raise IS5NetError("clicks prompt stage 1, and --coarse-mask takes its place: give one or the other")
    found = batch.discover(args.images, recursive=args.recursive, exclude=args.output)
    check_named_images(found.named)
    coarse = GivenCoarseMasks(args.coarse_mask) if args.coarse_mask is not None else None
    if coarse is not None:
        coarse.check(len(found.items))
    if args.output.exists() and not args.output.is_dir():
        raise IS5NetError(f"-o {args.output}: exists and is not a directory")
    if isinstance(background, Path):
        background = load_image(background, max_pixels=pixel_limit)
    require_module("pycocotools", "the COCO RLE of the index")
    if args.save != "mask" and args.foreground == "estimate":
        require_module("pymatting", "--foreground estimate (the default for cut-outs; --foreground raw needs nothing)")
    estimate = args.foreground == "estimate"
    outputs = OutputOptions(args.save, args.combine, threshold, estimate, background)
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return _Prepared(found, cli_boxes, file_boxes, cli_clicks, file_clicks, coarse, outputs, pixel_limit, several)


def _load_refiner(args: argparse.Namespace):
    from ..checkpoint import load_refiner
    from ..weights import resolve_weights

    checkpoint = resolve_weights(args.checkpoint)
    return load_refiner(checkpoint), checkpoint


def _plan(args: argparse.Namespace, p: _Prepared, refiner, checkpoint: Path):
    """The jobs (boxes and output names per image), once the refiner says whether it takes prompts."""
    from ..segment_files import check_outputs_are_not_inputs, plan_jobs

    is5 = refiner.in_ch == 5
    jobs = plan_jobs(
        p.found.items, p.cli_boxes, p.file_boxes, p.outputs, is5, p.batch_mode, p.cli_clicks, p.file_clicks
    )
    given = [
        ("--box/--boxes", p.cli_boxes or p.file_boxes),
        ("--points", any(p.cli_clicks)),
        ("--coarse-mask", p.coarse is not None),
    ]
    ignored = [name for name, was_given in given if was_given]
    if not is5 and ignored:
        log.warning(
            "%s is a 3-channel IS-Net: it takes no prompt, so %s are ignored (each box only names an "
            "output, all with the same whole-image mask); use an IS5Net checkpoint to segment what a "
            "box holds",
            checkpoint.name,
            " and ".join(ignored),
        )
    check_outputs_are_not_inputs(args.output, jobs)
    return jobs


def _segment(args: argparse.Namespace, p: _Prepared, jobs: list, refiner):
    """Build the predictor (on this process's device under torchrun) and run the jobs."""
    from ..batch import BatchRun
    from ..distributed import ProcessGroup
    from ..inference.predictor import PredictorOptions, build_predictor
    from ..inference.stage1 import choose_stage1
    from ..runtime import resolve_device
    from ..segment_files import ImageSegmenter

    is5 = refiner.in_ch == 5
    stage1 = choose_stage1(args.stage1, args.sam_checkpoint, args.sam_type, args.coarse_mask) if is5 else None
    device = resolve_device(args.device)
    group = ProcessGroup(device) if p.several_processes else None
    try:
        if group is not None:
            device = group.device  # cuda:LOCAL_RANK under torchrun on GPUs (the predictor moves SAM there)
        calibration = calibration_from_args(args)  # int8 only; its folder checked before the refiner is quantised
        options = PredictorOptions.from_args(
            args, device=device, backend=getattr(args, "backend", "torch"), calibration=calibration
        )
        predictor = build_predictor(refiner, stage1, options)
        log.info("refiner: %s", predictor.backend)
        segmenter = ImageSegmenter(predictor, p.outputs, p.coarse, args.stage1, p.max_pixels)
        run = BatchRun(args.output, jobs, p.batch_mode, group, args.overwrite, args.prefetch, not args.quiet,
                       same={"combine": args.combine})  # fmt: skip
        return run.run(segmenter.read, segmenter.segment)
    finally:
        if group is not None:
            group.close()


def _report(args: argparse.Namespace, outcome, elapsed: float) -> int:
    """The closing line (rank 0 only) and the exit status: 0 all done, 1 some images failed, 2 nothing done."""
    o = outcome
    if o.rank != 0:
        return EXIT_SOME_FAILED if o.failed or o.write_error else 0
    what = "masks" if args.save == "mask" else "cutouts" if args.save == "cutout" else "masks and cutouts"
    if args.combine != "separate":
        what = f"{what} ({args.combine})"
    done_note = f" ({o.skipped} already done, skipped)" if o.skipped else ""
    outputs = o.boxes if args.combine == "separate" else o.images
    if o.write_error:
        listed = "index.jsonl" if o.journaled else "index.json"
        kept = (
            f"{outputs} {what} for {o.images} image(s) before it kept (listed in {listed})"
            if o.images
            else "nothing kept"
        )
        print(f"is5net predict: error: {o.write_error}; stopped there: {kept}", file=sys.stderr)
        return EXIT_SOME_FAILED
    if not o.failed:
        procs = f" by {o.world_size} processes" if o.world_size > 1 else ""
        print(
            f"is5net predict: {outputs} {what} for {o.images} image(s) in {elapsed:.1f}s{procs} -> {args.output}"
            f"{done_note}",
            file=sys.stderr,
        )
        return 0
    if o.total > 1:
        shown = ", ".join(o.failed[:10]) + (f", ... ({len(o.failed) - 10} more)" if len(o.failed) > 10 else "")
        listed = "index.jsonl" if o.journaled else "index.json"
        written = (
            f"{outputs} {what} for {o.images} image(s) written -> {args.output} (listed in {listed})"
            if o.images
            else "nothing written"
        )
        print(
            f"is5net predict: {len(o.failed)} of {o.total - o.skipped} image(s) failed: {shown}; {written}{done_note}",
            file=sys.stderr,
        )
    if o.journaled:
        return EXIT_SOME_FAILED  # a batch: the images done before are there; 2 is for usage mistakes
    return EXIT_SOME_FAILED if o.images else EXIT_NOTHING_DONE
