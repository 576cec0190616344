"""Full-resolution regions: the crop rule, crop == manual crop, seamless tiles, streaming, defaults."""

import numpy as np
import pytest
import torch

from helpers import REFINER_ONLY, tiny_training
from is5net import IS5NetPredictor
from is5net.contract import blend_weight, crop_window, tile_starts
from is5net.errors import IS5NetError
from is5net.inference.regions import blend
from tiny import make_tiny_refiner


def test_crop_rule_margin_rounding_minimum_and_edges():
    # 300 x 200 box, margin 0.1: 30 px left and right, 20 px top and bottom.
    assert crop_window([100, 100, 400, 300], 1000, 1000) == (70, 80, 430, 320)
    # 100 x 50 box: 10 and 5 px are below the 16 px minimum.
    assert crop_window([100, 100, 200, 150], 1000, 1000) == (84, 84, 216, 166)
    # 0.25 of 30 = 7.5 rounds to 8 (Python's round: to even) -> still below 16, so 16.
    assert crop_window([100, 100, 130, 130], 1000, 1000, margin=0.25) == (84, 84, 146, 146)
    assert crop_window([100, 100, 300, 300], 1000, 1000, margin=0.25) == (50, 50, 350, 350)
    # Clipped at the image's edges.
    assert crop_window([0, 5, 40, 60], 64, 48) == (0, 0, 48, 64)  # height 64, width 48
    # A tiny box still gets 16 px of context; a box as large as the image is the image.
    assert crop_window([10, 10, 11, 11], 100, 100) == (0, 0, 27, 27)
    assert crop_window([0, 0, 320, 240], 240, 320) == (0, 0, 320, 240)


def test_tile_starts_cover_with_overlap():
    for length, tile in [(1024, 1024), (1500, 1024), (4000, 1024), (1025, 1024), (300, 1024)]:
        starts = tile_starts(length, min(tile, length))
        t = min(tile, length)
        assert starts[0] == 0 and starts[-1] + t == length
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + t] = True
        assert covered.all()
        if len(starts) > 1:
            assert min(b - a for a, b in zip(starts, starts[1:])) <= 0.75 * t + 1


def test_blending_a_constant_leaves_no_seam():
    h, w, t = 700, 900, 256
    num, den = torch.zeros(h, w), torch.zeros(h, w)
    weight = blend_weight(t)
    for ty in tile_starts(h, t):
        for tx in tile_starts(w, t):
            num[ty : ty + t, tx : tx + t] += 0.37 * weight
            den[ty : ty + t, tx : tx + t] += weight
    out = blend(num, den)
    assert torch.allclose(out, torch.full_like(out, 0.37), atol=1e-6)


@pytest.fixture(scope="module")
def refiner():
    return make_tiny_refiner(5, input_size=64)


def test_box_region_equals_running_image_on_the_manual_crop(refiner, coffee_rgb):
    h, w = coffee_rgb.shape[:2]
    coarse = np.zeros((h, w), np.uint8)
    coarse[60:140, 90:200] = 255
    box = [85.4, 55, 205, 150]
    p = IS5NetPredictor(None, refiner, device="cpu", region="box")
    p.set_image(coffee_rgb)
    full = p.predict(box=box, coarse_mask=coarse).mask
    x0, y0, x1, y1 = crop_window(box, h, w)
    manual = IS5NetPredictor(None, refiner, device="cpu", region="image")
    manual.set_image(coffee_rgb[y0:y1, x0:x1])
    crop = manual.predict(
        box=[box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0], coarse_mask=coarse[y0:y1, x0:x1]
    ).mask
    assert np.array_equal(full[y0:y1, x0:x1], crop)
    outside = np.ones((h, w), bool)
    outside[y0:y1, x0:x1] = False
    assert not full[outside].any()


def test_box_as_large_as_the_image_equals_image_region(refiner, coffee_rgb):
    h, w = coffee_rgb.shape[:2]
    coarse = np.zeros((h, w), np.uint8)
    coarse[20:180, 30:280] = 255
    p = IS5NetPredictor(None, refiner, device="cpu")
    p.set_image(coffee_rgb)
    whole = [0, 0, w, h]
    assert np.array_equal(
        p.predict(box=whole, coarse_mask=coarse, region="box").mask,
        p.predict(box=whole, coarse_mask=coarse, region="image").mask,
    )


def test_tiles_stream_a_bounded_batch_and_cover_the_crop(refiner):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    coarse = np.zeros((300, 400), np.uint8)
    coarse[60:240, 80:320] = 255
    p = IS5NetPredictor(None, refiner, device="cpu", region="tiles", batch_size=2)
    p.set_image(rgb)
    out = p.predict(box=[80, 60, 320, 240], coarse_mask=coarse).mask
    assert out.shape == (300, 400) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    # A 272x216 crop at 64 px tiles: dozens of tiles, never more than 2 held at once.
    assert p._regions.largest_batch == 2
    x0, y0, x1, y1 = crop_window([80, 60, 320, 240], 300, 400)
    outside = np.ones((300, 400), bool)
    outside[y0:y1, x0:x1] = False
    assert not out[outside].any()


def test_region_default_comes_from_the_checkpoint_and_bad_values_are_refused(tmp_path):
    from is5net.checkpoint import load_refiner, save_refiner

    model = make_tiny_refiner(5, input_size=64)
    model.config.region = "box"
    save_refiner(model, tmp_path / "r.safetensors")
    loaded = load_refiner(tmp_path / "r.safetensors")
    assert loaded.config.region == "box"
    assert IS5NetPredictor(None, loaded, device="cpu").region == "box"
    assert IS5NetPredictor(None, make_tiny_refiner(5), device="cpu").region == "image"
    with pytest.raises(IS5NetError, match="region 'crop'"):
        IS5NetPredictor(None, loaded, device="cpu", region="crop")
    with pytest.raises(IS5NetError, match="margin"):
        IS5NetPredictor(None, loaded, device="cpu", margin=-1)


def test_validation_item_of_a_box_region_is_the_predictors_crop_input(tmp_path, coffee_rgb):
    """A refiner trained for `box` sees in validation exactly what `predict --region box` gives it."""
    from PIL import Image

    from is5net.data.dataset import CoarseDir, RefinerDataset
    from is5net.data.pairs import find_pairs
    from is5net.data.samples import enumerate_samples

    root = tmp_path / "data"
    for sub in ("im", "gt", "coarse"):
        (root / "DIS-VD" / sub).mkdir(parents=True)
    gt = np.zeros(coffee_rgb.shape[:2], np.uint8)
    gt[50:150, 80:210] = 255
    coarse = np.zeros_like(gt)
    coarse[55:160, 70:200] = 255
    Image.fromarray(coffee_rgb).save(root / "DIS-VD" / "im" / "cup.png")
    Image.fromarray(gt).save(root / "DIS-VD" / "gt" / "cup.png")
    Image.fromarray(coarse).save(root / "DIS-VD" / "coarse" / "cup.png")
    samples = enumerate_samples(find_pairs(root, ["DIS-VD"]), enrich=False)
    refiner = make_tiny_refiner(5, input_size=64)
    ds = RefinerDataset(
        samples, CoarseDir("dataset"), 64, refiner.config.mean, refiner.config.std, train=False, region="box"
    )
    seen = []
    p = IS5NetPredictor(None, refiner, device="cpu", region="box")
    inner = p._regions.logits
    p._regions.logits = lambda x: seen.append(x.clone()) or inner(x)
    p.set_image(coffee_rgb)
    p.predict(box=list(samples[0].box), coarse_mask=coarse)
    assert len(seen) == 1 and torch.equal(seen[0][0], ds[0]["input"])


def test_training_views_are_seeded_and_tiles_are_native_resolution():
    from is5net.contract import training_view

    rng_img = np.random.default_rng(1)
    rgb = rng_img.integers(0, 256, (600, 800, 3), dtype=np.uint8)
    gt = np.zeros((600, 800), bool)
    gt[100:500, 150:650] = True
    box = [150, 100, 650, 500]
    a = training_view(rgb, gt, gt, box, "tiles", 128, np.random.default_rng(7))
    b = training_view(rgb, gt, gt, box, "tiles", 128, np.random.default_rng(7))
    assert all(np.array_equal(u, v) for u, v in zip(a[:3], b[:3])) and a[3] == b[3]
    shapes = {training_view(rgb, gt, gt, box, "tiles", 128, np.random.default_rng(s))[0].shape for s in range(20)}
    assert (128, 128, 3) in shapes  # native-resolution tiles
    assert any(s[0] > 128 for s in shapes)  # and whole-crop views (the low-resolution pass)
    # Validation (no rng) shows the crop with the exact margin, as predict does.
    v = training_view(rgb, gt, gt, box, "box", 128, None)
    x0, y0, x1, y1 = crop_window(box, 600, 800)
    assert v[0].shape == (y1 - y0, x1 - x0, 3) and v[3] == [150 - x0, 100 - y0, 650 - x0, 500 - y0]


def test_eval_box_jitter_is_seeded_captioned_and_region_is_honoured(tmp_path, coffee_rgb):
    from PIL import Image

    from is5net.checkpoint import save_refiner
    from is5net.eval.dis5k import evaluate_dataset

    root = tmp_path / "DIS5K"
    for sub in ("im", "gt"):
        (root / "DIS-TE1" / sub).mkdir(parents=True)
    (tmp_path / "coarse").mkdir()
    for i, (y, x) in enumerate([(40, 60), (70, 110), (30, 150)]):
        gt = np.zeros(coffee_rgb.shape[:2], np.uint8)
        gt[y : y + 90, x : x + 100] = 255
        coarse = np.zeros_like(gt)
        coarse[y + 5 : y + 95, x - 5 : x + 95] = 255
        Image.fromarray(coffee_rgb).save(root / "DIS-TE1" / "im" / f"{i}.png")
        Image.fromarray(gt).save(root / "DIS-TE1" / "gt" / f"{i}.png")
        Image.fromarray(coarse).save(tmp_path / "coarse" / f"{i}.png")
    ckpt = tmp_path / "r.safetensors"
    save_refiner(make_tiny_refiner(5, input_size=64), ckpt)

    def run(name, **kw):
        rows = evaluate_dataset(
            root,
            ["DIS-TE1"],
            "is5net",
            ckpt,
            tmp_path / name,
            coarse_dir=tmp_path / "coarse",
            device="cpu",
            progress=False,
            **kw,
        )
        preds = [np.asarray(Image.open(tmp_path / name / "predictions" / "DIS-TE1" / f"{i}.png")) for i in range(3)]
        return rows, preds, (tmp_path / name / "table.md").read_text()

    _, tight, md0 = run("tight")
    _, a, md = run("a", box_jitter=0.2, jitter_seed=3)
    _, b, _ = run("b", box_jitter=0.2, jitter_seed=3)
    _, c, _ = run("c", box_jitter=0.2, jitter_seed=4)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))  # reproducible from its seed
    assert not all(np.array_equal(u, v) for u, v in zip(a, c))  # another seed, other boxes
    assert not all(np.array_equal(u, v) for u, v in zip(a, tight))
    assert "--box-jitter 0.2 --jitter-seed 3" in md and "--box-jitter" not in md0
    _, boxed, md_box = run("box", region="box")
    assert "Region: box." in md_box and "Region: image." in md0
    assert not all(np.array_equal(u, v) for u, v in zip(boxed, tight))


@pytest.mark.parametrize("region", ["box", "tiles"])
def test_training_for_a_region_records_it_and_predict_follows(tmp_path, training_dataset, region):
    from is5net.checkpoint import load_refiner
    from is5net.train import load_config, train

    root = training_dataset(seed=3, n_train=8, n_val=2, n_test=0, size=160)
    c = load_config(
        None,
        tiny_training(
            f"data={root}",
            "coarse_dir=dataset",
            "max_steps=3",
            "val_every=3",
            *REFINER_ONLY,
            f"region={region}",
            "crop_margin=0.2",
            "max_side=128",
        ),
    )
    ckpt = train(c, tmp_path / "run", progress=False)
    refiner = load_refiner(ckpt)
    assert refiner.config.region == region
    assert IS5NetPredictor(None, refiner, device="cpu").region == region


def test_region_settings_are_range_checked():
    from is5net.train import load_config

    with pytest.raises(IS5NetError, match="region"):
        load_config(None, ["region=crop"])
    with pytest.raises(IS5NetError, match="crop_margin"):
        load_config(None, ["crop_margin=-0.1"])


def test_validation_of_a_box_refiner_scores_what_eval_scores(tmp_path, training_dataset):
    """Training's validation pastes a crop's map where predict does: its maxF and MAE are eval's."""
    from is5net.eval.dis5k import evaluate_dataset
    from is5net.train import load_config, train

    root = training_dataset(seed=4, n_train=4, n_val=3, n_test=0, size=128)
    c = load_config(
        None,
        tiny_training(
            f"data={root}",
            "coarse_dir=dataset",
            "max_steps=2",
            "val_every=2",
            *REFINER_ONLY,
            "region=box",
            "enrich=false",
            "flips=false",
        ),
    )
    ckpt = train(c, tmp_path / "run", progress=False)
    rows = [r.split(",") for r in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    logged = {name: float(v) for _, phase, step, name, v in rows if name in ("val_maxF", "val_MAE")}
    view = tmp_path / "coarse" / "DIS-VD"
    view.mkdir(parents=True)
    for p in (root / "DIS-VD" / "coarse").glob("*.png"):
        (view / p.name).write_bytes(p.read_bytes())
    scored = evaluate_dataset(
        root,
        ["DIS-VD"],
        "is5net",
        ckpt,
        tmp_path / "eval",
        coarse_dir=tmp_path / "coarse",
        device="cpu",
        progress=False,
        metrics="maxF,MAE",
    )["DIS-VD"]
    assert scored["maxF"] == pytest.approx(logged["val_maxF"], abs=2e-3)
    assert scored["MAE"] == pytest.approx(logged["val_MAE"], abs=2e-3)


def test_tiles_drop_grey_detached_from_what_they_kept_and_keep_the_soft_outline():
    from is5net.inference.regions import _drop_detached_grey

    fine = torch.zeros(40, 40)
    fine[10, 5:35] = 0.9  # a committed wire
    fine[9, 5:35] = fine[11, 5:35] = 0.3  # its soft outline
    fine[8, 5:35] = 0.2  # two pixels off the wire
    fine[25:30, 20:25] = 0.4  # a detached haze
    out = _drop_detached_grey(fine)
    assert torch.equal(out[9:12], fine[9:12])
    assert not out[8].any() and not out[25:30].any()
    haze_only = torch.full((20, 20), 0.3)
    assert torch.equal(_drop_detached_grey(haze_only), haze_only)  # nothing decided: nothing to drop


def test_tiles_keep_what_touches_the_coarse_mask_and_drop_a_look_alike_in_the_box(refiner):
    rgb = np.zeros((300, 300, 3), np.uint8)
    rgb[60:140, 60:140] = 255  # the object
    rgb[180:240, 180:240] = 255  # a look-alike inside the same box
    coarse = np.zeros((300, 300), np.uint8)
    coarse[70:130, 70:130] = 255  # stage 1 found the object, not the look-alike
    p = IS5NetPredictor(None, refiner, device="cpu", region="tiles")
    # A refiner that calls every bright pixel foreground: the context rule alone tells the two apart.
    p._regions.logits = lambda x: 40.0 * x[:, :1]
    p.set_image(rgb)
    box = [50, 50, 250, 250]
    tiles = p.predict(box=box, coarse_mask=coarse, region="tiles").mask
    assert tiles[100, 100] > 0.99 and tiles[210, 210] == 0.0
    assert p.predict(box=box, coarse_mask=coarse, region="box").mask[210, 210] > 0.99
