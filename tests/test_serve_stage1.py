"""Stage 1 without weights: ``GrabCutStage`` on its own and in the predictor (``predict --stage1 grabcut`` is in
test_cli_predict.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from is5net.inference.predictor import IS5NetPredictor
from is5net.inference.stage1 import GrabCutStage

BOX = [60, 40, 230, 170]


def test_grabcut_mask_stays_in_the_box_and_is_the_same_every_time(coffee_rgb):
    stage = GrabCutStage()
    stage.set_image(coffee_rgb)
    masks, scores = stage.predict(np.array([BOX, [0, 0, 300, 200], [10, 10, 12, 12]], dtype=float))
    assert scores is None and masks.dtype == torch.bool and masks.shape == (3, 200, 300)
    first = masks[0].numpy()
    assert 0.1 < first[40:170, 60:230].mean() < 0.95  # an object, not the whole box, not nothing
    assert not first[:40].any() and not first[170:].any() and not first[:, :60].any() and not first[:, 230:].any()
    assert masks[1].any()  # a box over the whole image still has background samples (a 1-px border)
    other = GrabCutStage()  # another instance, in another state: the same mask (GrabCut's k-means is seeded)
    other.set_image(coffee_rgb)
    torch.manual_seed(123)
    np.random.seed(5)
    assert torch.equal(other.predict(np.array([BOX], dtype=float))[0][0], masks[0])


def test_grabcut_scales_a_large_crop_down_but_answers_at_full_size(coffee_rgb):
    big = np.kron(coffee_rgb, np.ones((4, 4, 1), np.uint8))  # 800 x 1200
    stage = GrabCutStage(max_side=160)
    stage.set_image(big)
    mask = stage.predict(np.array([[240, 160, 920, 680]], dtype=float))[0][0].numpy()
    assert mask.shape == (800, 1200) and mask[160:680, 240:920].mean() > 0.1 and not mask[:160].any()


def test_predictor_takes_a_stage_object_in_sams_place(coffee_rgb, tiny_refiner):
    p = IS5NetPredictor(GrabCutStage(), tiny_refiner, device="cpu", backend="torch")
    p.set_image(coffee_rgb)
    pred = p.predict(box=BOX)
    assert pred.sam_score is None and pred.mask.shape == (200, 300) and pred.sam_mask.any()
    stage = GrabCutStage()
    stage.set_image(coffee_rgb)
    assert np.array_equal(pred.sam_mask, stage.predict(np.array([BOX], dtype=float))[0][0].numpy())


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"max_side": 8}, {"margin": -1}])
def test_grabcut_settings_out_of_range_are_refused(bad):
    from is5net.errors import IS5NetError

    with pytest.raises(IS5NetError):
        GrabCutStage(**bad)
