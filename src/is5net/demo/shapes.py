"""The objects of the synthetic photos, drawn as exact masks: the kinds that make DIS hard.

Each drawer returns an ``HxW`` bool mask drawn into a local canvas, the object spanning most of it. Widths of
thin parts are in pixels (1-3 px whatever the canvas size; rasterised exactly: the pixels whose centres lie
within width/2 of the centre line); thick parts (>= 4-5 px) scale with the object. Drawing is aliased, so a
mask is exactly the object's own pixels. What each kind is: ``is5net.demo.synthetic``'s docstring.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import cv2
import numpy as np

OBJECT_KINDS = ("wires", "twig", "lattice", "ring", "wheel")

SeedLike = Union[int, np.random.Generator, None]


def as_rng(seed: SeedLike) -> np.random.Generator:
    """A generator: ``seed`` itself when it is one (then advanced by its user), else a new one from it."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _segment(c: np.ndarray, p, q, width: float) -> None:
    """Set the pixels of ``c`` whose centres lie strictly within ``width / 2`` of the segment ``p``-``q``.

    Exact widths (cv2's ``thickness`` is not a width in pixels: thickness 2 draws 3 px, 3 draws 5 px).
    Coordinates ``(x, y)`` are floats; a width-1 segment is an 8-connected 1 px line at any angle.
    """
    if width <= 1.0:  # an 8-connected 1 px line: cv2 draws exactly that, and fast
        cv2.line(c, _pt(p), _pt(q), 1, 1, cv2.LINE_8)
        return
    r = float(width) / 2.0
    px, py = float(p[0]), float(p[1])
    qx, qy = float(q[0]), float(q[1])
    h, w = c.shape
    x0, x1 = max(0, int(math.floor(min(px, qx) - r))), min(w - 1, int(math.ceil(max(px, qx) + r)))
    y0, y1 = max(0, int(math.floor(min(py, qy) - r))), min(h - 1, int(math.ceil(max(py, qy) + r)))
    if x0 > x1 or y0 > y1:
        return
    xs = np.arange(x0, x1 + 1, dtype=np.float32)[None, :] - px
    ys = np.arange(y0, y1 + 1, dtype=np.float32)[:, None] - py
    dx, dy = qx - px, qy - py
    l2 = dx * dx + dy * dy
    if l2 > 0:
        t = (xs * dx + ys * dy) * np.float32(1.0 / l2)
        np.maximum(t, 0.0, out=t)
        np.minimum(t, 1.0, out=t)
        d2 = (xs - t * dx) ** 2 + (ys - t * dy) ** 2
    else:
        d2 = xs**2 + ys**2
    c[y0 : y1 + 1, x0 : x1 + 1] |= d2 < r * r


def _polyline(c: np.ndarray, pts: np.ndarray, width: float) -> None:
    for a, b in zip(pts[:-1], pts[1:]):
        _segment(c, a, b, width)


def _thin_width(rng: np.random.Generator) -> int:
    # Mostly 2-3 px: IS-Net's finest features are at half resolution, where a 1-px wire cannot be resolved at
    # the demo's small input size (DIS images are larger, and their wires span several pixels at 1024²).
    return int(rng.choice([1, 2, 3], p=[0.1, 0.5, 0.4]))


def _bezier(p0, p1, p2, p3, n: int = 24) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * (t**2) * p2 + (t**3) * p3


def _draw_wires(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c = np.zeros((h, w), np.uint8)
    u = min(h, w)
    body = rng.choice(["pole", "box", "blob"])
    if body == "pole":
        thick = max(5, int(round(rng.uniform(0.06, 0.1) * u)))
        x = rng.uniform(0.2, 0.8) * w
        ang = rng.normal(0, 0.15)
        top = (x + math.sin(ang) * h * 0.4, h * rng.uniform(0.05, 0.3))
        bot = (x - math.sin(ang) * h * 0.4, h - 1)
        _segment(c, top, bot, thick)
        if rng.random() < 0.6:  # cross-arm
            y = top[1] + rng.uniform(0.05, 0.2) * h
            half = rng.uniform(0.2, 0.35) * w
            _segment(c, (x - half, y), (x + half, y), max(5, thick - 1))
    elif body == "box":
        bw, bh = rng.uniform(0.15, 0.28) * w, rng.uniform(0.15, 0.28) * h
        x0, y0 = rng.uniform(0.05, 0.95 - bw / w) * w, rng.uniform(0.05, 0.95 - bh / h) * h
        cv2.rectangle(c, _pt((x0, y0)), _pt((x0 + bw, y0 + bh)), 1, -1)
    else:
        ax = (max(4.0, rng.uniform(0.08, 0.14) * w), max(4.0, rng.uniform(0.08, 0.14) * h))
        cen = (rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h)
        cv2.ellipse(c, _pt(cen), _pt(ax), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    ys, xs = np.nonzero(c)
    lo = np.array([1.0, 1.0])
    hi = np.array([w - 2.0, h - 2.0])
    for _ in range(int(rng.integers(3, 8))):
        k = int(rng.integers(0, len(xs)))
        p0 = np.array([xs[k], ys[k]], float)
        for _try in range(10):
            p3 = rng.uniform(lo, hi)
            if np.linalg.norm(p3 - p0) > 0.45 * u:
                break
        d = p3 - p0
        nrm = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6)
        sag = rng.normal(0, 0.25) * np.linalg.norm(d)
        p1 = np.clip(p0 + d / 3 + nrm * sag + rng.normal(0, 0.05 * u, 2), lo, hi)
        p2 = np.clip(p0 + 2 * d / 3 + nrm * sag * rng.uniform(0.3, 1.2) + rng.normal(0, 0.05 * u, 2), lo, hi)
        _polyline(c, _bezier(p0, p1, p2, p3), _thin_width(rng))
        if rng.random() < 0.2:  # a connector at the free end
            cv2.circle(c, _pt(p3), int(rng.integers(2, 4)), 1, -1)
    return c > 0


def _draw_twig(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c = np.zeros((h, w), np.uint8)
    u = min(h, w)
    side = int(rng.integers(0, 4))  # the edge the twig grows from
    base = [
        (rng.uniform(0.3, 0.7) * w, h - 1),
        (0, rng.uniform(0.3, 0.7) * h),
        (rng.uniform(0.3, 0.7) * w, 0),
        (w - 1, rng.uniform(0.3, 0.7) * h),
    ][side]
    angle = [-math.pi / 2, 0.0, math.pi / 2, math.pi][side] + rng.normal(0, 0.2)
    trunk = max(6.0, rng.uniform(0.07, 0.11) * u)
    max_depth = 4

    def branch(p, a, length, width, depth):
        n_seg = 4
        q = np.asarray(p, float)
        for k in range(n_seg):
            a += rng.normal(0, 0.15)
            r = q + (length / n_seg) * np.array([math.cos(a), math.sin(a)])
            wk = max(1.0, width * (1.0 - 0.35 * (k + 0.5) / n_seg))
            _segment(c, q, r, wk)
            if depth < max_depth and k < n_seg - 1 and rng.random() < 0.2 and length > 6:
                sgn = 1 if rng.random() < 0.5 else -1
                branch(r, a + sgn * rng.uniform(0.5, 1.1), length * rng.uniform(0.35, 0.55), wk * 0.45, depth + 1)
            q = r
        if depth < max_depth and length > 6:
            n_child = 2 if rng.random() < 0.6 else 3
            spread = rng.uniform(0.5, 0.9)
            for j in range(n_child):
                da = spread * (j / (n_child - 1) - 0.5) * 2 + rng.normal(0, 0.12)
                branch(q, a + da, length * rng.uniform(0.55, 0.8), width * 0.65 * rng.uniform(0.75, 0.95), depth + 1)

    branch(base, angle, rng.uniform(0.24, 0.32) * u, trunk, 0)
    return c > 0


def _rot(theta: float) -> np.ndarray:
    return np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])


def _draw_lattice(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    u = min(h, w)
    cen = np.array([w / 2.0, h / 2.0])
    theta = rng.uniform(-0.6, 0.6) if rng.random() < 0.7 else rng.uniform(0, math.pi)
    frame_w = max(5, int(round(rng.uniform(0.04, 0.07) * u)))
    region = np.zeros((h, w), np.uint8)
    outline = np.zeros((h, w), np.uint8)
    if rng.random() < 0.3:  # round sieve / grille
        ax = (int(0.45 * w) - frame_w // 2, int(0.45 * h) - frame_w // 2)
        deg = math.degrees(theta)
        cv2.ellipse(region, _pt(cen), ax, deg, 0, 360, 1, -1)
        cv2.ellipse(outline, _pt(cen), ax, deg, 0, 360, 1, frame_w)
    else:
        # the largest rotated rectangle of a random aspect that fits the canvas
        aspect = rng.uniform(0.6, 1.6)
        r = _rot(theta)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * np.array([aspect, 1.0])
        ext = np.abs(corners @ r.T).max(axis=0)
        scale = min((w / 2 - frame_w) / ext[0], (h / 2 - frame_w) / ext[1])
        poly = np.round(corners @ r.T * scale + cen).astype(np.int32)
        cv2.fillPoly(region, [poly], 1)
        _polyline(outline, np.concatenate([poly, poly[:1]]).astype(float), frame_w)
    bars = np.zeros((h, w), np.uint8)
    pattern = rng.choice(["grid", "fence", "mesh"], p=[0.55, 0.2, 0.25])
    widths = [_thin_width(rng), _thin_width(rng)]
    spacing = max(5.0, max(widths) + 4.0, rng.uniform(0.08, 0.14) * u)  # cells at least 4 px wide
    big = float(h + w)
    dirs = {"grid": [0.0, math.pi / 2], "fence": [0.0], "mesh": [math.pi / 4, -math.pi / 4]}[pattern]
    for d, bw in zip(dirs, widths):
        r = _rot(theta + d)
        phase = rng.uniform(0, spacing)
        for off in np.arange(-big / 2 + phase, big / 2, spacing):
            a = r @ np.array([off, -big]) + cen
            b = r @ np.array([off, big]) + cen
            _segment(bars, a, b, bw)
    return ((bars & region) | outline) > 0


def _draw_ring(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c = np.zeros((h, w), np.uint8)
    u = min(h, w)
    cen = (w / 2.0, h / 2.0)
    variant = rng.choice(["annulus", "frame", "plate", "chain"])
    if variant == "annulus":
        t = max(5, int(round(rng.uniform(0.08, 0.16) * u)))
        ax = (int(w / 2 - t / 2 - 1), int(h / 2 - t / 2 - 1))
        cv2.ellipse(c, _pt(cen), ax, 0.0, 0, 360, 1, t)
        if rng.random() < 0.6:  # inner ring with bridges
            s = rng.uniform(0.4, 0.6)
            t2 = max(4, int(round(t * rng.uniform(0.5, 0.8))))
            cv2.ellipse(c, _pt(cen), (int(ax[0] * s), int(ax[1] * s)), 0.0, 0, 360, 1, t2)
            nb = int(rng.integers(2, 6))
            ph = rng.uniform(0, 2 * math.pi)
            for k in range(nb):
                a = ph + 2 * math.pi * k / nb
                p = (cen[0] + ax[0] * s * math.cos(a), cen[1] + ax[1] * s * math.sin(a))
                q = (cen[0] + ax[0] * math.cos(a), cen[1] + ax[1] * math.sin(a))
                _segment(c, p, q, max(5, t2))
    elif variant == "frame":
        t = max(5, int(round(rng.uniform(0.07, 0.13) * u)))
        x0, y0, x1, y1 = t // 2 + 1, t // 2 + 1, w - t // 2 - 2, h - t // 2 - 2
        cv2.rectangle(c, (x0, y0), (x1, y1), 1, t)
        tm = max(5, int(round(t * rng.uniform(0.5, 0.9))))
        for _ in range(int(rng.integers(0, 3))):
            x = int(rng.uniform(0.3, 0.7) * w)
            _segment(c, (x, y0), (x, y1), tm)
        for _ in range(int(rng.integers(0, 3))):
            y = int(rng.uniform(0.3, 0.7) * h)
            _segment(c, (x0, y), (x1, y), tm)
    elif variant == "plate":
        if rng.random() < 0.5:
            cv2.ellipse(c, _pt(cen), (w // 2 - 1, h // 2 - 1), 0.0, 0, 360, 1, -1)
        else:
            cv2.rectangle(c, (1, 1), (w - 2, h - 2), 1, -1)
        inner = cv2.erode(c, np.ones((9, 9), np.uint8))
        ys, xs = np.nonzero(inner)
        for _ in range(int(rng.integers(3, 10))):
            k = int(rng.integers(0, len(xs)))
            rad = int(rng.integers(2, max(3, int(0.12 * u))))
            cv2.circle(c, (int(xs[k]), int(ys[k])), rad, 0, -1)
    else:  # chain of links
        t = max(4, int(round(rng.uniform(0.05, 0.08) * u)))
        horizontal = w >= h
        length = (w if horizontal else h) - 2 * t
        n_max = max(1, int((length / (2 * t + 8) - 0.25) / 0.75))  # every link keeps a hole
        n = int(rng.integers(min(3, n_max), min(5, n_max) + 1))
        link = length / (n * 0.75 + 0.25)
        a_long = link / 2 - t / 2
        a_short = max(t / 2 + 4, min(link * 0.3, (h if horizontal else w) / 2 - t))
        for k in range(n):
            pos = t + link / 2 + k * link * 0.75
            cc = (pos, h / 2.0) if horizontal else (w / 2.0, pos)
            axes = (int(a_long), int(a_short)) if horizontal else (int(a_short), int(a_long))
            cv2.ellipse(c, _pt(cc), axes, 0.0, 0, 360, 1, t)
    return c > 0


def _draw_wheel(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c = np.zeros((h, w), np.uint8)
    u = min(h, w)
    rim = max(4, int(round(rng.uniform(0.04, 0.07) * u)))
    fork = rng.random() < 0.4
    ry = h / 2 - rim / 2 - 1
    rx = min(w / 2 - rim / 2 - 1, ry * rng.uniform(0.6, 1.0) if rng.random() < 0.5 else ry)
    cen = (w / 2.0, h / 2.0)
    if fork:  # a fork from the hub up to the canvas top (the wheel sits lower)
        ry = ry * 0.85
        cen = (w / 2.0, h - ry - rim / 2 - 1)
        ft = max(5, rim)
        off = rng.uniform(0.05, 0.15) * w
        _segment(c, (cen[0] - off, cen[1]), (w / 2 - off * 0.3, 0), ft)
        _segment(c, (cen[0] + off, cen[1]), (w / 2 + off * 0.3, 0), ft)
    cv2.ellipse(c, _pt(cen), (int(rx), int(ry)), 0.0, 0, 360, 1, rim)
    hub = max(3, int(round(rng.uniform(0.08, 0.14) * min(rx, ry))))
    cv2.ellipse(c, _pt(cen), (max(3, int(hub * rx / ry)), hub), 0.0, 0, 360, 1, -1)
    sw = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    # at most one spoke per (width + 4) px of the inner rim, so spokes stay apart except near the hub
    n_max = max(6, int(2 * math.pi * min(rx, ry) / (sw + 4)))
    n = int(rng.integers(6, max(7, min(28, n_max) + 1)))
    ph = rng.uniform(0, 2 * math.pi)
    cross = rng.random() < 0.5  # tangential (crossed) spokes, as on bicycles
    for k in range(n):
        a = ph + 2 * math.pi * k / n
        b = a + (0.3 * (1 if k % 2 else -1) if cross else 0.0)
        p = (cen[0] + hub * 0.8 * math.cos(a) * rx / ry, cen[1] + hub * 0.8 * math.sin(a))
        q = (cen[0] + rx * math.cos(b), cen[1] + ry * math.sin(b))
        _segment(c, p, q, sw)
    return c > 0


_DRAWERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "wires": _draw_wires,
    "twig": _draw_twig,
    "lattice": _draw_lattice,
    "ring": _draw_ring,
    "wheel": _draw_wheel,
}


def draw_object(kind: str, rng: SeedLike, height: int, width: int) -> np.ndarray:
    """Draw one object of ``kind`` (one of :data:`OBJECT_KINDS`) into a ``height x width`` canvas.

    Returns the ``height x width`` bool mask; the object spans most of the canvas (a twig may be cut at its
    edges).
    """
    if kind not in _DRAWERS:
        raise ValueError(f"unknown object kind {kind!r}; expected one of {OBJECT_KINDS}")
    return _DRAWERS[kind](as_rng(rng), int(height), int(width))
