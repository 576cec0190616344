"""Clicks beside boxes: the layout every stage takes, and boxes grouped by their number of clicks.

Why groups: SAM's prompt encoder turns every point into a token, and a padding point (label -1) is a token
too (the "not a point" embedding), so padding boxes with fewer clicks up to the most clicks changes their
masks. Boxes with the same number of clicks go through the decoder together; the masks equal the package
predictor's for each box alone (docs/stage1.md, "Clicks").
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ...errors import IS5NetError


def clicks_of(points, point_labels, i: int) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Box ``i``'s clicks: ``(K x 2 float64 (x, y), K int64 labels)``, or ``(None, None)`` for none."""
    p = None if points is None else points[i]
    lab = None if point_labels is None else point_labels[i]
    if p is None and lab is None:
        return None, None
    try:
        coords = np.asarray(p if p is not None else np.zeros((0, 2)), dtype=np.float64)
        labels = np.asarray(lab if lab is not None else [], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        coords, labels = np.zeros((0, 3)), np.zeros(0)
    if coords.ndim == 1 and coords.size == 2:
        coords = coords.reshape(1, 2)  # one click given as [x, y]
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(labels):
        raise IS5NetError(f"box {i}: points must be K x 2 (x, y) with K labels, got {_shape(p)} and {_shape(lab)}")
    if not np.isfinite(coords).all() or not np.isin(labels, (0, 1)).all():
        raise IS5NetError(f"box {i}: point coordinates must be finite and labels 1 (foreground) or 0 (background)")
    if len(coords) == 0:
        return None, None
    return coords, labels.astype(np.int64)


def _shape(value) -> str:
    try:
        return "None" if value is None else "x".join(str(d) for d in np.shape(value)) or "a number"
    except ValueError:
        return "a ragged list"


def click_groups(n: int, points, point_labels) -> list[tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]]:
    """``[(box indices, coords G x K x 2 or None, labels G x K or None)]``: boxes grouped by click count.

    ``points``/``point_labels``: None, or length-``n`` sequences (item i: None or box i's ``K_i`` clicks).
    """
    for what, value in (("points", points), ("point_labels", point_labels)):
        if value is not None and len(value) != n:
            raise IS5NetError(f"{what}: one entry per box expected ({n}), got {len(value)}")
    groups: dict[int, list[int]] = {}
    clicks = [clicks_of(points, point_labels, i) for i in range(n)]
    for i, (coords, _) in enumerate(clicks):
        groups.setdefault(0 if coords is None else len(coords), []).append(i)
    out = []
    for k, idx in groups.items():
        if k == 0:
            out.append((np.asarray(idx), None, None))
        else:
            out.append((np.asarray(idx), np.stack([clicks[i][0] for i in idx]), np.stack([clicks[i][1] for i in idx])))
    return out
