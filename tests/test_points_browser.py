"""Clicks in the page of ``is5net serve`` (issue 27), in Debian's Chromium driven by Playwright.

A box is drawn, a click inside it adds a foreground point (drawn, listed) and the mask changes; a Shift+click
adds a background point; clicking a point removes it and the mask is the one before it; "Clear points" gives
the box's own mask back. Every mask comes from the cached image: one upload, one image embedding.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from playwright.sync_api import expect

from test_serve_browser import _drag, _image_frame, _new_page, _open, big_photo, browser  # noqa: F401  (fixtures)
from test_serve_support import RunningServer

pytestmark = pytest.mark.slow


def _segment_after(page, action) -> tuple[dict, list[str]]:
    """Do ``action``; the JSON body the page then sent to /segment and the masks (base64 PNG) it got back."""
    with page.expect_response(lambda r: r.url.endswith("/segment") and r.status == 200, timeout=60_000) as info:
        action()
    response = info.value
    return json.loads(response.request.post_data), [m["mask"] for m in response.json()["masks"]]


def test_clicks_add_change_and_remove(browser, big_photo, tiny_sam_checkpoint, tiny_refiner_checkpoint):  # noqa: F811
    models = ["--checkpoint", tiny_refiner_checkpoint, "--sam-checkpoint", tiny_sam_checkpoint]
    with RunningServer([*models, "--device", "cpu", "--backend", "torch", "-q"]) as server:
        context, page, requests, errors = _new_page(browser, server.url)
        _open(page, big_photo)
        left, top, scale = _image_frame(page, 1200, 800)
        at = lambda x, y: (left + x * scale, top + y * scale)  # noqa: E731  (image pixels -> screen)
        view = page.locator("#view")

        body, box_only = _segment_after(page, lambda: _drag(page, at(300, 150), at(900, 650)))
        assert "points" not in body  # a box alone is sent as before clicks existed

        body, one = _segment_after(page, lambda: page.mouse.click(*at(600, 400)))
        assert body["point_labels"] == [[1]] and np.allclose(body["points"], [[[600, 400]]], atol=2 / scale)
        assert one != box_only  # the overlay changed with the click
        expect(view).to_have_attribute("data-points", "1")
        expect(page.locator("#points li.positive")).to_have_count(1)

        page.keyboard.down("Shift")
        body, two = _segment_after(page, lambda: page.mouse.click(*at(450, 300)))
        page.keyboard.up("Shift")
        assert body["point_labels"] == [[1, 0]]
        expect(view).to_have_attribute("data-points", "2")
        expect(page.locator("#points li.negative")).to_have_count(1)
        before = view.screenshot()

        # Click on the background point: it goes, and the mask is the one-click mask again.
        body, removed = _segment_after(page, lambda: page.mouse.click(*at(450, 300)))
        assert body["point_labels"] == [[1]] and removed == one
        expect(view).to_have_attribute("data-points", "1")
        after = view.screenshot()
        assert before != after  # the red point is no longer drawn

        # The toggle makes plain clicks background clicks; then "Clear points" gives the box's own mask back.
        page.check("#negative")
        body, _ = _segment_after(page, lambda: page.mouse.click(*at(700, 500)))
        assert body["point_labels"] == [[1, 0]]
        body, cleared = _segment_after(page, lambda: page.click("#clear-points"))
        assert "points" not in body and cleared == box_only
        expect(view).to_have_attribute("data-points", "0")
        expect(page.locator("#points li")).to_have_count(0)

        # Drawing a new box still works beside the clicks (a drag is a box, not a click).
        page.uncheck("#negative")
        body, masks = _segment_after(page, lambda: _drag(page, at(50, 50), at(250, 250)))
        assert len(body["boxes"]) == 2 and len(masks) == 2
        expect(view).to_have_attribute("data-points", "0")

        assert sum(u.endswith("/api/images") for u in requests) == 1  # no re-upload ...
        assert server.engine.segmenter.encoder_runs == 1  # ... and no new embedding, whatever was clicked
        assert all(base64.b64decode(m) for m in masks)
        assert errors == []
        context.close()
