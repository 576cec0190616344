"""A stage 1 other than SAM end to end: ``cache-sam`` with HQ-SAM (``vit_tiny``, random weights in a
``.pth`` file) fills a cache of HQ-SAM's masks, kept apart from SAM's, and ``train`` fine-tunes on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import REFINER_ONLY, random_hq_sam_file, tiny_training
from is5net.cli import main
from is5net.inference.stage1 import choose_stage1
from is5net.io import load_image, load_mask


@pytest.fixture(scope="module")
def hq_file(tmp_path_factory):
    return random_hq_sam_file(tmp_path_factory.mktemp("hq"), seed=3)[0]


def test_cache_sam_and_train_on_hq_sam_masks(training_dataset, hq_file, tmp_path, capsys):
    root = training_dataset(seed=5, n_train=2, n_val=1, n_test=1, size=64)
    stage1 = ["--stage1", "hq-sam", "--stage1-checkpoint", str(hq_file)]
    assert main(["cache-sam", "--data", str(root), "--subsets", "DIS-TR,DIS-VD", *stage1, "-q"]) == 0
    assert "cache-sam:" in capsys.readouterr().out

    folders = [p for p in (root / ".sam-cache").iterdir() if p.is_dir()]
    assert len(folders) == 1 and folders[0].name.startswith("hq-sam-") and folders[0].name.endswith("_first")
    info = json.loads((folders[0] / "info.json").read_text())
    assert info["family"] == "hq-sam" and info["sam_type"] == "vit_tiny"
    entries = sorted(folders[0].glob("*/*.png"))
    assert len(entries) >= 3

    # An entry is the HQ-SAM stage's mask for that image and box.
    entry = entries[0]
    x0, y0, x1, y1 = (int(v) for v in entry.stem.split("_"))
    from is5net.data.sam_cache import image_hash

    image = next(p for p in root.glob("DIS-*/im/*") if image_hash(p) == entry.parent.name)
    stage = choose_stage1("hq-sam:vit_tiny", hq_file).build("cpu")
    stage.set_image(load_image(image))
    mask, _ = stage.predict(np.array([[x0, y0, x1, y1]], dtype=np.float64))
    assert np.array_equal(load_mask(entry) > 127, mask[0].numpy())

    run = tmp_path / "run"
    settings = tiny_training("log_every=1", *REFINER_ONLY, "data_cache=off", "max_steps=3", "val_every=3", batch_size=2)
    assert main(["train", "--data", str(root), *stage1, "--out", str(run), "-q", *settings]) == 0
    log = (run / "log.csv").read_text()
    assert "val_maxF" in log and len(log.strip().splitlines()) >= 3
    assert (run / "refiner.safetensors").exists()
    # The same weights named as SAM's: no SAM cache for them, the command that fills one is named.
    argv = ["train", "--data", str(root), "--sam-checkpoint", str(hq_file), "--out", str(tmp_path / "r2"), "-q"]
    assert main([*argv, *settings]) == 2
    err = capsys.readouterr().err
    assert "coarse masks missing" in err and not (tmp_path / "r2").exists()
