"""Runtimes for the refiner's forward pass: PyTorch, ONNX Runtime, OpenVINO.

A backend is a callable ``logits = backend(x)``: ``x`` is the refiner input ``N x C x S x S`` float32
(a torch tensor or a numpy array), ``logits`` side output 1 before sigmoid, ``N x 1 x S x S`` float32, of the
same kind (a tensor on ``x``'s device, or an array). Everything around the call (the input and output rules)
stays :mod:`is5net.contract`'s, run by the predictor.

A backend is built once per process (:func:`create_backend`) and reused: the ONNX export of a torch
refiner is cached on disk (:func:`is5net.export.cached_onnx`), an ONNX Runtime session and an OpenVINO
compiled model live as long as the backend. ``auto`` picks, on a CPU, the fastest installed backend that
matches the reference (``benchmarks/bench_backends.py`` measures it): OpenVINO, then ONNX Runtime, then
torch; on CUDA, torch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..defaults import BACKENDS
from ..errors import IS5NetError
from ..runtime import autocast, check_precision

log = logging.getLogger("is5net")

#: ``auto`` on a CPU: the first of these that is installed (fastest first, as bench_backends.py measured).
CPU_PREFERENCE = ("openvino", "onnxruntime", "torch")
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}
_INSTALL = "pip install 'is5net[onnx]' (or: pip install onnxruntime openvino)"

ArrayOrTensor = Union[torch.Tensor, np.ndarray]
RefinerSource = Union[nn.Module, str, os.PathLike]


def installed(name: str) -> bool:
    """Whether backend ``name``'s package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(_MODULES[name]) is not None
    except (ImportError, ValueError):  # a broken or blocked package is as good as none
        return False


def backend_versions() -> dict[str, Optional[str]]:
    """name -> installed version (None when not installed), read from the package metadata."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Optional[str]] = {}
    for name in BACKENDS:
        try:
            out[name] = version(name) if installed(name) else None
        except PackageNotFoundError:
            out[name] = "installed"
    return out


def resolve_backend(name: Optional[str], device: torch.device) -> str:
    """``auto``/None -> a concrete backend for ``device``; a named one checked (installed, runs there).

    Raises :class:`IS5NetError` with one line saying what to install or which device to use.
    """
    name = "auto" if name is None else str(name).lower()
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        return next(b for b in CPU_PREFERENCE if installed(b))
    if name not in BACKENDS:
        raise IS5NetError(f"backend {name!r}: choose one of auto, {', '.join(BACKENDS)}")
    if not installed(name):
        raise IS5NetError(f"backend {name!r} is not installed; {_INSTALL}")
    if name != "torch" and device.type != "cpu":
        raise IS5NetError(
            f"backend {name!r} runs the refiner on the CPU here; use --device cpu, or the torch "
            f"backend on {device.type}"
        )
    return name


class TorchBackend:
    """The predictor's torch path: BatchNorm folded (``fast``), channels-last and autocast on CUDA."""

    name = "torch"

    def __init__(self, refiner: nn.Module, device: torch.device, precision: str = "fp32", fast: bool = True):
        if precision == "int8":
            check_int8_backend(self.name)
        check_precision(precision, device)
        refiner = refiner.eval()
        if fast and hasattr(refiner, "fold_batchnorm"):
            refiner = refiner.fold_batchnorm()
        self.device, self.precision = device, precision
        self.channels_last = fast and device.type == "cuda"
        refiner = refiner.to(device)
        if self.channels_last:
            refiner = refiner.to(memory_format=torch.channels_last)
        self.refiner = refiner.requires_grad_(False)

    @property
    def description(self) -> str:
        return f"torch {torch.__version__.split('+')[0]} on {self.device}, {self.precision}"

    @torch.inference_mode()
    def __call__(self, x: ArrayOrTensor) -> ArrayOrTensor:
        as_numpy = isinstance(x, np.ndarray)
        t = torch.from_numpy(x) if as_numpy else x
        t = t.to(self.device)
        if self.channels_last:
            t = t.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            logits = self.refiner.forward_logits(t)
        logits = logits.float()
        return logits.cpu().numpy() if as_numpy else logits

    forward_logits = __call__  # so the predictor can hold it where a refiner module would be


class _OnnxBackend:
    """Shared by the ONNX backends: numpy in and out, a torch tensor given is returned on its device."""

    name = ""
    onnx_path: Path

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: ArrayOrTensor) -> ArrayOrTensor:
        if isinstance(x, np.ndarray):
            return self.run(np.ascontiguousarray(x, dtype=np.float32))
        out = self.run(np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()))
        return torch.from_numpy(out).to(x.device)

    forward_logits = __call__  # so the predictor can hold it where a refiner module would be


class OnnxRuntimeBackend(_OnnxBackend):
    """ONNX Runtime on the CPU, all graph optimisations, one session for the process."""

    name = "onnxruntime"

    def __init__(self, onnx_path: os.PathLike | str, threads: Optional[int] = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        self.onnx_path = Path(onnx_path)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.version = ort.__version__
        self.precision = "fp32"

    @property
    def description(self) -> str:
        return f"onnxruntime {self.version} on cpu, fp32"

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


#: is5net's precision names -> OpenVINO's inference precision hint.
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


class OpenVINOBackend(_OnnxBackend):
    """OpenVINO on the CPU (latency hint): compiled once for batch 1 and once for other batches, reused.

    ``precision``: None lets OpenVINO choose, which on CPUs with bf16 units (avx512_bf16, AMX) is bf16;
    ``"fp32"`` forces float32 (``INFERENCE_PRECISION_HINT=f32``), ``"bf16"`` asks for bf16.
    :attr:`precision` is what the compiled model reports it uses.
    """

    name = "openvino"

    def __init__(self, onnx_path: os.PathLike | str, precision: Optional[str] = None, threads: Optional[int] = None):
        import openvino as ov

        if precision is not None and precision not in _OV_PRECISION:
            raise IS5NetError(f"precision {precision!r}: choose one of {', '.join(_OV_PRECISION)}")
        self.onnx_path = Path(onnx_path)
        self.core = ov.Core()
        self.model = self.core.read_model(str(onnx_path))
        self.config: dict[str, str] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision is not None:
            self.config["INFERENCE_PRECISION_HINT"] = _OV_PRECISION[precision]
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = str(int(threads))
        self.version = ov.get_version().split("-")[0]
        self._compiled: dict[int, tuple] = {}
        self._lock = threading.RLock()
        self.precision = self._compile(1)[2]  # compile now: errors (and the precision) show at start-up

    def _compile(self, batch: int) -> tuple:
        # Batch 1 (one box, the usual case) gets a static shape, which lets OpenVINO pick its kernels for
        # exactly that input; other batches share one dynamic-batch model, so a server seeing every batch
        # size from 1 to 8 compiles (and holds the weights) twice, not eight times.
        key = 1 if batch == 1 else 0
        with self._lock:
            if key not in self._compiled:
                model = self.model.clone()
                if key == 1:
                    shape = list(model.input(0).get_partial_shape())
                    shape[0] = 1
                    model.reshape({model.input(0): shape})
                compiled = self.core.compile_model(model, "CPU", self.config)
                self._compiled[key] = (compiled, compiled.create_infer_request(), _ov_precision(compiled))
            return self._compiled[key]

    @property
    def description(self) -> str:
        return f"openvino {self.version} on cpu, {self.precision}"

    def run(self, x: np.ndarray) -> np.ndarray:
        compiled, request, _ = self._compile(int(x.shape[0]))
        with self._lock:  # one infer request per compiled model: calls from several threads take turns
            return request.infer({0: x})[compiled.output(0)].copy()


def _ov_precision(compiled) -> str:
    """The inference precision a compiled OpenVINO model reports, in is5net's names (fp32, bf16, fp16)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    text = getattr(value, "get_type_name", lambda: str(value))()
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(text, text)


def create_backend(
    name: Optional[str],
    refiner: RefinerSource,
    device: Optional[torch.device] = None,
    precision: Optional[str] = "fp32",
    fast: bool = True,
    threads: Optional[int] = None,
    calibration=None,
):
    """Build the backend ``name`` (``auto``, ``torch``, ``onnxruntime``, ``openvino``) for ``refiner``.

    ``refiner``: a torch module, or (ONNX backends only) the path of an ONNX file made by ``is5net
    export-onnx``. A module is exported once and cached (:func:`is5net.export.cached_onnx`).
    ``precision``: ``fp32`` (default: every backend then matches the reference), ``bf16``/``fp16``, None
    for the runtime's own choice (OpenVINO: bf16 on CPUs with bf16 units; torch and ONNX Runtime: fp32), or
    ``int8`` (OpenVINO only: the model quantised by NNCF on ``calibration``, :mod:`is5net.inference.quantize`),
    or ``auto`` (:func:`resolve_precision`: bf16 for OpenVINO on CPUs with native bf16, else fp32).
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    name = resolve_backend(name, device)
    precision = resolve_precision(precision, name)
    if precision == "int8":
        check_int8_backend(name)
        from .quantize import int8_backend

        return int8_backend(refiner, calibration, threads=threads)
    if name == "torch":
        if not isinstance(refiner, nn.Module):
            raise IS5NetError(f"the torch backend needs the refiner's weights (.pth/.safetensors), not {refiner}")
        return TorchBackend(refiner, device, precision or "fp32", fast=fast)
    if name == "onnxruntime" and precision not in (None, "fp32"):
        raise IS5NetError(
            f"the onnxruntime backend computes in fp32 only (asked: {precision}); use openvino or torch for {precision}"
        )
    if isinstance(refiner, nn.Module):
        from ..export import cached_onnx

        onnx_path = cached_onnx(refiner, log=log.info)
    else:
        onnx_path = Path(refiner)
        if not onnx_path.is_file():
            raise IS5NetError(f"{onnx_path}: no such ONNX file")
    if name == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, threads=threads)
    return OpenVINOBackend(onnx_path, precision=precision, threads=threads)


def native_bf16() -> bool:
    """Whether OpenVINO's CPU plug-in computes bf16 natively here (AVX512_BF16 or AMX): its
    ``OPTIMIZATION_CAPABILITIES`` list BF16. Without such units bf16 is emulated, slower than fp32."""
    global _NATIVE_BF16
    if _NATIVE_BF16 is None:
        try:
            import openvino as ov

            _NATIVE_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        except Exception:  # noqa: BLE001 - no OpenVINO, or no CPU plug-in: no native bf16 to use
            _NATIVE_BF16 = False
    return _NATIVE_BF16


_NATIVE_BF16: Optional[bool] = None


def resolve_precision(precision: Optional[str], name: str) -> Optional[str]:
    """``auto`` -> the refiner's precision on backend ``name``: bf16 for OpenVINO on a CPU with native bf16
    (measured on the demo: maxFβ -0.0002, HCEγ +2 %, masks IoU .998 with fp32; docs/deployment.md), else fp32.
    Any other value is returned as it is."""
    if precision != "auto":
        return precision
    return "bf16" if name == "openvino" and native_bf16() else "fp32"


def check_int8_backend(name: str) -> None:
    """int8 is OpenVINO's (NNCF quantises OpenVINO models): any other backend is one line saying so."""
    if name != "openvino":
        hint = "" if installed("openvino") else f"; {_INSTALL}"
        raise IS5NetError(
            f"--precision int8 runs through OpenVINO only, not {name}: use --backend openvino or auto{hint}"
        )


def refiner_runner(backend, refiner: nn.Module, device: torch.device, precision: str = "fp32", calibration=None):
    """For :class:`is5net.IS5NetPredictor`: ``(runner, description)``.

    ``runner`` is None when the predictor's own torch path runs the refiner (``"torch"``, or ``"auto"`` on
    CUDA), else a backend whose ``forward_logits`` takes the refiner's place. ``backend``: a name or a ready
    backend object (anything with ``forward_logits`` and ``description``). ``precision`` is the
    predictor's: ``fp32`` asks OpenVINO for fp32 too, so every backend matches the reference unless
    ``bf16`` is asked for; ``int8`` takes OpenVINO and ``calibration`` (:mod:`is5net.inference.quantize`);
    ``auto``: :func:`resolve_precision`.
    """
    if not isinstance(backend, str) and backend is not None:
        if not callable(getattr(backend, "forward_logits", None)):
            raise IS5NetError(f"backend {backend!r}: expected a name ({', '.join(BACKENDS)}, auto) or a backend object")
        return backend, getattr(backend, "description", type(backend).__name__)
    name = resolve_backend(backend, device)
    precision = resolve_precision(precision, name)
    if precision == "int8":
        check_int8_backend(name)
    if name == "torch":
        return None, f"torch {torch.__version__.split('+')[0]} on {device}, {precision}"
    runner = create_backend(name, refiner, device, precision, calibration=calibration)
    return runner, runner.description
