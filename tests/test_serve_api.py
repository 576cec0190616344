"""``is5net serve``'s HTTP API, with httpx against a real uvicorn on a loopback port (tiny models, CPU).

Every endpoint, every error status, equality with ``is5net predict`` byte for byte, the embedding cache
(SAM's image encoder is counted with a forward hook), eviction, the queue bound, the timeout, the token.
"""

from __future__ import annotations

import base64
import io
import json
import os
import resource
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from is5net.cli import main
from is5net.commands.serve import check_bind
from is5net.errors import IS5NetError
from is5net.inference.outputs import mask_uint8
from is5net.inference.stage1 import GrabCutStage
from is5net.serve.models import trained_on_synthetic
from test_serve_support import RunningServer, temp_files

BOX = [60, 40, 230, 170]
BOX2 = [0, 0, 120, 90]


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _box_text(b) -> str:
    return ",".join(str(v) for v in b)


def _one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory, coffee_rgb):
    """The coffee photo as a PNG file (lossless, so the server and predict read the same pixels)."""
    path = tmp_path_factory.mktemp("photo") / "coffee.png"
    Image.fromarray(coffee_rgb).save(path)
    return path


@pytest.fixture(scope="module")
def sam_server(tiny_sam_checkpoint, tiny_refiner_checkpoint):
    with RunningServer(
        ["--checkpoint", tiny_refiner_checkpoint, "--sam-checkpoint", tiny_sam_checkpoint, "--device", "cpu", "-q"]
    ) as server:
        yield server


@pytest.fixture(scope="module")
def grabcut_server():
    """GrabCut alone (no weights at all): the cheap server for the error paths."""
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--device", "cpu", "-q"]) as server:
        yield server


def _predict(tmp_path, capsys, image: Path, boxes, *extra) -> Path:
    out = tmp_path / f"predict{len(list(tmp_path.iterdir()))}"
    argv = [
        "predict",
        str(image),
        *[f"--box={_box_text(b)}" for b in boxes],
        "-o",
        str(out),
        "--device",
        "cpu",
        "-q",
        *map(str, extra),
    ]
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err
    return out


# ------------------------------------------------------------------------------------------ health
def test_health_reports_models_versions_cache_and_queue(sam_server):
    h = httpx.get(f"{sam_server.url}/api/health").json()
    assert h["status"] == "ok" and h["device"] == "cpu"
    assert {"is5net", "torch", "python", "fastapi", "uvicorn"} <= set(h["versions"])
    assert h["stage1"]["name"] == "sam" and "sam_tiny.pth" in h["stage1"]["detail"]
    assert "is5net_tiny.safetensors" in h["refiner"]["detail"] and h["refiner"]["synthetic_only"] is False
    assert h["queue"] == {"pending": 0, "limit": 8}
    assert h["cache"]["limit_bytes"] == 1024 * 2**20 and {"images", "bytes", "hits", "encoder_runs"} <= set(h["cache"])
    spec = httpx.get(f"{sam_server.url}/openapi.json").json()  # what /docs shows
    assert {"/api/segment", "/api/images", "/api/images/{image_id}/segment", "/api/health"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/segment"]["post"]["requestBody"]["content"]
    assert httpx.get(f"{sam_server.url}/docs").status_code == 200


# ------------------------------------------------------------------------------- equality with predict
def test_masks_equal_predict_byte_for_byte(
    sam_server, photo, tmp_path, capsys, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    models = ["--checkpoint", tiny_refiner_checkpoint, "--sam-checkpoint", tiny_sam_checkpoint]
    client = httpx.Client(base_url=sam_server.url, timeout=120)
    image = photo.read_bytes()

    soft = client.post(
        "/api/segment", files={"image": ("coffee.png", image, "image/png")}, data={"box": _box_text(BOX)}
    )
    assert soft.status_code == 200 and soft.headers["content-type"] == "image/png"
    out = _predict(tmp_path, capsys, photo, [BOX], *models)
    assert soft.content == (out / "coffee.png").read_bytes()
    assert len(np.unique(_decode(soft.content))) > 2  # the soft map, as predict saves it without --threshold

    thresholded = client.post(
        "/api/segment",
        files={"image": ("coffee.png", image, "image/png")},
        data={"box": _box_text(BOX), "threshold": "0.3", "format": "cutout"},
    )
    out = _predict(tmp_path, capsys, photo, [BOX], *models, "--threshold", "0.3", "--save", "cutout")
    assert thresholded.content == (out / "coffee.png").read_bytes()
    assert _decode(thresholded.content).shape == (200, 300, 4)

    # Two boxes: json gives each box's mask (predict's <stem>_<k>.png), png their union.
    image_id = client.post("/api/images", files={"image": ("coffee.png", image, "image/png")}).json()["id"]
    js = client.post(
        f"/api/images/{image_id}/segment", json={"boxes": [BOX, BOX2], "format": "json", "threshold": "otsu"}
    ).json()
    out = _predict(tmp_path, capsys, photo, [BOX, BOX2], *models, "--threshold", "otsu")
    index = json.loads((out / "index.json").read_text())
    for k, entry in enumerate(js["masks"]):
        assert base64.b64decode(entry["mask"]) == (out / f"coffee_{k}.png").read_bytes()
        assert entry["box"] == index[k]["box"] and entry["score"] == pytest.approx(index[k]["sam_score"], abs=1e-6)
    assert set(js["timings_ms"]) >= {"segment", "png", "queue", "total"}
    # The box region (the box's crop at the model's input size): as predict --region box.
    boxed = client.post(f"/api/images/{image_id}/segment", json={"boxes": [BOX], "region": "box"})
    boxed_out = _predict(tmp_path, capsys, photo, [BOX], *models, "--region", "box")
    assert boxed.status_code == 200 and boxed.content == (boxed_out / "coffee.png").read_bytes()
    assert boxed.content != soft.content  # the region was honoured: not the whole-image answer
    union = client.post(f"/api/images/{image_id}/segment", json={"boxes": [BOX, BOX2], "threshold": "otsu"})
    expected = np.maximum(_decode((out / "coffee_0.png").read_bytes()), _decode((out / "coffee_1.png").read_bytes()))
    assert np.array_equal(_decode(union.content), expected)
    assert union.headers["x-image-id"] == image_id


def test_grabcut_stage1_equals_predict_stage1_grabcut(photo, tmp_path, capsys, tiny_refiner_checkpoint):
    with RunningServer(
        ["--stage1", "grabcut", "--checkpoint", tiny_refiner_checkpoint, "--device", "cpu", "-q"]
    ) as server:
        r = httpx.post(
            f"{server.url}/api/segment",
            timeout=120,
            data={"box": _box_text(BOX), "format": "json"},
            files={"image": ("coffee.png", photo.read_bytes(), "image/png")},
        )
        h = httpx.get(f"{server.url}/api/health").json()
    assert h["stage1"]["name"] == "grabcut" and h["refiner"]["name"] != "none"
    out = _predict(tmp_path, capsys, photo, [BOX], "--stage1", "grabcut", "--checkpoint", tiny_refiner_checkpoint)
    entry = r.json()["masks"][0]
    assert base64.b64decode(entry["mask"]) == (out / "coffee.png").read_bytes()
    assert entry["score"] is None  # GrabCut has no confidence
    assert json.loads((out / "index.json").read_text())[0]["coarse"] == "grabcut"


def test_refiner_none_serves_the_stage1_mask(grabcut_server, photo, coffee_rgb):
    r = httpx.post(
        f"{grabcut_server.url}/api/segment",
        timeout=60,
        data={"box": _box_text(BOX)},
        files={"image": ("coffee.png", photo.read_bytes(), "image/png")},
    )
    stage = GrabCutStage()
    stage.set_image(coffee_rgb)
    masks, _ = stage.predict(np.array([BOX]))
    expected = mask_uint8(masks[0].numpy().astype(np.float32))
    got = _decode(r.content)
    assert np.array_equal(got, expected) and set(np.unique(got)) == {0, 255}
    assert got[:, : BOX[0]].max() == 0 and got[BOX[3] :].max() == 0  # nothing outside the box


def test_coarse_mask_upload_replaces_stage1(grabcut_server, photo):
    coarse = np.zeros((200, 300), np.uint8)
    coarse[50:150, 100:200] = 255
    r = httpx.post(
        f"{grabcut_server.url}/api/segment",
        timeout=60,
        data={"box": _box_text(BOX)},
        files={
            "image": ("coffee.png", photo.read_bytes(), "image/png"),
            "coarse_mask": ("m.png", _png(coarse), "image/png"),
        },
    )
    assert np.array_equal(_decode(r.content), coarse)  # --refiner none: the given coarse mask comes back
    wrong = httpx.post(
        f"{grabcut_server.url}/api/segment",
        timeout=60,
        data={"box": _box_text(BOX)},
        files={
            "image": ("coffee.png", photo.read_bytes(), "image/png"),
            "coarse_mask": ("m.png", _png(coarse[:100]), "image/png"),
        },
    )
    assert "300x100" in _one_line_error(wrong, 422)


# ------------------------------------------------------------------------------------------- cache
def test_second_box_on_an_image_does_not_rerun_the_encoder(sam_server, coffee_rgb):
    encoder = sam_server.engine.segmenter._base.sam_stage.sam.image_encoder
    runs = []
    hook = encoder.register_forward_hook(lambda *_: runs.append(1))
    try:
        client = httpx.Client(base_url=sam_server.url, timeout=120)
        image = _png(np.ascontiguousarray(coffee_rgb[:, ::-1]))  # an image no other test uploads
        before = client.get("/api/health").json()["cache"]
        first = client.post("/api/images", files={"image": ("flip.png", image, "image/png")}).json()
        assert first["cached"] is False and (first["width"], first["height"]) == (300, 200) and len(runs) == 1
        for box in (BOX, BOX2, [10, 10, 290, 190]):
            r = client.post(f"/api/images/{first['id']}/segment", json={"boxes": [box]})
            assert r.status_code == 200
        again = client.post("/api/images", files={"image": ("other-name.png", image, "image/png")}).json()
        assert again == {**again, "id": first["id"], "cached": True}
        one_shot = client.post(
            "/api/segment", files={"image": ("flip.png", image, "image/png")}, data={"box": _box_text(BOX2)}
        )
        assert one_shot.status_code == 200
        assert len(runs) == 1  # three boxes, a re-upload and a one-shot request: the encoder ran once
        after = client.get("/api/health").json()["cache"]
        assert after["encoder_runs"] - before["encoder_runs"] == 1
        assert after["hits"] - before["hits"] >= 5 and after["images"] >= 1 and after["bytes"] > 0
    finally:
        hook.remove()


def test_evicted_image_is_404_and_can_be_uploaded_again(tiny_refiner_checkpoint, coffee_rgb):
    # One image holds ~1 MB here (the 256x256 refiner input and the photo), so 1.5 MB keeps one.
    with RunningServer(
        [
            "--stage1",
            "grabcut",
            "--checkpoint",
            tiny_refiner_checkpoint,
            "--cache-mb",
            "1.5",
            "--device",
            "cpu",
            "--backend",
            "torch",
            "-q",
        ]
    ) as server:
        client = httpx.Client(base_url=server.url, timeout=120)
        a = client.post("/api/images", files={"image": ("a.png", _png(coffee_rgb), "image/png")}).json()
        b = client.post("/api/images", files={"image": ("b.png", _png(coffee_rgb[::-1].copy()), "image/png")}).json()
        assert client.post(f"/api/images/{b['id']}/segment", json={"boxes": [BOX]}).status_code == 200
        gone = client.post(f"/api/images/{a['id']}/segment", json={"boxes": [BOX]})
        assert "upload it again" in _one_line_error(gone, 404)
        cache = client.get("/api/health").json()["cache"]
        assert cache["images"] == 1 and cache["evictions"] == 1 and cache["bytes"] <= 1.5 * 2**20
        again = client.post("/api/images", files={"image": ("a.png", _png(coffee_rgb), "image/png")}).json()
        assert again["id"] == a["id"] and again["cached"] is False
        assert client.post(f"/api/images/{a['id']}/segment", json={"boxes": [BOX]}).status_code == 200


# ------------------------------------------------------------------------------------------ errors
def test_bad_requests_are_one_line_json_4xx(grabcut_server, photo, tmp_path):
    client = httpx.Client(base_url=grabcut_server.url, timeout=60)
    image = ("coffee.png", photo.read_bytes(), "image/png")

    def segment(data=None, files=None):
        return client.post("/api/segment", data=data or {}, files=files if files is not None else {"image": image})

    assert "not an image" in _one_line_error(
        segment({"box": "1,2,3,4"}, {"image": ("x.txt", b"hello", "text/plain")}), 415
    )
    truncated = photo.read_bytes()[: len(photo.read_bytes()) // 2]
    message = _one_line_error(segment({"box": "1,2,3,4"}, {"image": ("cut.png", truncated, "image/png")}), 422)
    assert message.startswith("cut.png") and str(grabcut_server.tmp_dir) not in message  # no server paths
    assert "x0,y0,x1,y1" in _one_line_error(segment({"box": "1,2,3"}), 422)
    assert "outside" in _one_line_error(segment({"box": "400,300,500,400"}), 422)
    assert "zero or negative area" in _one_line_error(segment({"box": "50,50,10,10"}), 422)
    assert "no box" in _one_line_error(segment({}), 422)
    assert "'otsu'" in _one_line_error(segment({"box": "1,2,30,40", "threshold": "1.5"}), 422)
    assert "png, cutout, json" in _one_line_error(segment({"box": "1,2,30,40", "format": "gif"}), 422)
    assert "no 'image' file" in _one_line_error(
        segment({"box": "1,2,30,40"}, {"coarse_mask": ("m.png", b"x", "image/png")}), 422
    )
    assert "unexpected file field 'mask'" in _one_line_error(
        segment({"box": "1,2,30,40"}, {"mask": ("m.png", b"x", "image/png")}), 422
    )
    assert "unknown field" in _one_line_error(segment({"box": "1,2,30,40", "colour": "red"}), 422)
    assert "multipart" in _one_line_error(client.post("/api/segment", json={"box": "1,2,3,4"}), 415)

    image_id = client.post("/api/images", files={"image": image}).json()["id"]
    url = f"/api/images/{image_id}/segment"
    assert "non-empty list" in _one_line_error(client.post(url, json={"boxes": []}), 422)
    assert "boxes[1]" in _one_line_error(client.post(url, json={"boxes": [BOX, [1, 2, "x", 4]]}), 422)
    assert "unknown key" in _one_line_error(client.post(url, json={"boxes": [BOX], "colour": "red"}), 422)
    assert "image, box, tiles" in _one_line_error(client.post(url, json={"boxes": [BOX], "region": "all"}), 422)
    assert "valid JSON" in _one_line_error(
        client.post(url, content=b"{nope", headers={"content-type": "application/json"}), 422
    )
    assert "at most 64" in _one_line_error(client.post(url, json={"boxes": [BOX] * 65}), 422)
    assert "application/json" in _one_line_error(client.post(url, data={"boxes": "x"}), 415)
    assert "upload it again" in _one_line_error(
        client.post(f"/api/images/{'0' * 64}/segment", json={"boxes": [BOX]}), 404
    )
    assert _one_line_error(client.get("/api/nothing-here"), 404)
    assert _one_line_error(client.get("/api/segment"), 405)
    assert temp_files(grabcut_server) == []  # every upload's temporary file is gone


def test_upload_over_the_limit_is_refused_while_streaming(photo):
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--max-upload-mb", "0.05", "-q"]) as server:
        client = httpx.Client(base_url=server.url, timeout=60)
        sent = []

        def body(chunks: int):
            # Chunked (no Content-Length): the server can only count bytes as they come.
            yield b'--B\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
            for _ in range(chunks):
                sent.append(1)
                yield b"\0" * 16384
            yield b"\r\n--B--\r\n"

        r = client.post("/api/images", content=body(64), headers={"content-type": "multipart/form-data; boundary=B"})
        assert "0.05 MiB" in _one_line_error(r, 413) and len(sent) == 64
        # Declared far over the limit: refused from the headers alone, not one byte of the body sent.
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
            raw.sendall(
                b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                b"boundary=B\r\nContent-Length: %d\r\n\r\n" % (200 * 2**20)
            )
            answer = b""
            while chunk := raw.recv(65536):  # the server answers and closes
                answer += chunk
            answer = answer.decode("latin-1")
        assert answer.startswith("HTTP/1.1 413") and "--max-upload-mb" in answer
        small = photo.read_bytes()
        assert len(small) > 0.05 * 2**20  # the photo itself is over this server's limit
        _one_line_error(
            client.post("/api/segment", files={"image": ("c.png", small, "image/png")}, data={"box": "1,2,30,40"}), 413
        )
        assert temp_files(server) == []
        assert client.get("/api/health").status_code == 200


def test_image_over_the_pixel_limit_is_413(photo):
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--max-pixels", "10000", "-q"]) as server:
        r = httpx.post(f"{server.url}/api/images", files={"image": ("coffee.png", photo.read_bytes(), "image/png")})
        assert "300x200 = 60,000 pixels" in _one_line_error(r, 413) and "--max-pixels" in r.json()["error"]


# -------------------------------------------------------------------------------- safety: host, token
def test_token_is_required_on_the_api_when_given(photo):
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--token", "s3cret-token", "-q"]) as server:
        url = f"{server.url}/api/health"
        r = httpx.get(url)
        assert "token" in _one_line_error(r, 401) and r.headers["www-authenticate"] == "Bearer"
        _one_line_error(httpx.get(url, headers={"Authorization": "Bearer wrong-token!"}), 401)
        assert httpx.get(url, headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        _one_line_error(httpx.post(f"{server.url}/api/images", files={"image": ("c.png", photo.read_bytes())}), 401)
        assert httpx.get(f"{server.url}/").status_code == 200  # the page holds no data; it asks for the token


def test_non_loopback_host_needs_a_token_or_insecure(capsys, monkeypatch):
    from is5net.cli import build_parser

    monkeypatch.delenv("IS5NET_SERVE_TOKEN", raising=False)

    def args(*argv):
        return build_parser().parse_args(["serve", "--stage1", "grabcut", "--refiner", "none", *argv])

    assert check_bind(args()) is None and check_bind(args("--host", "::1")) is None
    with pytest.raises(IS5NetError, match="--token"):
        check_bind(args("--host", "0.0.0.0"))
    assert "API requests need the token" in check_bind(args("--host", "0.0.0.0", "--token", "long-enough"))
    assert "WITHOUT a token" in check_bind(args("--host", "192.168.1.5", "--insecure"))
    monkeypatch.setenv("IS5NET_SERVE_TOKEN", "from-the-environment")
    a = args("--host", "0.0.0.0")
    assert "need the token" in check_bind(a) and a.token == "from-the-environment"
    monkeypatch.delenv("IS5NET_SERVE_TOKEN")
    # Through the command: one line, exit status 2, nothing started.
    rc = main(["serve", "--stage1", "grabcut", "--refiner", "none", "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--insecure" in err


def test_loopback_server_refuses_foreign_host_names(grabcut_server):
    r = httpx.get(f"{grabcut_server.url}/api/health", headers={"Host": "evil.example:7860"})
    assert "loopback" in _one_line_error(r, 400)
    assert httpx.get(f"{grabcut_server.url}/api/health", headers={"Host": "localhost:7860"}).status_code == 200


def test_cors_is_off_unless_asked(grabcut_server):
    preflight = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}
    r = httpx.options(f"{grabcut_server.url}/api/segment", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(f"{grabcut_server.url}/api/health", headers={"Origin": "https://a.example"})
    assert "access-control-allow-origin" not in r.headers
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--cors", "https://a.example", "-q"]) as server:
        r = httpx.options(f"{server.url}/api/segment", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://a.example"
        r = httpx.options(f"{server.url}/api/segment", headers={**preflight, "Origin": "https://b.example"})
        assert "access-control-allow-origin" not in r.headers


def test_demo_refiner_is_announced_as_synthetic_only(tmp_path, tiny_refiner_checkpoint):
    run_dir, data = tmp_path / "demo" / "is5net", tmp_path / "demo" / "data"
    (data / "DIS-TR").mkdir(parents=True)
    (data / "DIS-TR" / "synthetic.json").write_text("{}")
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(f"data: {data}\n")
    checkpoint = run_dir / "refiner.safetensors"
    checkpoint.write_bytes(Path(tiny_refiner_checkpoint).read_bytes())
    assert trained_on_synthetic(checkpoint) and not trained_on_synthetic(Path(tiny_refiner_checkpoint))
    with RunningServer(["--stage1", "grabcut", "--checkpoint", checkpoint, "--backend", "torch", "-q"]) as server:
        refiner = httpx.get(f"{server.url}/api/health").json()["refiner"]
    assert refiner["synthetic_only"] is True and "only seen synthetic images" in refiner["note"]


# ------------------------------------------------------------------------------ queue and timeouts
def _long_request(server: RunningServer, photo: Path, result: list, n_boxes: int) -> threading.Thread:
    """A real long request: GrabCut on ``n_boxes`` boxes (a few tenths of a second each on a CPU), in a thread."""
    boxes = [_box_text([5 * k, 3 * k, 150 + 5 * k, 100 + 3 * k]) for k in range(n_boxes)]

    def go():
        result.append(
            httpx.post(
                f"{server.url}/api/segment",
                timeout=120,
                data={"box": boxes},
                files={"image": ("coffee.png", photo.read_bytes(), "image/png")},
            )
        )

    thread = threading.Thread(target=go)
    thread.start()
    return thread


def _wait_for_pending(server: RunningServer, n: int) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/api/health").json()["queue"]["pending"] != n:
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.slow
def test_health_answers_during_a_long_request_and_a_full_queue_is_429(photo):
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--queue", "1", "-q"]) as server:
        result: list = []
        thread = _long_request(server, photo, result, 12)
        _wait_for_pending(server, 1)
        t0 = time.perf_counter()
        health = httpx.get(f"{server.url}/api/health")
        took = time.perf_counter() - t0
        busy = httpx.post(
            f"{server.url}/api/segment",
            data={"box": "1,2,30,40"},
            files={"image": ("coffee.png", photo.read_bytes(), "image/png")},
        )
        still_running = not result
        thread.join()
    assert health.status_code == 200 and health.json()["queue"]["pending"] == 1 and took < 1.0
    assert "busy" in _one_line_error(busy, 429) and int(busy.headers["retry-after"]) >= 1
    assert still_running and result[0].status_code == 200  # the long one was running all along, and finished


@pytest.mark.slow
def test_a_request_over_the_timeout_is_503_and_the_server_goes_on(photo):
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--timeout", "0.05", "-q"]) as server:
        result: list = []
        _long_request(server, photo, result, 6).join()
        assert "timeout" in _one_line_error(result[0], 503) and int(result[0].headers["retry-after"]) >= 1
        _wait_for_pending(server, 0)  # the abandoned job finished in the worker
        assert temp_files(server) == []
        r = httpx.post(f"{server.url}/api/images", files={"image": ("c.png", photo.read_bytes(), "image/png")})
        assert r.status_code == 200


@pytest.mark.slow
def test_load_8_clients_8_requests_each_only_200_or_429(photo, tiny_sam_checkpoint, tiny_refiner_checkpoint):
    # A queue of 4 for 8 clients: some requests must wait, some are turned away; none may fail.
    with RunningServer(
        [
            "--sam-checkpoint",
            tiny_sam_checkpoint,
            "--checkpoint",
            tiny_refiner_checkpoint,
            "--device",
            "cpu",
            "--backend",
            "torch",
            "--queue",
            "4",
            "-q",
        ]
    ) as server:
        image_id = httpx.post(
            f"{server.url}/api/images", timeout=60, files={"image": ("coffee.png", photo.read_bytes(), "image/png")}
        ).json()["id"]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        statuses: list[int] = []
        lock = threading.Lock()
        start = threading.Barrier(8)

        def client(k: int):
            with httpx.Client(base_url=server.url, timeout=120) as c:
                start.wait()
                for i in range(8):
                    box = [10 + 5 * i, 10 + 3 * k, 200 + 5 * i, 150 + 3 * k]
                    if (i + k) % 2:
                        r = c.post(f"/api/images/{image_id}/segment", json={"boxes": [box]})
                    else:
                        r = c.post(
                            "/api/segment",
                            data={"box": _box_text(box)},
                            files={"image": ("coffee.png", photo.read_bytes(), "image/png")},
                        )
                    if r.status_code not in (200, 429):
                        print(r.status_code, r.text)
                    with lock:
                        statuses.append(r.status_code)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        health = httpx.get(f"{server.url}/api/health").json()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert len(statuses) == 64 and set(statuses) <= {200, 429} and statuses.count(200) >= 8
    assert health["queue"]["pending"] == 0 and health["cache"]["images"] == 1  # one photo, cached once
    assert (rss_after - rss_before) < 300 * 1024  # peak memory grew by less than 300 MiB


@pytest.mark.slow
def test_the_serve_command_runs_and_stops_on_ctrl_c(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "is5net",
            "serve",
            "--stage1",
            "grabcut",
            "--refiner",
            "none",
            "--port",
            str(port),
            "-q",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert health["stage1"]["name"] == "grabcut"
        page = httpx.get(f"http://127.0.0.1:{port}/")
        assert page.status_code == 200 and "app.js" in page.text and "http" not in page.text.split("<body>")[1]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # its upload folder is removed at exit


def test_without_the_serve_extra_the_command_says_what_to_install(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    # As on a machine where `pip install is5net` left the extra out: fastapi cannot be found.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    rc = main(["serve", "--stage1", "grabcut", "--refiner", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip() == "is5net serve: error: is5net serve needs fastapi: pip install 'is5net[serve]'"
