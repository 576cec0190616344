"""Stage 1's image encoder through ONNX Runtime or OpenVINO, as a drop-in ``nn.Module`` (docs/speed.md).

On a CPU the user waits for stage 1's image encoder, not for the refiner: SAM ViT-B takes seconds per photo
in eager PyTorch. :func:`accelerate` swaps ``model.image_encoder`` of a SAM, HQ-SAM or SAM 2 model for a
:class:`RuntimeEncoder`, so the official predictors (``segment_anything.SamPredictor``,
``segment_anything_hq.SamPredictor``, ``sam2``'s ``SAM2ImagePredictor``) and is5net's stages run unchanged.

The encoder is exported once to ONNX (input ``1 x 3 x S x S`` float32, normalised and padded as each
predictor feeds it; S = 1024 for every released model), its outputs flattened in ``torch.utils._pytree``
order and unflattened again at run time: SAM's a tensor, HQ-SAM's ``(embeddings, interm_embeddings)``, SAM
2's dict of lists. The file is kept under ``$IS5NET_HOME/cache/onnx`` by :func:`is5net.export.cached_file`
(the refiner's cache rule), keyed by the weights, and only after the export ran the astronaut as torch does
(:func:`is5net.inference.export_check.check_encoder_outputs`). Which runtime ``auto`` means is the
refiner's rule (:func:`is5net.inference.backends.resolve_backend`): on a CPU the fastest installed one, on
CUDA torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn

from .. import __version__
from ..errors import IS5NetError
from ..export import DEFAULT_OPSET, cache_dir, cached_file, read_metadata
from .backends import OnnxRuntimeBackend, OpenVINOBackend, installed, resolve_backend
from .export_check import check_encoder_outputs, encoder_check_input

log = logging.getLogger("is5net")

ENCODER_FORMAT = "is5net-image-encoder"
_FORMAT_VERSION = "1"  # bumped when the file's layout changes, so old cache entries are not read
INPUT_NAME = "image"
#: Weights above this size go to a ``.data`` file beside the ``.onnx`` (protobuf stops at 2 GiB; SAM
#: ViT-H's encoder alone is 2.5 GB).
EXTERNAL_DATA_BYTES = 1 << 30
PRECISIONS = ("fp32", "bf16")


class _Flat(nn.Module):
    """The encoder with its outputs as one flat tuple (what ONNX can name), in ``_pytree`` order."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> tuple:
        return tuple(pytree.tree_leaves(self.encoder(x)))


def _output_names(out) -> list[str]:
    """``embeddings``-style names from the outputs' paths: ``vision_features``, ``backbone_fpn.0``, ``1.0``."""
    names = []
    for path, _ in pytree.tree_flatten_with_path(out)[0]:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        names.append(".".join(parts) or "output")
    return [n if not n[0].isdigit() else f"output.{n}" for n in names]


def encoder_digest(encoder: nn.Module, input_size: int, key: Optional[str] = None) -> str:
    """The cache key: SHA-256 of the encoder's class, input size and tensors (or of ``key``, the caller's
    own name for exactly these weights, e.g. the checkpoint's SHA-256 and type, which skips the hashing)."""
    h = hashlib.sha256()
    cls = type(encoder)
    h.update(f"{ENCODER_FORMAT} v{_FORMAT_VERSION} {cls.__module__}.{cls.__qualname__} {int(input_size)}".encode())
    if key is not None:
        h.update(f"key {key}".encode())
        return h.hexdigest()
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _weight_bytes(encoder: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in encoder.state_dict().values())


def export_encoder(
    encoder: nn.Module, path: Path, input_size: int, opset: int = DEFAULT_OPSET, external: Optional[bool] = None
) -> list[torch.Tensor]:
    """Write ``encoder`` as ONNX at ``path`` (plain write: the caller makes it atomic); returns torch's outputs
    on :func:`encoder_check_input`, flattened, for the parity check.

    ``external``: weights in ``path.with_suffix(".data")`` (None: when above :data:`EXTERNAL_DATA_BYTES`).
    The metadata holds the output structure (``treespec``), the output names and the input size.
    """
    import onnx

    encoder = encoder.eval()
    flat = _Flat(encoder).eval()
    x = encoder_check_input(input_size)
    with torch.inference_mode():
        out = encoder(x)
    names, spec = _output_names(out), pytree.tree_structure(out)
    external = _weight_bytes(encoder) > EXTERNAL_DATA_BYTES if external is None else bool(external)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        traced = Path(tmp) / "traced.onnx"  # a file path: the exporter writes > 2 GiB models only to files
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the tracer's constant-shape notes; the TorchScript exporter's deprecation
            torch.onnx.export(
                flat,
                (torch.zeros_like(x),),  # not the check image: a branch frozen on zeros then shows in the check
                str(traced),
                input_names=[INPUT_NAME],
                output_names=names,
                opset_version=int(opset),
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(_fold_shapes(traced, external)))  # with any external tensors, into memory
    meta = {
        "format": ENCODER_FORMAT,
        "format_version": _FORMAT_VERSION,
        "is5net_version": __version__,
        "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "input_size": str(int(input_size)),
        "treespec": pytree.treespec_dumps(spec),
        "outputs": json.dumps(names),
    }
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name, proto.producer_version = "is5net", __version__
    if external:
        onnx.save_model(
            proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
            location=path.with_suffix(".data").name, size_threshold=1024,
        )  # fmt: skip
    else:
        onnx.save_model(proto, str(path))
    return list(pytree.tree_leaves(out))


def _fold_shapes(traced: Path, external: bool) -> Path:
    """The traced graph with its shape arithmetic folded into constants, by ONNX Runtime's basic
    optimisations (constant folding and redundant nodes; standard ONNX operators only, any runtime reads
    them). The tracer records SAM 2's window padding and position-embedding tiling as operators, two of
    them ``If``: OpenVINO then sees every shape as dynamic, took 270 s to compile SAM 2.1 tiny and ran it
    slower; folded, it compiles in 0.5 s. Without ONNX Runtime the traced graph is kept as it is."""
    if not installed("onnxruntime"):
        return traced
    import onnxruntime as ort

    folded = traced.with_name("folded.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    if external:
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "folded.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    with _quiet_onnxruntime():
        ort.InferenceSession(str(traced), options, providers=["CPUExecutionProvider"])
    return folded


def _checked_export(encoder: nn.Module, path: Path, input_size: int, opset: int, external, runtime: str, log) -> None:
    """Export into a private folder beside ``path``, run the parity check there on ``runtime`` (fp32), and
    only then move the file (its ``.data`` first) into place: a file that fails is never seen by a later run."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".encoder-") as tmp:
        staged = Path(tmp) / path.name
        reference = export_encoder(encoder, staged, input_size, opset, external)
        names = json.loads(read_metadata(staged)["outputs"])
        with torch.inference_mode():
            got = RuntimeEncoder(staged, runtime, "fp32").run_flat(encoder_check_input(input_size).numpy())
        passed, line = check_encoder_outputs(reference, got, names, runtime)
        if not passed:
            raise IS5NetError(f"the exported stage-1 image encoder does not match torch ({line}); use --backend torch")
        if log is not None:
            log(f"stage-1 encoder export: {line}")
        if staged.with_suffix(".data").exists():
            os.replace(staged.with_suffix(".data"), path.with_suffix(".data"))
        os.replace(staged, path)


def cached_encoder_onnx(
    encoder: nn.Module,
    input_size: int,
    opset: int = DEFAULT_OPSET,
    key: Optional[str] = None,
    external: Optional[bool] = None,
    log: Optional[Callable[[str], None]] = None,
    runtime: Optional[str] = None,
) -> Path:
    """The encoder's checked ONNX export in :func:`is5net.export.cache_dir`, exported on the first call only.

    ``runtime``: what runs the parity check (``onnxruntime`` or ``openvino``; default the runtime asked
    for, else ONNX Runtime when installed): the one about to run the file is the one worth checking.

    The name holds the weights' digest (:func:`encoder_digest`), the opset and the torch version: changed
    weights are another file, unchanged ones cost one hash of their tensors (about a second for ViT-H).
    """
    runtime = runtime or ("onnxruntime" if installed("onnxruntime") else "openvino")
    digest = encoder_digest(encoder, input_size, key)[:24]
    path = cache_dir() / f"encoder-{digest}-op{int(opset)}-torch{torch.__version__.split('+')[0]}.onnx"
    message = (
        f"exporting the stage-1 image encoder ({type(encoder).__name__}) to ONNX once, with its check against "
        f"torch (kept in {path.parent} for the next runs)"
    )
    return cached_file(
        path, lambda p: _checked_export(encoder, p, input_size, opset, external, runtime, log), message, log, (".data",)
    )


class _OrtEncoder(OnnxRuntimeBackend):
    """The refiner's ONNX Runtime session (its options, one per process), every output returned."""

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


class _OpenVINOEncoder(OpenVINOBackend):
    """The refiner's OpenVINO model (latency hint, precision hint, compiled once), every output returned."""

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        compiled, request, _ = self._compile(1)
        with self._lock:  # one infer request: calls from several threads take turns
            result = request.infer({0: x})
            return [result[out].copy() for out in compiled.outputs]  # the request reuses its buffers


class RuntimeEncoder(nn.Module):
    """A stage-1 image encoder run by ONNX Runtime or OpenVINO from its exported file.

    ``forward(x)``: ``x`` ``B x 3 x S x S`` float32 (as the predictors feed the torch encoder); returns torch
    tensors on ``x``'s device in the torch encoder's structure. Images of a batch run one at a time (the
    file's batch is 1). ``precision``: ``fp32``, ``bf16`` (OpenVINO's inference precision hint) or None
    (OpenVINO's own choice: bf16 on CPUs with bf16 units). :attr:`description` says what runs.
    """

    def __init__(self, onnx_path: os.PathLike | str, backend: str, precision: Optional[str] = "fp32", threads=None):
        super().__init__()
        meta = read_metadata(onnx_path)
        if meta.get("format") != ENCODER_FORMAT:
            raise IS5NetError(f"{onnx_path}: not a stage-1 image encoder exported by is5net")
        self.onnx_path = Path(onnx_path)
        self.spec = pytree.treespec_loads(meta["treespec"])
        self.output_names = json.loads(meta["outputs"])
        self.img_size = int(meta["input_size"])  # the SAM predictors read image_encoder.img_size
        if backend == "onnxruntime":
            if precision not in (None, "fp32"):
                raise IS5NetError(f"the onnxruntime backend computes in fp32 only (asked: {precision}); use openvino")
            with _quiet_onnxruntime():
                self.runner = _OrtEncoder(self.onnx_path, threads=threads)
        elif backend == "openvino":
            self.runner = _OpenVINOEncoder(self.onnx_path, precision=precision, threads=threads)
        else:
            raise IS5NetError(f"backend {backend!r}: a runtime encoder runs on onnxruntime or openvino")
        self.backend = backend

    @property
    def description(self) -> str:
        return self.runner.description

    def run_flat(self, x: np.ndarray) -> list[np.ndarray]:
        return self.runner.run_all(np.ascontiguousarray(x, dtype=np.float32))

    def forward(self, x: torch.Tensor):
        s = self.img_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise IS5NetError(f"the image encoder takes B x 3 x {s} x {s}, got {tuple(x.shape)}")
        images = x.detach().to("cpu", torch.float32).numpy()
        runs = [self.run_flat(images[i : i + 1]) for i in range(images.shape[0])]
        leaves = [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*runs)]
        return pytree.tree_unflatten([torch.from_numpy(a).to(x.device) for a in leaves], self.spec)

    def extra_repr(self) -> str:
        return f"{self.onnx_path.name}, {self.description}"


@contextlib.contextmanager
def _quiet_onnxruntime():
    """ONNX Runtime warns when it merges the shapes of SAM 2's padded windows (harmless: the check passed);
    errors still show."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)


def _input_size(model_or_encoder: nn.Module, encoder: nn.Module) -> int:
    size = getattr(encoder, "img_size", None) or getattr(model_or_encoder, "image_size", None)
    if size is None:
        raise IS5NetError(f"{type(encoder).__name__}: give input_size (the encoder has no img_size)")
    return int(size)


def _check_precision(precision: Optional[str]) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise IS5NetError(f"stage-1 precision {precision!r}: choose one of {', '.join(PRECISIONS)}")


def _device(module: nn.Module) -> torch.device:
    t = next(iter(module.parameters()), None)
    return torch.device("cpu") if t is None else t.device


def runtime_image_encoder(
    encoder: nn.Module,
    backend: Optional[str] = "auto",
    precision: Optional[str] = "fp32",
    key: Optional[str] = None,
    input_size: Optional[int] = None,
    threads: Optional[int] = None,
    log: Optional[Callable[[str], None]] = log.info,
) -> nn.Module:
    """``encoder`` on ``backend`` (``auto``, ``torch``, ``onnxruntime``, ``openvino``): the encoder itself for
    torch, else a :class:`RuntimeEncoder` (in eval mode) from the cached, checked export.

    ``key``: the caller's name for these weights (skips hashing them); ``input_size``: S of the
    ``1 x 3 x S x S`` input (default ``encoder.img_size``). Raises :class:`IS5NetError` on a backend that
    is not installed or does not run on the encoder's device, and on an export that fails its check.
    """
    _check_precision(precision)
    name = resolve_backend(backend, _device(encoder))
    if name == "torch" or isinstance(encoder, RuntimeEncoder):
        return encoder
    if name == "onnxruntime" and precision not in (None, "fp32"):
        raise IS5NetError(f"the onnxruntime backend computes in fp32 only (asked: {precision}); use openvino")
    size = int(input_size) if input_size is not None else _input_size(encoder, encoder)
    path = cached_encoder_onnx(encoder, size, key=key, log=log, runtime=name)
    return RuntimeEncoder(path, name, precision, threads).eval()


def accelerate(
    model: nn.Module,
    backend: Optional[str] = "auto",
    precision: Optional[str] = "fp32",
    key: Optional[str] = None,
    threads: Optional[int] = None,
    log: Optional[Callable[[str], None]] = log.info,
) -> nn.Module:
    """Swap ``model.image_encoder`` (SAM, HQ-SAM, SAM 2) for its :func:`runtime_image_encoder`; returns ``model``.

    The official predictors then run unchanged, with the encoder in ONNX Runtime or OpenVINO. ``torch``
    (and ``auto`` on CUDA) leaves the model as it is; the torch encoder's weights are released otherwise.
    """
    encoder = getattr(model, "image_encoder", None)
    if not isinstance(encoder, nn.Module):
        raise IS5NetError(f"{type(model).__name__} has no image_encoder: expected a SAM, HQ-SAM or SAM 2 model")
    _check_precision(precision)
    size = _input_size(model, encoder) if not isinstance(encoder, RuntimeEncoder) else encoder.img_size
    # The model's device decides (the encoder alone may have been swapped already, holding no weights).
    name = resolve_backend(backend, _device(model))
    swapped = runtime_image_encoder(encoder, name, precision, key, size, threads, log)
    if swapped is not encoder:
        model.image_encoder = swapped
    return model


def stage1_precision(precision: Optional[str], backend: str) -> str:
    """The image encoder's precision for the predictor's ``--precision`` on runtime ``backend``.

    Only an explicit ``bf16`` runs the encoder in bf16. ``auto`` keeps it in fp32 even where the refiner
    goes bf16: ``benchmarks/bench_e2e_cpu.py`` measured the encoder alone in bf16 moving the final masks to
    IoU .973 (SAM ViT-B) and .983 (SAM 2.1 tiny) against fp32, under the .99 bar (docs/speed.md).
    ``int8`` and ``fp16`` are the refiner's alone.
    """
    return "bf16" if precision == "bf16" else "fp32"


def accelerate_stage1(model: nn.Module, backend: Optional[str], precision: Optional[str] = "fp32") -> nn.Module:
    """:func:`accelerate` with the predictor's ``backend`` and ``precision`` (:func:`stage1_precision`)."""
    name = resolve_backend(backend, _device(model))
    return accelerate(model, name, stage1_precision(precision, name))
