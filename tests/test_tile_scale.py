"""The tiles region's working scale (`tile_scale`): the rule, training tiles == predict tiles, the checkpoint's
default, the range checks, and the command line (docs/input-contract.md, "Regions")."""

import json

import numpy as np
import pytest
import torch

from helpers import REFINER_ONLY, lines_of, tiny_training
from is5net import IS5NetPredictor
from is5net.contract import crop_window, needs_tiles, resize_rgb, tile_starts, training_view, work_scale
from is5net.errors import IS5NetError
from tiny import make_tiny_refiner


def test_work_scale_is_the_tile_scale_capped_by_max_side():
    assert work_scale((300, 400)) == 1.0
    assert work_scale((300, 400), 4096, 2.0) == 2.0
    assert work_scale((300, 400), 600, 2.0) == 1.5  # 400 x 2 would pass 600 px
    assert work_scale((300, 400), 200, 2.0) == 0.5
    # A 60 px crop fits a 64 px input at native resolution, not at twice that.
    assert not needs_tiles((60, 40), 64) and needs_tiles((65, 40), 64)
    assert needs_tiles((60, 40), 64, tile_scale=2.0)


def _photo():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (500, 600, 3), dtype=np.uint8)
    gt = np.zeros((500, 600), bool)
    gt[80:420, 100:520] = True
    gt[200:202, 40:580] = True  # a 2 px wire across the photo
    return rgb, gt, [100, 80, 520, 420]


def test_a_training_tile_at_scale_two_is_the_tile_predict_cuts_from_the_doubled_crop():
    rgb, gt, box = _photo()
    tiles = []
    for seed in range(40):
        view = training_view(rgb, gt, gt, box, "tiles", 128, np.random.default_rng(seed), tile_scale=2.0)
        if view[0].shape[:2] == (64, 64):
            tiles.append(view)
    assert len(tiles) >= 8  # about half the draws are tiles, the rest the whole crop
    for t_rgb, t_gt, _, t_box in tiles[:4]:
        # The tile's place in the photo, from its shifted box.
        oy, ox = int(round(box[1] - t_box[1])), int(round(box[0] - t_box[0]))
        assert np.array_equal(t_rgb, rgb[oy : oy + 64, ox : ox + 64])
        assert np.array_equal(t_gt, gt[oy : oy + 64, ox : ox + 64])
        # What the refiner sees: the 64 px window brought to 128 px == that window of the photo at 2x
        # (predict's working image), away from the window's 1 px border where bilinear reads outside it.
        seen = resize_rgb(t_rgb, 128)
        y0, x0 = max(oy - 8, 0), max(ox - 8, 0)
        doubled = resize_rgb(rgb[y0 : oy + 72, x0 : ox + 72], (2 * (oy + 72 - y0), 2 * (ox + 72 - x0)))
        dy, dx = 2 * (oy - y0), 2 * (ox - x0)
        assert torch.allclose(seen[:, 2:-2, 2:-2], doubled[:, dy + 2 : dy + 126, dx + 2 : dx + 126], atol=1e-3)


def test_native_tiles_are_unchanged_by_the_setting():
    rgb, gt, box = _photo()
    for seed in range(10):
        a = training_view(rgb, gt, gt, box, "tiles", 128, np.random.default_rng(seed))
        b = training_view(rgb, gt, gt, box, "tiles", 128, np.random.default_rng(seed), tile_scale=1.0)
        assert all(np.array_equal(u, v) for u, v in zip(a[:3], b[:3])) and a[3] == b[3]


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_tiles_refine_the_crop_at_the_tile_scale(scale):
    refiner = make_tiny_refiner(5, input_size=64)
    rgb, gt, box = _photo()
    coarse = gt.astype(np.uint8) * 255
    p = IS5NetPredictor(None, refiner, device="cpu", region="tiles", batch_size=1, tile_scale=scale)
    seen = []
    inner = p._regions.logits
    p._regions.logits = lambda x: seen.append(x.shape[0]) or inner(x)
    p.set_image(rgb)
    out = p.predict(box=box, coarse_mask=coarse).mask
    x0, y0, x1, y1 = crop_window(box, 500, 600)
    h, w = round((y1 - y0) * scale), round((x1 - x0) * scale)
    # The working image's tiles, one at a time, and nothing else.
    assert len(seen) == len(tile_starts(h, 64)) * len(tile_starts(w, 64))
    assert out.shape == (500, 600) and 0 <= out.min() and out.max() <= 1
    assert not out[:y0].any() and not out[y1:].any()


def test_the_default_is_the_checkpoints_and_bad_values_are_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from is5net.checkpoint import load_refiner, save_refiner

    model = make_tiny_refiner(5, input_size=64)
    model.config.region, model.config.tile_scale = "tiles", 2.0
    save_refiner(model, tmp_path / "r.safetensors")
    loaded = load_refiner(tmp_path / "r.safetensors")
    assert loaded.config.tile_scale == 2.0
    assert IS5NetPredictor(None, loaded, device="cpu").tile_scale == 2.0
    assert IS5NetPredictor(None, loaded, device="cpu", tile_scale=1).tile_scale == 1.0
    # A file written before the setting existed refines tiles at native resolution.
    with safe_open(str(tmp_path / "r.safetensors"), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    del config["tile_scale"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={**meta, "config": json.dumps(config)})
    assert IS5NetPredictor(None, load_refiner(tmp_path / "old.safetensors"), device="cpu").tile_scale == 1.0
    for bad in (0, 0.1, 9, True, "2", float("nan")):
        with pytest.raises(IS5NetError, match="tile_scale"):
            IS5NetPredictor(None, loaded, device="cpu", tile_scale=bad)


def test_training_records_the_tile_scale_and_checks_its_range(tmp_path, training_dataset):
    from is5net.checkpoint import load_refiner
    from is5net.train import load_config, train

    for bad in ("tile_scale=0", "tile_scale=9", "tile_scale=two"):
        with pytest.raises(IS5NetError, match="tile_scale"):
            load_config(None, [bad])
    root = training_dataset(seed=4, n_train=6, n_val=2, n_test=0, size=160)
    settings = [f"data={root}", "coarse_dir=dataset", "max_steps=2", "val_every=2", *REFINER_ONLY]
    c = load_config(None, tiny_training(*settings, "region=tiles", "tile_scale=2", "max_side=512"))
    refiner = load_refiner(train(c, tmp_path / "run", progress=False))
    assert (refiner.config.region, refiner.config.tile_scale) == ("tiles", 2.0)
    assert IS5NetPredictor(None, refiner, device="cpu").tile_scale == 2.0


def test_the_command_line_takes_and_checks_tile_scale(tmp_path, capsys, run_cli, image_file, tiny_refiner_checkpoint):
    from PIL import Image

    w, h = Image.open(image_file).size
    coarse = np.zeros((h, w), np.uint8)
    coarse[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    Image.fromarray(coarse).save(tmp_path / "coarse.png")
    box = f"{w // 4},{h // 4},{3 * w // 4},{3 * h // 4}"
    base = [image_file, "--box", box, "--checkpoint", tiny_refiner_checkpoint, "--coarse-mask", tmp_path / "coarse.png"]
    with pytest.raises(SystemExit) as info:
        run_cli("predict", *base, "--region", "tiles", "--tile-scale", "9", "-o", tmp_path / "bad")
    assert info.value.code == 2
    assert "--tile-scale: expected a number from 0.25 to 8" in lines_of(capsys.readouterr().err)[-1]
    assert not (tmp_path / "bad").exists()
    status, err = run_cli("predict", *base, "--region", "tiles", "--tile-scale", "2", "-q", "-o", tmp_path / "out")
    assert status == 0, err
    assert len(list((tmp_path / "out").glob("*.png"))) == 1
