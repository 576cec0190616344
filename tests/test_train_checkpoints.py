"""Training never loses progress: what is kept on disk, when, and where validation masks are looked for."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import REFINER_ONLY, tiny_training
from is5net.cli import main
from is5net.errors import IS5NetError
from is5net.train import load_config

TINY = tiny_training("log_every=2", *REFINER_ONLY, "data_cache=off")


@pytest.fixture(scope="module")
def dataset(training_dataset):
    return training_dataset(seed=4, n_train=8, n_val=3, n_test=1, size=64)


def _plain_folder(dataset, dest):
    """DIS-TR as a plain im/ + gt/ (+ coarse/) folder: no DIS-VD, hence no validation set."""
    for sub in ("im", "gt", "coarse"):
        shutil.copytree(dataset / "DIS-TR" / sub, dest / sub)
    return dest


def _checkpoints(run):
    d = run / "checkpoints"
    latest = json.loads((d / "latest.json").read_text())
    numbered = sorted(p.name for p in d.glob("refiner-0*.safetensors"))
    return d, latest, numbered


def test_keeping_one_checkpoint_keeps_the_one_latest_names(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--coarse-dir",
                "dataset",
                "--out",
                str(run),
                "-q",
                *TINY,
                "max_steps=6",
                "val_every=2",
                "keep_checkpoints=1",
            ]
        )
        == 0
    )
    d, latest, numbered = _checkpoints(run)
    assert (d / "refiner-best.safetensors").is_file()  # "best" is not one of the numbered
    assert numbered == [latest["weights"]] == ["refiner-00000006.safetensors"]
    assert (d / latest["state"]).is_file()
    # the default keeps two numbered checkpoints beside the best one
    run2 = tmp_path / "run2"
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--coarse-dir",
                "dataset",
                "--out",
                str(run2),
                "-q",
                *TINY,
                "max_steps=6",
                "val_every=2",
            ]
        )
        == 0
    )
    assert _checkpoints(run2)[2] == ["refiner-00000004.safetensors", "refiner-00000006.safetensors"]


def test_without_a_validation_set_checkpoints_still_come_every_val_every_steps(dataset, tmp_path):
    root = _plain_folder(dataset, tmp_path / "plain")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(root),
                "--coarse-dir",
                "dataset",
                "--out",
                str(run),
                "-q",
                *TINY,
                "max_steps=5",
                "val_every=2",
                "keep_checkpoints=5",
            ]
        )
        == 0
    )
    _, latest, numbered = _checkpoints(run)
    assert numbered == [f"refiner-0000000{k}.safetensors" for k in (2, 4, 5)]
    assert latest["step"] == 5
    assert not (run / "checkpoints" / "refiner-best.safetensors").exists()  # nothing was validated


def test_val_folder_masks_are_looked_for_where_cache_sam_puts_them(dataset, tmp_path, capsys):
    root = _plain_folder(dataset, tmp_path / "train")
    val = tmp_path / "val"
    for sub in ("im", "gt"):
        shutil.copytree(dataset / "DIS-VD" / sub, val / sub)
    assert main(["cache-sam", "--data", str(root), "--sam-type", "tiny", "-q"]) == 0
    argv = [
        "train",
        "--data",
        str(root),
        "--val",
        str(val),
        "--sam-type",
        "tiny",
        "--out",
        str(tmp_path / "r"),
        "-q",
        *TINY,
        "max_steps=2",
        "val_every=2",
    ]
    capsys.readouterr()
    # Refused before any step, naming the command that fills the validation cache.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"is5net cache-sam --data {val}" in err and "coarse masks missing" in err
    assert not (tmp_path / "r").exists()
    assert main(["cache-sam", "--data", str(val), "--sam-type", "tiny", "-q"]) == 0
    assert main(argv) == 0
    assert "val_maxF" in (tmp_path / "r" / "log.csv").read_text()


def test_string_settings_take_yaml_booleans():
    assert load_config(None, ["channels_last=true"]).channels_last == "true"
    assert load_config(None, ["channels_last=off"]).channels_last == "false"
    assert load_config(None, ["data_cache=off"]).data_cache == "false"
    with pytest.raises(IS5NetError, match="channels_last must be auto, true or false"):
        load_config(None, ["channels_last=maybe"])
    with pytest.raises(IS5NetError, match="keep_checkpoints"):
        load_config(None, ["keep_checkpoints=0"])


def test_fp16_training_scales_the_loss_and_checkpoints_the_scaler(dataset, tmp_path):
    import torch

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--coarse-dir",
                "dataset",
                "--out",
                str(run),
                "-q",
                *TINY,
                "max_steps=3",
                "val_every=3",
                "precision=fp16",
            ]
        )
        == 0
    )
    state = torch.load(run / "checkpoints" / "refiner-00000003.state.pt", map_location="cpu", weights_only=True)
    # GradScaler starts at 2**16 and halves on each overflowed (skipped) step: it really ran
    assert 0 < state["scaler"]["scale"] <= 2.0**16
    bf16 = tmp_path / "bf16"
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--coarse-dir",
                "dataset",
                "--out",
                str(bf16),
                "-q",
                *TINY,
                "max_steps=1",
                "val_every=3",
                "precision=bf16",
            ]
        )
        == 0
    )
    state = torch.load(bf16 / "checkpoints" / "refiner-00000001.state.pt", map_location="cpu", weights_only=True)
    assert state["scaler"] == {}  # no loss scaling where it is not needed


def test_pruning_spares_the_checkpoint_latest_names_after_a_crash(tmp_path):
    from is5net.checkpoint import RefinerConfig
    from is5net.modeling import build_model
    from is5net.train.loop import Checkpoints

    model = build_model("is5net_tiny")
    ckpts = Checkpoints(tmp_path, keep=1)
    ckpts.dir.mkdir(parents=True)
    # A crashed run left step 6 behind; the resumed one (another save_every) saves step 5 next.
    for step in (4, 6):
        for ext in (".safetensors", ".state.pt"):
            (ckpts.dir / f"refiner-{step:08d}{ext}").write_bytes(b"stale")
    ckpts.save("refiner", 5, model, {"step": 5}, RefinerConfig.for_model(model))
    latest = ckpts.latest()
    assert latest["weights"] == "refiner-00000005.safetensors"
    assert (ckpts.dir / latest["weights"]).is_file() and (ckpts.dir / latest["state"]).is_file()
    assert not (ckpts.dir / "refiner-00000004.safetensors").exists()
