"""A real ``is5net serve`` for tests: the command's own ``build`` behind uvicorn on a free loopback port.

The server runs in a thread of the test process (so tests can count what the models did), listening on a
socket bound to port 0 by the kernel (no race for a free port). No tests here: helpers for test_serve_*.py.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn

from is5net.cli import build_parser
from is5net.commands.serve import build


class RunningServer:
    """``with RunningServer(["--stage1", "grabcut", ...]) as s:`` -> ``s.url``, ``s.engine``, ``s.tmp_dir``."""

    def __init__(self, argv: list[str]):
        self.args = build_parser().parse_args(["serve", *map(str, argv)])
        self.app, self.engine, self.tmp_dir = build(self.args)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.engine.close()
        self.sock.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def temp_files(server: RunningServer) -> list[Path]:
    return sorted(Path(server.tmp_dir).iterdir())


# ------------------------------------------------------------------------ hostile clients, real sockets
def stalled_upload(
    port: int, path: str = "/api/images", announce: int = 2**20, send: int = 900_000, json: bool = False
) -> socket.socket:
    """A raw client that announces ``announce`` bytes of body (multipart, or JSON), sends ``send`` and stalls."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if json:
        ctype, head = b"application/json", b'{"boxes": [[1, 2, 3, 4]], "format": "'
    else:
        ctype = b"multipart/form-data; boundary=B"
        head = b'--B\r\nContent-Disposition: form-data; name="image"; filename="slow.png"\r\n\r\n'
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
        b"Content-Length: %d\r\n\r\n" % (path.encode(), ctype, announce)
    )
    sock.sendall(head + b"\0" * max(0, send - len(head)))
    return sock


def read_answer(sock: socket.socket, timeout: float = 30) -> str:
    """Everything the server sends until it closes the connection (or ``timeout`` passes), as text."""
    sock.settimeout(timeout)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return answer.decode("latin-1")


def wait_until(predicate, timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)
