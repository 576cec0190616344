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


def _coarse_over_block(gt: torch.Tensor) -> torch.Tensor:
    """A coarse mask that covers the block (and 2 px around it) but misses the wire, as SAM does."""
    coarse = torch.zeros_like(gt)
    coarse[..., 28:56, 18:46] = 1.0
    return coarse


def test_detail_outside_the_coarse_mask_weighs_more_and_only_there():
    gt = _wire_and_block()
    coarse = _coarse_over_block(gt)
    plain = detail_weights(gt, 5.0)
    w = detail_weights(gt, 5.0, coarse, outside_mask=3.0)
    # the wire lies outside the mask: its detail part is 1 + 3 times as large
    assert float(w[0, 0, 10, 30] - 1) == pytest.approx(4.0 * float(plain[0, 0, 10, 30] - 1))
    # the block's edge lies inside the mask: unchanged; far from any edge: 1 as before
    assert float(w[0, 0, 30, 32]) == pytest.approx(float(plain[0, 0, 30, 32]))
    assert float(w[0, 0, 42, 32]) == pytest.approx(1.0)
    assert float(w[0, 0, 62, 2]) == pytest.approx(1.0)
    # no coarse mask, or a factor of 0: the plain weights
    assert torch.equal(detail_weights(gt, 5.0, None, 3.0), plain)
    assert torch.equal(detail_weights(gt, 5.0, coarse, 0.0), plain)


def test_loss_weights_read_the_coarse_channel_of_a_five_channel_input_only():
    gt = _wire_and_block()
    coarse = _coarse_over_block(gt)
    rgb = torch.rand(1, 3, 64, 64)
    five = torch.cat([rgb, coarse, torch.ones_like(coarse)], 1)
    c = TrainConfig(detail_weight=5.0, detail_outside_mask=3.0)
    assert torch.equal(loss_weights(c, gt, five), detail_weights(gt, 5.0, coarse, 3.0))
    # an IS-Net's 3-channel input has no coarse mask: its loss is the plain detail weighting
    assert torch.equal(loss_weights(c, gt, rgb), detail_weights(gt, 5.0))
    # detail_weight 0 is the reference's unweighted loss, whatever the factor
    assert loss_weights(TrainConfig(detail_outside_mask=3.0), gt, five) is None


def test_weighted_loss_charges_a_wire_missed_outside_the_mask_more_than_inside_it():
    gt = _wire_and_block()
    missed_wire = torch.where(gt > 0, 8.0, -8.0)
    missed_wire[..., 10:12, 4:52] = -8.0
    outside = torch.zeros_like(gt)  # the wire is not in the coarse mask
    inside = torch.ones_like(gt)  # a coarse mask over everything: the wire is in it
    charged = [
        float(side_loss([missed_wire], gt, 20.0, 0.5, detail_weights(gt, 5.0, coarse, 3.0)))
        for coarse in (outside, inside)
    ]
    assert charged[0] > 1.2 * charged[1]


def test_detail_outside_mask_setting_is_range_checked():
    key = "detail_outside_mask"
    with pytest.raises(IS5NetError, match=key):
        load_config(None, [f"{key}=-1"])
    assert getattr(load_config(None, [f"{key}=10"]), key) == 10.0


def test_the_refiner_loss_weighs_by_the_coarse_channel_of_its_input():
    from is5net.modeling import build_model
    from is5net.train.step import refiner_loss

    torch.manual_seed(0)
    net = build_model("is5net_tiny").eval()
    gt = _wire_and_block()
    x = torch.cat([torch.rand(1, 3, 64, 64), _coarse_over_block(gt), torch.ones_like(gt)], 1)
    losses = {}
    for factor in (0.0, 3.0):
        c = TrainConfig(detail_weight=5.0, detail_outside_mask=factor, ortho_weight=0.0)
        with torch.no_grad():
            losses[factor] = float(refiner_loss(c)(net, x, gt)[0])
            sides = net(x)[0]
            expected = sum(float(side_loss([s], gt, c.bce_weight, c.iou_weight, loss_weights(c, gt, x))) for s in sides)
        assert losses[factor] == pytest.approx(expected, rel=1e-5)
    assert losses[3.0] != pytest.approx(losses[0.0], rel=1e-4)


def test_detail_spread_makes_a_thick_wire_cost_what_a_missed_one_costs():
    gt = _wire_and_block()
    plain, spread = detail_weights(gt, 5.0)[0, 0], detail_weights(gt, 5.0, spread=2)[0, 0]
    # Without the spread the wire's background neighbours weigh a fraction of the wire; with it, as much.
    assert float(plain[9, 30]) < 0.6 * float(plain[10, 30])
    assert float(spread[8, 30]) == pytest.approx(float(spread[10, 30]))
    assert float(spread[7, 30]) < float(spread[8, 30])  # three rows off a 2 px wire: outside the spread
    # Far from any edge the weight is still 1, and 0 is the plain weighting exactly.
    assert float(spread[62, 2]) == pytest.approx(1.0)
    assert torch.equal(detail_weights(gt, 5.0, spread=0), detail_weights(gt, 5.0))
    # A wire drawn 2 px too thick on each side against one missed: the spread charges the thickening more
    # than the plain weights do, relative to the miss.
    thick = torch.where(gt > 0, 8.0, -8.0)
    thick[..., 8:14, 4:52] = 8.0
    missed = torch.where(gt > 0, 8.0, -8.0)
    missed[..., 10:12, 4:52] = -8.0
    ratio = [
        float(side_loss([thick], gt, 20.0, 0.5, w)) / float(side_loss([missed], gt, 20.0, 0.5, w))
        for w in (detail_weights(gt, 5.0), detail_weights(gt, 5.0, spread=2))
    ]
    assert ratio[1] > 1.5 * ratio[0]


def test_detail_spread_follows_the_setting_and_is_range_checked():
    gt = _wire_and_block()
    c = TrainConfig(detail_weight=2.0, detail_spread=3)
    assert torch.equal(loss_weights(c, gt), detail_weights(gt, 2.0, spread=3))
    for bad in ("-1", "33", "1.5"):
        with pytest.raises(IS5NetError, match="detail_spread"):
            load_config(None, [f"detail_spread={bad}"])
