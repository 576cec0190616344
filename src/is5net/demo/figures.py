"""The demo's figures: the comparison of the main run, the ablation's bar chart, the high-resolution rows.

Every zoomed inset is placed from the GT alone (where its thin structure is densest), never from any model's
output, so no inset is picked to flatter one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..eval.thin import thin_parts
from ..io import load_image, load_mask, save_png
from .tables import PAPER_COLUMNS

YELLOW = (255, 210, 0)


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


def _densest_thin_window(gt: np.ndarray, zoom: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``zoom``-px window centred where the GT's thin pixels are densest."""
    from scipy.ndimage import uniform_filter

    from ..contract import binary_mask

    density = uniform_filter(thin_parts(binary_mask(gt), 3).astype(np.float32), size=zoom)
    cy, cx = np.unravel_index(int(np.argmax(density)), density.shape)
    y0 = int(np.clip(cy - zoom // 2, 0, gt.shape[0] - zoom))
    x0 = int(np.clip(cx - zoom // 2, 0, gt.shape[1] - zoom))
    return y0, x0


def highres_figure(
    data: Path, run_dirs: Mapping[str, Path], titles: Sequence[str], path: Path, n_rows: int = 3, zoom: int = 96
) -> None:
    """Rows of test photos: the photo with its box, then each run's mask (``titles``), then the GT, each with a
    zoomed inset on the photo's densest thin structure (nearest-neighbour, so single pixels stay visible)."""
    from PIL import Image, ImageDraw

    from ..contract import tight_box

    gts = sorted((data / "DIS-TE1" / "gt").glob("*.png"))[:n_rows]
    cols = ["photo + box", *titles, "GT"]
    cell = 256
    canvas = Image.new("RGB", (len(cols) * (cell + 4) + 4, 18 + len(gts) * (cell + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(cols):
        draw.text((4 + j * (cell + 4), 3), title, fill=(0, 0, 0))
    corner = cell - cell // 2
    for i, g in enumerate(gts):
        gt = load_mask(g)
        y0, x0 = _densest_thin_window(gt, zoom)
        masks = [load_mask(d / "predictions" / "DIS-TE1" / g.name) for d in run_dirs.values()]
        tiles = [load_image(data / "DIS-TE1" / "im" / g.name)] + [np.repeat(m[:, :, None], 3, 2) for m in masks + [gt]]
        f = cell / gt.shape[1]
        for j, t in enumerate(tiles):
            img = Image.fromarray(t.astype(np.uint8)).resize((cell, cell), Image.BILINEAR)
            d = ImageDraw.Draw(img)
            if j == 0:
                bx = tight_box(gt)
                d.rectangle([bx[0] * f, bx[1] * f, bx[2] * f, bx[3] * f], outline=(255, 0, 0), width=2)
            d.rectangle([x0 * f, y0 * f, (x0 + zoom) * f, (y0 + zoom) * f], outline=(0, 160, 255), width=1)
            inset = Image.fromarray(t[y0 : y0 + zoom, x0 : x0 + zoom].astype(np.uint8))
            img.paste(inset.resize((cell // 2, cell // 2), Image.NEAREST), (corner, corner))
            d.rectangle([corner, corner, cell - 1, cell - 1], outline=(0, 160, 255), width=2)
            canvas.paste(img, (4 + j * (cell + 4), 22 + i * (cell + 4)))
    save_png(path, np.asarray(canvas))
