"""Helpers shared by the benchmarks: timing with CUDA sync, realistic inputs, BN statistics calibration."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, iters: int, warmup: int) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


@contextlib.contextmanager
def torch_defaults():
    """PyTorch's default backend flags (what the official code runs with), restored afterwards."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default: cuDNN convolutions already use TF32
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved


def calibrate_batchnorm(model: torch.nn.Module, in_ch: int, size: int = 128, steps: int = 3, seed: int = 0) -> None:
    """Give a random-weight model realistic BatchNorm statistics (train-mode passes), then eval mode."""
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration passes
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand(2, in_ch, size, size, generator=g).to(device) - 0.5)
    model.eval()


def calibrate_output(model: torch.nn.Module, x: torch.Tensor, target_std: float = 3.0) -> None:
    """Rescale the final side head so the output logits are centred with spread ``target_std``.

    A random network's output otherwise saturates (sigmoid all 0 or 1), which would make any two
    computations "agree" perfectly; a spread-out map makes the agreement numbers mean something.
    """
    with torch.no_grad():
        logits = model.forward_logits(x)
        mean, std = logits.mean(), logits.std().clamp_min(1e-6)
        model.side1.weight.mul_(target_std / std)
        model.side1.bias.sub_(mean).mul_(target_std / std)


def real_input(batch: int, in_ch: int, size: int) -> torch.Tensor:
    """A normalised refiner input built from real photos (skimage.data), with a box and a rough mask."""
    from skimage import data
    from skimage.transform import resize

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    xs = []
    for i in range(batch):
        img = resize(photos[i % len(photos)], (size, size), anti_aliasing=False).astype(np.float32)
        chans = [img[..., c] - 0.5 for c in range(3)]
        if in_ch == 5:
            box = np.zeros((size, size), np.float32)
            a, b = size // 8, size - size // 8
            box[a:b, a:b] = 1.0
            yy, xx = np.mgrid[:size, :size]
            blob = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).astype(np.float32)
            chans += [blob, box]
        xs.append(np.stack(chans))
    return torch.from_numpy(np.stack(xs))
