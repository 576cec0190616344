"""Training faults a new user meets: settings out of range, a damaged checkpoint on resume, a log that
repeats itself after a resume, a GT-encoder phase that ignores every cap but its own."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from helpers import REFINER_ONLY, tiny_training
from is5net.checkpoint import read_state_dict
from is5net.cli import main
from is5net.errors import IS5NetError
from is5net.train import TrainConfig, load_config, train

TINY = tiny_training(*REFINER_ONLY, "data_cache=off")


@pytest.fixture(scope="module")
def dataset(training_dataset):
    return training_dataset(seed=5, n_train=8, n_val=3, n_test=1, size=64)


def _train(dataset, out, *extra):
    return main(["train", "--data", str(dataset), "--coarse-dir", "dataset", "--out", str(out), "-q", *TINY, *extra])


def _rows(run):
    """log.csv as (phase, step, name) triples, in file order."""
    lines = (run / "log.csv").read_text().splitlines()
    assert lines[0] == "time,phase,step,name,value"
    return [tuple(line.split(",")[1:4]) for line in lines[1:]]


# ------------------------------------------------------------------------------------ e. ranges
@pytest.mark.parametrize(
    "override, needle",
    [
        ("early_stop=-1", "early_stop must be >= 0"),
        ("val_limit=-3", "val_limit must be >= 0"),
        ("gt_encoder_target_maxf=5", "gt_encoder_target_maxf must be in (0, 1]"),
        ("min_fraction=2", "min_fraction must be in [0, 1]"),
        ("jitter_fraction=-1", "jitter_fraction must be in [0, 1]"),
        ("log_every=0", "log_every must be >= 1"),
        ("betas=0.9,1.5", "betas must be in [0, 1)"),
        ("input_size=48", "input_size must be a multiple of 32"),
        ("seed=-2", "seed must be >= 0"),
    ],
)
def test_settings_out_of_range_are_refused_in_one_line_naming_key_and_range(
    dataset, tmp_path, capsys, override, needle
):
    assert _train(dataset, tmp_path / "o", override, "max_steps=1") == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_every_setting_declares_its_range_and_defaults_are_within_it():
    import dataclasses

    from is5net.train.config import validate

    fields = dataclasses.fields(TrainConfig)
    assert all("accepts" in f.metadata for f in fields)  # one table: no setting without a declared range
    validate(TrainConfig())


def test_a_config_built_in_python_is_checked_too(dataset, tmp_path):
    c = TrainConfig(
        model="is5net_tiny",
        input_size=64,
        batch_size=4,
        workers=0,
        gt_encoder=False,
        feature_loss=False,
        max_steps=1,
        log_every=0,
        data=str(dataset),
        coarse_dir="dataset",
    )
    with pytest.raises(IS5NetError, match="log_every must be >= 1"):
        train(c, tmp_path / "o", progress=False)


def test_fp16_on_a_cpu_without_loss_scaling_is_refused(dataset, tmp_path, capsys, monkeypatch):
    class NoCpuScaler:  # torch < 2.3: torch.amp.GradScaler takes no device (only the CUDA class exists)
        def __init__(self, *a, **k):
            raise TypeError("__init__() got an unexpected keyword argument 'enabled'")

    monkeypatch.setattr(torch.amp, "GradScaler", NoCpuScaler)
    assert _train(dataset, tmp_path / "o", "precision=fp16", "device=cpu", "max_steps=2") == 2
    err = capsys.readouterr().err.strip()
    assert "precision=fp16" in err and "fp32 or bf16" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ i. damaged checkpoints, j. log
def test_resume_past_a_damaged_newest_state_falls_back_to_the_newest_whole_checkpoint(dataset, tmp_path, caplog):
    run = tmp_path / "run"
    argv = ["max_steps=6", "val_every=100", "save_every=2", "keep_checkpoints=3", "log_every=1"]
    assert _train(dataset, run, *argv) == 0
    done = read_state_dict(run / "refiner_last.safetensors")[0]
    ckpts = run / "checkpoints"
    (ckpts / "refiner-00000006.state.pt").write_bytes(b"PK\x03\x04 cut short")
    (run / "refiner_last.safetensors").unlink()

    with caplog.at_level(logging.WARNING, logger="is5net"):
        assert main(["train", "--resume", str(run), "-q"]) == 0
    assert "refiner-00000006.state.pt is damaged" in caplog.text and "refiner-00000004" in caplog.text
    again = read_state_dict(run / "refiner_last.safetensors")[0]
    assert all(torch.equal(done[k], again[k]) for k in done)  # steps 5 and 6 trained again, to the same weights
    rows = _rows(run)
    assert len(rows) == len(set(rows)) and rows.count(("refiner", "6", "loss")) == 1


def test_resume_with_a_damaged_latest_json_uses_the_checkpoints_on_disk(dataset, tmp_path, caplog):
    run = tmp_path / "run"
    assert _train(dataset, run, "max_steps=4", "val_every=100", "save_every=2") == 0
    (run / "checkpoints" / "latest.json").write_text('{"phase": "refiner", "st')
    with caplog.at_level(logging.WARNING, logger="is5net"):
        assert main(["train", "--resume", str(run), "-q"]) == 0
    assert "latest.json is damaged" in caplog.text and "refiner-00000004.safetensors instead" in caplog.text


def test_resume_with_no_whole_checkpoint_stops_in_one_line_naming_the_damaged_file(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(dataset, run, "max_steps=2", "val_every=100", "keep_checkpoints=1") == 0
    (run / "checkpoints" / "refiner-00000002.safetensors").write_bytes(b"\x00" * 10)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refiner-00000002.safetensors" in err and "cannot resume" in err


def test_a_resumed_run_logs_every_step_once(dataset, tmp_path):
    run = tmp_path / "run"
    assert _train(dataset, run, "max_steps=6", "val_every=3", "save_every=2", "keep_checkpoints=3", "log_every=1") == 0
    uninterrupted = _rows(run)
    # As if killed after logging step 6 but before its checkpoint: latest.json still names step 4.
    ckpts = run / "checkpoints"
    for name in ("refiner-00000006.safetensors", "refiner-00000006.state.pt"):
        (ckpts / name).unlink()
    (ckpts / "latest.json").write_text(
        json.dumps(
            {
                "phase": "refiner",
                "step": 4,
                "weights": "refiner-00000004.safetensors",
                "state": "refiner-00000004.state.pt",
            }
        )
    )
    with open(run / "log.csv", "a") as f:
        f.write("1.0,refiner,7,lo")  # a row cut short by the kill
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert _rows(run) == uninterrupted


# ------------------------------------------------------------------------- l. GT-encoder caps
def test_gt_encoder_phase_is_capped_by_max_steps_and_stops_on_a_plateau(dataset, tmp_path, monkeypatch, caplog):
    assert load_config(None, ["max_steps=24"]).gt_encoder_steps == 24  # a short run is short
    assert load_config(None, []).gt_encoder_steps == 20_000  # the reference's cap
    assert load_config(None, ["max_steps=24", "gt_encoder_max_steps=50"]).gt_encoder_steps == 50

    import is5net.train.loop as loop

    monkeypatch.setattr(loop, "validate", lambda *a, **k: {"maxF": 0.78, "MAE": 0.2})  # stuck, as reported
    argv = [
        "train",
        "--data",
        str(dataset),
        "--coarse-dir",
        "dataset",
        "-q",
        *tiny_training("data_cache=off", "val_every=1", "early_stop=2"),
    ]
    with caplog.at_level(logging.INFO, logger="is5net"):
        assert main([*argv, "--out", str(tmp_path / "plateau"), "max_steps=8", "gt_encoder_max_steps=40"]) == 0
    gt = json.loads((tmp_path / "plateau" / "summary.json").read_text())["gt_encoder"]
    # validation 1 is the best so far, 2 and 3 bring nothing: stop after early_stop=2 of them
    assert gt["steps"] == 3 and gt["stopped_early"] and "early_stop=2" in gt["stop_reason"]
    assert "gt_encoder: stopped at step 3: no better maxF or MAE in 2 validations" in caplog.text

    assert main([*argv, "--out", str(tmp_path / "short"), "max_steps=2", "early_stop=0"]) == 0
    summary = json.loads((tmp_path / "short" / "summary.json").read_text())
    assert summary["gt_encoder"]["steps"] == 2 and summary["refiner"]["steps"] == 2
