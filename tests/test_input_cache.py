"""The resized-input cache: what it returns, when it recomputes, and how training uses it."""

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import REFINER_ONLY, tiny_training
from is5net.contract import resize_input
from is5net.data.dataset import CoarseDir, InputCache, RefinerDataset
from is5net.data.pairs import find_pairs
from is5net.data.samples import enumerate_samples

MEAN, STD = [0.5, 0.5, 0.5, 0, 0], [1.0] * 5
HALF_LEVEL = 0.5 / 255 + 1e-6


@pytest.fixture()
def dataset(training_dataset):
    return training_dataset(seed=5, n_train=6, n_val=0, n_test=0, size=96)


def _datasets(root, cache_dir, size=64):
    samples = enumerate_samples(find_pairs(root, ["DIS-TR"]), enrich=False)
    plain = RefinerDataset(samples, CoarseDir("dataset"), size, MEAN, STD, train=False)
    cached = RefinerDataset(
        samples, CoarseDir("dataset"), size, MEAN, STD, train=False, input_cache=InputCache(cache_dir, size)
    )
    return plain, cached


def test_resizing_channels_apart_equals_resizing_the_stacked_image():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    coarse = (rng.random((45, 70)) > 0.5).astype(np.uint8) * 255
    box = (7, 3, 51, 40)
    stacked = torch.cat(
        [
            torch.from_numpy(rgb).permute(2, 0, 1).float(),
            torch.from_numpy((coarse > 127).astype(np.float32) * 255)[None],
            torch.zeros(1, 45, 70),
        ]
    )
    stacked[4, 3:40, 7:51] = 255
    ref = F.interpolate(stacked[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
    ref[4] = (ref[4] > 127).float() * 255
    assert torch.equal(resize_input(rgb, coarse, box, 32), ref)


def test_cached_items_are_the_uncached_ones_to_half_a_grey_level(dataset, tmp_path):
    plain, cached = _datasets(dataset, tmp_path / "cache")
    cached.prepare_input_cache()
    for i in range(len(plain)):
        a, b = plain[i], cached[i]
        assert a["input"].shape == b["input"].shape == (5, 64, 64)
        diff = (a["input"] - b["input"]).abs()
        assert float(diff[:4].max()) <= HALF_LEVEL  # RGB and coarse: rounded to uint8
        assert torch.equal(a["input"][4], b["input"][4])  # the re-binarised box channel: exact
        assert float((a["gt"] - b["gt"]).abs().max()) <= HALF_LEVEL
        assert float(diff[:3].mean()) > 0 or i > 0  # it is really the rounded copy
    root = InputCache(tmp_path / "cache", 64).root
    assert len(list(root.glob("rgb/*/*.npy"))) == len(plain)
    assert len(list(root.glob("masks/*/*.png"))) == len(plain)

    # A second dataset reads the entries back: identical to what the first returned fresh.
    _, again = _datasets(dataset, tmp_path / "cache")
    for i in range(len(plain)):
        assert torch.equal(again[i]["input"], cached[i]["input"])
        assert torch.equal(again[i]["gt"], cached[i]["gt"])


def test_a_changed_coarse_mask_gets_a_new_entry(dataset, tmp_path):
    _, cached = _datasets(dataset, tmp_path / "cache")
    before = cached[0]["input"][3].clone()
    sample = cached.sample_for(0)
    coarse_file = CoarseDir("dataset").path(sample)
    m = np.asarray(Image.open(coarse_file))
    Image.fromarray(255 - m).save(coarse_file)

    _, fresh = _datasets(dataset, tmp_path / "cache")
    after = fresh[0]["input"][3]
    assert not torch.equal(before, after)
    assert float((after + before - 1).abs().max()) <= 2 * HALF_LEVEL + 1e-6  # the inverted mask
    assert len(list(InputCache(tmp_path / "cache", 64).root.glob("masks/*/*.png"))) == 2


def test_a_damaged_entry_is_recomputed(dataset, tmp_path, caplog):
    _, cached = _datasets(dataset, tmp_path / "cache")
    first = cached[1]["input"].clone()
    rgb_key, masks_key = cached.entry_keys(cached.sample_for(1))
    cache = cached.input_cache
    cache.rgb_path(rgb_key).write_bytes(b"\x93NUMPY broken")
    cache.masks_path(masks_key).write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="is5net"):
        again = cached[1]["input"]
    assert torch.equal(first, again)
    assert sum("recomputed" in r.getMessage() for r in caplog.records) == 2
    assert np.load(cache.rgb_path(rgb_key)).shape == (3, 64, 64)


def test_training_uses_the_cache_and_refuses_an_unwritable_one(dataset, tmp_path):
    from is5net.cli import main
    from is5net.train import load_config, train

    cache_dir = tmp_path / "inputs"
    c = load_config(
        None,
        tiny_training(
            "max_steps=2", "val_every=2", *REFINER_ONLY, "val_fraction=0.34", f"data_cache={cache_dir}", batch_size=2
        ),
        base={"data": str(dataset), "coarse_dir": "dataset"},
    )
    train(c, tmp_path / "run", progress=False)
    assert list(InputCache(cache_dir, 64).root.glob("rgb/*/*.npy"))

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc = main(
        [
            "train",
            "--data",
            str(dataset),
            "--coarse-dir",
            "dataset",
            "--out",
            str(tmp_path / "run2"),
            *tiny_training("max_steps=1", *REFINER_ONLY, f"data_cache={blocker / 'sub'}", batch_size=2),
        ]
    )
    assert rc == 2


def test_default_workers_share_the_cores_among_local_processes(monkeypatch):
    from is5net.train.config import TrainConfig, default_workers

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 8 and TrainConfig().workers == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == 3
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers() == 1


def test_cache_images_decodes_each_photo_once_and_changes_no_item(dataset, monkeypatch):
    from is5net.data import dataset as dataset_module
    from is5net.data.training import DataSettings, prepare_data
    from is5net.train import load_config

    settings = [f"data={dataset}", "coarse_dir=dataset", "region=tiles", "data_cache=off", "val_fraction=0"]
    plain = prepare_data(DataSettings.of(load_config(None, settings)), 5).train
    cached = prepare_data(DataSettings.of(load_config(None, [*settings, "cache_images=6"])), 5).train
    decoded = []
    real = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda path, *a: decoded.append(path) or real(path, *a))
    for epoch in range(2):
        plain.set_epoch(epoch), cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert torch.equal(a["input"], b["input"]) and torch.equal(a["gt"], b["gt"])
    # Two epochs: the plain dataset decodes every photo twice, the cached one once.
    assert len(decoded) == 2 * len(plain) + len(set(decoded))
    assert len(set(decoded)) == 6
