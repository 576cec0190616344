"""Segment the objects in boxes: SAM gives a coarse mask, IS5Net refines it.

Outputs go to ``-o OUTDIR``: one box gives ``<stem>.png``, several give ``<stem>_<k>.png`` (k from 0);
``index.json`` lists every output with its image, box and SAM score. Masks are the soft map x255 unless
``--threshold`` is given. Either SAM (``--sam-checkpoint``) or ``--coarse-mask`` (any stage-1 method's
masks) gives the coarse mask; a 3-channel IS-Net checkpoint needs neither and ignores boxes (it says so).

Every input is checked before the models load (files that are not images, boxes, the boxes file, output
names that would overwrite an input): a mistake there is one line and exit status 2, with nothing
written. Then each image's outputs are written (atomically) as soon as it is done, so a long run keeps
what it finished: an image that fails (a truncated file, a box outside it, a missing coarse mask) is one
line naming it and the run goes on. ``index.json`` lists what was written. Exit status: 0 all done, 1 some
images failed (the others' outputs are written and listed), 2 nothing written.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .errors import IS5NetError
from .io import (IMAGE_EXTENSIONS, atomic_write_bytes, atomic_write_text, encode_png, image_file_problem,
                 load_image, load_mask, max_pixels)
from .outputs import cutout_rgba, mask_uint8
from .outputs import parse_threshold as _parse_threshold
from .prompts import parse_box

log = logging.getLogger("is5net")

EXIT_SOME_FAILED = 1  # some images failed; the others' outputs are written and listed
EXIT_NOTHING_DONE = 2  # the CLI's user-error status: nothing was written


def load_boxes_file(path: Path) -> dict[str, list[list[float]]]:
    """Boxes per image from JSON: ``{"name.jpg": [[x0,y0,x1,y1], ...]}`` or a COCO annotation file.

    Every entry is checked here, so a malformed file is one :class:`IS5NetError` naming the entry and what
    is wrong with it (never a traceback from deep inside, nor a number printed as ``np.float64(...)``).
    """
    if not path.is_file():
        raise IS5NetError(f"{path}: no such boxes file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IS5NetError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _coco_boxes(path, data)
    if not isinstance(data, dict):
        raise IS5NetError(f"{path}: expected an object mapping image names to box lists, or COCO annotations")
    out: dict[str, list[list[float]]] = {}
    for name, boxes in data.items():
        where = f"{path}: boxes of {name!r}"
        if isinstance(boxes, list) and len(boxes) == 4 and all(_is_number(v) for v in boxes):
            boxes = [boxes]  # one box given bare
        if not isinstance(boxes, list):
            raise IS5NetError(f"{where}: expected a list of [x0, y0, x1, y1], got {_show(boxes)}")
        out[name] = [_four_numbers(b, f"{where}, box {k}", "[x0, y0, x1, y1]") for k, b in enumerate(boxes)]
    return out


def _coco_boxes(path: Path, data: dict) -> dict[str, list[list[float]]]:
    """COCO ``images`` + ``annotations`` -> boxes per file name (``bbox`` is ``[x, y, w, h]``)."""
    images, annotations = data["images"], data["annotations"]
    for key, value in (("images", images), ("annotations", annotations)):
        if not isinstance(value, list):
            raise IS5NetError(f"{path}: COCO '{key}' must be a list of objects, got {_show(value)}")
    names: dict[Any, str] = {}
    for i, img in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict):
            raise IS5NetError(f"{where}: expected an object with 'id' and 'file_name', got {_show(img)}")
        if "id" not in img or not isinstance(img["id"], (int, str)) or isinstance(img["id"], bool):
            raise IS5NetError(f"{where}: needs an 'id' (a number or a string), got {_show(img.get('id'))}")
        where = f"{path}: images[{i}] (id {img['id']!r})"
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise IS5NetError(f"{where}: needs a 'file_name' (a string), got {_show(img.get('file_name'))}")
        if img["id"] in names:
            raise IS5NetError(f"{where}: the id is used twice ({names[img['id']]!r} and {img['file_name']!r})")
        names[img["id"]] = img["file_name"]
    out: dict[str, list[list[float]]] = {}
    for i, ann in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise IS5NetError(f"{where}: expected an object with 'image_id' and 'bbox', got {_show(ann)}")
        if "id" in ann:
            where += f" (id {ann['id']!r})"
        if "image_id" not in ann:
            raise IS5NetError(f"{where}: has no 'image_id'")
        image_id = ann["image_id"]
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool) or image_id not in names:
            raise IS5NetError(f"{where}: image_id {_show(image_id)} is not the id of any entry of 'images'")
        if "bbox" not in ann:
            raise IS5NetError(f"{where}: has no 'bbox'")
        x, y, w, h = _four_numbers(ann["bbox"], f"{where}: bbox", "[x, y, width, height]")
        if w <= 0 or h <= 0:
            raise IS5NetError(f"{where}: bbox {_show(ann['bbox'])} has a width or height <= 0")
        out.setdefault(names[image_id], []).append([x, y, x + w, y + h])
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _four_numbers(value, where: str, form: str) -> list[float]:
    """``value`` as four finite Python floats, or an error naming ``where`` and the expected ``form``."""
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(_is_number(v) for v in value):
        raise IS5NetError(f"{where}: expected four numbers {form}, got {_show(value)}")
    numbers = [float(v) for v in value]
    if not all(math.isfinite(v) for v in numbers):
        raise IS5NetError(f"{where}: expected four finite numbers {form}, got {_show(value)}")
    return numbers


def _show(value, limit: int = 60) -> str:
    """A JSON value as the user wrote it (JSON spelling: null, true, "text"), cut short if long."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _boxes_for(image: Path, cli_boxes: list[list[float]], file_boxes: Optional[dict]) -> list[list[float]]:
    boxes = list(cli_boxes)
    if file_boxes is not None:
        for key in (str(image), image.name, image.stem):
            if key in file_boxes:
                boxes += file_boxes[key]
                break
    return boxes


def _coarse_mask_path(source: Path, folder, image: Path, k: Optional[int]) -> Path:
    """The stage-1 mask of ``image`` (box ``k`` of several): the one file ``source``, or found in the
    directory ``source`` by the rule of :mod:`is5net.data.coarse` (``folder``, its finder)."""
    if folder is None:
        return source
    found = folder.find(image.stem, box_index=k)
    if found is None:
        raise IS5NetError(f"--coarse-mask {source}: no mask for {image.name} (expected {image.stem}.png)")
    return found


def _output_names(image: Path, n_outputs: int, save: str) -> list[dict[str, str]]:
    """File names per output of ``image``: kind (``mask``, ``cutout``) -> name, the kinds ``--save`` asks for."""
    stems = [image.stem] if n_outputs == 1 else [f"{image.stem}_{k}" for k in range(n_outputs)]
    if save == "both":
        return [{"mask": f"{s}.png", "cutout": f"{s}_cutout.png"} for s in stems]
    return [{save: f"{s}.png"} for s in stems]


def _check_inputs(args: argparse.Namespace) -> None:
    """The cheap checks of every input file, before any model loads: a typo costs a second, not a run."""
    problems = [(image, image_file_problem(image)) for image in args.images]
    problems = [(image, why) for image, why in problems if why is not None]
    if problems:
        image, why = problems[0]
        more = f" (and {len(problems) - 1} more: {', '.join(str(p) for p, _ in problems[1:4])})" \
            if len(problems) > 1 else ""
        raise IS5NetError(f"{image}: {why}{more}")
    for image in args.images:
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            log.debug("%s: unusual extension; reading it anyway", image)
    if args.coarse_mask is not None:
        if args.coarse_mask.is_file():
            if len(args.images) > 1:
                raise IS5NetError(f"--coarse-mask {args.coarse_mask} is one file but {len(args.images)} images "
                                  f"were given; pass a directory")
        elif not args.coarse_mask.is_dir():
            raise IS5NetError(f"--coarse-mask {args.coarse_mask}: no such file or directory")
    if args.output.exists() and not args.output.is_dir():
        raise IS5NetError(f"-o {args.output}: exists and is not a directory")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoint import load_refiner
    from .predictor import IS5NetPredictor
    from .data.coarse import CoarseMaskFolder
    from .prompts import stage1_source
    from .runtime import resolve_device
    from .weights import resolve_weights

    started = time.perf_counter()
    threshold = _parse_threshold(args.threshold)
    pixel_limit = max_pixels(args.max_pixels)  # a bad $IS5NET_MAX_PIXELS is refused here, before any work
    device = resolve_device(args.device)
    cli_boxes = [parse_box(b) for b in args.box]
    if args.stage1 == "grabcut" and (args.sam_checkpoint is not None or args.coarse_mask is not None):
        raise IS5NetError("--stage1 grabcut makes the coarse mask itself: give it without --sam-checkpoint and "
                          "--coarse-mask")
    file_boxes = load_boxes_file(args.boxes) if args.boxes else None
    _check_inputs(args)

    checkpoint = resolve_weights(args.checkpoint)
    refiner = load_refiner(checkpoint)
    is5 = refiner.in_ch == 5
    jobs = []
    for image in args.images:
        boxes = _boxes_for(image, cli_boxes, file_boxes)
        if is5 and not boxes:
            raise IS5NetError(f"{image}: no box given (use --box x0,y0,x1,y1 or --boxes FILE)")
        jobs.append((image, boxes, _output_names(image, max(1, len(boxes)), args.save)))
    ignored = [name for name, given in (("--box/--boxes", cli_boxes or file_boxes),
                                        ("--coarse-mask", args.coarse_mask is not None)) if given]
    if not is5 and ignored:
        log.warning("%s is a 3-channel IS-Net: it takes no prompt, so %s are ignored (each box only names an "
                    "output, all with the same whole-image mask); use an IS5Net checkpoint to segment what a "
                    "box holds", checkpoint.name, " and ".join(ignored))
    stems = [img.stem for img, _, _ in jobs]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise IS5NetError(f"several images share the stem {dup[0]!r}; their outputs would collide")
    out_dir: Path = args.output
    inputs = {p.resolve() for p in args.images}
    for _, _, names in jobs:
        for fname in [n for per_output in names for n in per_output.values()] + ["index.json"]:
            if (out_dir / fname).resolve() in inputs:
                raise IS5NetError(f"{out_dir / fname} is an input image; choose another -o")

    sam = None
    if is5 and args.stage1 == "grabcut":
        from .prompts import GrabCutStage

        sam = GrabCutStage(device=device)  # a classical stage 1: no weights at all
    elif is5:
        source = stage1_source(args.sam_checkpoint, args.sam_type, args.coarse_mask, "--coarse-mask")
        sam = None if source is None else source.load()
    predictor = IS5NetPredictor(sam, refiner, device=device, precision=args.precision,
                                backend=getattr(args, "backend", "torch"),
                                mask_choice=args.mask_choice, box_channel=args.box_channel,
                                batch_size=args.batch_size, sam_resize=args.sam_resize, region=args.region,
                                margin=args.margin, max_side=args.max_side)

    log.info("refiner: %s", predictor.backend)
    coarse_listing = CoarseMaskFolder(args.coarse_mask) if args.coarse_mask is not None and \
        args.coarse_mask.is_dir() else None

    def segment(image: Path, boxes: list, names: list[dict[str, str]]) -> tuple[list[tuple[str, bytes]], list[dict]]:
        """One image's output files (name, PNG bytes) and index entries; nothing is written here."""
        rgb = load_image(image, max_pixels=pixel_limit)
        predictor.set_image(rgb)
        if is5:
            coarse = None
            if args.coarse_mask is not None:
                multi = len(boxes) > 1
                paths = [_coarse_mask_path(args.coarse_mask, coarse_listing, image, k if multi else None)
                         for k in range(len(boxes))]
                if multi and len(set(paths)) == 1:
                    log.warning("%s: one coarse mask (%s) for all %d boxes; name them %s_0.png, %s_1.png, "
                                "... for one each", image.name, paths[0].name, len(boxes), image.stem, image.stem)
                coarse = []
                for path in paths:
                    m = load_mask(path, max_pixels=pixel_limit)
                    if m.shape != rgb.shape[:2]:
                        raise IS5NetError(f"coarse mask {path.name} is {m.shape[1]}x{m.shape[0]}, "
                                          f"the image is {rgb.shape[1]}x{rgb.shape[0]}")
                    coarse.append(m)
            preds = predictor.predict_batch(boxes, coarse)
        else:
            preds = predictor.predict_batch(boxes) if boxes else [predictor.predict()]
        files, entries = [], []
        for file_names, pred in zip(names, preds, strict=True):
            mask_u8 = mask_uint8(pred.mask, threshold)  # the same bytes as `is5net serve` answers
            for kind, fname in file_names.items():
                files.append((fname, encode_png(mask_u8 if kind == "mask" else cutout_rgba(rgb, mask_u8))))
            entries.append({
                "file": next(iter(file_names.values())), "image": str(image), "box": pred.box,
                "sam_score": pred.sam_score,
                "coarse": "given" if args.coarse_mask is not None else (args.stage1 if is5 else None),
            })
        return files, entries

    index: list[dict] = []
    failed: list[str] = []
    created = not out_dir.exists()
    bar = tqdm(jobs, desc="predict", unit="image", disable=True if args.quiet else None, file=sys.stderr)
    try:
        for image, boxes, names in bar:
            try:
                files, entries = segment(image, boxes, names)
            except IS5NetError as exc:
                message = str(exc) if str(image) in str(exc) else f"{image}: {exc}"
                tqdm.write(f"is5net predict: error: {message}", file=sys.stderr)
                failed.append(str(image))
                continue
            _commit(out_dir, files)
            index.extend(entries)
    finally:
        # Also on Ctrl-C or an unexpected error: the outputs written so far are listed.
        if index:
            atomic_write_text(out_dir / "index.json", json.dumps(index, indent=2))
        elif created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # made for this run, and nothing came of it

    elapsed = time.perf_counter() - started
    what = "masks" if args.save == "mask" else "cutouts" if args.save == "cutout" else "masks and cutouts"
    done = len(jobs) - len(failed)
    if not failed:
        print(f"is5net predict: {len(index)} {what} for {done} image(s) in {elapsed:.1f}s -> {out_dir}",
              file=sys.stderr)
        return 0
    if len(jobs) > 1:
        shown = ", ".join(failed[:10]) + (f", ... ({len(failed) - 10} more)" if len(failed) > 10 else "")
        written = (f"{len(index)} {what} for {done} image(s) written -> {out_dir} (listed in index.json)"
                   if index else "nothing written")
        print(f"is5net predict: {len(failed)} of {len(jobs)} image(s) failed: {shown}; {written}", file=sys.stderr)
    return EXIT_SOME_FAILED if index else EXIT_NOTHING_DONE


def _commit(out_dir: Path, files: list[tuple[str, bytes]]) -> None:
    """Write one image's files, each atomically; if one cannot be written, the image's others are removed
    too, so an image has all of its outputs or none."""
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
