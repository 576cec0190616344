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


def test_nan_pixels_are_background():
    soft = np.array([[0.2, 0.9, np.nan], [1.0, 0.5, 0.0]], np.float32)
    assert mask_to_uint8(soft).tolist() == [[51, 229, 0], [255, 127, 0]]


def test_integer_masks(horse):
    assert np.array_equal(mask_to_uint8(horse), horse)
    assert np.array_equal(mask_to_uint8(horse > 0), horse)                       # bool
    assert np.array_equal(mask_to_uint8((horse > 0).astype(np.int64)), horse)    # 0/1 labels
    sixteen = horse.astype(np.uint16) * 257                                       # 16-bit, full range
    assert np.array_equal(mask_to_uint8(sixteen), horse)
    ramp = np.linspace(0, 65535, 400).astype(np.uint16)[None].repeat(3, 0)
    assert np.abs(mask_to_uint8(ramp).astype(int) - ramp / 257).max() <= 0.5     # scaled, not clipped at 255


def test_images_in_every_form_arrive_as_displayed_uint8_rgb(tmp_path):
    from is5net.io import load_image, open_image, to_rgb_uint8

    rgb = data.astronaut()[::4, ::4]                                        # 128x128x3
    wide = np.ascontiguousarray(rgb[:, :96])                                # stored 96 wide, 128 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "rot.png", exif=exif)
    with Image.open(tmp_path / "rot.png") as img:                          # a PIL image straight from a file
        assert to_rgb_uint8(img).shape == (96, 128, 3)                     # rotated, as load_image does
    assert np.array_equal(to_rgb_uint8(Image.open(tmp_path / "rot.png")), load_image(tmp_path / "rot.png"))
    # floats: [0, 1] scaled, 0..255 taken as is (not clipped to 1 and turned white)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.float32)), rgb)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.float32) / 255.0), rgb)
    # 8-bit data in a 32-bit container (mode I), and true 16-bit
    grey = rgb[..., 0]
    Image.fromarray(grey.astype(np.int32), "I").save(tmp_path / "i32.tif")
    assert np.array_equal(load_image(tmp_path / "i32.tif")[..., 0], grey)
    assert np.array_equal(load_mask(tmp_path / "i32.tif"), grey)
    # a decompression bomb is one clear error, not a traceback
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = 1000
        with pytest.raises(Exception) as info:
            open_image(tmp_path / "rot.png")
        assert type(info.value).__name__ == "IS5NetError" and "too many pixels" in str(info.value)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def test_palette_masks(tmp_path, horse):
    index = (horse > 0).astype(np.uint8)                                    # 0 = background, 1 = horse
    voc = Image.fromarray(index, "P")
    voc.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)                        # VOC's dark red for index 1
    voc.save(tmp_path / "voc.png")
    assert np.array_equal(load_mask(tmp_path / "voc.png"), horse)
    # Pillow's adaptive palette puts the object's red first: index 0 is not the background here
    red = Image.fromarray(np.dstack([horse, np.zeros_like(horse), np.zeros_like(horse)]), "RGB")
    red.convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(tmp_path / "adaptive.png")
    assert np.array_equal(load_mask(tmp_path / "adaptive.png"), horse)
    grey = Image.fromarray(horse).convert("P")                              # a grey mask stored with a palette
    grey.save(tmp_path / "grey.png")
    assert np.array_equal(load_mask(tmp_path / "grey.png"), horse)
