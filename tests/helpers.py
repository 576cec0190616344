"""What many test modules do the same way: run the command line, launch torchrun, train a tiny model, build a
small DIS-layout dataset of real photos. Plain functions (pytest puts tests/ on sys.path); conftest.py wraps
the ones that need pytest's objects as fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from is5net.cli import main

# --- the command line ----------------------------------------------------------------------------------------


def run_cli(capsys, *argv, stdout: bool = False):
    """``is5net *argv`` in this process: ``(exit status, stderr)``, or ``(status, stdout, stderr)``."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return (status, captured.out, captured.err) if stdout else (status, captured.err)


def lines_of(err: str) -> list[str]:
    """The non-empty lines of a command's stderr (an error is one of them, a summary the last)."""
    return [ln for ln in err.strip().splitlines() if ln]


# Left by an outer launcher, these would join the test's processes to its job instead of a job of their own.
_OUTER_JOB = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def torchrun(*argv, processes: int = 2, cpu_only: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """``is5net *argv`` in ``processes`` processes under torchrun, on this machine alone: a standalone
    rendezvous, gloo on the loopback interface, one thread each (the tests share two cores). ``cpu_only``
    hides the GPUs, for a run that must not pick one up."""
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    for name in _OUTER_JOB:
        env.pop(name, None)
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    cmd += ["-m", "is5net.cli", *(str(a) for a in argv)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


# --- training ------------------------------------------------------------------------------------------------

# The refiner phase alone: no GT encoder to train first, no feature loss that would need one.
REFINER_ONLY = ("gt_encoder=false", "feature_loss=false")


def tiny_training(*settings: str, batch_size: int = 4) -> list[str]:
    """``key=value`` overrides that make a training run take seconds on a CPU (the tiny IS5Net at 64 px, no
    loader processes), then ``settings``."""
    return ["model=is5net_tiny", "input_size=64", f"batch_size={batch_size}", "workers=0", *settings]


# --- a DIS-layout dataset of real photos ---------------------------------------------------------------------


def photo(name: str, height: int, width: int) -> np.ndarray:
    """skimage.data's photo ``name`` as an RGB uint8 array of the given size."""
    from skimage import data
    from skimage.transform import resize

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=2)
    return (resize(img[..., :3], (height, width), anti_aliasing=True) * 255).round().astype(np.uint8)


def disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = array.astype(np.uint8) * 255 if array.dtype == bool else array
    Image.fromarray(arr).save(path, **kw)
    return path


def make_dataset(root: Path) -> dict[str, int]:
    """A clean DIS-layout dataset; returns stem -> expected number of samples (enrich on, no jitter).

    DIS-TR: coffee (one disc: 1 sample), astronaut (two big discs + a 3x3 speck: whole + 2 = 3 samples),
    chelsea (a rectangle, PNG image: 1). DIS-VD: camera (grayscale photo; a rectangle + a speck below
    0.4 %: 1 sample, the rectangle alone).
    """
    tr, vd = root / "DIS-TR", root / "DIS-VD"
    save(tr / "im" / "coffee.jpg", photo("coffee", 96, 128), quality=95)
    save(tr / "gt" / "coffee.png", disc(96, 128, 48, 64, 25))

    save(tr / "im" / "astronaut.jpg", photo("astronaut", 112, 112), quality=95)
    gt = disc(112, 112, 30, 30, 15) | disc(112, 112, 75, 80, 20)
    gt[100:103, 5:8] = True  # 9 px < 0.4 % of 12544 (50 px): part of the whole mask, not its own sample
    save(tr / "gt" / "astronaut.png", gt)

    save(tr / "im" / "chelsea.png", photo("chelsea", 80, 120))
    rect = np.zeros((80, 120), bool)
    rect[10:60, 20:100] = True
    save(tr / "gt" / "chelsea.png", rect)

    cam = photo("camera", 64, 64)[:, :, 0]
    save(vd / "im" / "camera.png", cam)
    gt = np.zeros((64, 64), bool)
    gt[8:40, 10:50] = True
    gt[60, 60] = True
    save(vd / "gt" / "camera.png", gt)
    return {"coffee": 1, "astronaut": 3, "chelsea": 1, "camera": 1}


def random_hq_sam_file(directory: Path, seed: int) -> tuple[Path, dict]:
    """A seeded random HQ-SAM ``vit_tiny`` saved as its publisher names it: ``(path, state_dict)``."""
    import torch

    from is5net.inference.stage1 import build_hq_sam

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = build_hq_sam("vit_tiny").state_dict()
    path = Path(directory) / "sam_hq_vit_tiny.pth"
    torch.save(state, path)
    return path, state
