"""Weight files: the official table, verification, and downloads against a real HTTP server on loopback
(http.server in a thread, with Range support, able to cut a transfer short or ignore Range)."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from is5net import cli
from is5net.errors import IS5NetError
from is5net.weights import OFFICIAL, WeightFile, download, resolve_weights, verify_file

PAYLOAD = bytes(range(256)) * 4000 + b"the end"  # ~1 MB: several chunks of the downloader


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes=") : -1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            # Promise the whole body, send part of it and hang up: what a dropped connection looks like.
            self.wfile.write(body[: srv.cut_after])
            self.wfile.flush()
            srv.cut_after = None
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.cut_after, srv.honour_range = {}, [], None, True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


def _entry(data: bytes, **kw) -> WeightFile:
    md5 = hashlib.md5(data).hexdigest()
    fields = dict(
        name="test",
        filename=f"test_{md5[:6]}.pth",
        patterns=(f"test_{md5[:6]}.pth",),
        what="a test file",
        page="http://example.invalid/",
        url="http://example.invalid/unused",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5_prefix=md5[:6],
    )
    fields.update(kw)
    return WeightFile(**fields)


def test_interrupted_transfer_is_resumed_with_a_range_request(server, tmp_path):
    entry = _entry(PAYLOAD)
    server.files[entry.filename] = PAYLOAD
    server.cut_after = 300_000
    with pytest.raises(IS5NetError, match="again to resume"):
        download(entry, to=tmp_path, mirror=server.url, quiet=True)
    part = tmp_path / (entry.filename + ".part")
    assert part.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    assert not (tmp_path / entry.filename).exists()  # never the final name before it is whole and checked
    kept = part.stat().st_size

    path = download(entry, to=tmp_path, mirror=server.url, quiet=True)
    assert path == tmp_path / entry.filename and path.read_bytes() == PAYLOAD
    assert not part.exists()
    assert server.requests[-1] == (f"/{entry.filename}", f"bytes={kept}-")  # only the rest was asked for


def test_a_server_that_ignores_range_gives_the_whole_file_again(server, tmp_path):
    entry = _entry(PAYLOAD)
    server.files[entry.filename] = PAYLOAD
    (tmp_path / (entry.filename + ".part")).write_bytes(PAYLOAD[:1000])
    server.honour_range = False
    path = download(entry, to=tmp_path, mirror=server.url, quiet=True)
    assert path.read_bytes() == PAYLOAD  # not the first 1000 bytes twice


def test_corrupt_file_is_refused_named_and_not_left_in_place(server, tmp_path):
    entry = _entry(PAYLOAD)
    corrupt = bytearray(PAYLOAD)
    corrupt[500_000] ^= 0xFF  # same size, one byte flipped
    server.files[entry.filename] = bytes(corrupt)
    with pytest.raises(IS5NetError) as err:
        download(entry, to=tmp_path, mirror=server.url, quiet=True)
    message = str(err.value)
    assert "checksum mismatch" in message and entry.sha256 in message
    assert hashlib.sha256(corrupt).hexdigest() in message
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part to be resumed


def test_md5_prefix_of_the_name_is_checked(server, tmp_path):
    entry = _entry(PAYLOAD, sha256=None, md5_prefix="000000")
    server.files[entry.filename] = PAYLOAD
    with pytest.raises(IS5NetError, match="md5 .* does not start with 000000"):
        download(entry, to=tmp_path, mirror=server.url, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_named(tmp_path):
    entry = _entry(PAYLOAD)
    path = tmp_path / entry.filename
    path.write_bytes(PAYLOAD[:-1])
    verdict = verify_file(entry, path)
    assert not verdict.ok and f"expected {len(PAYLOAD)}" in verdict.detail


def test_a_verified_file_is_not_downloaded_again(server, tmp_path):
    entry = _entry(PAYLOAD)
    (tmp_path / entry.filename).write_bytes(PAYLOAD)
    assert download(entry, to=tmp_path, mirror=server.url, quiet=True) == tmp_path / entry.filename
    assert server.requests == []


def test_cli_download_from_a_mirror_refuses_a_file_of_the_wrong_size(server, tmp_path, capsys):
    server.files["sam_vit_b_01ec64.pth"] = PAYLOAD
    code = cli.main(["weights", "download", "vit_b", "--mirror", server.url, "--to", str(tmp_path), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "size" in err[0] and "375042383" in err[0] and "deleted" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_google_drive_files_get_the_steps_to_place_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    assert cli.main(["weights", "download", "dis-sam"]) == 2
    err = capsys.readouterr().err
    assert "drive.google.com" in err and str(tmp_path / "dis-sam.pth") in err and "weights verify dis-sam" in err
    with pytest.raises(IS5NetError, match="weights download vit_l"):
        resolve_weights("vit_l")


def test_official_table_is_consistent():
    sam = [OFFICIAL[n] for n in ("vit_b", "vit_l", "vit_h")]
    for entry in sam:
        # The publisher's names carry the MD5 prefix; the URL serves that very name.
        assert entry.filename.endswith(f"_{entry.md5_prefix}.pth") and entry.url.endswith("/" + entry.filename)
        assert len(entry.sha256) == 64 and entry.size > 300_000_000
    for name in ("isnet", "isnet-general-use", "dis-sam"):
        entry = OFFICIAL[name]
        assert entry.url is None and entry.sha256 is None and entry.size is None  # nothing invented
        assert entry.drive.startswith("https://drive.google.com/")


def test_cli_list_and_verify(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    assert cli.main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name, entry in OFFICIAL.items():
        assert name in out and entry.filename in out
    (tmp_path / "sam_vit_h_4b8939.pth").write_bytes(b"not SAM")
    assert cli.main(["weights", "verify"]) == 1
    out = capsys.readouterr().out
    assert "vit_h: sam_vit_h_4b8939.pth: FAILED: size 7 bytes, expected 2564550879" in out


def test_a_file_without_checksum_is_verified_as_a_state_dict(tmp_path):
    import torch

    good, bad = tmp_path / "isnet.pth", tmp_path / "bad.pth"
    torch.save({"conv_in.weight": torch.zeros(2, 3, 3, 3)}, good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 32)
    assert verify_file(OFFICIAL["isnet"], good).ok
    verdict = verify_file(OFFICIAL["isnet"], bad)
    assert not verdict.ok and "PNG" in verdict.detail
