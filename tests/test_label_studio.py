"""``is5net serve --label-studio``: Label Studio's ML-backend protocol (docs/label-studio.md).

Fast tests: the rule of where task images may come from, the settings, and the protocol over a real uvicorn on
the loopback with tiny random models (images read from ``--label-studio-root``). The slow test starts a real
Label Studio (its own venv, ``make label-studio``), connects is5net as its model, asks for a mask as the
labelling page does, and decodes the brush result Label Studio returns and stores.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from label_studio_sdk.converter import brush
from PIL import Image

from is5net.cli import main
from is5net.serve.app import Options
from is5net.serve.errors import ApiError
from is5net.serve.label_studio import (
    LabelStudioKey,
    LabelStudioOptions,
    Rect,
    image_source,
    parse_label_config,
)
from label_studio_support import LABEL_CONFIG, LabelStudioServer, upload_task
from test_serve_support import RunningServer, temp_files

W, H = 300, 200  # the coffee photo of conftest.coffee_rgb
RECT = {"x": 20, "y": 15, "width": 50, "height": 60}  # percent: the box [60, 30, 210, 150] in pixels
BOX = "60,30,210,150"
CLICK = {"x": 45, "y": 40}  # percent: (135, 80)


# ----------------------------------------------------------------------------------------------- helpers
def rect(label="Object", **value) -> dict:
    v = {**RECT, "rotation": 0, "rectanglelabels": [label], **value}
    return {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "value": v,
            "original_width": W, "original_height": H}  # fmt: skip


def click(positive: bool, label="Object", **value) -> dict:
    return {"type": "keypointlabels", "from_name": "click", "to_name": "image", "is_positive": positive,
            "value": {**CLICK, "width": 1, "keypointlabels": [label], **value},
            "original_width": W, "original_height": H}  # fmt: skip


def predict_body(image: str, regions: list | None, task_id: int = 1, config: str = LABEL_CONFIG) -> dict:
    """A ``/predict`` request as Label Studio 1.23 sends it (ml/api_connector.py)."""
    context = None if regions is None else {"result": regions}
    return {
        "tasks": [{"id": task_id, "data": {"image": image}}],
        "project": "1.1733000000",
        "label_config": config,
        "params": {"login": None, "password": None, "context": context},
    }


def decoded(result: dict) -> np.ndarray:
    """A brush result's mask as HxW uint8, decoded by Label Studio's own converter."""
    h, w = result["original_height"], result["original_width"]
    return brush.decode_rle(result["value"]["rle"]).reshape(h, w, 4)[:, :, 3]


def predicted_mask(tmp_path: Path, image: Path, models: list, *extra: str) -> np.ndarray:
    """What ``is5net predict --threshold 0.5`` writes for the test's box (and ``extra`` options)."""
    out = tmp_path / f"predict{len(list(tmp_path.iterdir()))}"
    argv = ["predict", str(image), f"--box={BOX}", *extra, "-o", str(out), "--threshold", "0.5", "--device", "cpu"]
    assert main([*argv, "-q", *map(str, models)]) == 0
    return np.asarray(Image.open(out / f"{image.stem}.png"))


def one_line_refusal(r: httpx.Response) -> str:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    message = r.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def root(tmp_path_factory, coffee_rgb) -> Path:
    """The folder of --label-studio-root: the photo (PNG, so predict and the server read the same pixels)."""
    folder = tmp_path_factory.mktemp("ls_root")
    Image.fromarray(coffee_rgb).save(folder / "coffee.png")
    return folder


@pytest.fixture(scope="module")
def models(tiny_sam_checkpoint, tiny_refiner_checkpoint) -> list:
    return ["--checkpoint", tiny_refiner_checkpoint, "--sam-checkpoint", tiny_sam_checkpoint]


@pytest.fixture(scope="module")
def backend(models, root):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LABEL_STUDIO_URL", raising=False)
        mp.delenv("LABEL_STUDIO_API_KEY", raising=False)
        with RunningServer([*models, "--device", "cpu", "-q", "--label-studio", "--label-studio-root", root]) as s:
            yield s


# ------------------------------------------------------------------------------- where images come from
LS_URL = "http://ls.example:8080"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("/data/upload/3/ab12-cat.jpg", ("http", f"{LS_URL}/data/upload/3/ab12-cat.jpg", True)),
        ("upload/3/ab12-cat.jpg", ("http", f"{LS_URL}/data/upload/3/ab12-cat.jpg", True)),  # an export's form
        (
            "/storage-data/uploaded/?filepath=upload/3/x.jpg",
            ("http", f"{LS_URL}/storage-data/uploaded/?filepath=upload/3/x.jpg", True),
        ),
        (f"{LS_URL}/data/upload/3/x.jpg", ("http", f"{LS_URL}/data/upload/3/x.jpg", True)),
        ("HTTP://LS.example:8080/data/x.jpg", ("http", "HTTP://LS.example:8080/data/x.jpg", True)),
        ("https://photos.example/a.jpg", ("http", "https://photos.example/a.jpg", False)),  # allowed by name
        ("http://cdn.example:9000/a.jpg", ("http", "http://cdn.example:9000/a.jpg", False)),  # allowed with its port
        ("http://[::1]:5000/a.jpg", ("http", "http://[::1]:5000/a.jpg", False)),
        ("http://ls.example:9999/data/x.jpg", "not Label Studio's"),  # Label Studio's host, another port
        ("http://cdn.example/a.jpg", "not Label Studio's"),  # allowed on port 9000 only
        ("http://evil.example/data/upload/1/x.jpg", "not Label Studio's"),
        ("http://169.254.169.254/latest/meta-data", "not Label Studio's"),
        ("file:///etc/passwd", "file: URLs are not read"),
        ("s3://bucket/a.jpg", "s3: URLs are not read"),
        ("data:image/png;base64,iVBORw0KGgo=", "data: URLs are not read"),
        ("/home/user/a.jpg", "no --label-studio-root"),
        ("a.jpg", "no --label-studio-root"),
        ("", "expected a URL or a path"),
        (42, "expected a URL or a path"),
    ],
)
def test_image_source_rule(value, expected):
    hosts = ["Photos.Example", "cdn.example:9000", "[::1]"]
    options = LabelStudioOptions.checked(LS_URL, "k" * 40, None, hosts, 0.5, "v")
    if isinstance(expected, str):
        with pytest.raises(ApiError) as err:
            image_source(value, options)
        assert err.value.status == 422 and expected in err.value.message
    else:
        source = image_source(value, options)
        assert (source.kind, source.location, source.with_key) == expected


def test_label_studio_url_under_a_path_and_without_one():
    under = LabelStudioOptions.checked("http://h.example/ls/", None, None, [], 0.5, "v")
    assert image_source("/data/upload/1/a.png", under).location == "http://h.example/ls/data/upload/1/a.png"
    assert image_source("http://h.example/ls/data/a.png", under).with_key
    with pytest.raises(ApiError, match="not Label Studio's"):
        image_source("http://h.example/other/a.png", under)  # the same host, outside Label Studio's path
    nowhere = LabelStudioOptions.checked(None, None, None, [], 0.5, "v")
    with pytest.raises(ApiError, match="no Label Studio URL was given"):
        image_source("/data/upload/1/a.png", nowhere)


def test_local_paths_stay_inside_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for path in (root / "sub" / "a.png", outside / "secret.png"):
        path.write_bytes(b"png")
    (root / "escape.png").symlink_to(outside / "secret.png")  # a link out of the root
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    (root / "inside.png").symlink_to(root / "sub" / "a.png")  # a link that stays inside
    options = LabelStudioOptions.checked(None, None, root, [], 0.5, "v")
    real = str((root / "sub" / "a.png").resolve())
    assert image_source("sub/a.png", options).location == real
    assert image_source(str(root / "sub" / "a.png"), options).location == real
    assert image_source("inside.png", options).location == real
    assert image_source("/data/local-files/?d=sub/a.png", options).location == real  # Local Storage's URL
    for value in ("../outside/secret.png", "sub/../../outside/secret.png", str(outside / "secret.png"),
                  "escape.png", "escape_dir/secret.png", "/data/local-files/?d=../outside/secret.png"):  # fmt: skip
        with pytest.raises(ApiError, match="outside the folder given by --label-studio-root"):
            image_source(value, options)
    with pytest.raises(ApiError, match="no such file"):
        image_source("sub/missing.png", options)


def test_settings_are_checked_one_line_each(tmp_path, run_cli):
    for args, message in [
        (("ftp://ls.example", None, None, []), "--label-studio-url"),
        (("http://ls.example?x=1", None, None, []), "--label-studio-url"),
        ((None, None, tmp_path / "missing", []), "--label-studio-root"),
        ((None, None, None, ["http://x.example/"]), "--label-studio-allow-host"),
        ((None, None, None, ["x.example:port"]), "--label-studio-allow-host"),
    ]:
        with pytest.raises(Exception, match=message):
            LabelStudioOptions.checked(*args, 0.5, "v")
    assert "s3cret" not in repr(LabelStudioOptions.checked(None, "s3cret-key", None, [], 0.5, "v"))  # never shown
    status, err = run_cli("serve", "--stage1", "grabcut", "--refiner", "none", "--label-studio-root", tmp_path)
    assert status != 0 and err.strip().splitlines()[-1].endswith("is a setting of --label-studio: add --label-studio")
    status, err = run_cli("serve", "--stage1", "grabcut", "--refiner", "none", "--label-studio",
                          "--label-studio-threshold", "2")  # fmt: skip
    assert status != 0 and "--label-studio-threshold" in err and "Traceback" not in err


def _jwt(claims: dict) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJIUzI1NiJ9.{part}.c2ln"


def test_api_key_header_legacy_token_and_access_token():
    def header(key):
        return asyncio.run(LabelStudioKey(key, "http://x").headers(None))

    legacy = "0123456789abcdef" * 2 + "01234567"
    assert header(legacy) == {"Authorization": f"Token {legacy}"}
    access = _jwt({"token_type": "access", "exp": 9_999_999_999})
    assert header(access) == {"Authorization": f"Bearer {access}"}
    assert header(None) == {}  # (a personal access token is exchanged: the slow test, with a real Label Studio)


def test_rotated_rectangle_gives_its_bounding_box():
    plain = Rect(10, 20, 30, 40, 0, "a", "image")
    assert plain.box(200, 100) == [20, 20, 80, 60]
    turned = Rect(10, 20, 30, 40, 90, "a", "image").box(200, 100)  # 60 x 40 px turned clockwise about (20, 20)
    assert np.allclose(turned, [-20, 20, 20, 80])


def test_label_config_needs_an_image_and_brush_labels():
    config = parse_label_config(LABEL_CONFIG)
    assert config.images == {"image": "image"}
    tag, label = config.brush_for("image", "Object")
    assert (tag.name, tag.to_name, label) == ("mask", "image", "Object")
    with pytest.raises(ApiError, match="'Cat' is not a label of the BrushLabels"):
        config.brush_for("image", "Cat")
    no_brush = '<View><Image name="image" value="$image"/><RectangleLabels name="b" toName="image"/></View>'
    for text in (no_brush, "<View><oops", "", None):
        with pytest.raises(ApiError):
            parse_label_config(text)


# ------------------------------------------------------------------------------------------- the protocol
def test_health_setup_webhook_versions(backend):
    base = f"{backend.url}/label-studio"
    health = httpx.get(f"{base}/health").json()
    assert health["status"] == "UP" and health["model_version"].startswith("is5net-")
    setup = httpx.post(f"{base}/setup", json={"project": "1.17", "schema": LABEL_CONFIG, "access_token": "x"})
    assert setup.status_code == 200 and setup.json() == {"model_version": health["model_version"]}
    bad = httpx.post(f"{base}/setup", json={"project": "1.17", "schema": "<View><Image name='i' value='$i'/></View>"})
    assert "BrushLabels" in one_line_refusal(bad)
    assert httpx.post(f"{base}/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 200
    assert httpx.get(f"{base}/versions").json()["versions"] == [health["model_version"]]


def test_batch_without_context_guesses_nothing(backend):
    r = httpx.post(f"{backend.url}/label-studio/predict", json=predict_body("coffee.png", None), timeout=60)
    assert r.status_code == 200 and r.json() == {"results": []}


def test_rectangle_gives_the_mask_predict_writes(backend, root, models, tmp_path):
    r = httpx.post(f"{backend.url}/label-studio/predict", json=predict_body("coffee.png", [rect()]), timeout=120)
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["results"]
    (result,) = prediction["result"]
    assert prediction["model_version"].startswith("is5net-") and 0 <= prediction["score"] <= 1
    assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "mask", "image")
    assert result["value"]["brushlabels"] == ["Object"] and result["value"]["format"] == "rle"
    assert (result["original_width"], result["original_height"]) == (W, H)
    mask = decoded(result)
    expected = predicted_mask(tmp_path, root / "coffee.png", models)
    assert np.array_equal(mask, expected) and 0 < (mask > 0).mean() < 1  # a real mask, the same pixels
    assert temp_files(backend) == []


def test_keypoints_refine_the_rectangle_drawn_before(backend, root, models, tmp_path):
    url = f"{backend.url}/label-studio/predict"
    first = httpx.post(url, json=predict_body("coffee.png", [rect()], task_id=7), timeout=120)
    # Label Studio sends one smart tool's regions at a time: the keypoints come without their rectangle.
    clicked = httpx.post(url, json=predict_body("coffee.png", [click(False)], task_id=7), timeout=120)
    assert first.status_code == 200 and clicked.status_code == 200, clicked.text
    mask = decoded(clicked.json()["results"][0]["result"][0])
    expected = predicted_mask(tmp_path, root / "coffee.png", models, "--points", "135,80:0")
    assert np.array_equal(mask, expected)
    assert not np.array_equal(mask, decoded(first.json()["results"][0]["result"][0]))  # the click changed it
    both = httpx.post(url, json=predict_body("coffee.png", [rect(), click(False)], task_id=8), timeout=120)
    assert np.array_equal(decoded(both.json()["results"][0]["result"][0]), expected)  # together: the same
    alone = httpx.post(url, json=predict_body("coffee.png", [click(True)], task_id=9), timeout=60)
    assert "draw a rectangle around the object first" in one_line_refusal(alone)


@pytest.mark.parametrize(
    "image, regions, message",
    [
        ("coffee.png", [{"type": "choices", "to_name": "image", "value": {"choices": ["x"]}}], "no rectangle"),
        ("coffee.png", [rect(x=120)], "outside the image"),
        ("coffee.png", [rect(x=-80, width=50)], "outside the image"),
        ("coffee.png", [rect(width=0)], "no area"),
        ("coffee.png", [rect(x="20")], "expected a finite number"),
        ("coffee.png", [rect(label="Cat")], "'Cat' is not a label of the BrushLabels"),
        ("coffee.png", [click(True, x=140)], "outside the image"),
        ("coffee.png", [{**rect(), "original_width": 640}], "Label Studio shows the image as 640x200"),
        ("../coffee.png", [rect()], "outside the folder given by --label-studio-root"),
        ("file:///etc/passwd", [rect()], "file: URLs are not read"),
        ("http://other.example/coffee.png", [rect()], "not Label Studio's"),
        ("/data/upload/1/coffee.png", [rect()], "no Label Studio URL was given"),
        ("missing.png", [rect()], "no such file"),
    ],
)
def test_bad_context_is_a_one_line_4xx(backend, image, regions, message):
    r = httpx.post(f"{backend.url}/label-studio/predict", json=predict_body(image, regions), timeout=60)
    assert message in one_line_refusal(r)
    assert temp_files(backend) == []


def test_bad_requests_are_one_line_4xx(backend):
    url = f"{backend.url}/label-studio/predict"
    for body, message in [
        ([1, 2], "expected a JSON object"),
        ({"tasks": []}, "tasks: expected a list"),
        ({**predict_body("coffee.png", [rect()]), "label_config": None}, "no labelling config"),
        ({**predict_body("coffee.png", [rect()]), "tasks": [{"id": 1, "data": {"img": "x"}}]}, "no data.image"),
    ]:
        assert message in one_line_refusal(httpx.post(url, json=body, timeout=60))
    assert one_line_refusal(httpx.post(url, content=b"{", headers={"content-type": "application/json"}))


@pytest.fixture(scope="module")
def image_host(root):
    """A plain HTTP server on the loopback: the photo at /coffee.png, a redirect at /moved, a 404 elsewhere."""
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/coffee.png")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_images_from_an_allowed_host_are_downloaded_within_the_limits(models, image_host, root, tmp_path):
    argv = [*models, "--device", "cpu", "-q", "--label-studio", "--label-studio-allow-host", "127.0.0.1"]
    with RunningServer(argv) as server:
        url = f"{server.url}/label-studio/predict"
        r = httpx.post(url, json=predict_body(f"{image_host}/coffee.png", [rect()]), timeout=120)
        assert r.status_code == 200, r.text
        expected = predicted_mask(tmp_path, root / "coffee.png", models)
        assert np.array_equal(decoded(r.json()["results"][0]["result"][0]), expected)
        moved = httpx.post(url, json=predict_body(f"{image_host}/moved", [rect()]), timeout=60)
        assert moved.status_code == 502 and "answered 302" in moved.json()["error"]  # redirects are not followed
        missing = httpx.post(url, json=predict_body(f"{image_host}/nothing.png", [rect()]), timeout=60)
        assert missing.status_code == 502 and "answered 404" in missing.json()["error"]
        assert temp_files(server) == []
    with RunningServer([*argv, "--max-upload-mb", "0.01"]) as small:
        big = httpx.post(f"{small.url}/label-studio/predict", json=predict_body(f"{image_host}/coffee.png", [rect()]))
        assert big.status_code == 413 and "--max-upload-mb" in big.json()["error"]
        assert temp_files(small) == []


def test_token_guards_the_label_studio_routes(root):
    token = "ls-backend-token-123"
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "--token", token, "-q", "--label-studio",
                        "--label-studio-root", root]) as server:  # fmt: skip
        health = f"{server.url}/label-studio/health"
        assert httpx.get(health).status_code == 401
        assert httpx.get(health, auth=("anyone", "wrong-token-xyz")).status_code == 401
        assert httpx.get(health, auth=("anyone", token)).status_code == 200  # Label Studio's Basic Auth
        assert httpx.get(health, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.post(f"{server.url}/label-studio/predict", json={}).status_code == 401


def test_label_studio_routes_only_with_the_flag():
    assert Options().label_studio is None
    with RunningServer(["--stage1", "grabcut", "--refiner", "none", "-q"]) as plain:
        assert httpx.get(f"{plain.url}/label-studio/health").status_code == 404


# ------------------------------------------------------------------------------------- a real Label Studio
@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A real Label Studio server (slow: its first start migrates a new database), always stopped."""
    with LabelStudioServer(tmp_path_factory.mktemp("label_studio")) as server:
        yield server


@pytest.mark.slow
def test_label_studio_connects_is5net_and_stores_its_mask(label_studio, models, root, tmp_path):
    from label_studio_sdk import LabelStudio

    admin = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    # Label Studio 1.23's own kind of key: a personal access token (a JWT refresh token), as a user makes one.
    personal = admin.tokens.create().token
    project = admin.projects.create(title="is5net", label_config=LABEL_CONFIG)
    task = upload_task(admin, project.id, root / "coffee.png")
    assert task["data"]["image"].startswith("/data/upload/")  # a relative URL: read from Label Studio, with the key
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABEL_STUDIO_URL", label_studio.url)
        mp.setenv("LABEL_STUDIO_API_KEY", personal)
        server = RunningServer([*models, "--device", "cpu", "-q", "--label-studio"])
    with server:
        ml = admin.ml.create(project=project.id, url=f"{server.url}/label-studio", is_interactive=True, title="is5net")
        assert ml.state == "CO" and ml.model_version.startswith("is5net-")  # connected: /health and /setup passed

        def interactive(regions):
            r = admin.ml.with_raw_response.predict_interactive(ml.id, task=task["id"], context={"result": regions})
            return r.response.json()

        answer = interactive([rect()])
        (result,) = answer["data"]["result"]
        expected = predicted_mask(tmp_path, root / "coffee.png", models)
        assert np.array_equal(decoded(result), expected) and (expected > 0).any()
        # The annotator accepts it: Label Studio stores the result, and what it stores decodes the same.
        admin.annotations.create(id=task["id"], result=[result])
        (stored,) = admin.annotations.list(id=task["id"])
        assert np.array_equal(decoded(stored.result[0]), expected)
        # A refusal reaches the page as Label Studio's {"errors": [...]}, a 4xx, never a 500.
        for regions in ([rect(label="Cat")], [rect(x=120)], [{"type": "choices", "to_name": "image", "value": {}}]):
            refused = interactive(regions)
            assert "data" not in refused and "422" in refused["errors"][0] and "500" not in refused["errors"][0]
    assert os.environ.get("LABEL_STUDIO_API_KEY") != personal
    # A key Label Studio refuses: the image cannot be read, and the answer says which setting to fix.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABEL_STUDIO_URL", label_studio.url)
        mp.setenv("LABEL_STUDIO_API_KEY", "not-a-valid-key-0123456789")
        wrong = RunningServer([*models, "--device", "cpu", "-q", "--label-studio"])
    with wrong:
        r = httpx.post(f"{wrong.url}/label-studio/predict", json=predict_body(task["data"]["image"], [rect()]))
        assert r.status_code == 502 and "LABEL_STUDIO_API_KEY" in r.json()["error"]
