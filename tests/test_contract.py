"""The one input contract: training samples and the predictor's input are the same tensor."""

import numpy as np
import pytest
import torch

from is5net import IS5NetPredictor
from is5net.contract import binary_mask, box_pixel_bounds, build_input, require_tight_box, tight_box
from is5net.data.dataset import CoarseDir, InputCache, RefinerDataset
from is5net.data.pairs import find_pairs
from is5net.data.samples import enumerate_samples
from tiny import make_tiny_refiner

MEAN, STD = [0.5, 0.5, 0.5, 0.0, 0.0], [1.0] * 5
# The resized-input cache stores uint8 (the reference code's cache does too): each channel is rounded to
# the nearest grey level, so a cached item is within half a level (0.5 / 255 after normalisation).
HALF_LEVEL = 0.5 / 255 + 1e-6


@pytest.mark.parametrize("size", [256, 96])
def test_training_sample_equals_the_predictors_input_bit_for_bit(photo_dataset, coffee_rgb, size):
    root, gt, coarse = photo_dataset
    samples = enumerate_samples(find_pairs(root, ["DIS-TR"]), enrich=False)
    assert len(samples) == 1
    refiner = make_tiny_refiner(5, input_size=size)
    ds = RefinerDataset(samples, CoarseDir("dataset"), size, refiner.config.mean, refiner.config.std, train=False)
    item = ds[0]["input"]

    predictor = IS5NetPredictor(None, refiner, device="cpu")
    predictor.set_image(coffee_rgb)
    box = list(samples[0].box)  # the tight box of the GT, as training and the paper's evaluation prompt
    x = predictor.refiner_input([box], [coarse])
    assert x.shape == (1, 5, size, size)
    assert torch.equal(x[0], item)  # bit for bit: one code path builds both
    assert torch.equal(item, build_input(coffee_rgb, coarse, box, size, MEAN, STD))


def test_cached_training_sample_is_the_predictors_input_within_half_a_grey_level(photo_dataset, coffee_rgb, tmp_path):
    root, gt, coarse = photo_dataset
    size = 128
    samples = enumerate_samples(find_pairs(root, ["DIS-TR"]), enrich=False)
    refiner = make_tiny_refiner(5, input_size=size)
    ds = RefinerDataset(
        samples, CoarseDir("dataset"), size, MEAN, STD, train=False, input_cache=InputCache(tmp_path / "cache", size)
    )
    for _ in range(2):  # filling the cache, then reading it back
        item = ds[0]["input"]
        predictor = IS5NetPredictor(None, refiner, device="cpu")
        predictor.set_image(coffee_rgb)
        x = predictor.refiner_input([list(samples[0].box)], [coarse])[0]
        diff = (x - item).abs()
        assert float(diff.max()) <= HALF_LEVEL
        assert torch.equal(x[4], item[4])  # the re-binarised box channel is exact
        assert float(diff.max()) > 0  # the rounding is real (the test would notice a float cache)


def test_predictor_output_is_the_reference_recipe(coffee_rgb):
    """The official-checkpoint path: the predictor's map equals the reference recipe written plainly."""
    from test_predictor import reference_refine

    refiner = make_tiny_refiner(5, input_size=256)
    coarse = np.zeros(coffee_rgb.shape[:2], np.uint8)
    coarse[50:150, 70:220] = 255
    box = [60, 40, 230, 170]
    p = IS5NetPredictor(None, refiner, device="cpu", fast=False)
    p.set_image(coffee_rgb)
    out = p.predict(box=box, coarse_mask=coarse).mask
    ref = reference_refine(refiner, coffee_rgb, coarse, box, 256)
    assert np.abs(out - ref).max() < 1e-5


def test_one_rule_for_masks_and_boxes():
    u8 = np.array([[0, 127, 128, 255]], np.uint8)
    assert binary_mask(u8).tolist() == [[False, False, True, True]]
    assert binary_mask(np.array([[0, 1]], np.uint8)).tolist() == [[False, True]]  # 0/1 label map
    assert binary_mask(np.array([[0.4, 0.6]], np.float32)).tolist() == [[False, True]]
    assert binary_mask(np.array([[0, 40000]], np.uint16)).tolist() == [[False, True]]
    assert binary_mask(torch.tensor([[True, False]])).tolist() == [[True, False]]
    m = np.zeros((10, 12), np.uint8)
    assert tight_box(m) is None  # the one rule for an empty mask: no box
    with pytest.raises(ValueError, match="empty"):
        require_tight_box(m)
    m[3, 5] = 255
    assert tight_box(m) == (5, 3, 6, 4) == require_tight_box(m)
    assert box_pixel_bounds([9.6, 0.2, 20.4, 10]) == (10, 0, 20, 10)
    assert box_pixel_bounds([3, 3, 3.2, 3.1]) == (3, 3, 4, 4)  # never empty
