"""Every way a box arrives, and the one check it passes (docs/input-contract.md, "Boxes").

Boxes are ``[x0, y0, x1, y1]`` (XYXY) in pixels of the original image as displayed (after EXIF rotation).
They come as a command-line or form string (``"x0,y0,x1,y1"``), as JSON lists (a boxes file, the HTTP API's
``{"boxes": [...]}``), as COCO ``bbox`` entries (``[x, y, w, h]``) or as CSV rows ``file,x0,y0,x1,y1``. Each
reader turns its form into four finite floats through :func:`four_finite_numbers` and names the entry that
is wrong; :func:`validate_box` then checks and clips a box against its image. How a box becomes a channel
(exclusive end) is the contract's rule: :func:`is5net.contract.box_pixel_bounds`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import BoxError, IS5NetError

log = logging.getLogger("is5net")

XYXY = "[x0, y0, x1, y1]"
COCO_XYWH = "[x, y, width, height]"


# ------------------------------------------------------------------------------------- the one check
def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def show(value, limit: int = 60) -> str:
    """A JSON value as the user wrote it (JSON spelling: null, true, "text"), cut short if long."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def four_finite_numbers(value, where: str, form: str = XYXY) -> list[float]:
    """``value`` as four finite Python floats, or a :class:`BoxError` naming ``where`` and the ``form`` expected.

    Booleans are not numbers here (JSON ``true`` is no coordinate), and neither are strings: a box written
    as text goes through :func:`parse_box`.
    """
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not all(_is_number(v) for v in value):
        raise BoxError(f"{where}: expected four numbers {form}, got {show(value)}")
    try:
        numbers = [float(v) for v in value]
    except OverflowError:  # an integer too large for a float is no pixel coordinate either
        numbers = [math.inf]
    if not all(math.isfinite(v) for v in numbers):
        raise BoxError(f"{where}: expected four finite numbers {form}, got {show(value)}")
    return numbers


def parse_box(text: str) -> list[float]:
    """Parse ``"x0,y0,x1,y1"`` (commas or spaces) into four floats; a :class:`BoxError` otherwise."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise BoxError(f"box {text!r}: expected four numbers x0,y0,x1,y1") from None
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise BoxError(f"box {text!r}: expected four numbers x0,y0,x1,y1")
    return vals


def boxes_from_json(value: Any, max_boxes: int, where: str = "boxes") -> list[list[float]]:
    """A JSON list of boxes (the HTTP API's ``boxes``): at least one, at most ``max_boxes``, each checked."""
    if not isinstance(value, list) or not value:
        raise BoxError(f"'{where}' must be a non-empty list of {XYXY}")
    if len(value) > max_boxes:
        raise BoxError(f"{len(value)} boxes: at most {max_boxes} per request")
    return [four_finite_numbers(b, f"{where}[{k}]") for k, b in enumerate(value)]


def validate_box(box: Sequence[float], width: int, height: int) -> np.ndarray:
    """Check a box against an image of ``width`` x ``height`` and return it clipped, as float64 ``[4]``.

    A box partly outside the image is clipped, with a warning; a box entirely outside, of zero or
    negative area, or not four finite numbers is a :class:`BoxError`.
    """
    try:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise BoxError(f"box {box!r}: expected four numbers x0,y0,x1,y1") from None
    if b.size != 4 or not np.all(np.isfinite(b)):
        raise BoxError(f"box {format_box(b)}: expected four finite numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = b
    if x1 <= x0 or y1 <= y0:
        raise BoxError(f"box {format_box(b)}: zero or negative area (need x1 > x0 and y1 > y0, XYXY pixels)")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise BoxError(f"box {format_box(b)}: entirely outside the {width}x{height} image")
    clipped = np.array([max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))])
    if not np.array_equal(clipped, b):
        log.warning(
            "box %s is partly outside the %dx%d image; clipped to %s", format_box(b), width, height, format_box(clipped)
        )
    return clipped


def format_box(b) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b) + "]"


# ------------------------------------------------------------------------------------------ box files
def load_boxes_file(path: Path) -> dict[str, list[list[float]]]:
    """Boxes per image from JSON: ``{"name.jpg": [[x0,y0,x1,y1], ...]}``, a COCO annotation file, or a CSV
    (``.csv``) of rows ``file,x0,y0,x1,y1``.

    Every entry is checked here, so a malformed file is one :class:`IS5NetError` naming the entry and what
    is wrong with it (never a traceback from deep inside, nor a number printed as ``np.float64(...)``).
    """
    if not path.is_file():
        raise IS5NetError(f"{path}: no such boxes file")
    if path.suffix.lower() == ".csv":
        return _csv_boxes(path)
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
            raise IS5NetError(f"{where}: expected a list of {XYXY}, got {show(boxes)}")
        out[name] = [four_finite_numbers(b, f"{where}, box {k}") for k, b in enumerate(boxes)]
    return out


def _coco_image_names(path: Path, images: list) -> dict[Any, str]:
    """COCO ``images``: id -> file name, each entry checked (an id used twice is an error)."""
    names: dict[Any, str] = {}
    for i, img in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(img, dict):
            raise IS5NetError(f"{where}: expected an object with 'id' and 'file_name', got {show(img)}")
        if "id" not in img or not isinstance(img["id"], (int, str)) or isinstance(img["id"], bool):
            raise IS5NetError(f"{where}: needs an 'id' (a number or a string), got {show(img.get('id'))}")
        where = f"{path}: images[{i}] (id {img['id']!r})"
        if not isinstance(img.get("file_name"), str) or not img["file_name"]:
            raise IS5NetError(f"{where}: needs a 'file_name' (a string), got {show(img.get('file_name'))}")
        if img["id"] in names:
            raise IS5NetError(f"{where}: the id is used twice ({names[img['id']]!r} and {img['file_name']!r})")
        names[img["id"]] = img["file_name"]
    return names


def _coco_boxes(path: Path, data: dict) -> dict[str, list[list[float]]]:
    """COCO ``images`` + ``annotations`` -> boxes per file name (``bbox`` is ``[x, y, w, h]``)."""
    images, annotations = data["images"], data["annotations"]
    for key, value in (("images", images), ("annotations", annotations)):
        if not isinstance(value, list):
            raise IS5NetError(f"{path}: COCO '{key}' must be a list of objects, got {show(value)}")
    names = _coco_image_names(path, images)
    out: dict[str, list[list[float]]] = {}
    for i, ann in enumerate(annotations):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict):
            raise IS5NetError(f"{where}: expected an object with 'image_id' and 'bbox', got {show(ann)}")
        if "id" in ann:
            where += f" (id {ann['id']!r})"
        if "image_id" not in ann:
            raise IS5NetError(f"{where}: has no 'image_id'")
        image_id = ann["image_id"]
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool) or image_id not in names:
            raise IS5NetError(f"{where}: image_id {show(image_id)} is not the id of any entry of 'images'")
        if "bbox" not in ann:
            raise IS5NetError(f"{where}: has no 'bbox'")
        x, y, w, h = four_finite_numbers(ann["bbox"], f"{where}: bbox", COCO_XYWH)
        if w <= 0 or h <= 0:
            raise IS5NetError(f"{where}: bbox {show(ann['bbox'])} has a width or height <= 0")
        out.setdefault(names[image_id], []).append([x, y, x + w, y + h])
    return out


def _csv_boxes(path: Path) -> dict[str, list[list[float]]]:
    """Boxes per image from a CSV of rows ``file,x0,y0,x1,y1`` (one row per box; a header row is allowed)."""
    import csv

    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IS5NetError(f"{path}: not a text file ({exc})") from None
    out: dict[str, list[list[float]]] = {}
    first = True
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        where = f"{path}: line {lineno}"
        if len(cells) != 5:
            raise IS5NetError(f"{where}: expected 5 fields file,x0,y0,x1,y1, got {len(cells)}: {','.join(cells)}")
        name, numbers = cells[0], cells[1:]
        try:
            box = [float(v) for v in numbers]
        except ValueError:
            if first:  # a header row (file,x0,y0,x1,y1 or the user's own words)
                first = False
                continue
            raise IS5NetError(f"{where}: x0,y0,x1,y1 must be numbers, got {','.join(numbers)}") from None
        first = False
        if not all(math.isfinite(v) for v in box):
            raise IS5NetError(f"{where}: x0,y0,x1,y1 must be finite numbers, got {','.join(numbers)}")
        if not name:
            raise IS5NetError(f"{where}: the file name is empty")
        out.setdefault(name, []).append(box)
    if not out:
        raise IS5NetError(f"{path}: no rows file,x0,y0,x1,y1")
    return out


def boxes_for(item, cli_boxes: list[list[float]], file_boxes: Optional[dict]) -> list[list[float]]:
    """The command line's boxes plus the boxes file's for this image, found by its path as given, its path
    under the folder it was found in, its name or its stem (first match)."""
    boxes = list(cli_boxes)
    if file_boxes is not None:
        for key in (str(item.path), str(item.rel), str(item.out_stem), item.path.name, item.path.stem):
            if key in file_boxes:
                boxes += file_boxes[key]
                break
    return boxes
