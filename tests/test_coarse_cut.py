"""The coarse-mask cut and hole (docs/training.md, "Coarse-mask cut", "Coarse-mask hole"): what each hides, and
that only training sees them."""

import numpy as np
import pytest
import torch

from is5net.data.dataset import (
    CUT_FRACTION,
    HOLE_FRACTION,
    CoarseDir,
    RefinerDataset,
    cut_coarse_part,
    hole_coarse_part,
)
from is5net.data.pairs import find_pairs
from is5net.data.samples import enumerate_samples
from is5net.errors import IS5NetError
from is5net.train.config import load_config

MEAN, STD = [0.5, 0.5, 0.5, 0.0, 0.0], [1.0] * 5


def _plane() -> torch.Tensor:
    plane = torch.zeros(96, 96)
    plane[20:80, 10:70] = 255.0  # a thick part
    plane[45:48, 70:96] = 255.0  # and a bar sticking out
    return plane


def _hidden_by(hide, fraction: tuple, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask before, mask after)`` of ``hide`` on :func:`_plane`, checked to only hide, and the share hidden."""
    plane = _plane()
    changed = plane.clone()
    hide(changed, np.random.default_rng(seed))
    before, after = plane > 127, changed > 127
    assert torch.all(after <= before)  # only hides: nothing outside the mask appears
    assert torch.equal(changed[after], plane[after])  # what is kept is untouched
    hidden = 1.0 - after.sum().item() / before.sum().item()
    assert fraction[0] - 0.02 <= hidden <= fraction[1] + 0.02
    return before, after


@pytest.mark.parametrize("seed", range(6))
def test_cut_hides_a_share_of_the_mask_behind_one_straight_line(seed):
    before, after = _hidden_by(cut_coarse_part, CUT_FRACTION, seed)
    # one straight cut: some line puts every kept pixel on one side and every hidden one on the other (up to
    # a pixel, as the line's angle is searched on a grid)
    ys, xs = torch.nonzero(before, as_tuple=True)
    kept = after[ys, xs]
    separable = False
    for angle in np.linspace(0, 2 * np.pi, 1440, endpoint=False):
        along = np.cos(angle) * xs.float() + np.sin(angle) * ys.float()
        if along[kept].max() <= along[~kept].min() + 1.0:
            separable = True
            break
    assert separable


@pytest.mark.parametrize("seed", range(6))
def test_hole_hides_a_share_of_the_mask_inside_one_disc(seed):
    before, after = _hidden_by(hole_coarse_part, HOLE_FRACTION, seed)
    # one disc centred on a mask pixel: some such centre has every hidden pixel nearer than every kept one
    ys, xs = torch.nonzero(before, as_tuple=True)
    points = torch.stack([ys, xs], 1).float()
    hidden = ~after[ys, xs]
    dist = torch.cdist(points, points)  # row: a candidate centre
    assert bool((dist[:, hidden].max(1).values <= dist[:, ~hidden].min(1).values).any())


@pytest.mark.parametrize("hide", [cut_coarse_part, hole_coarse_part])
def test_hiding_is_seeded_and_leaves_an_empty_mask_alone(hide):
    a, b = _plane(), _plane()
    hide(a, np.random.default_rng(3))
    hide(b, np.random.default_rng(3))
    assert torch.equal(a, b) and not torch.equal(a, _plane())
    empty = torch.zeros(32, 32)
    hide(empty, np.random.default_rng(0))
    assert not empty.any()


@pytest.fixture()
def cup(photo_dataset):
    return enumerate_samples(find_pairs(photo_dataset[0], ["DIS-TR"]), enrich=False)


@pytest.mark.parametrize("setting", ["coarse_cut", "coarse_hole"])
def test_only_training_items_lose_part_of_their_coarse_mask(cup, setting):
    def items(train, chance, epochs=4):
        ds = RefinerDataset(cup, CoarseDir("dataset"), 96, MEAN, STD, train=train, flips=False, **{setting: chance})
        out = []
        for e in range(epochs):
            ds.set_epoch(e)
            out.append(ds[0])
        return out

    plain = items(True, 0.0)
    cut = items(True, 1.0)
    most_kept = 1.0 - {"coarse_cut": CUT_FRACTION, "coarse_hole": HOLE_FRACTION}[setting][0] + 0.05
    for p, c in zip(plain, cut):
        assert torch.equal(p["gt"], c["gt"])  # the GT is never touched
        assert torch.equal(p["input"][[0, 1, 2, 4]], c["input"][[0, 1, 2, 4]])  # nor the image or the box
        mask_p, mask_c = p["input"][3] >= 0.5, c["input"][3] >= 0.5
        assert torch.all(mask_c <= mask_p) and mask_c.sum() < most_kept * mask_p.sum()
    # a new cut each epoch
    assert not torch.equal(cut[0]["input"][3], cut[1]["input"][3])
    # validation items never change, whatever the setting
    for v_plain, v_cut in zip(items(False, 0.0, 2), items(False, 1.0, 2)):
        assert torch.equal(v_plain["input"], v_cut["input"])


@pytest.mark.parametrize("setting", ["coarse_cut", "coarse_hole"])
def test_coarse_setting_is_a_probability(setting):
    assert getattr(load_config(None, [f"{setting}=0.5"]), setting) == 0.5
    with pytest.raises(IS5NetError, match=setting):
        load_config(None, [f"{setting}=1.5"])
