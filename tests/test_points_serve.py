"""Clicks through ``is5net serve``'s HTTP API (issue 27): a real uvicorn on a loopback port, tiny random models.

``points`` + ``point_labels`` beside the boxes of ``POST /api/images/{id}/segment`` (JSON) and ``points`` fields
beside the ``box`` fields of ``POST /api/segment`` (multipart) give the Python predictor's masks, on the cached
embedding (the encoder runs once); OpenAPI shows them; bad clicks are one-line 422s.
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from is5net import IS5NetPredictor, load_refiner
from is5net.inference.outputs import mask_uint8
from is5net.inference.stage1 import load_sam
from is5net.io import encode_png
from test_serve_support import RunningServer, temp_files

BOX = [60, 40, 230, 170]
BOX2 = [0, 0, 120, 90]
POINTS, LABELS = [[120, 80], [200, 150]], [1, 0]


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _error(r: httpx.Response, status: int = 422) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


@pytest.fixture(scope="module")
def server(tiny_sam_checkpoint, tiny_refiner_checkpoint):
    argv = ["--checkpoint", tiny_refiner_checkpoint, "--sam-checkpoint", tiny_sam_checkpoint]
    with RunningServer([*argv, "--device", "cpu", "--backend", "torch", "-q"]) as s:
        yield s


@pytest.fixture(scope="module")
def expected(tiny_sam_checkpoint, tiny_refiner_checkpoint, coffee_rgb):
    """The Python predictor's PNG for boxes and their clicks on the coffee photo (what the server must answer)."""
    p = IS5NetPredictor(load_sam(None, tiny_sam_checkpoint), load_refiner(tiny_refiner_checkpoint), device="cpu",
                        backend="torch")  # fmt: skip
    p.set_image(coffee_rgb)

    def run(boxes, points=None, labels=None) -> list[bytes]:
        preds = p.predict_batch(boxes, points=points, point_labels=labels)
        return [encode_png(mask_uint8(pred.mask, None)) for pred in preds]

    return run


def test_clicks_on_a_cached_image_are_the_predictors_masks_without_encoding_again(server, expected, coffee_rgb):
    client = httpx.Client(base_url=server.url, timeout=120)
    before = client.get("/api/health").json()["cache"]["encoder_runs"]
    image_id = client.post("/api/images", files={"image": ("coffee.png", _png(coffee_rgb), "image/png")}).json()["id"]
    url = f"/api/images/{image_id}/segment"
    [plain] = expected([BOX])
    [clicked] = expected([BOX], [POINTS], [LABELS])
    assert plain != clicked  # the clicks change the answer

    # One box: its clicks bare, or as the one entry of a per-box list; the PNG answer, and the JSON answer.
    bare = client.post(url, json={"boxes": [BOX], "points": POINTS, "point_labels": LABELS})
    assert bare.status_code == 200 and bare.content == clicked
    nested = client.post(url, json={"boxes": [BOX], "points": [POINTS], "point_labels": [LABELS], "format": "json"})
    [mask] = nested.json()["masks"]
    assert base64.b64decode(mask["mask"]) == clicked
    assert mask["points"] == [[120.0, 80.0], [200.0, 150.0]] and mask["point_labels"] == LABELS
    assert client.post(url, json={"boxes": [BOX]}).content == plain  # the clicks were this request's only

    # Several boxes, clicks on some: per box, null (or []) for a box without.
    body = {"boxes": [BOX, BOX2], "points": [None, [[50, 40]]], "point_labels": [[], [0]], "format": "json"}
    masks = client.post(url, json=body).json()["masks"]
    assert [base64.b64decode(m["mask"]) for m in masks] == expected([BOX, BOX2], [None, [[50, 40]]], [None, [0]])
    assert "points" not in masks[0] and masks[1]["point_labels"] == [0]
    assert client.get("/api/health").json()["cache"]["encoder_runs"] - before == 1  # one upload, one embedding


def test_multipart_points_fields_beside_the_boxes(server, expected, coffee_rgb):
    image = ("coffee.png", _png(coffee_rgb), "image/png")
    r = httpx.post(f"{server.url}/api/segment", timeout=120, files={"image": image},
                   data={"box": "60,40,230,170", "points": "120,80 200,150:0"})  # fmt: skip
    assert r.status_code == 200 and r.content == expected([BOX], [POINTS], [LABELS])[0]
    # Two boxes: one 'points' field each, in the boxes' order (empty for none); the answer is their union.
    r = httpx.post(f"{server.url}/api/segment", timeout=120, files={"image": image},
                   data={"box": ["60,40,230,170", "0,0,120,90"], "points": ["", "50,40:0"]})  # fmt: skip
    union = np.maximum(*[_decode(m) for m in expected([BOX, BOX2], [None, [[50, 40]]], [None, [0]])])
    assert r.status_code == 200 and np.array_equal(_decode(r.content), union)


def test_openapi_shows_the_clicks(server):
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    multipart = paths["/api/segment"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "x,y:0" in multipart["properties"]["points"]["description"]
    body = paths["/api/images/{image_id}/segment"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"points", "point_labels"} <= set(body["properties"])
    assert body["properties"]["point_labels"]["items"]["items"]["enum"] == [0, 1]


def test_bad_clicks_are_one_line_422s(server, coffee_rgb):
    client = httpx.Client(base_url=server.url, timeout=120)
    image = ("coffee.png", _png(coffee_rgb), "image/png")
    url = f"/api/images/{client.post('/api/images', files={'image': image}).json()['id']}/segment"

    def js(**body):
        return _error(client.post(url, json={"boxes": [BOX], **body}))

    assert "'points' without 'point_labels'" in js(points=POINTS)
    assert "'point_labels' without 'points'" in js(point_labels=LABELS)
    assert "a label is 1 (foreground) or 0 (background), got 2" in js(points=POINTS, point_labels=[1, 2])
    assert "2 points but 1 labels" in js(points=POINTS, point_labels=[1])
    assert "[400, 80]: outside the 300x200 image" in js(points=[[400, 80]], point_labels=[1])
    assert "expected a point [x, y]" in js(points=[[1, "2"]], point_labels=[1])
    assert "at most 64 per box" in js(points=[[1, 2]] * 65, point_labels=[1] * 65)
    two = client.post(url, json={"boxes": [BOX, BOX2], "points": [POINTS], "point_labels": [LABELS]})
    assert "one entry per box (2)" in _error(two)
    assert "points of box 1" in _error(
        client.post(url, json={"boxes": [BOX, BOX2], "points": [None, [[1, 999]]], "point_labels": [None, [1]]})
    )

    def form(data, files=None):
        return _error(
            httpx.post(f"{server.url}/api/segment", timeout=120, data=data, files={"image": image, **(files or {})})
        )

    assert "expected X,Y" in form({"box": "60,40,230,170", "points": "120,80:3"})
    assert "2 'points' fields for 1 boxes" in form({"box": "60,40,230,170", "points": ["1,2", "3,4"]})
    assert "outside the 300x200 image" in form({"box": "60,40,230,170", "points": "301,10"})
    coarse = ("m.png", _png(np.full((200, 300), 255, np.uint8)), "image/png")
    assert "one or the other" in form({"box": "60,40,230,170", "points": "120,80"}, {"coarse_mask": coarse})
    assert temp_files(server) == []


def test_a_background_click_removes_that_part_of_a_grabcut_mask(coffee_rgb):
    """GrabCut takes clicks as sure foreground / background seeds (``--refiner none``: its mask is the answer)."""
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--device", "cpu", "-q"]) as s:
        client = httpx.Client(base_url=s.url, timeout=120)
        image_id = client.post("/api/images", files={"image": ("c.png", _png(coffee_rgb), "image/png")}).json()["id"]
        url = f"/api/images/{image_id}/segment"
        plain = _decode(client.post(url, json={"boxes": [BOX]}).content) > 127
        ys, xs = np.nonzero(plain)
        y, x = int(np.median(ys)), int(np.median(xs))
        while not plain[y, x]:  # a pixel of the mask, near its middle
            x += 1
        clicked = _decode(client.post(url, json={"boxes": [BOX], "points": [[x, y]], "point_labels": [0]}).content)
        clicked = clicked > 127
    assert not clicked[y, x] and clicked.sum() < plain.sum()
