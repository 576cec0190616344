"""The demo's figures: the comparison of the main run, the ablation's bar chart, the high-resolution rows.

Every zoomed inset is placed from the GT alone (where its thin structure is densest), never from any model's
output, so no inset is picked to flatter one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..eval.thin import thin_parts
from ..io import load_image, load_mask, save_png
from .tables import PAPER_COLUMNS

YELLOW = (255, 210, 0)
BLUE = (0, 160, 255)


def thin_window(gt: np.ndarray, win: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``win x win`` window holding the most GT pixels of thin structures (<= 3 px),
    or, for a GT without any, the most GT boundary pixels."""
    import cv2

    fg = gt > 127
    thin = thin_parts(fg, 3).astype(np.float32)
    if not thin.any():  # no thin part (a ring, a plate): the window with the most boundary, holes included
        thin = (fg & ~(cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)).astype(np.float32)
    h, w = thin.shape
    win = min(win, h, w)
    counts = cv2.boxFilter(thin, -1, (win, win), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[
        : h - win + 1, : w - win + 1
    ]
    y, x = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return int(y), int(x)


def _one_of_each_kind(gts: Sequence[Path], n: int) -> list[Path]:
    """The first example of each object kind, in order (not picked by any result), so every structure shows."""
    picked, kinds = [], set()
    for g in gts:
        kind = g.stem.split("_", 1)[-1]
        if kind not in kinds:
            picked.append(g)
            kinds.add(kind)
        if len(picked) == n:
            break
    return picked


def _enlarged(plane: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so 1-px wires stay sharp."""
    return np.kron(plane, np.ones((scale, scale, 1), dtype=plane.dtype)).astype(np.uint8)


def _example_rows(planes: list[np.ndarray], gt: np.ndarray, scale: int, win: int, zoom: int) -> list[list[np.ndarray]]:
    """One example's two rows of tiles: each plane enlarged (the box in red on the first, the zoom window in
    yellow on all), then each plane's zoom window."""
    from PIL import Image, ImageDraw

    ys, xs = np.nonzero(gt > 127)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    wy, wx = thin_window(gt, win)
    big, small = [], []
    for j, plane in enumerate(planes):
        tile = Image.fromarray(_enlarged(plane, scale))
        d = ImageDraw.Draw(tile)
        if j == 0:
            d.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=(255, 0, 0), width=2)
        d.rectangle([wx * scale, wy * scale, (wx + win) * scale - 1, (wy + win) * scale - 1], outline=YELLOW, width=2)
        big.append(np.asarray(tile))
        small.append(_enlarged(plane[wy : wy + win, wx : wx + win], zoom))
    return [big, small]


def _grid(tiles: list[list[np.ndarray]], cols: list[str], label_every_second: str) -> np.ndarray:
    """The tiles as a grid under the column titles; every second row (the insets) labelled in yellow and
    followed by a wider gap."""
    from PIL import Image, ImageDraw

    h = max(t.shape[0] for row in tiles for t in row)
    w = max(t.shape[1] for row in tiles for t in row)
    pad, header, gap = 4, 18, 10
    heights = [header] + [h + (gap if i % 2 else pad) for i in range(len(tiles))]
    canvas = Image.new("RGB", (len(cols) * (w + pad) + pad, sum(heights) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(cols):
        draw.text((pad + j * (w + pad), 3), title, fill=(0, 0, 0))
    y = header + pad
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (pad + j * (w + pad), y))
        if i % 2 == 1:
            draw.text((pad + 2, y + 2), label_every_second, fill=YELLOW)
        y += h + (gap if i % 2 else pad)
    return np.asarray(canvas)


def comparison_figure(
    data: Path,
    eval_dir: Path,
    methods: Sequence[str],
    path: Path,
    coarse_label: str,
    n_rows: int = 5,
    split: str = "DIS-TE1",
) -> None:
    """Test images, one of each object kind: image with box | coarse | IS-Net | IS5Net | GT (``methods``' maps
    in ``eval_dir/<method>/predictions``), and under each row the same columns zoomed on the window with the
    most thin GT structure (marked in yellow above)."""
    picked = _one_of_each_kind(sorted((data / split / "gt").glob("*.png")), n_rows)
    coarse = "coarse (simulated)" if "simulated" in coarse_label else "coarse (SAM)"
    cols = ["image + box", coarse, "IS-Net", "IS5Net", "GT"]
    size = load_mask(picked[0]).shape[0]
    # Small synthetic images are shown enlarged.
    scale = max(1, -(-160 // size))
    win = max(16, size // 4)
    zoom = max(1, (size * scale) // win)
    tiles = []
    for g in picked:
        gt = load_mask(g)
        maps = [load_mask(eval_dir / m / "predictions" / split / g.name) for m in methods]
        planes = [load_image(data / split / "im" / g.name)] + [np.repeat(m[:, :, None], 3, axis=2) for m in maps + [gt]]
        tiles += _example_rows(planes, gt, scale, win, zoom)
    save_png(path, _grid(tiles, cols, f"zoom x{zoom // scale}"))


# ASCII titles: Pillow's built-in font has no Greek letters or arrows.
_ASCII_TITLES = {
    "maxF": "max F-beta (higher is better)",
    "wF": "weighted F-beta (higher)",
    "MAE": "MAE (lower)",
    "Sm": "S-measure (higher)",
    "meanEm": "mean E-measure (higher)",
    "HCE": "HCE (lower)",
    "thin_recall": "thin recall (higher)",
}
_BAR_COLOURS = [(158, 158, 158), (120, 144, 196), (230, 159, 0), (0, 114, 178), (86, 180, 233)]


def _bar_panel(draw, origin: tuple[int, int], size: tuple[int, int], key: str, rows: Mapping[str, Mapping]) -> None:
    """One metric's panel: a bar per row but ``coarse``, which is a dashed red line."""
    (x0, y0), (pw, ph) = origin, size
    pad, top = 14, 34
    names = [r for r in rows if r != "coarse"]
    values = [rows[n][key] for n in names]
    ref = rows["coarse"][key] if "coarse" in rows else None
    hi = max(values + ([ref] if ref is not None else [])) * 1.1 or 1.0
    plot_h = ph - top - 24
    base = y0 + top + plot_h
    draw.text((x0, y0), _ASCII_TITLES[key], fill=(0, 0, 0))
    draw.line([(x0, base), (x0 + pw - 2 * pad, base)], fill=(0, 0, 0))
    bw = (pw - 2 * pad) / len(names)
    for j, v in enumerate(values):
        bx = x0 + j * bw + 3
        draw.rectangle([bx, base - v / hi * plot_h, bx + bw - 6, base], fill=_BAR_COLOURS[j % len(_BAR_COLOURS)])
        label = f"{v:.0f}" if key == "HCE" else f"{v:.3f}".lstrip("0")
        draw.text((bx, base - v / hi * plot_h - 12), label, fill=(0, 0, 0))
    if ref is not None:
        yr = base - ref / hi * plot_h
        for xs in range(int(x0), int(x0 + pw - 2 * pad), 8):
            draw.line([(xs, yr), (xs + 4, yr)], fill=(200, 0, 0), width=1)


def ablation_chart(rows: Mapping[str, Mapping], path: Path) -> None:
    """Bar chart, one panel per metric, one bar per ablation row; the coarse mask as a dashed line."""
    from PIL import Image, ImageDraw

    names = [r for r in rows if r != "coarse"]
    pw, ph, pad = 230, 200, 14
    ncol = 4
    nrow = -(-len(PAPER_COLUMNS) // ncol)
    legend_h = 18 * len(names) + 10
    canvas = Image.new("RGB", (ncol * pw + pad, nrow * ph + pad + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (key, _) in enumerate(PAPER_COLUMNS):
        _bar_panel(draw, (pad + (i % ncol) * pw, pad + (i // ncol) * ph), (pw, ph), key, rows)
    ly = pad + nrow * ph
    for j, n in enumerate(names):
        draw.rectangle([pad, ly + 18 * j, pad + 12, ly + 18 * j + 12], fill=_BAR_COLOURS[j % len(_BAR_COLOURS)])
        draw.text((pad + 18, ly + 18 * j), n, fill=(0, 0, 0))
    draw.line([(pad + 260, ly + 6), (pad + 290, ly + 6)], fill=(200, 0, 0))
    draw.text((pad + 296, ly), "coarse mask (simulated SAM)", fill=(0, 0, 0))
    save_png(path, np.asarray(canvas))


@dataclass(frozen=True)
class HighresRows:
    """One split's rows of ``highres.png``: its first ``n`` photos (by name, not picked by any result), each
    run's masks read from ``run_dirs[title]/predictions/<split>``."""

    label: str  # what the split is, written on its photos
    data: Path
    split: str
    run_dirs: Mapping[str, Path]
    n: int = 2


def highres_figure(sections: Sequence[HighresRows], titles: Sequence[str], path: Path, zoom: int = 64) -> None:
    """Rows of held-out photos, split by split: the photo with its box, then each run's mask (``titles``, in
    ``run_dirs``' order), then the GT. Each tile carries an inset on the GT's ``zoom``-px window with the most
    thin structure, magnified 2x (nearest-neighbour, so a 1 px wire is a 2 px line, not a band). Where the
    object is small in its photo, the photo is shown whole and the masks around the box (the yellow square)."""
    from PIL import Image, ImageDraw

    cols = ["photo + box", *titles, "GT"]
    rows = [(sec, g) for sec in sections for g in sorted((sec.data / sec.split / "gt").glob("*.png"))[: sec.n]]
    cell = 2 * (2 * zoom)  # the inset, half a tile, at exactly 2x
    canvas = Image.new("RGB", (len(cols) * (cell + 4) + 4, 18 + len(rows) * (cell + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(cols):
        draw.text((4 + j * (cell + 4), 3), title, fill=(0, 0, 0))
    for i, (sec, g) in enumerate(rows):
        for j, tile in enumerate(_highres_row(sec, g, cell, zoom)):
            canvas.paste(tile, (4 + j * (cell + 4), 22 + i * (cell + 4)))
    save_png(path, np.asarray(canvas))


def _highres_row(sec: HighresRows, g: Path, cell: int, zoom: int) -> list:
    """One photo's tiles: the whole photo (box in red, zoom window in blue, the masks' view in yellow when it
    is not the whole photo, the split's label), then each run's mask and the GT over the view."""
    from PIL import ImageDraw

    from ..contract import tight_box

    gt = load_mask(g)
    h, w = gt.shape
    box = tight_box(gt)
    wy, wx = thin_window(gt, zoom)
    window = (wx, wy, wx + zoom, wy + zoom)
    whole, view = (0, 0, w, h), _view_around(box, (h, w), 2 * zoom)
    masks = [load_mask(d / "predictions" / sec.split / g.name) for d in sec.run_dirs.values()]
    photo = load_image(sec.data / sec.split / "im" / g.name)
    marks = [(box, (255, 0, 0), 2), (window, BLUE, 1)] + ([(view, YELLOW, 2)] if view != whole else [])
    tiles = [_highres_tile(photo, whole, window, cell, marks)]
    tiles += [_highres_tile(np.repeat(m[:, :, None], 3, 2), view, window, cell, [(window, BLUE, 1)]) for m in masks]
    tiles.append(_highres_tile(np.repeat(gt[:, :, None], 3, 2), view, window, cell, [(window, BLUE, 1)]))
    label = f"{sec.label}: {w}x{h}" + ("\nmasks: the yellow square" if view != whole else "")
    d = ImageDraw.Draw(tiles[0])
    d.rectangle(d.multiline_textbbox((3, 3), label), fill=(255, 255, 255))
    d.multiline_text((3, 3), label, fill=(0, 0, 0))
    return tiles


def _view_around(box: Sequence[int], hw: tuple[int, int], least: int) -> tuple[int, int, int, int]:
    """What the mask tiles show: the whole photo when its object spans half its side or more, else a square of
    1.5x the box's longer side (at least ``least`` px) centred on the box, inside the photo."""
    h, w = hw
    x0, y0, x1, y1 = box
    if max(x1 - x0, y1 - y0) >= min(h, w) / 2:
        return 0, 0, w, h
    side = min(h, w, max(least, int(1.5 * max(x1 - x0, y1 - y0))))
    vx = int(np.clip((x0 + x1 - side) // 2, 0, w - side))
    vy = int(np.clip((y0 + y1 - side) // 2, 0, h - side))
    return vx, vy, vx + side, vy + side


def _highres_tile(plane: np.ndarray, view: Sequence[int], window: Sequence[int], cell: int, marks: list):
    """``plane`` cut to ``view`` (XYXY) at ``cell`` px with its ``marks`` (XYXY, colour, width), and the
    ``window`` magnified in the corner farthest from the window itself, so the inset hides least of it."""
    from PIL import Image, ImageDraw

    vx0, vy0, vx1, vy1 = view
    fx, fy = cell / (vx1 - vx0), cell / (vy1 - vy0)
    img = Image.fromarray(plane[vy0:vy1, vx0:vx1].astype(np.uint8)).resize((cell, cell), Image.BILINEAR)
    d = ImageDraw.Draw(img)
    for (x0, y0, x1, y1), colour, width in marks:
        d.rectangle(
            [(x0 - vx0) * fx, (y0 - vy0) * fy, (x1 - vx0) * fx - 1, (y1 - vy0) * fy - 1], outline=colour, width=width
        )
    wx0, wy0, wx1, wy1 = window
    half = cell // 2
    # The quadrant away from the window's centre: the zoomed part stays visible beside its inset.
    cx = 0 if ((wx0 + wx1) / 2 - vx0) * fx >= cell / 2 else half
    cy = 0 if ((wy0 + wy1) / 2 - vy0) * fy >= cell / 2 else half
    inset = Image.fromarray(plane[wy0:wy1, wx0:wx1].astype(np.uint8))
    img.paste(inset.resize((half, half), Image.NEAREST), (cx, cy))
    d.rectangle([cx, cy, cx + half - 1, cy + half - 1], outline=BLUE, width=2)
    return img
