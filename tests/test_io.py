"""Mask reading and conversion: the forms masks arrive in, and the reference's saving convention."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from is5net.io import load_mask, mask_to_uint8


@pytest.fixture
def horse():
    return (~data.horse()).astype(np.uint8) * 255  # 328x400, horse = 255


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
    assert np.array_equal(mask_to_uint8(horse > 0), horse)  # bool
    assert np.array_equal(mask_to_uint8((horse > 0).astype(np.int64)), horse)  # 0/1 labels
    sixteen = horse.astype(np.uint16) * 257  # 16-bit, full range
    assert np.array_equal(mask_to_uint8(sixteen), horse)
    ramp = np.linspace(0, 65535, 400).astype(np.uint16)[None].repeat(3, 0)
    assert np.abs(mask_to_uint8(ramp).astype(int) - ramp / 257).max() <= 0.5  # scaled, not clipped at 255


def test_images_in_every_form_arrive_as_displayed_uint8_rgb(tmp_path):
    from is5net.io import load_image, open_image, to_rgb_uint8

    rgb = data.astronaut()[::4, ::4]  # 128x128x3
    wide = np.ascontiguousarray(rgb[:, :96])  # stored 96 wide, 128 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "rot.png", exif=exif)
    with Image.open(tmp_path / "rot.png") as img:  # a PIL image straight from a file
        assert to_rgb_uint8(img).shape == (96, 128, 3)  # rotated, as load_image does
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
    index = (horse > 0).astype(np.uint8)  # 0 = background, 1 = horse
    voc = Image.fromarray(index, "P")
    voc.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)  # VOC's dark red for index 1
    voc.save(tmp_path / "voc.png")
    assert np.array_equal(load_mask(tmp_path / "voc.png"), horse)
    # Pillow's adaptive palette puts the object's red first: index 0 is not the background here
    red = Image.fromarray(np.dstack([horse, np.zeros_like(horse), np.zeros_like(horse)]), "RGB")
    red.convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(tmp_path / "adaptive.png")
    assert np.array_equal(load_mask(tmp_path / "adaptive.png"), horse)
    grey = Image.fromarray(horse).convert("P")  # a grey mask stored with a palette
    grey.save(tmp_path / "grey.png")
    assert np.array_equal(load_mask(tmp_path / "grey.png"), horse)


# --- atomic writes: the mode a plain open() would give (fault g) -------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, umask):
    import os
    import stat

    from is5net.io import atomic_path, atomic_write_text, save_png

    old = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        atomic_write_text(tmp_path / "atomic.txt", "x")
        save_png(tmp_path / "mask.png", np.zeros((4, 4), np.uint8))
        with atomic_path(tmp_path / "sub" / "raw.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == expected  # what open() does
    for name in ("atomic.txt", "mask.png", "sub/raw.bin"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == expected, name
    assert not list(tmp_path.rglob(".*.tmp"))


def test_atomic_write_over_a_file_keeps_its_mode_as_open_does(tmp_path):
    import os
    import stat

    from is5net.io import atomic_write_text

    target = tmp_path / "shared.json"
    target.write_text("old")
    os.chmod(target, 0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(os.stat(target).st_mode) == 0o640


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    from is5net.io import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


# --- the pixel limit: our own error, no DecompressionBombWarning (fault k) ----------------------------------


def test_image_over_the_pixel_limit_is_one_clear_error_naming_the_file_and_the_way_out(tmp_path, monkeypatch):
    from is5net.errors import IS5NetError
    from is5net.io import MAX_PIXELS_ENV, load_image, load_mask

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    for load in (load_image, load_mask):
        with pytest.raises(IS5NetError) as err:
            load(path)
        msg = str(err.value)
        assert str(path) in msg and "40x30" in msg and "1,200" in msg and "1,000" in msg
        assert MAX_PIXELS_ENV in msg and "--max-pixels" in msg
    assert load_image(path, max_pixels=1200).shape == (30, 40, 3)  # an explicit limit wins over the env var
    monkeypatch.setenv(MAX_PIXELS_ENV, "1200")
    assert load_mask(path).shape == (30, 40)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(IS5NetError, match=f"{MAX_PIXELS_ENV}='lots'"):
        load_mask(path)


def test_pillows_decompression_bomb_warning_and_error_do_not_leak(tmp_path, monkeypatch):
    import warnings

    from is5net.errors import IS5NetError
    from is5net.io import MAX_PIXELS_ENV, load_image, stored_and_displayed_size

    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(path)  # 1200 pixels
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        # Pillow's threshold below the image: Pillow would warn (1000 < 1200 <= 2000). Without a limit of
        # the user's, Pillow's threshold is the limit: refused, in our words, with the way out.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        for read in (load_image, stored_and_displayed_size):
            with pytest.raises(IS5NetError, match=r"too many pixels \(40x30 = 1,200 pixels, the limit is 1,000"):
                read(path)
        # Past Pillow's own refusal (2 x 500 < 1200): the same kind of message, not Pillow's exception.
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
        with pytest.raises(IS5NetError, match=f"too many pixels .*{MAX_PIXELS_ENV}=N"):
            load_image(path)
        # The user raises the limit: read, silently, past both of Pillow's thresholds.
        monkeypatch.setenv(MAX_PIXELS_ENV, "5000")
        assert load_image(path).shape == (30, 40, 3)
        assert stored_and_displayed_size(path) == ((40, 30), (40, 30))
