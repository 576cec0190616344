"""The refiner as an ONNX model that runs without PyTorch (ONNX Runtime, OpenVINO, TensorRT ...).

The graph is ``input`` (``N x C x S x S`` float32, normalised as docs/input-contract.md) -> ``logits``
(``N x 1 x S x S`` float32, side output 1 **before** sigmoid: what ``refiner.forward_logits`` returns). The
steps around it (building the input, sigmoid/resize/normalise of the output) stay :mod:`is5net.contract`'s;
what a runtime needs to redo them travels in the model's ``metadata_props`` (:func:`refiner_metadata`):
input size, channels, mean, std and the region the input covers.

BatchNorm is folded into the convolutions before export (the same arithmetic in eval mode), so the graph
is convolutions, ReLUs, pools, concatenations and resizes: operators every runtime fuses well.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from . import __version__
from .checkpoint import RefinerConfig
from .errors import IS5NetError
from .io import atomic_path

DEFAULT_OPSET = 17  # ONNX Runtime >= 1.11 and OpenVINO >= 2022.3 read it; Resize/Pool semantics settled by 11
INPUT_NAME, OUTPUT_NAME = "input", "logits"
CHANNEL_NAMES = {5: ["R", "G", "B", "coarse_mask", "box_mask"], 3: ["R", "G", "B"]}


class LogitsOnly(nn.Module):
    """``x -> refiner.forward_logits(x)``: the one output deployment needs (the other five side heads and
    the decoder features are training-only and would cost time and memory in every runtime)."""

    def __init__(self, refiner: nn.Module):
        super().__init__()
        self.refiner = refiner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.refiner.forward_logits(x)


def refiner_config(refiner: nn.Module) -> RefinerConfig:
    return getattr(refiner, "config", None) or RefinerConfig.for_model(refiner)


def refiner_metadata(config: RefinerConfig, fp16: bool = False) -> dict[str, str]:
    """What a runtime needs to build the input and read the output, as ONNX ``metadata_props`` (strings).

    ``region`` says what the ``S x S`` input covers: ``"image"``, the whole image resized (the contract of
    the released weights), or the config's own region (docs/input-contract.md).
    """
    return {
        "format": "is5net-refiner",
        "is5net_version": __version__,
        "model": str(config.model),
        "in_ch": str(config.in_ch),
        "channels": json.dumps(CHANNEL_NAMES.get(int(config.in_ch), [f"c{i}" for i in range(config.in_ch)])),
        "input_size": json.dumps(config.input_size),
        "mean": json.dumps([float(v) for v in config.mean]),
        "std": json.dumps([float(v) for v in config.std]),
        "region": str(getattr(config, "region", "image")),
        "input": f"{INPUT_NAME}: N x C x S x S float32, (x/255 - mean)/std (docs/input-contract.md)",
        "output": f"{OUTPUT_NAME}: N x 1 x S x S float32, side output 1 before sigmoid",
        "weights": "float16" if fp16 else "float32",
    }


def read_metadata(path: os.PathLike | str) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (the weights are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _square(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def export_refiner(
    refiner: nn.Module,
    path: os.PathLike | str,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    fp16: bool = False,
    batch: int = 1,
) -> Path:
    """Write ``refiner`` (IS-Net / IS5Net) as ONNX at ``path``, atomically, with :func:`refiner_metadata`.

    ``dynamic_batch``: the batch dimension is free (else fixed at ``batch``). The spatial size is the
    config's input size, fixed (the resize targets of the decoder are traced as constants).
    ``fp16``: weights stored as float16 (half the file) and cast to float32 in the graph, so every runtime
    computes in float32 and only the weights' rounding differs.
    """
    import onnx

    config = refiner_config(refiner)
    model = refiner.fold_batchnorm() if hasattr(refiner, "fold_batchnorm") else refiner
    model = LogitsOnly(model.float().cpu().eval()).requires_grad_(False)
    x = torch.zeros(batch, int(config.in_ch), *_square(config.input_size))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # The tracer warns that shape comparisons become constants: they are, the input size is fixed.
        # torch >= 2.9 also says the TorchScript exporter is deprecated: the dynamo exporter needs onnxscript
        # and takes several times longer for the same graph here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=int(opset),
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    if fp16:
        _store_weights_fp16(proto)
    del proto.metadata_props[:]
    for key, value in refiner_metadata(config, fp16).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "is5net", __version__
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


def _store_weights_fp16(proto) -> None:
    """Float32 initializers -> float16 initializers plus a Cast back to float32 where they are used."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < 16:  # shapes, scales: tiny, and better exact
            continue
        name = init.name
        half = numpy_helper.from_array(arr.astype(np.float16), name + "_fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT, name=f"cast_{name}"))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)


# ------------------------------------------------------------------------------ cached in-process export
def weights_digest(refiner: nn.Module) -> str:
    """SHA-256 of the refiner's tensors and config: the key of its cached ONNX file."""
    h = hashlib.sha256()
    h.update(json.dumps(refiner_config(refiner).__dict__, sort_keys=True, default=str).encode())
    for name, t in sorted(refiner.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_dir(kind: str = "onnx") -> Path:
    """Where derived models are kept between runs: ``$IS5NET_HOME/cache/<kind>`` (``onnx``: the exports,
    ``int8``: their NNCF-quantised OpenVINO models); no weights file of the user's lives there."""
    from .weights import weights_home

    return weights_home() / "cache" / kind


def cached_onnx(refiner: nn.Module, opset: int = DEFAULT_OPSET, log=None) -> Path:
    """The refiner exported to ONNX (dynamic batch) in :func:`cache_dir`, exported on the first call only.

    The key is the weights' digest, the opset and the torch version, so a changed checkpoint is exported
    again and an unchanged one costs one hash of its tensors (well under a second for the full model).
    """
    key = f"{weights_digest(refiner)[:24]}-op{opset}-torch{torch.__version__.split('+')[0]}"
    path = cache_dir() / f"refiner-{key}.onnx"
    message = f"exporting the refiner to ONNX once (kept in {path.parent} for the next runs)"
    return cached_file(
        path, lambda target: export_refiner(refiner, target, opset=opset, dynamic_batch=True), message, log
    )


def cached_file(path: Path, build, message: str, log=None, companions: tuple[str, ...] = ()) -> Path:
    """The one cache rule of derived models: ``path`` if it is there (marked recently used), else ``build(path)``
    (which writes it atomically) and the folder pruned to the :data:`CACHE_KEEP` most recently used files of
    its kind. ``companions``: suffixes of files that belong to ``path`` (an OpenVINO ``.bin`` beside its
    ``.xml``), deleted with it; ``build`` writes them before ``path``, so ``path`` present means complete.
    The key in the name must hold everything the file depends on: nothing else is checked."""
    if path.exists():
        for p in [path, *(path.with_suffix(s) for s in companions)]:
            with contextlib.suppress(OSError):
                os.utime(p)  # recently used: pruned last
        return path
    if log is not None:
        log(message)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        build(path)
    except OSError as exc:
        raise IS5NetError(
            f"cannot write {path.name} to {path.parent} ({exc}); set IS5NET_HOME to a writable folder"
        ) from None
    # Pruned among files of its own kind (the name's first word: refiner-, encoder-), so one kind's many
    # checkpoints never evict the other's file.
    _prune(path.parent, CACHE_KEEP, f"{path.name.split('-', 1)[0]}-*{path.suffix}", companions)
    return path


#: Models kept in each cache folder (each the size of its weights: 176 MB for the full model in fp32); the
#: least recently used beyond that are deleted, so fine-tuning runs that predict with every checkpoint do not
#: fill the disk.
CACHE_KEEP = 6


def _prune(folder: Path, keep: int, pattern: str = "refiner-*.onnx", companions: tuple[str, ...] = ()) -> None:
    kept = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in kept[keep:]:
        for p in [old, *(old.with_suffix(s) for s in companions)]:
            with contextlib.suppress(OSError):
                p.unlink()


def check_opset(opset: Optional[int]) -> int:
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not 11 <= opset <= 21:
        raise IS5NetError(f"--opset {opset}: choose 11 .. 21 (default {DEFAULT_OPSET})")
    return opset


# ------------------------------------------------------------------------------------ SAM prompt decoder
SAM_DECODER_INPUTS = [
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
]
SAM_DECODER_OUTPUTS = ["masks", "iou_predictions", "low_res_masks"]


def sam_decoder_inputs(sam: nn.Module, points: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of SAM's ONNX prompt decoder (``segment_anything.utils.onnx.SamOnnxModel``), as its own export
    script makes them: a random image embedding, ``points`` prompt points, a mask prompt, the image size."""
    g = torch.Generator().manual_seed(seed)
    dim, grid = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size
    return {
        "image_embeddings": torch.randn(1, dim, *grid, generator=g),
        "point_coords": torch.randint(0, 1024, (1, points, 2), generator=g).float(),
        "point_labels": torch.randint(0, 4, (1, points), generator=g).float(),
        "mask_input": torch.randn(1, 1, *[4 * s for s in grid], generator=g),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([1500.0, 2250.0]),
    }


def export_sam_decoder(sam: nn.Module, path: os.PathLike | str, opset: int = DEFAULT_OPSET) -> Path:
    """SAM's prompt encoder + mask decoder as ONNX, with the official package's exporter (``SamOnnxModel``,
    all four masks: index 0 is the single-mask output, 1..3 the multimask ones, 1 being is5net's "first").

    The number of points is free (a box is two points labelled 2 and 3); the image embedding comes from
    SAM's image encoder, which stays in torch (``SamPredictor.set_image``).
    """
    import onnx
    from segment_anything.utils.onnx import SamOnnxModel

    model = SamOnnxModel(sam.float().cpu().eval(), return_single_mask=False).eval()
    dummy = sam_decoder_inputs(sam)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # tracer and deprecation notes, as in export_refiner
        torch.onnx.export(
            model,
            tuple(dummy.values()),
            buffer,
            input_names=SAM_DECODER_INPUTS,
            output_names=SAM_DECODER_OUTPUTS,
            opset_version=int(opset),
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in {
        "format": "sam-prompt-decoder",
        "exporter": "segment_anything.utils.onnx.SamOnnxModel",
        "embed_dim": str(sam.prompt_encoder.embed_dim),
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
    return Path(path)


def check_sam_decoder(sam: nn.Module, path: os.PathLike | str) -> tuple[float, float]:
    """ONNX Runtime vs torch on the same decoder inputs (3 points): ``(max |diff| of the low-resolution mask
    logits' sigmoid, least IoU of the full-size masks at logit 0)``."""
    import onnxruntime as ort
    from segment_anything.utils.onnx import SamOnnxModel

    inputs = sam_decoder_inputs(sam, points=3, seed=1)
    with torch.inference_mode():
        masks, _, low = SamOnnxModel(sam.float().cpu().eval(), return_single_mask=False)(*inputs.values())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    o_masks, _, o_low = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    diff = float((torch.sigmoid(low) - torch.sigmoid(torch.from_numpy(o_low))).abs().max())
    a, b = masks > 0, torch.from_numpy(o_masks) > 0
    inter, union = (a & b).flatten(2).sum(-1).double(), (a | b).flatten(2).sum(-1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return diff, float(iou.min())
