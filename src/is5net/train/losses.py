"""Losses of the reference recipe: per side output 20*BCE + 0.5*IoU, feature MSE, orthogonality penalty.

All side outputs are logits (before sigmoid) at the input size: BCE-with-logits is AMP-safe, unlike the
official sigmoid + ``BCELoss``. Losses are computed in fp32 whatever the autocast precision.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def iou_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, weight: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Soft IoU loss ``1 - (sum(p*g) + 1) / (sum(p + g - p*g) + 1)`` per sample, averaged over the batch.

    The ``+ 1`` is the reference's (DIS-SAM ``iou_loss``): an empty GT predicted empty costs 0, not 1.
    ``weight`` (``B x 1 x H x W``, see :func:`detail_weights`) weighs each pixel's share of the sums.
    """
    p = torch.sigmoid(logits)
    inter = p * target
    union = p + target - inter
    if weight is not None:
        inter, union = inter * weight, union * weight
    inter, union = inter.flatten(1).sum(1), union.flatten(1).sum(1)
    return (1.0 - (inter + smooth) / (union + smooth)).mean()


def detail_window(size: int) -> int:
    """The odd side of the window :func:`detail_weights` averages over: about 1/11 of the map's side
    (F3Net's 31 px at 352), at least 3."""
    return max(3, 2 * round(size / 22) + 1)


def detail_weights(
    target: torch.Tensor,
    strength: float,
    coarse: Optional[torch.Tensor] = None,
    outside_mask: float = 0.0,
    spread: int = 0,
) -> torch.Tensor:
    """Per-pixel loss weights ``1 + strength * |local mean of GT - GT|`` (docs/training.md, "Loss weights").

    The local mean over a :func:`detail_window` differs from the pixel itself only near the GT's edges, and
    most on thin parts: a 1-3 px wire's pixels have a local mean near 0, so they weigh about
    ``1 + strength``, while the inside of a thick part and the far background weigh 1.

    ``coarse`` (``B x 1 x H x W`` in [0, 1], the coarse mask as the refiner sees it) with ``outside_mask``
    > 0 multiplies that detail part by ``1 + outside_mask * (1 - coarse)``: detail the coarse mask does not
    cover, where the refiner must decide from the image alone, weighs more (docs/training.md, "Detail
    outside the coarse mask"). Far from any edge the weight stays 1 either way.

    ``spread`` > 0 gives every pixel the largest detail weight within ``spread`` pixels of it (a max filter):
    a wire's background neighbours then weigh what the wire weighs. Without it the detail part of their weight
    is about a tenth of the wire's, so the cheapest answer where the wire's exact place is unsure is a
    thick grey band (docs/training.md, "Detail spread").
    """
    k = detail_window(min(target.shape[-2:]))
    local = F.avg_pool2d(target.float(), k, stride=1, padding=k // 2, count_include_pad=False)
    detail = strength * (local - target).abs()
    if coarse is not None and outside_mask:
        detail = detail * (1.0 + outside_mask * (1.0 - coarse.float().clamp(0.0, 1.0)))
    if spread > 0:
        detail = F.max_pool2d(detail, 2 * int(spread) + 1, stride=1, padding=int(spread))
    return 1.0 + detail


def side_loss(
    side_logits: list[torch.Tensor],
    target: torch.Tensor,
    bce_weight: float = 20.0,
    iou_weight: float = 0.5,
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sum over the side outputs of ``bce_weight * BCE + iou_weight * IoU`` (target ``B x 1 x H x W``).

    ``weight`` (``B x 1 x H x W``, e.g. :func:`detail_weights`): both terms weigh each pixel by it (the BCE
    as a weighted mean per image); None is the reference's unweighted loss.
    """
    total = target.new_zeros(())
    for logits in side_logits:
        logits = logits.float()
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        if weight is None:
            bce = F.binary_cross_entropy_with_logits(logits, target)
        else:
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            bce = ((per_pixel * weight).flatten(1).sum(1) / weight.flatten(1).sum(1)).mean()
        total = total + bce_weight * bce
        if iou_weight:
            total = total + iou_weight * iou_loss(logits, target, weight=weight)
    return total


class _FeatureMSE(torch.autograd.Function):
    """``mean((f - g)^2)`` computed in fp32, keeping only ``f`` and ``g`` (in their own dtype) for backward.

    ``F.mse_loss(f.float(), g.float())`` keeps the two fp32 copies alive until backward: under bf16 autocast
    that is 4x the bf16 size of every decoder map, about 1.1 GiB at 1024² and batch 8 (``hx1d`` alone is
    64 x 512² per image). Here ``f`` is held anyway (the side conv saved it) and ``g`` is kept in bf16, and
    the fp32 arithmetic runs one sample at a time so no full-size fp32 temporary exists either.
    """

    @staticmethod
    def forward(ctx, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f, g)
        total = torch.zeros((), dtype=torch.float32, device=f.device)
        for fi, gi in zip(f.unbind(0), g.unbind(0)):
            total += (fi.float() - gi.float()).square().sum()
        return total / f.numel()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        f, g = ctx.saved_tensors
        scale = grad.float() * (2.0 / f.numel())
        grad_f = torch.empty_like(f)
        for i in range(f.shape[0]):
            grad_f[i] = ((f[i].float() - g[i].float()) * scale).to(f.dtype)
        return grad_f, None


def feature_mse(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``F.mse_loss(f.float(), g.float())`` (fp32 value, gradient for ``f`` only), without fp32 copies.

    The lean path serves low-precision maps (bf16 autocast); fp32 maps go to ``F.mse_loss`` itself.
    """
    if f.shape != g.shape:
        raise ValueError(f"feature map shapes differ: {tuple(f.shape)} vs {tuple(g.shape)}")
    if f.dtype == torch.float32 and g.dtype == torch.float32:
        return F.mse_loss(f, g.detach())  # no copies to avoid: PyTorch's own kernel, bit for bit as before
    with torch.autocast(f.device.type, enabled=False):
        return _FeatureMSE.apply(f, g.detach().to(f.dtype))


def feature_loss(features: list[torch.Tensor], gt_features: list[torch.Tensor], weight: float = 1.0) -> torch.Tensor:
    """Intermediate supervision: sum over the six maps of MSE(refiner decoder map, GT encoder map)."""
    total = features[0].new_zeros((), dtype=torch.float32)
    for f, g in zip(features, gt_features):
        total = total + feature_mse(f, g)
    return weight * total


def orthogonality_penalty(model: nn.Module) -> torch.Tensor:
    """``sum |W W^T - I|`` over every parameter not named ``*bias``, ``W`` the parameter as ``rows x rest``.

    As the reference ("parameter orthogonalization" in DIS-SAM's training loop): convolution weights as
    ``out x (in*k*k)``, and BatchNorm weights too, as ``C x 1`` columns (their ``W W^T`` is the outer
    product ``C x C``). Computed in fp32 even under autocast. Parameters of equal shape are stacked and
    done in one batched product (a few dozen kernels instead of several hundred per step).
    """
    groups: dict[tuple, list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        if "bias" in name:
            continue
        w = param.reshape(param.shape[0], -1)
        groups.setdefault(tuple(w.shape), []).append(w)
    total = None
    device = next(model.parameters()).device if groups else torch.device("cpu")
    with torch.autocast(device.type, enabled=False):
        for (rows, _), ws in groups.items():
            stacked = torch.stack(ws).float()
            gram = torch.bmm(stacked, stacked.transpose(1, 2))
            eye = torch.eye(rows, device=gram.device, dtype=gram.dtype)
            term = (gram - eye).abs().sum()
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())
