"""A plain registry of named model builders (as ``segment_anything.sam_model_registry``).

``build_model("is5net")`` -> the official-size IS5Net; ``*_tiny`` variants scale every width by 1/8 so tests
exercise the real code paths in seconds. Each builder takes keyword overrides (``width``, ``in_ch``).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .isnet import GTEncoder, ISNet

TINY_WIDTH = 1 / 8


def _isnet(in_ch: int, width: float) -> Callable[..., nn.Module]:
    def build(**kw) -> nn.Module:
        return ISNet(in_ch=kw.get("in_ch", in_ch), width=kw.get("width", width))

    return build


def _gt_encoder(width: float) -> Callable[..., nn.Module]:
    def build(**kw) -> nn.Module:
        return GTEncoder(in_ch=kw.get("in_ch", 1), width=kw.get("width", width))

    return build


MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "isnet": _isnet(3, 1.0),
    "is5net": _isnet(5, 1.0),
    "gt_encoder": _gt_encoder(1.0),
    "isnet_tiny": _isnet(3, TINY_WIDTH),
    "is5net_tiny": _isnet(5, TINY_WIDTH),
    "gt_encoder_tiny": _gt_encoder(TINY_WIDTH),
}


def build_model(name: str, **overrides) -> nn.Module:
    """Build a registered model by name; ``overrides`` (e.g. ``width=0.25``) replace the variant's defaults."""
    try:
        builder = MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_REGISTRY))}") from None
    model = builder(**overrides)
    model.model_name = name
    return model


def gt_encoder_for(refiner: nn.Module) -> nn.Module:
    """The GT encoder whose feature maps match ``refiner``'s (same width)."""
    return GTEncoder(in_ch=1, width=getattr(refiner, "width", 1.0))


def model_name_for(in_ch: int, width: float) -> str:
    """The registry name of an IS-Net of these input channels and width, or a descriptive one."""
    base = "is5net" if in_ch == 5 else "isnet" if in_ch == 3 else f"isnet{in_ch}ch"
    if abs(width - 1.0) < 1e-9:
        return base
    if abs(width - TINY_WIDTH) < 1e-9:
        return f"{base}_tiny"
    return base
