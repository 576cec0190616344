"""A real Label Studio server for tests and the screenshot script: ``with LabelStudioServer(tmp) as ls:``.

Label Studio runs from its own virtual environment, ``.venv-label-studio`` (its pins conflict with ours;
``make label-studio`` creates it), on a free loopback port, with its default SQLite database in a throw-away
data directory, and one user whose legacy token is ``ls.token``. No tests here.

Label Studio 1.23 refuses model servers on loopback or private addresses (SSRF protection) twice: when the
model's URL is saved (``ML_BLOCK_LOCAL_IP``) and when the webhook it adds for the model is saved
(``SSRF_PROTECTION_ENABLED``); is5net serves on the loopback here, so both are off (docs/label-studio.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = ROOT / ".venv-label-studio"
LS_BIN = LS_VENV / "bin" / "label-studio"
MISSING = (
    f"Label Studio's virtual environment is missing ({LS_BIN} not found): create it with `make label-studio` "
    "(python -m venv .venv-label-studio && .venv-label-studio/bin/python -m pip install -c "
    "constraints-label-studio.txt label-studio)"
)
USER, PASSWORD = "annotator@example.org", "is5net-test-password"
TOKEN = "is5net0test0legacy0token0000000000000000"  # 40 characters, as Label Studio's own tokens
START_TIMEOUT = 600  # the first start migrates a new SQLite database: about 2 minutes on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioServer:
    """``label-studio start`` in ``data_dir`` (created), until the context ends; ``url``, ``token``, ``log``."""

    def __init__(self, data_dir: Path, timeout: float = START_TIMEOUT):
        if not LS_BIN.is_file():
            raise RuntimeError(MISSING)
        self.data_dir, self.timeout = Path(data_dir), timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = TOKEN
        self.log = self.data_dir / "label-studio.log"
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "VIRTUAL_ENV"))}
        env.update(
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            ML_BLOCK_LOCAL_IP="false",  # is5net listens on the loopback
            SSRF_PROTECTION_ENABLED="false",  # ... and the webhook Label Studio adds for it is checked by this
            LATEST_VERSION_CHECK="false",  # no request to pypi.org at start
            COLLECT_ANALYTICS="false",
            PATH=f"{LS_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        return env

    def __enter__(self) -> "LabelStudioServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1", "-p", str(self.port)]
        cmd += ["--username", USER, "--password", PASSWORD, "--user-token", TOKEN, "--enable-legacy-api-token"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                cmd, env=self.environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Label Studio exited ({self.process.returncode}); its log: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"Label Studio did not answer within {self.timeout:g} s; its log: {self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        """Stop the server and everything it started (its own process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __exit__(self, *exc) -> None:
        self.stop()


LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="Object" background="#ff7f0e"/>
  </RectangleLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="Object" background="#ff7f0e"/>
  </KeyPointLabels>
  <BrushLabels name="mask" toName="image">
    <Label value="Object" background="#e6007e"/>
  </BrushLabels>
</View>"""


def upload_task(client, project_id: int, image: Path) -> dict:
    """Upload ``image`` into the project as one task (as the import page does); the task's data."""
    http = client._client_wrapper.httpx_client  # the SDK's own authenticated client: the SDK has no file upload
    with open(image, "rb") as f:
        r = http.request(f"api/projects/{project_id}/import", method="POST", files={"file": (image.name, f)})
    if r.status_code != 201:
        raise RuntimeError(f"upload to Label Studio failed: {r.status_code} {r.text[:300]}")
    task = next(iter(client.tasks.list(project=project_id)))
    return {"id": task.id, "data": task.data}
