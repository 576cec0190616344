"""IS-Net (``ISNetDIS``) and its GT encoder, with the official parameter names and arithmetic.

``ISNet(in_ch=3)`` is the original IS-Net; ``ISNet(in_ch=5)`` is IS5Net (input ``R, G, B, coarse mask,
box mask``). ``width`` scales every channel count by one factor (1.0 = official); the tiny test variants
use it, and because the refiner and the GT encoder scale alike their feature maps still match.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .rsu import REBNCONV, RSU, ConvBNReLU, upsample_like, upsample_map_like

# (height, dilated, in, mid, out) of the official encoder/decoder stages at width 1.
_ISNET_ENCODER = [
    (7, False, 64, 32, 64),
    (6, False, 64, 32, 128),
    (5, False, 128, 64, 256),
    (4, False, 256, 128, 512),
    (4, True, 512, 256, 512),
    (4, True, 512, 256, 512),
]
_ISNET_DECODER = {
    5: (4, True, 1024, 256, 512),
    4: (4, False, 1024, 128, 256),
    3: (5, False, 512, 64, 128),
    2: (6, False, 256, 32, 64),
    1: (7, False, 128, 16, 64),
}
_GT_ENCODER = [
    (7, False, 16, 16, 64),
    (6, False, 64, 16, 64),
    (5, False, 64, 32, 128),
    (4, False, 128, 32, 256),
    (4, True, 256, 64, 512),
    (4, True, 512, 64, 512),
]
_SIDE_CHANNELS = (64, 64, 128, 256, 512, 512)


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class _SideOutputs(nn.Module):
    """Shared pieces: six side convs (``side1..side6``) and the encoder pools."""

    def _make_sides(self, width: float, out_ch: int) -> None:
        for i, c in enumerate(_SIDE_CHANNELS, start=1):
            setattr(self, f"side{i}", nn.Conv2d(scaled(c, width), out_ch, 3, padding=1))
        for a, b in ((1, 2), (2, 3), (3, 4), (4, 5), (5, 6)):
            setattr(self, f"pool{a}{b}", nn.MaxPool2d(2, stride=2, ceil_mode=True))

    def _encode(self, hxin: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        hx = hxin
        for i in range(1, 7):
            if i > 1:
                hx = getattr(self, f"pool{i - 1}{i}")(hx)
            hx = getattr(self, f"stage{i}")(hx)
            feats.append(hx)
        return feats

    def _sides(self, feats: list[torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
        return [upsample_map_like(getattr(self, f"side{i}")(f), x) for i, f in enumerate(feats, start=1)]

    def fold_batchnorm(self) -> nn.Module:
        """Return an inference copy with every BatchNorm folded into its conv (same outputs in eval mode)."""
        fused = copy.deepcopy(self).eval()
        for m in fused.modules():
            if isinstance(m, (REBNCONV, ConvBNReLU)):
                m.fold_batchnorm()
        return fused


class ISNet(_SideOutputs):
    """IS-Net (``ISNetDIS``): RSU encoder-decoder with six side outputs.

    Args:
        in_ch: input channels, 3 (IS-Net: RGB) or 5 (IS5Net: RGB, coarse mask, box mask).
        out_ch: channels of each side output (1).
        width: channel multiplier (1.0 = official; tiny test variants use 1/8).

    ``forward(x)`` with ``x`` of shape ``B x in_ch x H x W`` (float, normalised as docs/input-contract.md) returns
    ``(side_logits, features)``:
      - ``side_logits``: 6 tensors ``B x out_ch x H x W``, logits **before** sigmoid, upsampled to the input
        size; ``side_logits[0]`` is the final output, and ``sigmoid(side_logits[i])`` equals the official
        model's i-th output;
      - ``features``: the 6 decoder maps ``[hx1d, hx2d, hx3d, hx4d, hx5d, hx6]`` at 1/2 .. 1/64 of the input
        size (channels 64, 64, 128, 256, 512, 512 times ``width``), supervised by the GT encoder's.
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 1, width: float = 1.0):
        super().__init__()
        self.in_ch, self.out_ch, self.width = in_ch, out_ch, width
        self.conv_in = nn.Conv2d(in_ch, scaled(64, width), 3, stride=2, padding=1)
        for i, (h, dil, ci, cm, co) in enumerate(_ISNET_ENCODER, start=1):
            setattr(self, f"stage{i}", RSU(h, scaled(ci, width), scaled(cm, width), scaled(co, width), dil))
        for i in (5, 4, 3, 2, 1):
            h, dil, ci, cm, co = _ISNET_DECODER[i]
            setattr(self, f"stage{i}d", RSU(h, scaled(ci, width), scaled(cm, width), scaled(co, width), dil))
        self._make_sides(width, out_ch)

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        enc = self._encode(self.conv_in(x))
        hx = enc[5]
        dec = [hx]
        for i in (5, 4, 3, 2, 1):
            skip = enc[i - 1]
            hx = getattr(self, f"stage{i}d")(torch.cat((upsample_like(hx, skip), skip), 1))
            dec.append(hx)
        return dec[::-1]  # [hx1d, hx2d, hx3d, hx4d, hx5d, hx6]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self._decode(x)
        return self._sides(feats, x), feats

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Only the final output's logits (``side_logits[0]``), skipping the other five side heads."""
        return upsample_like(self.side1(self._decode(x)[0]), x)


class GTEncoder(_SideOutputs):
    """The GT encoder (``ISNetGTEncoder``): encodes a 1-channel GT mask into six feature maps.

    ``forward(gt)`` with ``gt`` ``B x in_ch x H x W`` in [0, 1] returns ``(side_logits, features)`` as
    :class:`ISNet` does; ``features`` (``[hx1 .. hx6]``) have the same shapes as the refiner's decoder
    features for the same input size and width.
    """

    def __init__(self, in_ch: int = 1, out_ch: int = 1, width: float = 1.0):
        super().__init__()
        self.in_ch, self.out_ch, self.width = in_ch, out_ch, width
        self.conv_in = ConvBNReLU(in_ch, scaled(16, width), 3, stride=2, padding=1)
        for i, (h, dil, ci, cm, co) in enumerate(_GT_ENCODER, start=1):
            setattr(self, f"stage{i}", RSU(h, scaled(ci, width), scaled(cm, width), scaled(co, width), dil))
        self._make_sides(width, out_ch)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.encode(x)
        return self._sides(feats, x), feats

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Only the six feature maps: what phase 2 needs of the frozen encoder (no side heads, no resizes)."""
        return self._encode(self.conv_in(x))
