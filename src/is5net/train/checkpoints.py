"""Training checkpoints: what is kept on disk, how a run finds where to resume, and the RNG state in them.

``RUN_DIR/checkpoints/<phase>-<step>.safetensors`` (weights) and ``.state.pt`` (optimizer, scheduler, scaler,
step, tracker, RNG; loadable with ``weights_only=True``), each written atomically, then ``latest.json``
names the pair (also atomically): a kill at any moment leaves the previous checkpoint whole.

A damaged file (a disk that filled up, a copy cut short) does not end a resume in a traceback: the newest
checkpoint that reads whole is taken instead, with a warning naming what was passed over, and when none
does, the run stops with one line naming the damaged file.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..checkpoint import RefinerConfig, read_state_dict, save_refiner
from ..errors import IS5NetError
from ..io import atomic_path, atomic_write_text

log = logging.getLogger("is5net")

PHASES = ("gt_encoder", "refiner")  # in the order a run goes through them
STATE_KEYS = ("optimizer", "scheduler", "step", "tracker", "rng")  # what a resume needs from a .state.pt
_NUMBERED = re.compile(rf"^({'|'.join(PHASES)})-(\d+)\.safetensors$")


@dataclass
class Resumed:
    """A checkpoint read back whole: where the run stood and everything needed to go on from there."""

    phase: str
    step: int
    weights: dict[str, torch.Tensor]
    state: dict


class Checkpoints:
    """Atomic weights + state files and a ``latest.json`` that names the last complete pair."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.dir = run_dir / "checkpoints"
        self.keep = max(1, keep)

    def save(self, phase: str, step: int, model: nn.Module, state: dict, config: RefinerConfig) -> None:
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise IS5NetError(f"refusing to save a checkpoint at step {step}: weight {name} is not finite")
        stem = f"{phase}-{step:08d}"
        save_refiner(model, self.dir / f"{stem}.safetensors", config, {"phase": phase, "step": str(step)})
        with atomic_path(self.dir / f"{stem}.state.pt") as tmp:
            torch.save(state, tmp)
        atomic_write_text(
            self.dir / "latest.json",
            json.dumps({"phase": phase, "step": step, "weights": f"{stem}.safetensors", "state": f"{stem}.state.pt"}),
        )
        self._prune(phase, f"{stem}.safetensors")

    def _prune(self, phase: str, latest: str) -> None:
        files = sorted(self.dir.glob(f"{phase}-[0-9]*.safetensors"))  # numbered only: never "-best"
        # Never the one latest.json names, even if a crashed run left higher-numbered files behind.
        for old in [f for f in files[: -self.keep] if f.name != latest]:
            old.unlink(missing_ok=True)
            (self.dir / old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)

    def latest(self) -> Optional[dict]:
        """The entry ``latest.json`` names, or None when there is none (raises when it cannot be read)."""
        p = self.dir / "latest.json"
        if not p.is_file():
            return None
        try:
            entry = json.loads(p.read_text())
            if entry["phase"] not in PHASES or not isinstance(entry["step"], int):
                raise ValueError(f"unexpected phase/step {entry['phase']!r}/{entry['step']!r}")
            entry["weights"], entry["state"] = str(entry["weights"]), str(entry["state"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise IS5NetError(f"{p} is damaged ({_reason(exc)})") from None
        return entry

    def load(self, entry: dict) -> Resumed:
        """The checkpoint ``entry`` names, read and checked whole; an :class:`IS5NetError` naming the damaged file."""
        weights, _ = read_state_dict(self.dir / entry["weights"])  # a CheckpointError names the file
        path = self.dir / entry["state"]
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
            if missing:
                raise ValueError(f"no {', '.join(missing)}")
            json.loads(state["tracker"])
        # A damaged pickle fails in many ways (zip, unpickling, EOF, decoding): all mean "cannot resume from it".
        except Exception as exc:  # noqa: BLE001
            raise IS5NetError(f"{path} is damaged ({_reason(exc)})") from None
        return Resumed(entry["phase"], int(state["step"]), weights, state)

    def resume_point(self) -> Optional[Resumed]:
        """The newest checkpoint that reads whole, or None when the run has none yet.

        The one ``latest.json`` names comes first; if it (or ``latest.json`` itself) is damaged, the newest
        older one on disk, with a warning naming what was passed over. When checkpoints exist but none reads,
        an :class:`IS5NetError` names the damaged file: starting over silently would discard the run.
        """
        damaged: list[str] = []
        try:
            named = self.latest()
        except IS5NetError as exc:
            named, damaged = None, [str(exc)]
        candidates = self._numbered()
        if named is not None:
            rank = _rank(named["phase"], named["step"])
            candidates = [named] + [e for e in candidates if _rank(e["phase"], e["step"]) < rank]
        for entry in candidates:
            try:
                resumed = self.load(entry)
            except IS5NetError as exc:
                damaged.append(str(exc))
                continue
            if damaged:
                log.warning("%s: resuming from %s instead", "; ".join(damaged), entry["weights"])
            return resumed
        if damaged:
            raise IS5NetError(f"cannot resume: {damaged[0]}, and no older checkpoint in {self.dir} is whole")
        return None

    def _numbered(self) -> list[dict]:
        """Every numbered weights + state pair on disk, newest first (phase order, then step)."""
        entries = []
        for p in self.dir.glob("*.safetensors") if self.dir.is_dir() else []:
            m = _NUMBERED.match(p.name)
            if m:
                stem = p.name[: -len(".safetensors")]
                entries.append(
                    {"phase": m.group(1), "step": int(m.group(2)), "weights": p.name, "state": f"{stem}.state.pt"}
                )
        return sorted(entries, key=lambda e: _rank(e["phase"], e["step"]), reverse=True)


def _rank(phase: str, step: int) -> tuple[int, int]:
    return PHASES.index(phase), step


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------------ RNG
def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
        "python_pos": int(random.getstate()[1][-1]),
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if torch.cuda.is_available() and s.get("cuda"):
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(int(v) for v in s["python"]), None))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
