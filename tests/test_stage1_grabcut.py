"""GrabCut with clicks: a background click inside the mask removes that part, a foreground click outside adds
one, and the same clicks give the same mask (docs/stage1.md, "GrabCut seeds")."""

from __future__ import annotations

import numpy as np
import pytest

from is5net.errors import IS5NetError
from is5net.inference.stage1 import build_stage1

BOX = np.array([[20, 20, 140, 100]])


@pytest.fixture(scope="module")
def scene():
    """Gray noise; in the box a red and a blue square (GrabCut's foreground from the box alone) and a green
    one that GrabCut leaves out: green also lies outside the box, so its colour models call it background."""
    rng = np.random.default_rng(0)
    img = np.clip(128 + rng.integers(-8, 9, (120, 160, 3)), 0, 255).astype(np.uint8)
    img[30:70, 30:70] = (220, 30, 30)
    img[40:80, 90:130] = (30, 40, 220)
    img[75:95, 40:70] = (60, 160, 60)
    img[104:115, :] = (60, 160, 60)
    stage = build_stage1("grabcut")
    stage.set_image(img)
    return stage


def _mask(stage, points=None, labels=None):
    masks, scores = stage.predict(BOX, points, labels)
    assert scores is None and masks.shape == (1, 120, 160)
    return masks[0].numpy()


RED, BLUE, GREEN = (slice(30, 70), slice(30, 70)), (slice(40, 80), slice(90, 130)), (slice(75, 95), slice(40, 70))


def test_box_alone_keeps_red_and_blue(scene):
    m = _mask(scene)
    assert m[RED].mean() > 0.95 and m[BLUE].mean() > 0.95 and m[GREEN].mean() < 0.05


def test_a_background_click_inside_the_mask_removes_that_part(scene):
    m = _mask(scene, [np.array([[110.0, 60.0]])], [np.array([0])])
    assert m[BLUE].mean() < 0.05  # the whole square, not only the click's disc
    assert m[RED].mean() > 0.95


def test_a_foreground_click_outside_the_mask_adds_that_part(scene):
    m = _mask(scene, [np.array([[55.0, 85.0]])], [np.array([1])])
    assert m[GREEN].mean() > 0.95
    assert m[RED].mean() > 0.95 and m[BLUE].mean() > 0.95
    assert not m[100:].any()  # still inside the box


def test_clicks_are_deterministic_and_per_box(scene):
    points, labels = [np.array([[110.0, 60.0], [55.0, 85.0]])], [np.array([0, 1])]
    first = _mask(scene, points, labels)
    assert np.array_equal(first, _mask(scene, points, labels))
    assert first[BLUE].mean() < 0.05 and first[GREEN].mean() > 0.95
    # Two boxes, clicks on the second only: the first is as without clicks.
    masks, _ = scene.predict(np.concatenate([BOX, BOX]), [None, points[0]], [None, labels[0]])
    assert np.array_equal(masks[0].numpy(), _mask(scene)) and np.array_equal(masks[1].numpy(), first)
    with pytest.raises(IS5NetError, match="one entry per box"):
        scene.predict(BOX, [None, None], [None, None])
