"""What predict writes besides the mask (``is5net.inference.outputs``): the label map of several objects, and
cut-out colours that lose the old background at a soft edge."""

from __future__ import annotations

import numpy as np

from is5net.inference.outputs import composite, cutout_rgba, foreground_colours, label_map


def test_label_map_rule_and_sixteen_bits():
    fg = [np.array([[1, 1, 0, 0]], bool), np.array([[0, 1, 1, 0]], bool), np.array([[0, 1, 1, 0]], bool)]
    conf = [np.array([[0.9, 0.6, 0.0, 0.0]]), np.array([[0.0, 0.7, 0.8, 0.0]]), np.array([[0.0, 0.7, 0.8, 0.0]])]
    assert label_map(fg, conf).tolist() == [[1, 2, 2, 0]]  # 0.7 beats 0.6; box 1 and 2 tie: the earlier
    many = label_map([np.eye(300, dtype=bool)[k : k + 1] for k in range(300)], [np.ones((1, 300))] * 300)
    assert many.dtype == np.uint16 and many.max() == 300 and many[0, 299] == 300


def _matte_scene():
    """A red object with a soft edge photographed against green: I = a*F + (1-a)*B."""
    h, w = 48, 64
    alpha = np.zeros((h, w), np.float64)
    ramp = np.clip((np.arange(w) - 24) / 16.0, 0, 1)  # opaque from x=40, transparent up to x=24
    alpha[:] = ramp
    fg = np.array([220.0, 40.0, 30.0])
    bg = np.array([20.0, 200.0, 40.0])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return np.rint(image).astype(np.uint8), np.rint(alpha * 255).astype(np.uint8), fg, bg


def test_cutout_colours_at_an_edge_lose_the_old_background():
    image, alpha, fg, _ = _matte_scene()
    edge = (alpha > 30) & (alpha < 225)
    raw = cutout_rgba(image, alpha)  # what the server answers: the photo's pixels
    assert raw[..., 1][edge].mean() > 80  # green fringe: the old background mixed in
    est = cutout_rgba(image, alpha, estimate_foreground=True)
    assert np.array_equal(est[..., 3], alpha)
    assert np.abs(est[..., :3][edge].astype(float) - fg).max() < 20  # the object's own red
    assert np.array_equal(est[alpha == 255], raw[alpha == 255])  # opaque pixels are the photo's
    # Over a blue background the edge is red blended into blue, with no green from the old background.
    blue = (0, 0, 255)
    over = composite(foreground_colours(image, alpha), alpha, blue)
    a = alpha[edge].astype(float)[:, None] / 255.0
    expected = a * fg + (1 - a) * np.array(blue, float)
    assert over.shape == image.shape and np.abs(over[edge] - expected).max() < 12
    naive = composite(image, alpha, blue)
    assert naive[..., 1][edge].mean() > 40 > over[..., 1][edge].mean()
    assert np.array_equal(foreground_colours(image, np.where(alpha > 127, 255, 0).astype(np.uint8)), image)
