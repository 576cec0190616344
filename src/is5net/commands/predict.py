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
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

from ..defaults import MAX_PIXELS_ENV
from ..errors import IS5NetError
from .options import positive_int, region_arguments, runtime_arguments, stage1_arguments

log = logging.getLogger("is5net")

EXIT_SOME_FAILED = 1  # some images failed; the others' outputs are written and listed
EXIT_NOTHING_DONE = 2  # the CLI's user-error status: nothing was written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Segment the objects in boxes: SAM gives a coarse mask, IS5Net refines it.

    Each image's outputs are written as soon as it is done; an image that cannot be read or segmented is
    reported in one line and the others still run (the exit status is then 1). A box with a negative
    coordinate is passed with '=': --box=-5,0,10,10 (argparse would read '-5,...' as an option).
    """
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
        choices=("separate", "union", "labels"),
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
        "--boxes",
        type=Path,
        metavar="FILE",
        help="JSON mapping image file names (or stems) to lists of boxes, a COCO annotation "
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
        choices=("mask", "cutout", "both"),
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


def _coarse_mask_path(source: Path, folder, item, k: Optional[int]) -> Path:
    """The stage-1 mask of ``item`` (box ``k`` of several): the one file ``source``, or found in the
    directory ``source`` by the rule of :mod:`is5net.data.coarse` (``folder``, its finder), in the
    subfolder that mirrors the image's first."""
    if folder is None:
        return source
    subset = str(item.rel.parent) if str(item.rel.parent) != "." else None
    found = folder.find(item.path.stem, subset=subset, box_index=k)
    if found is None:
        raise IS5NetError(f"--coarse-mask {source}: no mask for {item.path.name} (expected {item.path.stem}.png)")
    return found


def _output_names(stem, n_outputs: int, save: str) -> list[dict[str, str]]:
    """Paths under OUTDIR per output of an image whose outputs are ``stem`` (its path under OUTDIR, no
    suffix): kind (``mask``, ``cutout``) -> path, for the kinds ``--save`` asks for."""
    stems = [str(stem)] if n_outputs == 1 else [f"{stem}_{k}" for k in range(n_outputs)]
    if save == "both":
        return [{"mask": f"{s}.png", "cutout": f"{s}_cutout.png"} for s in stems]
    return [{save: f"{s}.png"} for s in stems]


def _check_inputs(args: argparse.Namespace, named: list[Path], n_images: int) -> None:
    """The cheap checks of the files named one by one, before any model loads: a typo costs a second, not
    a run. (Images found in folders are read in the run; a bad one there is a failed image, not a mistake.)"""
    from ..io import (
        IMAGE_EXTENSIONS,
        image_file_problem,
    )

    problems = [(image, image_file_problem(image)) for image in named]
    problems = [(image, why) for image, why in problems if why is not None]
    if problems:
        image, why = problems[0]
        more = (
            f" (and {len(problems) - 1} more: {', '.join(str(p) for p, _ in problems[1:4])})"
            if len(problems) > 1
            else ""
        )
        raise IS5NetError(f"{image}: {why}{more}")
    for image in named:
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            log.debug("%s: unusual extension; reading it anyway", image)
    if args.coarse_mask is not None:
        if args.coarse_mask.is_file():
            if n_images > 1:
                raise IS5NetError(
                    f"--coarse-mask {args.coarse_mask} is one file but {n_images} images were given; pass a directory"
                )
        elif not args.coarse_mask.is_dir():
            raise IS5NetError(f"--coarse-mask {args.coarse_mask}: no such file or directory")
    if args.output.exists() and not args.output.is_dir():
        raise IS5NetError(f"-o {args.output}: exists and is not a directory")


def per_box_entries(entry: dict) -> list[dict]:
    """An image's ``index.jsonl`` line as ``index.json`` entries: one per box (file, image, box, SAM score,
    stage 1, COCO RLE; ``label`` with ``--combine labels``)."""
    out = []
    files, boxes = entry.get("files") or [], entry.get("boxes") or []
    scores, rles = entry.get("scores") or [None] * len(boxes), entry.get("rle") or [None] * len(boxes)
    for k, (names, box, score, rle) in enumerate(zip(files, boxes, scores, rles)):
        e = {
            "file": next(iter(names.values())),
            "image": entry.get("image"),
            "box": box,
            "sam_score": score,
            "coarse": entry.get("coarse"),
            "rle": rle,
        }
        if entry.get("combine") == "labels":
            e["label"] = k + 1
        out.append(e)
    return out


def _need(module: str, why: str) -> None:
    """Import ``module`` now (not in the middle of the run), or one line saying what to install."""
    import importlib
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None:
        raise IS5NetError(f"{why} needs the package {module} (pip install {module})")
    if module == "pymatting" and spec.submodule_search_locations:
        # pymatting compiles its numba kernels on its first import (about a minute on a laptop, then cached
        # beside the package): say so, rather than look stuck.
        root = Path(next(iter(spec.submodule_search_locations)))
        if not any(root.glob("*/__pycache__/*.nbi")):
            log.info("pymatting: compiling its kernels on first use (a minute or so, once)")
    importlib.import_module(module)


class _Job:
    __slots__ = ("item", "boxes", "names")

    def __init__(self, item, boxes, names):
        self.item, self.boxes, self.names = item, boxes, names

    @property
    def outputs(self) -> list[str]:
        return [n for per_output in self.names for n in per_output.values()]


def run(args: argparse.Namespace) -> int:
    import os

    from tqdm import tqdm

    from .. import batch
    from ..checkpoint import load_refiner
    from ..contract import FG_THRESHOLD
    from ..data.coarse import CoarseMaskFolder
    from ..distributed import ProcessGroup
    from ..inference.boxes import boxes_for, load_boxes_file, parse_box
    from ..inference.outputs import (
        composite,
        cutout_rgba,
        foreground_colours,
        label_map,
        mask_uint8,
        parse_background,
        rle_encode,
        union_uint8,
    )
    from ..inference.outputs import parse_threshold as _parse_threshold
    from ..inference.predictor import PredictorOptions, build_predictor
    from ..inference.stage1 import choose_stage1
    from ..io import (
        atomic_write_text,
        encode_png,
        load_image,
        load_mask,
        max_pixels,
    )
    from ..runtime import resolve_device
    from ..weights import resolve_weights

    started = time.perf_counter()
    threshold = _parse_threshold(args.threshold)
    pixel_limit = max_pixels(args.max_pixels)  # a bad $IS5NET_MAX_PIXELS is refused here, before any work
    background = parse_background(args.background)
    if args.background is not None and args.save == "mask":
        raise IS5NetError("--background composites cut-outs: give it with --save cutout or --save both")
    if args.prefetch < 0:
        raise IS5NetError(f"--prefetch {args.prefetch}: expected 0 or more images")
    device = resolve_device(args.device)
    cli_boxes = [parse_box(b) for b in args.box]
    file_boxes = load_boxes_file(args.boxes) if args.boxes else None
    found = batch.discover(args.images, recursive=args.recursive, exclude=args.output)
    several_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1
    batch_mode = found.batch or several_processes
    _check_inputs(args, found.named, len(found.items))
    collision = batch.output_collisions(found.items)
    if collision is not None:
        raise IS5NetError(collision)
    if isinstance(background, Path):
        background = load_image(background, max_pixels=pixel_limit)
    _need("pycocotools", "the COCO RLE of the index")
    if args.save != "mask" and args.foreground == "estimate":
        _need("pymatting", "--foreground estimate (the default for cut-outs; --foreground raw needs nothing)")

    checkpoint = resolve_weights(args.checkpoint)
    refiner = load_refiner(checkpoint)
    is5 = refiner.in_ch == 5
    if is5 and not cli_boxes and not file_boxes:
        raise IS5NetError(f"{found.items[0].path}: no box given (use --box x0,y0,x1,y1 or --boxes FILE)")
    jobs: list[_Job] = []
    for item in found.items:
        boxes = boxes_for(item, cli_boxes, file_boxes)
        if is5 and not boxes and not batch_mode:
            raise IS5NetError(f"{item.path}: no box given (use --box x0,y0,x1,y1 or --boxes FILE)")
        n_outputs = max(1, len(boxes)) if args.combine == "separate" else 1
        jobs.append(_Job(item, boxes, _output_names(item.out_stem, n_outputs, args.save)))
    ignored = [
        name
        for name, given in (("--box/--boxes", cli_boxes or file_boxes), ("--coarse-mask", args.coarse_mask is not None))
        if given
    ]
    if not is5 and ignored:
        log.warning(
            "%s is a 3-channel IS-Net: it takes no prompt, so %s are ignored (each box only names an "
            "output, all with the same whole-image mask); use an IS5Net checkpoint to segment what a "
            "box holds",
            checkpoint.name,
            " and ".join(ignored),
        )
    out_dir: Path = args.output
    inputs = {item.path.resolve() for item in found.items}
    for name in [n for job in jobs for n in job.outputs] + [batch.INDEX_JSON, batch.INDEX_JSONL]:
        if (out_dir / name).resolve() in inputs:
            raise IS5NetError(f"{out_dir / name} is an input image; choose another -o")

    stage1 = choose_stage1(args.stage1, args.sam_checkpoint, args.sam_type, args.coarse_mask) if is5 else None
    group = ProcessGroup(device) if several_processes else None
    try:
        if group is not None:
            device = group.device  # cuda:LOCAL_RANK under torchrun on GPUs (the predictor moves SAM there)
        options = PredictorOptions.from_args(args, device=device, backend=getattr(args, "backend", "torch"))
        predictor = build_predictor(refiner, stage1, options)
        log.info("refiner: %s", predictor.backend)
        coarse_listing = (
            CoarseMaskFolder(args.coarse_mask) if args.coarse_mask is not None and args.coarse_mask.is_dir() else None
        )
        estimate = args.foreground == "estimate"

        def read(job: _Job):
            """Decode the image (and its coarse masks): runs ahead, in the decoding thread."""
            rgb = load_image(job.item.path, max_pixels=pixel_limit)
            if is5 and not job.boxes:
                raise IS5NetError(f"{job.item.path}: no box given for it (--box, or an entry in --boxes FILE)")
            coarse = None
            if is5 and args.coarse_mask is not None:
                multi = len(job.boxes) > 1
                paths = [
                    _coarse_mask_path(args.coarse_mask, coarse_listing, job.item, k if multi else None)
                    for k in range(len(job.boxes))
                ]
                if multi and len(set(paths)) == 1:
                    log.warning(
                        "%s: one coarse mask (%s) for all %d boxes; name them %s_0.png, %s_1.png, ... for one each",
                        job.item.path.name,
                        paths[0].name,
                        len(job.boxes),
                        job.item.path.stem,
                        job.item.path.stem,
                    )
                coarse = []
                for path in paths:
                    m = load_mask(path, max_pixels=pixel_limit)
                    if m.shape != rgb.shape[:2]:
                        raise IS5NetError(
                            f"coarse mask {path.name} is {m.shape[1]}x{m.shape[0]}, "
                            f"the image is {rgb.shape[1]}x{rgb.shape[0]}"
                        )
                    coarse.append(m)
            return rgb, coarse

        def cutout(rgb, alpha):
            fg = foreground_colours(rgb, alpha) if estimate else rgb
            return composite(fg, alpha, background) if background is not None else cutout_rgba(fg, alpha)

        def segment(job: _Job, rgb, coarse) -> tuple[list[tuple[str, bytes]], dict]:
            """One image's output files (path under OUTDIR, PNG bytes) and journal line; nothing written here."""
            t0 = time.perf_counter()
            predictor.set_image(rgb)
            if is5:
                preds = predictor.predict_batch(job.boxes, coarse)
            else:
                preds = predictor.predict_batch(job.boxes) if job.boxes else [predictor.predict()]
            masks = [mask_uint8(p.mask, threshold) for p in preds]  # the same bytes as `is5net serve` answers
            foreground = [m > FG_THRESHOLD for m in masks]
            if args.combine == "separate":
                alphas, saved = masks, masks
            else:
                union = union_uint8(masks)
                alphas = [union]
                saved = [union if args.combine == "union" else label_map(foreground, [p.mask for p in preds])]
            files = []
            for file_names, alpha, mask in zip(job.names, alphas, saved, strict=True):
                for kind, name in file_names.items():
                    files.append((name, encode_png(mask if kind == "mask" else cutout(rgb, alpha))))
            per_box = job.names if args.combine == "separate" else job.names * len(preds)
            entry = {
                "input": str(job.item.rel),
                "image": str(job.item.path),
                "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]),
                "boxes": [p.box for p in preds],
                "scores": [p.sam_score for p in preds],
                "coarse": "given" if args.coarse_mask is not None else (args.stage1 if is5 else None),
                "combine": args.combine,
                "outputs": job.outputs,
                "files": per_box,
                "rle": [rle_encode(f) for f in foreground],
                "seconds": round(time.perf_counter() - t0, 4),
            }
            return files, entry

        rank, world = (group.rank, group.world_size) if group is not None else (0, 1)
        journal = batch.Journal(out_dir, rank, world) if batch_mode else None
        skipped = 0
        mine = jobs
        if journal is not None:
            todo = None
            if rank == 0:
                order = [str(job.item.rel) for job in jobs]
                stale = batch.remove_stale_temporaries(out_dir)
                if stale:
                    log.info("%s: removed %d unfinished temporary file(s) a killed run left", out_dir, stale)
                latest, dropped = journal.entries()
                if dropped:
                    log.info(
                        "%s: dropped %d torn line(s) a killed run left; their images are redone", journal.path, dropped
                    )
                if latest or journal.parts():
                    journal.compact(order)
                todo = [
                    i
                    for i, job in enumerate(jobs)
                    if args.overwrite
                    or not batch.is_done(latest.get(str(job.item.rel)), job.outputs, out_dir, combine=args.combine)
                ]
            todo = group.broadcast(todo) if group is not None else todo
            skipped = len(jobs) - len(todo)
            if skipped and rank == 0:
                log.info(
                    "%d of %d image(s) already done (listed in %s); --overwrite redoes them",
                    skipped,
                    len(jobs),
                    journal.path,
                )
            mine = [jobs[i] for i in todo[rank::world]]

        index: list[dict] = []  # files named one by one: index.json as before
        failed: list[str] = []
        n_files = n_written = 0
        created = not out_dir.exists()
        desc = "predict" if world == 1 else f"predict (rank 0 of {world})"
        bar = tqdm(
            total=len(mine),
            desc=desc,
            unit="image",
            file=sys.stderr,
            disable=True if (args.quiet or rank != 0) else None,
        )
        try:
            for job, payload, error in batch.decode_ahead(mine, read, depth=args.prefetch):
                try:
                    if error is not None:
                        raise error
                    files, entry = segment(job, *payload)
                except (IS5NetError, OSError) as exc:
                    image = str(job.item.path)
                    message = str(exc) if image in str(exc) else f"{image}: {exc}"
                    tqdm.write(f"is5net predict: error: {message}", file=sys.stderr)
                    failed.append(image)
                    bar.update(1)
                    continue
                _commit(out_dir, files)
                entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                if journal is not None:
                    journal.append(entry)
                else:
                    index.extend(per_box_entries(entry))
                n_written += len(entry["boxes"])
                n_files += 1
                bar.update(1)
        finally:
            bar.close()
            # Also on Ctrl-C or an unexpected error: the outputs written so far are listed.
            if journal is None:
                if index:
                    atomic_write_text(out_dir / batch.INDEX_JSON, json.dumps(index, indent=2))
                elif created and out_dir.is_dir() and not any(out_dir.iterdir()):
                    out_dir.rmdir()  # made for this run, and nothing came of it

        total_images = len(jobs)
        if group is not None:
            failed = batch.gather(group, failed)
            n_written, n_files = group.sum([n_written, n_files])
            group.barrier()  # every part is complete before rank 0 merges them
        if journal is not None and rank == 0:
            entries = journal.compact([str(job.item.rel) for job in jobs])
            if entries:
                atomic_write_text(
                    out_dir / batch.INDEX_JSON,
                    json.dumps([e for entry in entries for e in per_box_entries(entry)], indent=2),
                )
        if group is not None:
            group.barrier()
    finally:
        if group is not None:
            group.close()

    if rank != 0:
        return EXIT_SOME_FAILED if failed else 0
    elapsed = time.perf_counter() - started
    what = "masks" if args.save == "mask" else "cutouts" if args.save == "cutout" else "masks and cutouts"
    if args.combine != "separate":
        what = f"{what} ({args.combine})"
    done_note = f" ({skipped} already done, skipped)" if skipped else ""
    procs = f" by {world} processes" if world > 1 else ""
    if not failed:
        outputs = n_written if args.combine == "separate" else n_files
        print(
            f"is5net predict: {outputs} {what} for {n_files} image(s) in {elapsed:.1f}s{procs} -> {out_dir}{done_note}",
            file=sys.stderr,
        )
        return 0
    if total_images > 1:
        shown = ", ".join(failed[:10]) + (f", ... ({len(failed) - 10} more)" if len(failed) > 10 else "")
        listed = "index.jsonl" if journal is not None else "index.json"
        outputs = n_written if args.combine == "separate" else n_files
        written = (
            f"{outputs} {what} for {n_files} image(s) written -> {out_dir} (listed in {listed})"
            if n_files
            else "nothing written"
        )
        print(
            f"is5net predict: {len(failed)} of {total_images - skipped} image(s) failed: {shown}; {written}{done_note}",
            file=sys.stderr,
        )
    if journal is not None:
        return EXIT_SOME_FAILED  # a batch: the images done before are there; 2 is for usage mistakes
    return EXIT_SOME_FAILED if index else EXIT_NOTHING_DONE


def _commit(out_dir: Path, files: list[tuple[str, bytes]]) -> None:
    """Write one image's files, each atomically; if one cannot be written, the image's others are removed
    too, so an image has all of its outputs or none."""
    from ..io import (
        atomic_write_bytes,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for fname, data in files:
            atomic_write_bytes(out_dir / fname, data)
            written.append(out_dir / fname)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
