import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from is5net.modeling import GTEncoder, ISNet, build_model
from is5net.modeling.rsu import RSU

# A copy of shared/reference/official_isnet_state_dict.json: every key and shape of the official models.
REFERENCE = Path(__file__).resolve().parent / "data" / "official_isnet_state_dict.json"


@pytest.fixture(scope="module")
def reference():
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize(
    "name,factory",
    [
        ("ISNetDIS(in_ch=5)", lambda: ISNet(5)),
        ("ISNetDIS(in_ch=3)", lambda: ISNet(3)),
        ("ISNetGTEncoder(in_ch=1)", lambda: GTEncoder(1)),
    ],
)
def test_state_dict_keys_and_shapes_equal_official(reference, name, factory):
    ours = {k: list(v.shape) for k, v in factory().state_dict().items()}
    official = reference[name]
    assert set(ours) == set(official), set(ours) ^ set(official)
    assert {k: ours[k] for k in official} == official


def test_tiny_variants_scale_every_width_and_features_match_gt_encoder():
    ref, enc = build_model("is5net_tiny"), build_model("gt_encoder_tiny")
    assert ref.conv_in.weight.shape == (8, 5, 3, 3)
    x = torch.randn(2, 5, 96, 96)
    logits, feats = ref(x)
    _, gt_feats = enc(torch.rand(2, 1, 96, 96))
    assert len(logits) == 6 and all(t.shape == (2, 1, 96, 96) for t in logits)
    assert [f.shape for f in feats] == [g.shape for g in gt_feats]
    assert sum(p.numel() for p in ref.parameters()) < sum(p.numel() for p in ISNet(5).parameters()) / 30


class _Conv(nn.Module):  # the official REBNCONV, written out
    def __init__(self, i, o, d=1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(i, o, 3, padding=d, dilation=d)
        self.bn_s1 = nn.BatchNorm2d(o)

    def forward(self, x):
        return F.relu(self.bn_s1(self.conv_s1(x)))


class _LonghandRSU4F(nn.Module):
    """RSU-4F as the paper describes it, level by level, as an independent check of the generic RSU."""

    def __init__(self, i, m, o):
        super().__init__()
        self.rebnconvin, self.rebnconv1 = _Conv(i, o), _Conv(o, m)
        self.rebnconv2, self.rebnconv3, self.rebnconv4 = _Conv(m, m, 2), _Conv(m, m, 4), _Conv(m, m, 8)
        self.rebnconv3d, self.rebnconv2d, self.rebnconv1d = _Conv(2 * m, m, 4), _Conv(2 * m, m, 2), _Conv(2 * m, o)

    def forward(self, x):
        hxin = self.rebnconvin(x)
        h1 = self.rebnconv1(hxin)
        h2 = self.rebnconv2(h1)
        h3 = self.rebnconv3(h2)
        h4 = self.rebnconv4(h3)
        d3 = self.rebnconv3d(torch.cat((h4, h3), 1))
        d2 = self.rebnconv2d(torch.cat((d3, h2), 1))
        return self.rebnconv1d(torch.cat((d2, h1), 1)) + hxin


class _LonghandRSU5(nn.Module):
    def __init__(self, i, m, o):
        super().__init__()
        self.rebnconvin, self.rebnconv1 = _Conv(i, o), _Conv(o, m)
        self.rebnconv2, self.rebnconv3, self.rebnconv4 = _Conv(m, m), _Conv(m, m), _Conv(m, m)
        self.rebnconv5 = _Conv(m, m, 2)
        self.rebnconv4d, self.rebnconv3d = _Conv(2 * m, m), _Conv(2 * m, m)
        self.rebnconv2d, self.rebnconv1d = _Conv(2 * m, m), _Conv(2 * m, o)

    def forward(self, x):
        pool = lambda t: F.max_pool2d(t, 2, 2, ceil_mode=True)  # noqa: E731
        up = lambda t, r: F.interpolate(t, size=r.shape[2:], mode="bilinear", align_corners=False)  # noqa: E731
        hxin = self.rebnconvin(x)
        h1 = self.rebnconv1(hxin)
        h2 = self.rebnconv2(pool(h1))
        h3 = self.rebnconv3(pool(h2))
        h4 = self.rebnconv4(pool(h3))
        h5 = self.rebnconv5(h4)
        d4 = self.rebnconv4d(torch.cat((h5, h4), 1))
        d3 = self.rebnconv3d(torch.cat((up(d4, h3), h3), 1))
        d2 = self.rebnconv2d(torch.cat((up(d3, h2), h2), 1))
        return self.rebnconv1d(torch.cat((up(d2, h1), h1), 1)) + hxin


@pytest.mark.parametrize("longhand,height,dilated", [(_LonghandRSU4F, 4, True), (_LonghandRSU5, 5, False)])
def test_generic_rsu_computes_the_longhand_block(longhand, height, dilated):
    torch.manual_seed(0)
    ours = RSU(height, 6, 4, 8, dilated=dilated).eval()
    ref = longhand(6, 4, 8).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.uniform_(-0.5, 0.5)
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 6, 37, 45)  # odd sizes exercise ceil-mode pooling and resizing back
    torch.testing.assert_close(ours(x), ref(x))


def test_folded_batchnorm_gives_same_output():
    torch.manual_seed(1)
    model = build_model("is5net_tiny").train()
    with torch.no_grad():
        model(torch.randn(2, 5, 64, 64))  # move the running statistics away from identity
    model.eval()
    x = torch.randn(1, 5, 64, 64)
    with torch.no_grad():
        expected = model(x)[0][0]
        fused = model.fold_batchnorm()
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused.forward_logits(x), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "small,big", [((16, 16), (1024, 1024)), ((17, 9), (1000, 37)), ((4, 5), (4, 9)), ((33, 64), (64, 64))]
)
def test_side_output_upsampling_by_matmul_equals_interpolate(small, big):
    from is5net.modeling.rsu import upsample_map_like

    torch.manual_seed(0)
    src = torch.randn(2, 1, *small, dtype=torch.float64).float().requires_grad_(True)
    target = torch.empty(2, 1, *big)
    by_matmul = upsample_map_like(src, target, matmul=True)
    grad_out = torch.randn_like(by_matmul)
    (g_mm,) = torch.autograd.grad(by_matmul, src, grad_out)
    by_interp = F.interpolate(src, size=big, mode="bilinear", align_corners=False)
    (g_ip,) = torch.autograd.grad(by_interp, src, grad_out)
    assert by_matmul.shape == by_interp.shape and by_matmul.dtype == torch.float32
    assert torch.allclose(by_matmul, by_interp, atol=1e-5, rtol=1e-5)
    assert torch.allclose(g_mm, g_ip, atol=1e-3, rtol=1e-4)
