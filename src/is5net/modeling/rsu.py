"""Building blocks of IS-Net: REBNCONV (conv-BN-ReLU) and one generic residual U-block (RSU).

Parameter names follow the official DIS code (``conv_s1``, ``bn_s1``, ``rebnconvin``, ``rebnconv1`` ...
``rebnconv1d``), so official state dicts load unchanged. The official code has five near-identical classes
(RSU7, RSU6, RSU5, RSU4, RSU4F); here one ``RSU(height, ..., dilated)`` builds all of them.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def upsample_like(src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``src`` to ``target``'s spatial size (``align_corners=False``, as the official code)."""
    if src.shape[2:] == target.shape[2:]:
        return src
    return F.interpolate(src, size=target.shape[2:], mode="bilinear", align_corners=False)


_MATRICES: dict = {}


def _bilinear_matrix(n_out: int, n_in: int, device, dtype) -> torch.Tensor:
    """``n_out x n_in`` weights of 1-D bilinear resizing with ``align_corners=False`` (PyTorch's rule)."""
    key = (n_out, n_in, str(device), dtype)
    if key not in _MATRICES:
        _MATRICES[key] = _build_bilinear_matrix(n_out, n_in, device, dtype)
    return _MATRICES[key]


def _build_bilinear_matrix(n_out: int, n_in: int, device, dtype) -> torch.Tensor:
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    w1 = src - i0.to(src.dtype)
    m = torch.zeros(n_out, n_in, device=device, dtype=torch.float64)
    rows = torch.arange(n_out, device=device)
    m.index_put_((rows, i0), 1.0 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m.to(dtype)


def upsample_map_like(src: torch.Tensor, target: torch.Tensor, matmul: Optional[bool] = None) -> torch.Tensor:
    """:func:`upsample_like` for a side output's few channels, as two matrix products when training on CUDA.

    Same bilinear weights; but the backward pass is two matmuls instead of ``upsample_bilinear2d_backward``,
    whose atomic adds into a small low-resolution map (thousands of output pixels per input pixel) made it
    the most expensive kernel of a 1024² training step. Elsewhere (CPU, inference) F.interpolate is used;
    ``matmul`` forces one way. The matmul result stays fp32 under autocast: the loss is computed in fp32,
    and a bf16 round trip would only cost two casts and the logits' precision.
    """
    if src.shape[2:] == target.shape[2:]:
        return src
    if matmul is None:
        matmul = src.is_cuda and torch.is_grad_enabled() and src.requires_grad
    if not matmul:
        return upsample_like(src, target)
    (h, w), (big_h, big_w) = src.shape[2:], target.shape[2:]
    a_h = _bilinear_matrix(big_h, h, src.device, torch.float32)
    a_w = _bilinear_matrix(big_w, w, src.device, torch.float32)
    with torch.autocast(src.device.type, enabled=False):
        return torch.matmul(torch.matmul(a_h, src.float()), a_w.t())


def _fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv that computes ``bn(conv(x))`` in eval mode (BatchNorm folded into weights and bias)."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


class REBNCONV(nn.Module):
    """3x3 conv (dilation ``dirate``) -> BatchNorm -> ReLU; spatial size kept (stride 1)."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1, stride: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate, stride=stride)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))

    def fold_batchnorm(self) -> None:
        """Fold BN into the conv for inference (eval-mode numerics; do not train afterwards)."""
        if isinstance(self.bn_s1, nn.BatchNorm2d):
            self.conv_s1 = _fold_bn_into_conv(self.conv_s1, self.bn_s1)
            self.bn_s1 = nn.Identity()


class ConvBNReLU(nn.Module):
    """The GT encoder's stem (official ``myrebnconv``: parameters ``conv`` and ``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding)
        self.bn = nn.BatchNorm2d(out_ch)
        self.rl = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rl(self.bn(self.conv(x)))

    def fold_batchnorm(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = _fold_bn_into_conv(self.conv, self.bn)
            self.bn = nn.Identity()


class RSU(nn.Module):
    """Residual U-block of ``height`` levels (official RSU7/6/5/4 and, with ``dilated=True``, RSU4F).

    Encoder: ``rebnconv1 .. rebnconv{height}``. Pooled variant: a 2x max-pool (ceil mode) after levels
    ``1 .. height-2``, and the last level dilated by 2. Dilated variant: no pooling, level ``i`` dilated by
    ``2**(i-1)``. Decoder ``rebnconv{height-1}d .. rebnconv1d`` on the concatenation with the skip.
    Output: ``rebnconv1d(...) + rebnconvin(x)``, same spatial size as ``x``, ``out_ch`` channels.
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool = False):
        super().__init__()
        if height < 2:
            raise ValueError("an RSU needs at least 2 levels")
        self.height = height
        self.dilated = dilated
        self.rebnconvin = REBNCONV(in_ch, out_ch, dirate=1)
        for level in range(1, height + 1):
            in_c = out_ch if level == 1 else mid_ch
            setattr(self, f"rebnconv{level}", REBNCONV(in_c, mid_ch, dirate=self._dilation(level)))
        for level in range(height - 1, 0, -1):
            out_c = out_ch if level == 1 else mid_ch
            setattr(self, f"rebnconv{level}d", REBNCONV(mid_ch * 2, out_c, dirate=self._dilation(level)))
        if not dilated:
            self.pool = nn.MaxPool2d(2, stride=2, ceil_mode=True)

    def _dilation(self, level: int) -> int:
        if self.dilated:
            return 2 ** (level - 1)
        return 2 if level == self.height else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        skips = []
        hx = hxin
        for level in range(1, self.height):
            hx = getattr(self, f"rebnconv{level}")(hx)
            skips.append(hx)
            if not self.dilated and level < self.height - 1:
                hx = self.pool(hx)
        hx = getattr(self, f"rebnconv{self.height}")(hx)
        for level in range(self.height - 1, 0, -1):
            skip = skips[level - 1]
            hx = getattr(self, f"rebnconv{level}d")(torch.cat((upsample_like(hx, skip), skip), 1))
        return hx + hxin
