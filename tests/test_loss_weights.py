"""The per-pixel loss weights (docs/training.md, "Loss weights"): where they put weight, and that off is the
reference's loss exactly."""

from __future__ import annotations

import pytest
import torch

from is5net.errors import IS5NetError
from is5net.train.config import TrainConfig, load_config
from is5net.train.losses import detail_weights, detail_window, side_loss
from is5net.train.step import loss_weights


def _wire_and_block(size: int = 64) -> torch.Tensor:
    """A GT with a 2 px wire and a 24 px block, ``1 x 1 x size x size``."""
    gt = torch.zeros(1, 1, size, size)
    gt[..., 10:12, 4:52] = 1.0  # the wire (96 px)
    gt[..., 30:54, 20:44] = 1.0  # the block
    return gt


def test_detail_weights_are_highest_on_thin_parts_and_one_far_from_edges():
    gt = _wire_and_block()
    w = detail_weights(gt, 5.0)[0, 0]
    assert detail_window(64) % 2 == 1
    wire, block_inside, far_background = w[10, 30], w[42, 32], w[62, 2]
    block_edge = w[30, 32]
    assert float(block_inside) == pytest.approx(1.0)
    assert float(far_background) == pytest.approx(1.0)
    # a wire pixel's window is nearly all background: close to 1 + strength; a thick part's edge far less
    assert float(wire) > 4.0  # 2 px of a 7 px window: 1 + 5 * 5/7
    assert 1.0 < float(block_edge) < float(wire)
    assert float(w.max()) <= 6.0


def test_unweighted_side_loss_is_the_reference_loss_bit_for_bit():
    torch.manual_seed(0)
    gt = _wire_and_block()
    logits = [torch.randn(1, 1, 64, 64), torch.randn(1, 1, 32, 32)]
    unweighted = side_loss(logits, gt, 20.0, 0.5)
    ones = side_loss(logits, gt, 20.0, 0.5, torch.ones_like(gt))
    # weights of 1 everywhere are the unweighted loss (up to float summation order)
    assert float(ones) == pytest.approx(float(unweighted), rel=1e-6)


def test_weighted_loss_charges_a_missed_wire_more():
    gt = _wire_and_block()
    missed_wire = torch.where(gt > 0, 8.0, -8.0)
    missed_wire[..., 10:12, 4:52] = -8.0
    missed_block_edge = torch.where(gt > 0, 8.0, -8.0)
    missed_block_edge[..., 30:34, 20:44] = -8.0  # as many pixels (4 x 24), along a thick part's edge
    plain = [side_loss([m], gt, 20.0, 0.5) for m in (missed_wire, missed_block_edge)]
    weighted = [side_loss([m], gt, 20.0, 0.5, detail_weights(gt, 5.0)) for m in (missed_wire, missed_block_edge)]
    assert float(plain[0]) == pytest.approx(float(plain[1]), rel=1e-5)
    assert float(weighted[0]) > 1.5 * float(weighted[1])


def test_loss_weights_follow_the_setting():
    gt = _wire_and_block()
    assert loss_weights(TrainConfig(), gt) is None
    assert torch.equal(loss_weights(TrainConfig(detail_weight=2.0), gt), detail_weights(gt, 2.0))


def test_detail_weight_setting_is_range_checked():
    key = "detail_weight"
    with pytest.raises(IS5NetError, match=key):
        load_config(None, [f"{key}=-1"])
    assert getattr(load_config(None, [f"{key}=2.5"]), key) == 2.5
