"""What a run records about itself: ``log.csv`` (and TensorBoard when installed), the images per second
it logs, and ``summary.json`` with the one line ``is5net train`` ends on."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Optional

from ..io import atomic_write_text, open_append
from .checkpoints import PHASES, Resumed


class RunLog:
    """``RUN_DIR/log.csv`` (time, phase, step, name, value), and TensorBoard when it is installed."""

    HEADER = ["time", "phase", "step", "name", "value"]

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed (an optional extra): CSV only
                self.tb = None

    def resume_at(self, resumed: Optional[Resumed]) -> None:
        """Drop the rows a resumed run will write again: those after its checkpoint (every row when it starts
        over), so that ``log.csv`` reads as one run. A row cut short by the kill goes too."""
        if not self.enabled or not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if len(r) == len(self.HEADER) and _logged_before(r[1], r[2], resumed)]
        if len(kept) != len(rows) - 1:
            lines = io.StringIO()
            csv.writer(lines).writerows([self.HEADER, *kept])
            atomic_write_text(self.path, lines.getvalue())

    def write(self, phase: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open_append(self.path) as f:  # a link here is refused, not followed
            w = csv.writer(f)
            if new:
                w.writerow(self.HEADER)
            for k, v in values.items():
                w.writerow([f"{time.time():.3f}", phase, step, k, f"{float(v):.6g}"])
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{phase}/{k}", float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _logged_before(phase: str, step: str, resumed: Optional[Resumed]) -> bool:
    """Whether a row of ``phase`` at ``step`` was logged at or before ``resumed``'s checkpoint."""
    if resumed is None or phase not in PHASES or not step.isdigit():
        return False
    return (PHASES.index(phase), int(step)) <= (PHASES.index(resumed.phase), resumed.step)


class Throughput:
    """Images per second since the last :meth:`rate`."""

    def __init__(self):
        self.t, self.images = time.perf_counter(), 0

    def count(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.images / max(now - self.t, 1e-9)
        self.t, self.images = now, 0
        return value


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))


def outcome(run_dir: Path) -> str:
    """`` (N steps; best validation maxF x, MAE y; ...)`` from the run's summary, so the last line says how it went."""
    try:
        refiner = json.loads((Path(run_dir) / "summary.json").read_text()).get("refiner") or {}
    except (OSError, ValueError):
        return ""
    parts = [f"{refiner['steps']} steps"] if "steps" in refiner else []
    if refiner.get("best_maxF", -1) >= 0:
        parts.append(f"best validation maxF {refiner['best_maxF']:.4f}, MAE {refiner['best_MAE']:.4f}")
    if refiner.get("stopped_early"):
        parts.append("stopped early")
    if refiner.get("skipped_batches"):
        parts.append(f"{refiner['skipped_batches']} non-finite batch(es) skipped")
    return f" ({'; '.join(parts)})" if parts else ""
