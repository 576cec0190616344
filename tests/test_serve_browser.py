"""The page of ``is5net serve`` in a real browser: Playwright driving the system's Chromium (Debian's
``chromium``, which ``.ci/run`` installs). Without it these tests fail: a page nobody opened is untested.

A photo larger than the window is opened through the file chooser, a box is dragged with the mouse, the
overlay appears, the threshold slider is moved with the keyboard, and the downloaded mask and cutout are
compared byte for byte with what ``is5net predict`` writes for the same box and threshold. Set
``IS5NET_SCREENSHOT=path.png`` to save a screenshot of the page (how docs/serve_page.png is made).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from is5net.cli import main
from test_serve_support import RunningServer

CHROMIUM = os.environ.get("IS5NET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file(), (
        f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium; .ci/run does) or set "
        "IS5NET_CHROMIUM to a Chromium binary"
    )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory) -> Path:
    """A real photo larger than the browser window (1200x800), so the page shows it scaled down."""
    from skimage import data
    from skimage.transform import resize

    rgb = (resize(data.coffee(), (800, 1200), anti_aliasing=True) * 255).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("photo") / "coffee_big.png"
    Image.fromarray(rgb).save(path)
    return path


def _new_page(browser, server_url: str, **context_args):
    context = browser.new_context(viewport={"width": 1100, "height": 700}, accept_downloads=True, **context_args)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Console errors too (a CSP refusal shows only there), but not the log line of an HTTP error status,
    # which the tests cause on purpose (an evicted image's 404, a broken file's 422).
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None
        ),
    )
    page.goto(server_url + "/")
    expect(page.locator("#models")).to_contain_text("stage 1:")
    return context, page, requests, errors


def _open(page, photo: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click("#open")
    chooser.value.set_files(str(photo))
    expect(page.locator("#status")).to_contain_text("Drag on the image", timeout=60_000)


def _image_frame(page, width: int, height: int):
    """(left, top, scale) of the image on screen: the page letterboxes it into the canvas, 12 px padding."""
    box = page.locator("#view").bounding_box()
    scale = min((box["width"] - 24) / width, (box["height"] - 24) / height)
    left = box["x"] + (box["width"] - width * scale) / 2
    top = box["y"] + (box["height"] - height * scale) / 2
    return left, top, scale


def _drag(page, start, end, steps: int = 12) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=steps)
    page.mouse.up()


def _boxes(page) -> list[list[int]]:
    return [
        [int(v) for v in t.split(",")]
        for t in page.locator("#boxes li").evaluate_all("items => items.map(li => li.dataset.box)")
    ]


def _download(page, action) -> bytes:
    with page.expect_download() as info:
        action()
    return Path(info.value.path()).read_bytes()


def _predict(tmp_path: Path, image: Path, box, *extra) -> Path:
    out = tmp_path / f"predict{len(list(tmp_path.iterdir()))}"
    rc = main(
        [
            "predict",
            str(image),
            f"--box={','.join(map(str, box))}",
            "-o",
            str(out),
            "--device",
            "cpu",
            "-q",
            *map(str, extra),
        ]
    )
    assert rc == 0
    return out / f"{image.stem}.png"


def test_draw_a_box_see_the_mask_move_the_slider_download_what_predict_writes(
    browser, big_photo, tmp_path, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    models = ["--checkpoint", tiny_refiner_checkpoint, "--sam-checkpoint", tiny_sam_checkpoint]
    with RunningServer([*models, "--device", "cpu", "-q"]) as server:
        context, page, requests, errors = _new_page(browser, server.url)
        models_line = page.locator("#models").inner_text()  # the page says what it runs
        assert "SAM tiny (sam_tiny.pth)" in models_line and "is5net_tiny.safetensors" in models_line
        _open(page, big_photo)
        left, top, scale = _image_frame(page, 1200, 800)
        assert scale < 1  # shown scaled down ...
        before = page.locator("#view").screenshot()

        _drag(page, (left + 300 * scale, top + 150 * scale), (left + 900 * scale, top + 650 * scale))
        expect(page.locator("#view")).to_have_attribute("data-masks", "1", timeout=60_000)
        [box] = _boxes(page)
        # ... but the box is in pixels of the full-size image (within the rounding of one screen pixel).
        assert np.allclose(box, [300, 150, 900, 650], atol=2 / scale)
        after = page.locator("#view").screenshot()
        assert before != after  # the overlay is drawn

        slider = page.locator("#threshold")
        slider.focus()
        for _ in range(20):
            page.keyboard.press("ArrowLeft")
        expect(page.locator("#threshold-value")).to_have_text("0.30")
        mask = _download(page, lambda: page.click("#download-mask"))
        assert mask == _predict(tmp_path, big_photo, box, *models, "--threshold", "0.3").read_bytes()
        decoded = np.asarray(Image.open(io.BytesIO(mask)))
        assert decoded.shape == (800, 1200) and set(np.unique(decoded)) <= {0, 255}  # full resolution

        page.locator("#view").focus()
        cutout = _download(page, lambda: page.keyboard.press("Shift+D"))
        expected = _predict(tmp_path, big_photo, box, *models, "--threshold", "0.3", "--save", "cutout")
        assert cutout == expected.read_bytes()

        # Views: the mask view is grey levels only; the cutout view differs from both.
        shots = {}
        for key, view in (("2", "mask"), ("3", "cutout"), ("1", "overlay")):
            page.keyboard.press(key)
            expect(page.locator(f"input[name=view][value={view}]")).to_be_checked()
            shots[view] = page.locator("#view").screenshot()
        grey = np.asarray(Image.open(io.BytesIO(shots["mask"])).convert("RGB")).astype(int)
        frame = page.locator("#view").bounding_box()
        y, x0, x1 = (
            int(v)
            for v in (
                top - frame["y"] + 400 * scale,
                left - frame["x"] + (box[0] + 20) * scale,
                left - frame["x"] + (box[2] - 20) * scale,
            )
        )
        inside = grey[y, x0:x1]  # a row inside the box, away from its outline
        assert len(set(shots.values())) == 3
        assert np.array_equal(inside[:, 0], inside[:, 1]) and np.array_equal(inside[:, 1], inside[:, 2])

        # Move the box by dragging inside it: a new box, a new request; Delete removes it.
        mid = (left + 600 * scale, top + 400 * scale)
        _drag(page, mid, (mid[0] - 100 * scale, mid[1] - 50 * scale))
        expect(page.locator("#boxes li")).to_have_count(1)
        moved = _boxes(page)[0]
        assert np.allclose(moved, [200, 100, 800, 600], atol=3 / scale)
        # Resize from the bottom-right corner.
        _drag(page, (left + moved[2] * scale, top + moved[3] * scale), (left + 1000 * scale, top + 700 * scale))
        resized = _boxes(page)[0]
        assert resized[:2] == moved[:2] and np.allclose(resized[2:], [1000, 700], atol=3 / scale)
        page.keyboard.press("Delete")
        expect(page.locator("#boxes li")).to_have_count(0)

        assert errors == []
        assert all(u.startswith(server.url) or u.startswith(("blob:", "data:")) for u in requests), requests
        context.close()


def test_touch_drawing_errors_in_the_page_and_the_screenshot(browser, tmp_path):
    """GrabCut without a refiner (no weights at all): a box drawn by touch, the page uploading an evicted image
    again by itself, and errors shown in the page."""
    import httpx
    from skimage import data

    photo = tmp_path / "coffee.jpg"
    Image.fromarray(data.coffee()).save(photo, quality=92)
    # A cache that holds one image (the newest), so another upload evicts the page's.
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--cache-mb", "0.5", "-q"]) as server:
        context, page, requests, errors = _new_page(browser, server.url, has_touch=True)
        expect(page.locator("#models")).to_contain_text("GrabCut")
        _open(page, photo)
        left, top, scale = _image_frame(page, 600, 400)
        cdp = context.new_cdp_session(page)
        points = [(left + (70 + 40 * t) * scale, top + (20 + 30 * t) * scale) for t in range(11)]  # to (470, 320)
        cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0][0], "y": points[0][1]}]}
        )
        for x, y in points[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        expect(page.locator("#view")).to_have_attribute("data-masks", "1", timeout=60_000)
        assert np.allclose(_boxes(page)[0], [70, 20, 470, 320], atol=2 / scale)
        if os.environ.get("IS5NET_SCREENSHOT"):
            page.screenshot(path=os.environ["IS5NET_SCREENSHOT"])

        # Another client's upload evicts the page's image; the next box change gets a 404, and the page
        # uploads the photo again and answers as if nothing happened.
        other = np.asarray(Image.open(photo))[::-1].copy()
        buf = io.BytesIO()
        Image.fromarray(other).save(buf, format="PNG")
        httpx.post(f"{server.url}/api/images", files={"image": ("other.png", buf.getvalue(), "image/png")})
        assert httpx.get(f"{server.url}/api/health").json()["cache"]["evictions"] == 1
        page.locator("#view").focus()
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status) if r.url.endswith("/segment") else None)
        with page.expect_response(lambda r: r.url.endswith("/segment") and r.status == 200, timeout=60_000):
            page.keyboard.press("Shift+ArrowRight")  # move the selected box 10 px: a new request
        expect(page.locator("#boxes li")).to_have_attribute("data-box", "80,20,480,320")
        expect(page.locator("#status")).to_contain_text("1 mask in", timeout=60_000)
        assert statuses == [404, 200] and page.locator("#error").is_hidden()
        assert sum(u.endswith("/api/images") for u in requests) == 2  # the photo went up again, once

        # A file the server cannot decode: its one-line error is shown in the page.
        broken = tmp_path / "broken.png"
        broken.write_bytes(photo.read_bytes()[:2000])
        _open_expecting_error = page.expect_file_chooser
        with _open_expecting_error() as chooser:
            page.click("#open")
        chooser.value.set_files(str(broken))
        expect(page.locator("#error")).to_be_visible(timeout=60_000)
        expect(page.locator("#error-text")).to_contain_text("broken.png")
        assert errors == []
        context.close()
