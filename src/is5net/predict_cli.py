"""Segment the objects in boxes: SAM gives a coarse mask, IS5Net refines it.

Outputs go to ``-o OUTDIR``: one box gives ``<stem>.png``, several give ``<stem>_<k>.png`` (k from 0);
``index.json`` lists every output with its image, box and SAM score. Masks are the soft map x255 unless
``--threshold`` is given. Either SAM (``--sam-checkpoint``) or ``--coarse-mask`` (any stage-1 method's
masks) gives the coarse mask; a 3-channel IS-Net checkpoint needs neither and ignores boxes.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import IS5NetError
from .io import IMAGE_EXTENSIONS, encode_png, list_images, load_image, load_mask, mask_to_uint8
from .prompts import parse_box

log = logging.getLogger("is5net")


def _parse_threshold(text: Optional[str]):
    if text is None:
        return None
    if text.lower() == "otsu":
        return "otsu"
    try:
        t = float(text)
    except ValueError:
        raise IS5NetError(f"--threshold {text!r}: expected a number in [0, 1] or 'otsu'") from None
    if not 0.0 <= t <= 1.0:
        raise IS5NetError(f"--threshold {text!r}: expected a number in [0, 1] or 'otsu'")
    return t


def load_boxes_file(path: Path) -> dict[str, list[list[float]]]:
    """Boxes per image from JSON: ``{"name.jpg": [[x0,y0,x1,y1], ...]}`` or a COCO annotation file."""
    if not path.is_file():
        raise IS5NetError(f"{path}: no such boxes file")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IS5NetError(f"{path}: not valid JSON ({exc})") from None
    out: dict[str, list[list[float]]] = {}
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        names = {img["id"]: img["file_name"] for img in data["images"]}
        for ann in data["annotations"]:
            if ann.get("image_id") not in names or "bbox" not in ann:
                raise IS5NetError(f"{path}: an annotation has no bbox or an unknown image_id")
            x, y, w, h = (float(v) for v in ann["bbox"])
            out.setdefault(names[ann["image_id"]], []).append([x, y, x + w, y + h])
        return out
    if not isinstance(data, dict):
        raise IS5NetError(f"{path}: expected an object mapping image names to box lists, or COCO annotations")
    for name, boxes in data.items():
        if isinstance(boxes, list) and len(boxes) == 4 and all(isinstance(v, (int, float)) for v in boxes):
            boxes = [boxes]
        if not isinstance(boxes, list):
            raise IS5NetError(f"{path}: boxes of {name!r} must be a list of [x0, y0, x1, y1]")
        out[name] = [list(b) if isinstance(b, (list, tuple)) else b for b in boxes]
    return out


def _boxes_for(image: Path, cli_boxes: list[list[float]], file_boxes: Optional[dict]) -> list[list[float]]:
    boxes = list(cli_boxes)
    if file_boxes is not None:
        for key in (str(image), image.name, image.stem):
            if key in file_boxes:
                boxes += file_boxes[key]
                break
    return boxes


def _coarse_mask_path(source: Path, image: Path, k: Optional[int], n_images: int) -> Path:
    if source.is_file():
        if n_images > 1:
            raise IS5NetError(f"--coarse-mask {source} is one file but {n_images} images were given; pass a directory")
        return source
    if not source.is_dir():
        raise IS5NetError(f"--coarse-mask {source}: no such file or directory")
    masks = list_images(source)
    for stem in ([f"{image.stem}_{k}"] if k is not None else []) + [image.stem]:
        if stem in masks:
            return masks[stem]
    raise IS5NetError(f"--coarse-mask {source}: no mask for {image.name} (expected {image.stem}.png)")


def run(args: argparse.Namespace) -> int:
    from .checkpoint import load_refiner
    from .predictor import IS5NetPredictor, binarize
    from .prompts import load_sam
    from .runtime import resolve_device
    from .weights import resolve_weights

    started = time.perf_counter()
    threshold = _parse_threshold(args.threshold)
    device = resolve_device(args.device)
    cli_boxes = [parse_box(b) for b in args.box]
    file_boxes = load_boxes_file(args.boxes) if args.boxes else None
    for image in args.images:
        if not image.is_file():
            raise IS5NetError(f"{image}: no such image file")
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            log.debug("%s: unusual extension; trying to read it anyway", image)

    refiner = load_refiner(resolve_weights(args.checkpoint))
    is5 = refiner.in_ch == 5
    jobs = []
    for image in args.images:
        boxes = _boxes_for(image, cli_boxes, file_boxes)
        if is5 and not boxes:
            raise IS5NetError(f"{image}: no box given (use --box x0,y0,x1,y1 or --boxes FILE)")
        jobs.append((image, boxes))
    stems = [img.stem for img, _ in jobs]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise IS5NetError(f"several images share the stem {dup[0]!r}; their outputs would collide")

    sam = None
    if is5 and args.coarse_mask is None:
        if args.sam_checkpoint is None and args.sam_type != "tiny":
            raise IS5NetError("give --sam-checkpoint PATH (SAM weights) or --coarse-mask FILE|DIR for the coarse mask")
        ckpt = resolve_weights(args.sam_checkpoint) if args.sam_checkpoint else None
        sam = load_sam(args.sam_type, ckpt)
    predictor = IS5NetPredictor(sam, refiner, device=device, precision=args.precision,
                                mask_choice=args.mask_choice, box_channel=args.box_channel,
                                batch_size=args.batch_size, sam_resize=args.sam_resize)

    out_dir: Path = args.output
    inputs = {p.resolve() for p in args.images}
    created = not out_dir.exists()
    if out_dir.exists() and not out_dir.is_dir():
        raise IS5NetError(f"-o {out_dir}: exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Everything is written to a staging folder first and moved into place only when all images succeeded,
    # so a bad input never leaves half the outputs (or a half-written file) behind.
    staging = Path(tempfile.mkdtemp(prefix=".is5net-staging-", dir=out_dir))
    index = []
    n_boxes = 0
    try:
        from tqdm import tqdm

        for image, boxes in tqdm(jobs, desc="predict", unit="image", disable=True if args.quiet else None,
                                 file=sys.stderr):
            rgb = load_image(image)
            predictor.set_image(rgb)
            if is5:
                coarse = None
                if args.coarse_mask is not None:
                    multi = len(boxes) > 1
                    coarse = []
                    paths = [_coarse_mask_path(args.coarse_mask, image, k if multi else None, len(jobs))
                             for k in range(len(boxes))]
                    if multi and len(set(paths)) == 1:
                        log.warning("%s: one coarse mask (%s) for all %d boxes; name them %s_0.png, %s_1.png, "
                                    "... for one each", image.name, paths[0].name, len(boxes), image.stem, image.stem)
                    for path in paths:
                        m = load_mask(path)
                        if m.shape != rgb.shape[:2]:
                            raise IS5NetError(f"coarse mask for {image.name} is {m.shape[1]}x{m.shape[0]}, "
                                              f"the image is {rgb.shape[1]}x{rgb.shape[0]}")
                        coarse.append(m)
                preds = predictor.predict_batch(boxes, coarse)
            else:
                preds = predictor.predict_batch(boxes) if boxes else [predictor.predict()]
            names = [image.stem] if len(preds) == 1 else [f"{image.stem}_{k}" for k in range(len(preds))]
            for name, pred in zip(names, preds):
                mask = pred.mask if threshold is None else binarize(pred.mask, threshold).astype(np.float32)
                mask_u8 = mask_to_uint8(mask)
                files = []
                if args.save in ("mask", "both"):
                    files.append((f"{name}.png", mask_u8))
                if args.save in ("cutout", "both"):
                    cut_name = f"{name}.png" if args.save == "cutout" else f"{name}_cutout.png"
                    files.append((cut_name, np.dstack([rgb, mask_u8])))
                for fname, arr in files:
                    if (out_dir / fname).resolve() in inputs:
                        raise IS5NetError(f"{out_dir / fname} is an input image; choose another -o")
                    (staging / fname).write_bytes(encode_png(arr))
                index.append({
                    "file": files[0][0], "image": str(image), "box": pred.box,
                    "sam_score": pred.sam_score,
                    "coarse": "given" if args.coarse_mask is not None else ("sam" if is5 else None),
                })
                n_boxes += 1
        (staging / "index.json").write_text(json.dumps(index, indent=2))
        for f in sorted(staging.iterdir()):
            f.replace(out_dir / f.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    elapsed = time.perf_counter() - started
    what = "masks" if args.save == "mask" else "cutouts" if args.save == "cutout" else "masks and cutouts"
    print(f"is5net predict: {n_boxes} {what} for {len(jobs)} image(s) in {elapsed:.1f}s -> {out_dir}",
          file=sys.stderr)
    return 0
