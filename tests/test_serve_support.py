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
