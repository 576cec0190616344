"""``is5net serve`` against bad input and hostile clients (issue 28, f-j): each class of fault one row or one test.

- g: a corpus of malformed requests, one row each (a new class is one more row): every one is a 4xx with the
  one-line JSON error body, never a 5xx.
- f: uploads bounded in number (``--max-uploads``), time (``--upload-timeout``) and so disk, on real sockets
  whose clients stall.
- h: Ctrl-C with requests in flight: each finishes or gets a JSON 503; the log has no traceback.
- i: a token that no request could carry is refused at start-up.
- j: the JSON body limit says which limit it is, and where it comes from.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import pytest
from PIL import Image

from is5net.cli import main
from test_serve_support import RunningServer, read_answer, stalled_upload, temp_files, wait_until

ID = "0" * 64  # an image id never uploaded: JSON bodies are checked before the cache is looked at
SEGMENT_CACHED = f"/api/images/{ID}/segment"
GRABCUT = ["--stage1", "grabcut", "--refiner", "none", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def photo_png(coffee_rgb) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(coffee_rgb).save(buf, format="PNG")
    return buf.getvalue()


def _json_error(status: int, text: str, content_type: str) -> str:
    """The one-line message of a ``{"error": ...}`` answer with a 4xx or 503 ``status``."""
    assert content_type.startswith("application/json"), (status, text)
    body = json.loads(text)
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


# ------------------------------------------------------------------------- g: the malformed requests
def _part(name: str, value: bytes, filename: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _json_with(**fields: str) -> bytes:
    return ("{" + ", ".join(f'"{k}": {v}' for k, v in {"boxes": "[[1, 2, 3, 4]]", **fields}.items()) + "}").encode()


END = b"--B--\r\n"
MULTIPART = "multipart/form-data; boundary=B"
JSON = "application/json"


@dataclass
class Bad:
    """One malformed request: where it goes, its Content-Type ("" for none), its body, what the answer says."""

    name: str
    path: str
    content_type: str
    body: bytes
    says: str = ""


CORPUS = [
    # multipart framing
    Bad(
        "boundary of 257 characters",
        "/api/segment",
        "multipart/form-data; boundary=" + "b" * 257,
        b"--" + b"b" * 257,
        "Boundary length",
    ),
    Bad(
        "boundary of 257 characters, /api/images",
        "/api/images",
        "multipart/form-data; boundary=" + "x" * 257,
        b"",
        "Boundary length",
    ),
    Bad("empty boundary", "/api/segment", "multipart/form-data; boundary=", b"x"),
    Bad("lone quote as boundary", "/api/segment", 'multipart/form-data; boundary="', b"x"),
    Bad("no Content-Type", "/api/segment", "", _part("box", b"1,2,3,4") + END),
    Bad("text/plain", "/api/images", "text/plain", b"hello"),
    Bad("body that is not multipart", "/api/segment", MULTIPART, b"\0" * 1000),
    Bad("empty body", "/api/segment", MULTIPART, b""),
    Bad(
        "cut short inside the image",
        "/api/segment",
        MULTIPART,
        _part("box", b"1,2,3,4") + _part("image", b"\x89PNG", "a.png")[:-2],
        "cut short",
    ),
    Bad("cut short inside part headers", "/api/images", MULTIPART, b"--B\r\nContent-Disposition: form-da", "cut short"),
    Bad("no closing boundary", "/api/segment", MULTIPART, _part("box", b"1,2,3,4"), "cut short"),
    Bad(
        "part header without a colon",
        "/api/segment",
        MULTIPART,
        b"--B\r\nContent-Disposition form-data\r\n\r\nx\r\n" + END,
    ),
    Bad(
        "part header of 200 KB", "/api/segment", MULTIPART, b"--B\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\nx\r\n" + END
    ),
    Bad("part without a name", "/api/segment", MULTIPART, b"--B\r\nContent-Disposition: form-data\r\n\r\nx\r\n" + END),
    Bad("300 parts", "/api/segment", MULTIPART, _part("box", b"1,2,3,4") * 300 + END),
    # multipart fields
    Bad("box: a 400-digit integer", "/api/segment", MULTIPART, _part("box", b"1" * 400 + b",2,3,4") + END),
    Bad("box: 1e999", "/api/segment", MULTIPART, _part("box", b"1e999,2,3,4") + END),
    Bad("box: not UTF-8", "/api/segment", MULTIPART, _part("box", b"\xff\xfe,1,2,3") + END),
    Bad("box of 100 KB", "/api/segment", MULTIPART, _part("box", b"1," * 50_000) + END),
    Bad(
        "threshold: a 400-digit integer",
        "/api/segment",
        MULTIPART,
        _part("box", b"1,2,3,4") + _part("threshold", b"9" * 400) + END,
    ),
    Bad("threshold: nan", "/api/segment", MULTIPART, _part("box", b"1,2,3,4") + _part("threshold", b"nan") + END),
    Bad(
        "image that is not one, odd name",
        "/api/images",
        MULTIPART,
        _part("image", b"xx", "\udcff.png".encode("utf-8", "surrogateescape")) + END,
    ),
    # JSON bodies
    Bad("JSON nested 100,000 deep", SEGMENT_CACHED, JSON, _nested(100_000).encode(), "nested too deeply"),
    Bad("boxes nested 990 deep", SEGMENT_CACHED, JSON, f'{{"boxes": {_nested(990)}}}'.encode()),
    Bad("threshold nested 990 deep", SEGMENT_CACHED, JSON, _json_with(threshold=_nested(990))),
    Bad("threshold nested 500 deep", SEGMENT_CACHED, JSON, _json_with(threshold=_nested(500))),
    Bad("format nested 800 deep", SEGMENT_CACHED, JSON, _json_with(format=_nested(800))),
    Bad("region nested 990 deep", SEGMENT_CACHED, JSON, _json_with(region=_nested(990))),
    Bad(
        "box objects nested 900 deep",
        SEGMENT_CACHED,
        JSON,
        ('{"boxes": [' + '{"a": ' * 900 + "1" + "}" * 900 + "]}").encode(),
    ),
    Bad("box: a 400-digit integer (JSON)", SEGMENT_CACHED, JSON, f'{{"boxes": [[{"1" * 400}, 2, 3, 4]]}}'.encode()),
    Bad("threshold: a 400-digit integer (JSON)", SEGMENT_CACHED, JSON, _json_with(threshold="9" * 400)),
    Bad("threshold: a 5000-digit integer", SEGMENT_CACHED, JSON, _json_with(threshold="9" * 5000)),
    Bad("threshold: 1e999", SEGMENT_CACHED, JSON, _json_with(threshold="1e999")),
    Bad("threshold: NaN", SEGMENT_CACHED, JSON, _json_with(threshold="NaN")),
    Bad("box: NaN", SEGMENT_CACHED, JSON, b'{"boxes": [[NaN, 2, 3, 4]]}'),
    Bad("format: a lone surrogate", SEGMENT_CACHED, JSON, _json_with(format='"\\ud800"')),
    Bad("not UTF-8", SEGMENT_CACHED, JSON, b"\xff\xfe\xfd{"),
    Bad("empty JSON body", SEGMENT_CACHED, JSON, b""),
    Bad("JSON null", SEGMENT_CACHED, JSON, b"null"),
    Bad("boxes an object", SEGMENT_CACHED, JSON, b'{"boxes": {"a": 1}}'),
    Bad("JSON to the multipart route", "/api/segment", JSON, _json_with()),
    Bad("no Content-Type (JSON route)", SEGMENT_CACHED, "", _json_with()),
    Bad("image id of 5000 characters", "/api/images/" + "a" * 5000 + "/segment", JSON, _json_with()),
]


@pytest.fixture(scope="module")
def grabcut_server():
    with RunningServer(GRABCUT) as server:
        yield server


def test_every_malformed_request_is_a_json_4xx(grabcut_server):
    """The whole corpus, each row on its own; the failures are listed together, one line per row."""
    failures = []
    with httpx.Client(base_url=grabcut_server.url, timeout=60) as client:
        for bad in CORPUS:
            headers = {"content-type": bad.content_type} if bad.content_type else {}
            try:
                r = client.post(bad.path, content=bad.body, headers=headers)
            except httpx.TransportError as exc:  # the server dropped the connection instead of answering
                failures.append(f"{bad.name}: no answer ({exc!r})")
                continue
            try:
                assert 400 <= r.status_code < 500, r.status_code
                message = _json_error(r.status_code, r.text, r.headers.get("content-type", ""))
                assert bad.says in message, message
            except (AssertionError, ValueError) as exc:
                failures.append(f"{bad.name}: {r.status_code} {r.text[:120]!r} ({exc.__class__.__name__})")
    assert not failures, "\n".join(failures)
    wait_until(lambda: temp_files(grabcut_server) == [], 10, "removing the uploads' temporary files")


# --------------------------------------------------------------------- f: uploads bounded in time and number
def test_a_stalled_upload_gets_408_and_leaves_no_file():
    with RunningServer([*GRABCUT, "--upload-timeout", "1"]) as server:
        for path in ("/api/images", "/api/segment", SEGMENT_CACHED):
            t0 = time.monotonic()
            with stalled_upload(server.port, path, json=path == SEGMENT_CACHED) as sock:
                answer = read_answer(sock, timeout=20)  # the server answers, then closes
            took = time.monotonic() - t0
            assert answer.startswith("HTTP/1.1 408"), answer[:200]
            head, _, body = answer.partition("\r\n\r\n")
            assert "connection: close" in head.lower() and 0.9 < took < 10
            assert "--upload-timeout" in _json_error(408, body, "application/json")
            assert temp_files(server) == []
        assert httpx.get(f"{server.url}/api/health").json()["limits"]["upload_timeout_s"] == 1.0


def test_uploads_past_max_uploads_get_429_and_hold_bounded_disk(photo_png):
    with RunningServer([*GRABCUT, "--max-uploads", "2", "--upload-timeout", "4"]) as server:
        uploads = server.app.state.uploads
        stalled = [stalled_upload(server.port) for _ in range(2)]
        try:
            wait_until(lambda: uploads.active == 2, 20, "two uploads being received")
            wait_until(lambda: len(temp_files(server)) == 2, 20, "their temporary files")
            image = {"image": ("c.png", photo_png, "image/png")}
            busy = httpx.post(f"{server.url}/api/images", files=image, timeout=30)
            assert "--max-uploads 2" in _json_error(429, busy.text, busy.headers["content-type"])
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert len(temp_files(server)) <= 2  # the disk held: at most 2 x --max-upload-mb
            answers = [read_answer(sock, timeout=20) for sock in stalled]
        finally:
            for sock in stalled:
                sock.close()
        assert all(a.startswith("HTTP/1.1 408") for a in answers), [a[:40] for a in answers]
        wait_until(lambda: uploads.active == 0, 10, "the slots to be freed")
        ok = httpx.post(f"{server.url}/api/images", files=image, timeout=30)
        assert ok.status_code == 200 and temp_files(server) == []
        assert httpx.get(f"{server.url}/api/health").json()["limits"]["max_uploads"] == 2


def test_max_uploads_defaults_to_twice_the_queue():
    with RunningServer([*GRABCUT, "--queue", "3"]) as server:
        assert server.app.state.uploads.max_uploads == 6


# ----------------------------------------------------------------------------- h: Ctrl-C in flight
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ctrl_c_with_requests_in_flight_answers_each_one_in_json(tmp_path, photo_png):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "is5net", "serve", "--stage1", "grabcut", "--refiner", "none", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    # GrabCut on 40 boxes: seconds per request on a CPU, so four of them outlast uvicorn's 5 s graceful window.
    boxes = [f"{k},{k // 2},{200 + k},{150 + k // 2}" for k in range(40)]
    answers: list = []

    def client():
        try:
            r = httpx.post(f"{url}/api/segment", data={"box": boxes}, files={"image": ("c.png", photo_png)}, timeout=90)
            answers.append((r.status_code, r.headers.get("content-type", ""), r.text))
        except httpx.HTTPError as exc:
            answers.append((None, "", repr(exc)))

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        wait_until(lambda: _health(url) is not None or proc.poll() is not None, 60, "the server to start")
        for t in threads:
            t.start()
        wait_until(lambda: (_health(url) or {}).get("queue", {}).get("pending") == 4, 60, "four requests in flight")
    finally:
        proc.send_signal(signal.SIGINT)  # once: a second Ctrl-C is uvicorn's "force quit"
    for t in threads:
        if t.ident is not None:
            t.join(timeout=90)
    try:
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert len(answers) == 4
    for status, ctype, text in answers:
        assert status in (200, 503), (status, text[:300])
        if status == 503:
            assert "stopping" in _json_error(503, text, ctype)
    assert sum(status == 503 for status, _, _ in answers) >= 1  # at least the queued ones did not run
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "CancelledError" not in err and "Cancel " not in err, err
    assert all(not line.startswith((" ", "\t")) for line in err.splitlines() if line), err  # one line per event
    assert list(tmp_path.iterdir()) == []


def _health(url: str):
    try:
        return httpx.get(f"{url}/api/health", timeout=2).json()
    except httpx.HTTPError:
        return None


# ---------------------------------------------------------------------------- i: tokens that never match
@pytest.mark.parametrize(
    "token",
    [
        "pässwörd-1234",
        "secret-token-1234 ",
        " secret-token-1234",
        "secret\ttoken-1234",
        "secret-token\x01234",
        "\u2603" * 12,
    ],
    ids=["non-ASCII", "trailing space", "leading space", "tab", "control character", "snowmen"],
)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_token_no_request_could_carry_is_refused_at_start(capsys, monkeypatch, token, how):
    import uvicorn

    # Were it accepted, nothing would be served: the test ends instead of listening.
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    if how == "env":
        monkeypatch.setenv("IS5NET_SERVE_TOKEN", token)
    argv = ["serve", *GRABCUT, "--port", "0", *(["--token", token] if how == "flag" else [])]
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("is5net serve: error: --token:"), err


# ------------------------------------------------------------------------------- j: the JSON limit's words
def test_the_json_body_limit_says_it_is_fixed_and_not_the_upload_flag():
    with RunningServer([*GRABCUT, "--max-upload-mb", "2"]) as server:
        body = _json_with(format='"' + "x" * (3 * 2**19) + '"')  # 1.5 MiB: under --max-upload-mb, over 1 MiB
        for chunked in (False, True):  # refused from Content-Length, and while it streams in
            content = iter([body[: 2**19], body[2**19 :]]) if chunked else body
            r = httpx.post(server.url + SEGMENT_CACHED, content=content, headers={"content-type": JSON}, timeout=30)
            message = _json_error(413, r.text, r.headers["content-type"])
            assert r.status_code == 413 and "JSON body limit of 1 MiB" in message and "fixed" in message
            assert "(--max-upload-mb)" not in message  # the flag does not set this limit
