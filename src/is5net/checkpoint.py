"""Load official IS-Net / DIS-SAM ``.pth`` files and our ``.safetensors``; save ours with metadata.

Official files are plain ``torch.save(state_dict)`` (sometimes with a ``module.`` prefix from
DataParallel, the DIS-SAM release saved from CUDA tensors). They are read with
``torch.load(..., map_location="cpu", weights_only=True)``: never unpickle arbitrary code.
Our files are safetensors whose metadata carries the model config (name, input channels, width,
input size, mean, std), so a refiner trained at 512² is run at 512².
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .defaults import DEFAULT_INPUT_SIZE
from .errors import CheckpointError
from .io import atomic_path
from .modeling.build import model_name_for
from .modeling.isnet import GTEncoder, ISNet

FORMAT_TAG = "is5net"
#: The refiner halves its input six times (a stride-2 stem, then five pools): a side that is a multiple of
#: 32 keeps the coarsest maps whole and every skip connection the size of its upsampled partner, as the
#: training configuration requires too (``input_size`` in ``is5net.train.config``).
INPUT_SIZE_MULTIPLE = 32


def check_input_size(size, what: str = "input size") -> None:
    """Raise :class:`CheckpointError` unless ``size`` (an int, or a (height, width) pair) is a multiple of
    :data:`INPUT_SIZE_MULTIPLE` of at least that much: what the refiner can run at."""
    sides = size if isinstance(size, (list, tuple)) else [size]
    ok = len(sides) in (1, 2) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= INPUT_SIZE_MULTIPLE and v % INPUT_SIZE_MULTIPLE == 0
        for v in sides
    )
    if not ok:
        raise CheckpointError(
            f"{what} {size!r}: expected a multiple of {INPUT_SIZE_MULTIPLE}, at least "
            f"{INPUT_SIZE_MULTIPLE} (e.g. {DEFAULT_INPUT_SIZE}, the reference)"
        )


def default_mean(in_ch: int) -> list[float]:
    """The reference normalisation: 0.5 for RGB, 0 for the mask channels (std is 1 everywhere)."""
    return [0.5, 0.5, 0.5, 0.0, 0.0][:in_ch] if in_ch in (3, 5) else [0.5] * min(in_ch, 3) + [0.0] * max(0, in_ch - 3)


@dataclass
class RefinerConfig:
    """How a refiner expects its input: what the predictor honours."""

    model: str = "is5net"
    in_ch: int = 5
    width: float = 1.0
    input_size: int = DEFAULT_INPUT_SIZE
    mean: list[float] = field(default_factory=lambda: default_mean(5))
    std: list[float] = field(default_factory=lambda: [1.0] * 5)
    # What part of the image the refiner was trained to see (docs/input-contract.md, "Regions"): "image"
    # for the official checkpoints and for files written before regions existed.
    region: str = "image"
    # The working scale of the tiles region it was trained with (contract.work_scale): 1.0 (native) for the
    # official checkpoints and for files written before the setting existed.
    tile_scale: float = 1.0

    @classmethod
    def for_model(cls, model: nn.Module, input_size: int = DEFAULT_INPUT_SIZE) -> "RefinerConfig":
        in_ch, width = int(model.in_ch), float(model.width)
        name = getattr(model, "model_name", None) or model_name_for(in_ch, width)
        return cls(
            model=name,
            in_ch=in_ch,
            width=width,
            input_size=int(input_size),
            mean=default_mean(in_ch),
            std=[1.0] * in_ch,
        )


def read_state_dict(path: os.PathLike | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a ``.pth``/``.pt``/``.bin`` (weights-only torch.load) or ``.safetensors`` file on the CPU.

    Returns ``(state_dict, metadata)`` (metadata empty for ``.pth``); a ``module.`` prefix is removed.
    Raises :class:`CheckpointError` naming the file for anything that is not a readable state dict.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    image_kind = _image_kind(path)
    if image_kind is not None:
        # torch.load would call it a pickle that "needs arbitrary code": say what it is instead.
        raise CheckpointError(
            f"{path}: not a checkpoint but a {image_kind} image; give the refiner's weights (.pth or .safetensors)"
        )
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            tensors = {}
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError variants
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
        obj = tensors
    else:
        try:
            with warnings.catch_warnings():
                # torch's note about an unusual pickle protocol would precede our one-line error.
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling failed"
            raise CheckpointError(
                f"{path}: refused to load: not a plain weights file (it needs arbitrary code to unpickle, "
                f"or is not a torch file at all: {first})"
            ) from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, KeyError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            if isinstance(exc, KeyError):  # the legacy unpickler's raw opcode lookup: the file is not torch's
                msg = "not a torch.save file"
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt? {msg})") from None
    obj = _unwrap(obj)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj, metadata


# Leading bytes of the image formats a user may pass by mistake (an image where weights were meant).
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _image_kind(path: Path) -> Optional[str]:
    """The image format ``path`` holds (from its first bytes), or None if it is not a known image."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None  # unreadable: the loaders below say so in their own words
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    kind = next((kind for magic, kind in _IMAGE_MAGIC if head.startswith(magic)), None)
    if kind in ("BMP", "TIFF") and head[8:9] == b"{":
        # Short magics: a safetensors file (8-byte header length, then its JSON header) may start alike.
        return None
    return kind


def _unwrap(obj):
    """Accept ``{"state_dict": sd}`` / ``{"model": sd}`` wrappers that training scripts often write."""
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "net", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def _describe(sd: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("image_encoder.") for k in sd):
        return "a SAM checkpoint"
    if "conv_in.conv.weight" in sd:
        return "an IS-Net GT encoder checkpoint"
    return "not an IS-Net checkpoint"


def _isnet_geometry(sd: dict[str, torch.Tensor], path) -> tuple[int, float]:
    w = sd.get("conv_in.weight")
    if w is None or w.ndim != 4 or "side1.weight" not in sd or "stage1d.rebnconvin.conv_s1.weight" not in sd:
        raise CheckpointError(f"{path}: expected an IS-Net/IS5Net refiner checkpoint, but this is {_describe(sd)}")
    return int(w.shape[1]), float(w.shape[0]) / 64.0


def load_refiner(path: os.PathLike | str, device: str | torch.device = "cpu") -> ISNet:
    """Load an IS-Net (3 channels) or IS5Net (5 channels) refiner, strictly, in eval mode.

    ``path``: an official ``.pth`` (``isnet.pth``, ``isnet-general-use.pth``, the DIS-SAM release) or our
    ``.safetensors``. The channel count comes from ``conv_in.weight``; our metadata sets
    ``model.config`` (:class:`RefinerConfig`); official files get the reference defaults (1024², mean 0.5
    on RGB and 0 on the masks, std 1).
    """
    sd, meta = read_state_dict(path)
    in_ch, width = _isnet_geometry(sd, path)
    model = ISNet(in_ch=in_ch, width=width)
    _load_strict(model, sd, path)
    config = RefinerConfig.for_model(model)
    if meta.get("format") == FORMAT_TAG and "config" in meta:
        try:
            config = RefinerConfig(**json.loads(meta["config"]))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: its is5net metadata is unreadable ({exc})") from None
        if config.in_ch != in_ch:
            raise CheckpointError(f"{path}: metadata says {config.in_ch} input channels, weights have {in_ch}")
        check_input_size(config.input_size, f"{path}: its metadata's input size")
    model.model_name = config.model
    model.config = config
    return model.to(device).eval()


def load_gt_encoder(path: os.PathLike | str, device: str | torch.device = "cpu") -> GTEncoder:
    """Load a GT encoder (official ``ISNetGTEncoder`` .pth or ours), strictly, in eval mode."""
    sd, _ = read_state_dict(path)
    w = sd.get("conv_in.conv.weight")
    if w is None:
        raise CheckpointError(f"{path}: expected a GT encoder checkpoint, but this is {_describe(sd)}")
    model = GTEncoder(in_ch=int(w.shape[1]), width=float(w.shape[0]) / 16.0)
    _load_strict(model, sd, path)
    return model.to(device).eval()


def _load_strict(model: nn.Module, sd: dict[str, torch.Tensor], path) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path}: weights do not fit {model.__class__.__name__}: {detail[:300]}") from None


def save_refiner(
    model: nn.Module,
    path: os.PathLike | str,
    config: Optional[RefinerConfig] = None,
    extra_metadata: Optional[dict[str, str]] = None,
) -> Path:
    """Save a refiner (or GT encoder) as safetensors with its config in the metadata, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if config is None:
        config = getattr(model, "config", None) or RefinerConfig.for_model(model)
    check_input_size(config.input_size)  # a checkpoint the predictor could not run is never written
    meta = {"format": FORMAT_TAG, "kind": model.__class__.__name__, "config": json.dumps(asdict(config))}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def isnet_to_is5net_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn 3-channel IS-Net weights into 5-channel IS5Net weights.

    The RGB filters of ``conv_in`` are copied and the filters of the two new channels (coarse mask, box
    mask) are zero, so the converted model computes exactly what IS-Net did until it is fine-tuned
    (unlike timm's ``adapt_input_conv``, which tiles and rescales the RGB filters).
    """
    w = sd["conv_in.weight"]
    if w.shape[1] != 3:
        raise CheckpointError(f"expected 3-channel IS-Net weights, conv_in has {w.shape[1]} input channels")
    out = dict(sd)
    new = torch.zeros(w.shape[0], 5, *w.shape[2:], dtype=w.dtype)
    new[:, :3] = w
    out["conv_in.weight"] = new
    return out


def convert_isnet_to_is5net(
    src: os.PathLike | str, dst: os.PathLike | str, input_size: int = DEFAULT_INPUT_SIZE
) -> Path:
    """Read an IS-Net checkpoint, write the equivalent IS5Net as safetensors with metadata.

    ``dst`` must not be ``src`` (through any path, symbolic or hard link): the input is never overwritten.
    ``input_size``: what the metadata tells the predictor, checked by :func:`check_input_size`.
    """
    check_input_size(input_size)
    if _same_file(src, dst):
        raise CheckpointError(f"{dst}: is the input checkpoint {src} itself; name a new file for the output")
    sd, _ = read_state_dict(src)
    in_ch, width = _isnet_geometry(sd, src)
    if in_ch != 3:
        raise CheckpointError(f"{src}: expected a 3-channel IS-Net checkpoint, this one has {in_ch} input channels")
    model = ISNet(in_ch=5, width=width)
    _load_strict(model, isnet_to_is5net_state_dict(sd), src)
    model.model_name = model_name_for(5, width)
    return save_refiner(model, dst, RefinerConfig.for_model(model, input_size), {"converted_from": Path(src).name})


def _same_file(a: os.PathLike | str, b: os.PathLike | str) -> bool:
    """Whether ``a`` and ``b`` are one file (same device and inode: also through symbolic and hard links)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): they cannot be the same file
        return False
