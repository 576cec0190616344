"""Every way a box arrives, and the one check it passes (docs/input-contract.md, "Boxes").

Boxes are ``[x0, y0, x1, y1]`` (XYXY) in pixels of the original image as displayed (after EXIF rotation).
They come as a command-line or form string (``"x0,y0,x1,y1"``), as JSON lists (a boxes file, the HTTP API's
``{"boxes": [...]}``), as COCO ``bbox`` entries (``[x, y, w, h]``) or as CSV rows ``file,x0,y0,x1,y1``. Each
reader turns its form into four finite floats through :func:`four_finite_numbers` and names the entry that
is wrong; :func:`validate_box` then checks and clips a box against its image. How a box becomes a channel
(exclusive end) is the contract's rule: :func:`is5net.contract.box_pixel_bounds`.

Clicks (SAM's point prompts, which refine one box's stage-1 mask) arrive beside their box the same ways:
``X,Y`` / ``X,Y:0`` text (:func:`parse_points`), JSON lists (:func:`clicks_from_json`), a boxes file's box
objects; :func:`validate_points` is their one check against the image.
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


# --------------------------------------------------------------------------------------------- clicks
# Clicks refine one box's stage-1 mask, as SAM's point prompts do (docs/predict.md, "Clicks"): each is an
# (x, y) in pixels of the image as displayed, with a label, 1 a foreground click, 0 a background one. A box's
# clicks travel as two parallel lists, ``points`` (K x 2) and ``point_labels`` (K), SamPredictor's names and
# layout; several boxes carry one such pair each (None for a box without clicks).
MAX_CLICKS = 64  # per box in one request: SAM's users click a handful; hundreds is a client's mistake
Clicks = Optional[tuple[list[list[float]], list[int]]]  # one box's (points, point_labels), or None


def parse_points(tokens: Sequence[str], where: str = "--points") -> tuple[list[list[float]], list[int]]:
    """Clicks written as text: tokens ``X,Y`` (a foreground click) or ``X,Y:0`` (background; ``:1`` is
    foreground), separated by spaces or given as separate tokens. A :class:`BoxError` names the bad token."""
    points, labels = [], []
    for token in [t for text in tokens for t in text.split()]:
        coords, colon, label = token.partition(":")
        parts = coords.split(",")
        try:
            xy = [float(v) for v in parts]
        except ValueError:
            xy = []
        if len(xy) != 2 or not all(math.isfinite(v) for v in xy) or (label or colon) not in ("", "0", "1"):
            raise BoxError(f"{where} {token!r}: expected X,Y (a foreground click) or X,Y:0 (a background one)")
        points.append(xy)
        labels.append(int(label or 1))
    return points, labels


def attach_clicks(given: Sequence[tuple[int, Sequence[str]]], n_boxes: int, option: str = "--points") -> list[Clicks]:
    """The command line's clicks per box: ``given`` holds ``(box index, tokens)`` for each ``--points``, the
    index that of the ``--box`` just before it (clicks given twice for a box add up)."""
    clicks: list[Clicks] = [None] * n_boxes
    for index, tokens in given:
        if index < 0:
            raise BoxError(f"{option} {' '.join(tokens)}: clicks refine a box's mask; give them after their --box")
        points, labels = parse_points(tokens, option)
        before = clicks[index] or ([], [])
        clicks[index] = (before[0] + points, before[1] + labels)
    return clicks


def clicks_from_json(points, labels, where: str = "points") -> tuple[list[list[float]], list[int]]:
    """One box's clicks from JSON-like values: ``[[x, y], ...]`` and ``[1, 0, ...]`` (same length, 0/1)."""
    if not isinstance(points, (list, tuple)):
        raise BoxError(f"{where}: expected a list of [x, y], got {show(points)}")
    pts = [_two_finite_numbers(p, f"{where}[{k}]") for k, p in enumerate(points)]
    label_where = "point_labels" if where == "points" else where.replace("points", "point_labels", 1)
    if not isinstance(labels, (list, tuple)):
        raise BoxError(f"{label_where}: expected a list of labels 1 (foreground) or 0 (background), got {show(labels)}")
    if len(labels) != len(pts):
        raise BoxError(f"{where}: {len(pts)} points but {len(labels)} labels in {label_where}")
    bad = [v for v in labels if not _is_number(v) or v not in (0, 1)]
    if bad:
        raise BoxError(f"{label_where}: a label is 1 (foreground) or 0 (background), got {show(bad[0])}")
    return pts, [int(v) for v in labels]


def clicks_of_boxes(points, labels, n_boxes: int, max_clicks: int = MAX_CLICKS) -> Optional[list[Clicks]]:
    """The HTTP API's ``points`` and ``point_labels`` beside ``n_boxes`` boxes: one entry per box
    (``[[x, y], ...]`` and ``[1, 0, ...]``, null or ``[]`` for a box without clicks); with one box the entry
    may also be given bare. None when no box has a click; each box's clicks checked (at most ``max_clicks``)."""
    if points is None and labels is None:
        return None
    if points is None or labels is None:
        given, missing = ("point_labels", "points") if points is None else ("points", "point_labels")
        raise BoxError(f"'{given}' without '{missing}': a click is a point [x, y] and a label 1 or 0")
    if n_boxes == 1 and _bare_clicks(points, labels):
        points, labels = [points], [labels]
    for name, value in (("points", points), ("point_labels", labels)):
        if not isinstance(value, list) or len(value) != n_boxes:
            got = f"{len(value)} entries" if isinstance(value, list) else show(value)
            raise BoxError(f"'{name}': expected one entry per box ({n_boxes}), got {got}")
    out: list[Clicks] = []
    for k, (p, lab) in enumerate(zip(points, labels)):
        if p in (None, []) and lab in (None, []):
            out.append(None)
            continue
        clicks = clicks_from_json(p, lab, f"points[{k}]")
        if len(clicks[0]) > max_clicks:
            raise BoxError(f"points[{k}]: {len(clicks[0])} clicks; at most {max_clicks} per box")
        out.append(clicks)
    return out if any(c is not None for c in out) else None


def _bare_clicks(points, labels) -> bool:
    """Whether one box's clicks are given bare (``[[x, y], ...]``, ``[1, ...]``) rather than per box."""
    first = points[0] if isinstance(points, list) and points else None
    bare_points = points == [] or (isinstance(first, list) and bool(first) and _is_number(first[0]))
    return bare_points and isinstance(labels, list) and all(_is_number(v) or isinstance(v, bool) for v in labels)


def _two_finite_numbers(value, where: str) -> list[float]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(_is_number(v) for v in value):
        raise BoxError(f"{where}: expected a point [x, y] (two numbers), got {show(value)}")
    xy = [float(v) for v in value]
    if not all(math.isfinite(v) for v in xy):
        raise BoxError(f"{where}: expected two finite numbers [x, y], got {show(value)}")
    return xy


def validate_points(points, labels, width: int, height: int, where: str = "points") -> tuple[np.ndarray, np.ndarray]:
    """Check one box's clicks against an image of ``width`` x ``height``: ``(K x 2 float64, K int64)``.

    ``points``: K points ``[x, y]`` (a list, or a ``K x 2`` array), ``labels``: K labels, 1 or 0. A point must
    lie in the image (``0 <= x <= width``, ``0 <= y <= height``: unlike a box, a click is not clipped, since
    one outside the image says nothing about it).
    """
    if labels is None:
        raise BoxError(f"{where}: clicks need their labels too (point_labels: 1 foreground, 0 background)")
    if isinstance(points, np.ndarray):
        points = points.tolist()  # a K x 2 array; any other shape is named below, never reshaped into one
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    pts, lab = clicks_from_json(points, labels, where)
    for k, (x, y) in enumerate(pts):
        if not (0 <= x <= width and 0 <= y <= height):
            raise BoxError(f"{where}[{k}] [{x:g}, {y:g}]: outside the {width}x{height} image")
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2), np.asarray(lab, dtype=np.int64)


def validate_clicks(points, labels, n_boxes: int, width: int, height: int) -> Optional[list]:
    """Several boxes' clicks (one entry per box: ``K_i x 2`` points and ``K_i`` labels, or None or empty for
    a box without any) checked against the image: None when no box has a click, else one entry per box,
    None or ``(K_i x 2 float64, K_i int64)`` (:func:`validate_points`)."""
    if points is None and labels is None:
        return None
    if points is None:
        raise BoxError("point_labels without points: give the clicks' points [[x, y], ...] too")
    if labels is None:
        raise BoxError("points without point_labels: give each click's label, 1 (foreground) or 0 (background)")
    for name, value in (("points", points), ("point_labels", labels)):
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != n_boxes:
            got = f"{len(value)} entries" if isinstance(value, (list, tuple, np.ndarray)) else show(value)
            raise BoxError(f"{name}: expected one entry per box ({n_boxes}), got {got}")
    out: list = []
    for k, (p, lab) in enumerate(zip(points, labels)):
        where = "points" if n_boxes == 1 else f"points of box {k}"
        if p is None or len(p) == 0:
            if lab is not None and len(lab) > 0:
                raise BoxError(f"{where}: point_labels without points: give the clicks' points [[x, y], ...] too")
            out.append(None)
        else:
            out.append(validate_points(p, lab, width, height, where))
    return None if all(c is None for c in out) else out


# ------------------------------------------------------------------------------------------ box files


def load_boxes_file(path: Path) -> dict[str, list[list[float]]]:
    """Boxes per image from a boxes file (the boxes of :func:`load_prompts_file`, without their clicks)."""
    return load_prompts_file(path)[0]


def load_prompts_file(path: Path) -> tuple[dict[str, list[list[float]]], dict[str, list[Clicks]]]:
    """Boxes per image, and each box's clicks, from JSON: ``{"name.jpg": [[x0,y0,x1,y1], ...]}`` where a box
    may also be ``{"box": [x0,y0,x1,y1], "points": [[x, y], ...], "point_labels": [1, 0, ...]}``; a COCO
    annotation file; or a CSV (``.csv``) of rows ``file,x0,y0,x1,y1``. The clicks map each name to one entry
    per box, None for a box without clicks (COCO and CSV files carry none).

    Every entry is checked here, so a malformed file is one :class:`IS5NetError` naming the entry and what
    is wrong with it (never a traceback from deep inside, nor a number printed as ``np.float64(...)``).
    """
    if not path.is_file():
        raise IS5NetError(f"{path}: no such boxes file")
    if path.suffix.lower() == ".csv":
        return _without_clicks(_csv_boxes(path))
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IS5NetError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return _without_clicks(_coco_boxes(path, data))
    if not isinstance(data, dict):
        raise IS5NetError(f"{path}: expected an object mapping image names to box lists, or COCO annotations")
    boxes: dict[str, list[list[float]]] = {}
    clicks: dict[str, list[Clicks]] = {}
    for name, entries in data.items():
        where = f"{path}: boxes of {name!r}"
        if isinstance(entries, dict) or (
            isinstance(entries, list) and len(entries) == 4 and all(_is_number(v) for v in entries)
        ):
            entries = [entries]  # one box given bare
        if not isinstance(entries, list):
            raise IS5NetError(f"{where}: expected a list of {XYXY}, got {show(entries)}")
        read = [_box_entry(e, f"{where}, box {k}") for k, e in enumerate(entries)]
        boxes[name], clicks[name] = [b for b, _ in read], [c for _, c in read]
    return boxes, clicks


def _box_entry(entry, where: str) -> tuple[list[float], Clicks]:
    """A boxes file's box: ``[x0, y0, x1, y1]``, or an object with ``box`` and, optionally, its clicks."""
    if not isinstance(entry, dict):
        return four_finite_numbers(entry, where), None
    unknown = sorted(set(entry) - {"box", "points", "point_labels"})
    if unknown or "box" not in entry:
        what = f"unknown key {unknown[0]!r}" if unknown else "no 'box'"
        raise BoxError(f'{where}: {what}; a box is {XYXY} or {{"box": {XYXY}, "points", "point_labels"}}')
    box = four_finite_numbers(entry["box"], f"{where}: box")
    if entry.get("points") is None and entry.get("point_labels") is None:
        return box, None
    if entry.get("points") is None:
        raise BoxError(f"{where}: point_labels without points")
    return box, clicks_from_json(entry["points"], entry.get("point_labels"), f"{where}: points")


def _without_clicks(boxes: dict[str, list[list[float]]]) -> tuple[dict, dict]:
    return boxes, {name: [None] * len(b) for name, b in boxes.items()}


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
    key = _file_key(item, file_boxes)
    return list(cli_boxes) + (file_boxes[key] if key else [])


def clicks_for(item, cli_clicks: list[Clicks], file_clicks: Optional[dict]) -> list[Clicks]:
    """Each box's clicks, in the order of :func:`boxes_for`: the command line's, then the boxes file's."""
    key = _file_key(item, file_clicks)
    return list(cli_clicks) + (file_clicks[key] if key else [])


def _file_key(item, mapping: Optional[dict]) -> Optional[str]:
    """The key of ``item`` in a boxes file: its path as given, under its folder, its name, its stem (first match)."""
    if mapping is None:
        return None
    for key in (str(item.path), str(item.rel), str(item.out_stem), item.path.name, item.path.stem):
        if key in mapping:
            return key
    return None
