"""Device and precision choices shared by inference, training and benchmarks."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from .errors import IS5NetError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU; a CUDA request without CUDA is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise IS5NetError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise IS5NetError(f"device {device!r} was asked for, but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise IS5NetError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu", "mps"):
        raise IS5NetError(f"unsupported device {device!r}; use cpu or cuda")
    return dev


#: Precisions of the refiner alone, everything else (stage 1, the torch code around the refiner) computing in fp32:
#: ``int8``, its OpenVINO model quantised by NNCF (is5net.inference.quantize); ``auto``, the command line's
#: default, bf16 where OpenVINO runs it on a CPU with native bf16 units, else fp32
#: (is5net.inference.backends.resolve_precision; docs/deployment.md, "Precision", has the measurement).
REFINER_ONLY = ("int8", "auto")


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The torch dtype of ``precision`` on ``device`` (fp32 for int8 and auto, which are the refiner's alone)."""
    if precision not in PRECISIONS and precision not in REFINER_ONLY:
        raise IS5NetError(f"precision {precision!r}: choose one of {', '.join([*PRECISIONS, *REFINER_ONLY])}")
    if precision == "fp16" and device.type != "cuda":
        raise IS5NetError("fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    if precision == "int8":
        if device.type != "cpu":
            raise IS5NetError(f"int8 runs the refiner through OpenVINO on the CPU, not {device.type}; use --device cpu")
    return PRECISIONS.get(precision, torch.float32)


def autocast(device: torch.device, precision: str):
    """Autocast to bf16/fp16 (convolutions in low precision, reductions in fp32); a no-op for fp32, int8, auto."""
    if precision in ("fp32", *REFINER_ONLY):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])


def enable_fast_cuda() -> None:
    """cuDNN autotuning and TF32 matmuls/convolutions: same math at ~1e-3 relative precision."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
