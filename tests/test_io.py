"""Mask reading and conversion: the forms masks arrive in, and the reference's saving convention."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from is5net.io import load_mask, mask_to_uint8


@pytest.fixture
def horse():
    return (~data.horse()).astype(np.uint8) * 255   # 328x400, horse = 255


def test_alpha_is_the_mask_only_when_it_varies(tmp_path, horse):
    rgb = np.dstack([horse] * 3)
    # A cut-out: colour everywhere, the object in the alpha channel.
    cutout = np.dstack([np.full_like(horse, 90)] * 3 + [horse])
    Image.fromarray(cutout, "RGBA").save(tmp_path / "cutout.png")
    assert np.array_equal(load_mask(tmp_path / "cutout.png"), horse)
    # A grey mask an editor saved with an opaque alpha: the grey levels are the mask, not the alpha.
    Image.fromarray(np.dstack([rgb, np.full_like(horse, 255)]), "RGBA").save(tmp_path / "opaque.png")
    assert np.array_equal(load_mask(tmp_path / "opaque.png"), horse)
    Image.fromarray(np.dstack([horse, np.full_like(horse, 255)]), "LA").save(tmp_path / "opaque_la.png")
    assert np.array_equal(load_mask(tmp_path / "opaque_la.png"), horse)


def test_floats_are_truncated_as_the_reference_saves_maps():
    soft = np.array([[0.0, 0.5, 0.999], [0.503, 1.0, 0.25]], np.float32)
    # DIS / DIS-SAM: (pred * 255).astype(np.uint8)
    assert np.array_equal(mask_to_uint8(soft), (soft * 255).astype(np.uint8))
    assert mask_to_uint8(soft)[0, 1] == 127 and mask_to_uint8(soft)[1, 0] == 128


def test_integer_masks(horse):
    assert np.array_equal(mask_to_uint8(horse), horse)
    assert np.array_equal(mask_to_uint8(horse > 0), horse)                       # bool
    assert np.array_equal(mask_to_uint8((horse > 0).astype(np.int64)), horse)    # 0/1 labels
    sixteen = horse.astype(np.uint16) * 257                                       # 16-bit, full range
    assert np.array_equal(mask_to_uint8(sixteen), horse)
    ramp = np.linspace(0, 65535, 400).astype(np.uint16)[None].repeat(3, 0)
    assert np.abs(mask_to_uint8(ramp).astype(int) - ramp / 257).max() <= 0.5     # scaled, not clipped at 255
