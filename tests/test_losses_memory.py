"""The lean feature MSE: same value and gradient as ``F.mse_loss`` on fp32 copies, without keeping them."""

import pytest
import torch
import torch.nn.functional as F

from is5net.modeling import build_model
from is5net.train.losses import feature_loss, feature_mse


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for backward while ``fn()`` builds its graph."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_feature_mse_matches_mse_on_fp32_copies(dtype, channels_last):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, 10, 12, generator=g)
    f = base.to(dtype)
    if channels_last:
        f = f.contiguous(memory_format=torch.channels_last)
    f.requires_grad_(True)
    target = torch.randn(3, 4, 10, 12, generator=g).to(dtype)

    ours = feature_mse(f, target)
    ours.backward(torch.tensor(1.7))
    grad_ours = f.grad.clone()
    f.grad = None
    ref = F.mse_loss(f.float(), target.float())
    ref.backward(torch.tensor(1.7))

    assert ours.dtype == torch.float32
    assert torch.allclose(ours, ref, rtol=1e-6, atol=0)
    assert grad_ours.dtype == dtype and grad_ours.shape == f.shape
    assert (
        torch.equal(grad_ours, f.grad)
        if dtype == torch.bfloat16
        else torch.allclose(grad_ours, f.grad, rtol=1e-6, atol=1e-9)
    )


def test_feature_mse_keeps_no_fp32_copies_under_bf16():
    f = torch.randn(2, 8, 32, 32).to(torch.bfloat16).requires_grad_(True)
    target = torch.randn(2, 8, 32, 32).to(torch.bfloat16)
    map_bytes = f.numel() * 2

    _, ref_bytes = _saved_bytes(lambda: F.mse_loss(f.float(), target.float()))
    _, our_bytes = _saved_bytes(lambda: feature_mse(f, target))
    assert ref_bytes == 4 * map_bytes  # two fp32 copies
    assert our_bytes == 2 * map_bytes  # f itself (kept by the network anyway) and the bf16 target


def test_feature_mse_refuses_mismatched_maps():
    with pytest.raises(ValueError, match="shapes differ"):
        feature_mse(torch.zeros(1, 2, 4, 4, requires_grad=True), torch.zeros(1, 2, 4, 5))


def test_folded_gt_encoder_encode_gives_the_features_phase_two_used_before():
    torch.manual_seed(0)
    enc = build_model("gt_encoder_tiny")
    gt = (torch.rand(2, 1, 64, 64) > 0.6).float()
    enc.train()
    enc(gt)  # move the BatchNorm statistics off their defaults
    enc.eval()
    with torch.no_grad():
        _, feats = enc(gt)
        lean = enc.fold_batchnorm().encode(gt)
    assert len(lean) == len(feats) == 6
    for a, b in zip(lean, feats):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)

    refiner = build_model("is5net_tiny")
    _, rfeats = refiner(torch.randn(2, 5, 64, 64))
    fl = feature_loss(rfeats, lean)
    fl.backward()
    assert torch.isfinite(fl) and refiner.stage1d.rebnconvin.conv_s1.weight.grad is not None
