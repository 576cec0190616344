import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import tiny_training, torchrun
from is5net.checkpoint import load_refiner, read_state_dict
from is5net.cli import main
from is5net.errors import IS5NetError
from is5net.modeling import build_model
from is5net.train import load_config, train
from is5net.train.losses import feature_loss, orthogonality_penalty, side_loss

TINY = tiny_training("log_every=2")


@pytest.fixture(scope="module")
def dataset(training_dataset):
    return training_dataset(seed=3, n_train=12, n_val=4, n_test=2, size=96)


def _weights(path):
    sd, _ = read_state_dict(path)
    return sd


def test_both_phases_lower_the_loss_on_a_fixed_batch(dataset):
    from is5net.data.dataset import CoarseDir, RefinerDataset
    from is5net.data.pairs import find_pairs
    from is5net.data.samples import enumerate_samples

    samples = enumerate_samples(find_pairs(dataset, ["DIS-TR"]), enrich=False)
    ds = RefinerDataset(samples, CoarseDir("dataset"), 64, [0.5, 0.5, 0.5, 0, 0], [1] * 5, train=False)
    batch = [ds[i] for i in range(4)]
    x, y = torch.stack([b["input"] for b in batch]), torch.stack([b["gt"] for b in batch])
    assert x.shape == (4, 5, 64, 64) and 0 <= float(y.min()) and float(y.max()) <= 1

    torch.manual_seed(0)
    enc = build_model("gt_encoder_tiny")
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = side_loss(enc(y)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    enc.eval().requires_grad_(False)

    ref = build_model("is5net_tiny")
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        logits, feats = ref(x)
        loss = side_loss(logits, y) + feature_loss(feats, enc(y)[1]) + 1e-8 * orthogonality_penalty(ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_losses_match_their_definitions():
    logits = torch.tensor([[[[0.0, 2.0], [-2.0, 4.0]]]])
    target = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    p = torch.sigmoid(logits)
    bce = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    iou = 1 - ((p * target).sum() + 1) / ((p + target - p * target).sum() + 1)  # the reference's +1
    torch.testing.assert_close(side_loss([logits, logits], target), 2 * (20 * bce + 0.5 * iou))
    empty = torch.zeros_like(target)
    assert float(side_loss([torch.full_like(logits, -30.0)], empty)) < 1e-6  # empty GT, empty prediction: 0
    conv = torch.nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
    # W = [[1], [0]]: W W^T - I = [[0, 0], [0, -1]] -> 1
    assert float(orthogonality_penalty(conv).detach()) == pytest.approx(1.0)
    # Every parameter not named *bias, BatchNorm weights included (C x 1 columns), as the reference's loop.
    model = build_model("is5net_tiny")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    expected = 0.0
    for name, param in model.named_parameters():
        if "bias" not in name:
            w = param.detach().double().reshape(param.shape[0], -1)
            expected += float((w @ w.T - torch.eye(w.shape[0], dtype=torch.float64)).abs().sum())
    assert float(orthogonality_penalty(model).detach()) == pytest.approx(expected, rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = orthogonality_penalty(model)
    assert under_autocast.dtype == torch.float32 and float(under_autocast.detach()) == pytest.approx(expected, rel=1e-5)


def _train_cmd(dataset, out, *extra):
    return [
        sys.executable,
        "-m",
        "is5net.cli",
        "train",
        "--data",
        str(dataset),
        "--coarse-dir",
        "dataset",
        "--out",
        str(out),
        "--no-progress",
        *TINY,
        *extra,
    ]


def test_killed_run_resumes_to_the_same_weights(dataset, tmp_path):
    # A cosine schedule with warm-up: the resumed run must also continue the learning-rate curve.
    extra = [
        "max_steps=12",
        "val_every=6",
        "gt_encoder_max_steps=4",
        "save_every=2",
        "lr_schedule=cosine",
        "warmup_steps=3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_train_cmd(dataset, tmp_path / "a", *extra), check=True, env=env, capture_output=True)

    proc = subprocess.Popen(
        _train_cmd(dataset, tmp_path / "b", *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = tmp_path / "b" / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        try:
            entry = json.loads(latest.read_text())
        except (FileNotFoundError, ValueError):
            entry = None
        if entry and entry["phase"] == "refiner" and entry["step"] >= 4:
            proc.send_signal(signal.SIGKILL)
            killed_at = entry["step"]
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and killed_at < 12, "the run finished before it could be killed"
    assert not (tmp_path / "b" / "refiner.safetensors").exists()

    # Same environment (thread count) as the uninterrupted run: float sums are then bit-identical.
    subprocess.run(
        [sys.executable, "-m", "is5net.cli", "train", "--resume", str(tmp_path / "b"), "--no-progress"],
        check=True,
        env=env,
        capture_output=True,
    )
    a, b = _weights(tmp_path / "a" / "refiner_last.safetensors"), _weights(tmp_path / "b" / "refiner_last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r for r in (tmp_path / "b" / "log.csv").read_text().splitlines() if ",refiner,12,loss," in r]
    assert len(steps) == 1


def test_result_loads_and_predicts_and_config_is_saved(dataset, tmp_path):
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--coarse-dir",
                "dataset",
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
                *TINY,
                "max_steps=4",
                "val_every=2",
                "gt_encoder_max_steps=2",
                "seed=5",
            ]
        )
        == 0
    )
    ref = load_refiner(tmp_path / "r" / "refiner.safetensors")
    assert ref.in_ch == 5 and ref.config.input_size == 64 and ref.config.model == "is5net_tiny"
    saved = load_config(tmp_path / "r" / "config.yaml")
    assert saved.seed == 5 and saved.max_steps == 4 and saved.coarse_dir == "dataset"
    from is5net import IS5NetPredictor
    from is5net.io import load_image, load_mask

    im = sorted((dataset / "DIS-TE1" / "im").iterdir())[0]
    rgb, coarse = load_image(im), load_mask(dataset / "DIS-TE1" / "coarse" / f"{im.stem}.png")
    p = IS5NetPredictor(None, ref, device="cpu")
    p.set_image(rgb)
    out = p.predict(box=[5, 5, 90, 90], coarse_mask=coarse)
    assert out.mask.shape == rgb.shape[:2] and 0 <= out.mask.min() and out.mask.max() <= 1
    with pytest.raises(IS5NetError, match="already holds a run"):
        train(saved, tmp_path / "r", progress=False)


def test_isnet_preset_trains_three_channels_without_prompt(dataset, tmp_path):
    assert (
        main(
            [
                "train",
                "--data",
                str(dataset),
                "--out",
                str(tmp_path / "i"),
                "--no-progress",
                "preset=isnet",
                "model=isnet_tiny",
                "input_size=64",
                "batch_size=4",
                "workers=0",
                "max_steps=2",
                "val_every=2",
            ]
        )
        == 0
    )
    ref = load_refiner(tmp_path / "i" / "refiner.safetensors")
    assert ref.in_ch == 3
    assert not (tmp_path / "i" / "gt_encoder.safetensors").exists()


def test_non_finite_loss_stops_naming_the_step_and_keeps_last_checkpoint(dataset, tmp_path, monkeypatch):
    import is5net.train.step as step  # the losses of both phases are built there

    calls = {"n": 0}
    real = step.side_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        value = real(*a, **k)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(step, "side_loss", poisoned)
    cfg = load_config(
        None,
        TINY + ["max_steps=6", "val_every=100", "save_every=2", "gt_encoder=false", "feature_loss=false"],
        base={"data": str(dataset), "coarse_dir": "dataset"},
    )
    with pytest.raises(IS5NetError, match="not finite at step 3"):
        train(cfg, tmp_path / "n", progress=False)
    latest = json.loads((tmp_path / "n" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 2
    sd = _weights(tmp_path / "n" / "checkpoints" / latest["weights"])
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())

    calls["n"] = 0
    cfg.nan_policy, cfg.lr_schedule, cfg.log_every = "skip", "cosine", 1
    train(cfg, tmp_path / "s", progress=False)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["refiner"]["skipped_batches"] == 1 and summary["refiner"]["steps"] == 6
    # The skipped batch still advances the schedule: the lr follows the step count (0 after the last step).
    from is5net.train.optim import lr_factor

    rows = [r.split(",") for r in (tmp_path / "s" / "log.csv").read_text().splitlines()]
    logged = {int(step): float(value) for _, phase, step, name, value in rows if name == "lr"}
    assert logged == {k: pytest.approx(cfg.lr * lr_factor(k, 6, "cosine"), rel=1e-5, abs=1e-12) for k in range(1, 7)}


def test_bad_dataset_refused_unless_skip_bad(dataset, tmp_path, capsys, caplog):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    (bad / "DIS-TR" / "im" / "00000_wires.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    args = [
        "train",
        "--data",
        str(bad),
        "--coarse-dir",
        "dataset",
        "--no-progress",
        *TINY,
        "max_steps=2",
        "val_every=2",
        "gt_encoder_max_steps=1",
    ]
    assert main([*args, "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "00000_wires.png" in err and "--skip-bad" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o1").exists()  # a refused run leaves no run folder behind
    assert main([*args, "init=" + str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o3")]) == 2
    assert not (tmp_path / "o3").exists()
    with caplog.at_level("WARNING", logger="is5net"):
        assert main([*args, "--out", str(tmp_path / "o2"), "--skip-bad"]) == 0
    assert "skipping 1 bad pair" in caplog.text
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["skipped_pairs"] == 1


def test_missing_coarse_masks_are_named(dataset, tmp_path, capsys):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(dataset, root)
    (root / "DIS-TR" / "coarse" / "00003_ring.png").unlink()
    assert (
        main(
            [
                "train",
                "--data",
                str(root),
                "--coarse-dir",
                "dataset",
                "--out",
                str(tmp_path / "o"),
                "--no-progress",
                *TINY,
            ]
        )
        == 2
    )
    assert "00003_ring" in capsys.readouterr().err


def test_lr_schedule_warms_up_then_follows_a_cosine_to_zero():
    from is5net.train.optim import lr_factor

    assert [lr_factor(s, 10, "constant", 0) for s in (0, 5, 9, 10)] == [1.0] * 4
    assert [lr_factor(s, 10, "constant", 4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cosine = [lr_factor(s, 10, "cosine", 2) for s in range(11)]
    assert cosine[:3] == [0.5, 1.0, 1.0]
    assert all(a > b for a, b in zip(cosine[2:10], cosine[3:11])) and cosine[10] == 0.0
    assert cosine[6] == pytest.approx(0.5)  # half way through the 8 decaying steps


def test_trained_lr_follows_the_schedule(dataset, tmp_path):
    from is5net.train.optim import lr_factor

    c = load_config(
        None,
        [
            *TINY,
            f"data={dataset}",
            "coarse_dir=dataset",
            "max_steps=6",
            "val_every=100",
            "gt_encoder=false",
            "feature_loss=false",
            "log_every=1",
            "lr=1e-3",
            "lr_schedule=cosine",
            "warmup_steps=2",
        ],
    )
    train(c, tmp_path / "run", progress=False)
    rows = [r.split(",") for r in (tmp_path / "run" / "log.csv").read_text().splitlines()]
    logged = {int(step): float(value) for _, phase, step, name, value in rows if (phase, name) == ("refiner", "lr")}
    # The lr logged after update k is the one of update k + 1 (the log keeps 6 significant digits).
    assert logged == {k: pytest.approx(1e-3 * lr_factor(k, 6, "cosine", 2), rel=1e-5) for k in range(1, 7)}


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-4 as a string; users write it so on the command line and in config files.
    (tmp_path / "c.yaml").write_text("lr: 4e-5\northo_weight: 1e-8\nmax_steps: 2e3\n")
    c = load_config(tmp_path / "c.yaml", ["gt_encoder_lr=1e-4"])
    assert (c.lr, c.ortho_weight, c.max_steps, c.gt_encoder_lr) == (4e-5, 1e-8, 2000, 1e-4)
    assert isinstance(c.max_steps, int)
    with pytest.raises(IS5NetError, match="max_steps"):
        load_config(None, ["max_steps=2.5e0"])
    for bad, key in (
        (["lr=nan"], "lr"),
        (["feature_weight=-inf"], "feature_weight"),
        (["betas=0.9,x"], "betas"),
        (["warmup_steps=null"], "warmup_steps"),
    ):
        with pytest.raises(IS5NetError, match=key):
            load_config(None, bad)


def test_overrides_may_come_on_both_sides_of_options(dataset, tmp_path, capsys):
    # The override after --out is applied (and refused): argparse alone would stop at "unrecognized arguments".
    argv = ["train", "--data", str(dataset), "lr=1e-3", "--out", str(tmp_path / "o"), "batch_size=0"]
    assert main(argv) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", str(dataset), "--out", str(tmp_path / "o"), "--no-such-option"])


def test_bad_overrides_are_clear(dataset, tmp_path, capsys):
    for bad, needle in (
        (["lr=fast"], "lr"),
        (["nonsense=1"], "unknown setting"),
        (["model=resnet"], "model"),
        (["lr_schedule=linear"], "lr_schedule"),
    ):
        assert main(["train", "--data", str(dataset), "--out", str(tmp_path / "o"), *bad]) == 2
        assert needle in capsys.readouterr().err


def test_two_process_gloo_run_completes_and_rank0_alone_writes(dataset, tmp_path):
    out = tmp_path / "ddp"
    settings = tiny_training("max_steps=4", "val_every=2", "gt_encoder_max_steps=2", "log_every=1", batch_size=2)
    proc = torchrun("train", "--data", dataset, "--coarse-dir", "dataset", "--out", out, "--no-progress", *settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert load_refiner(out / "refiner.safetensors").in_ch == 5
    rows = (out / "log.csv").read_text().splitlines()
    assert rows.count(rows[0]) == 1  # one header: a single writer
    assert sum(",refiner,4,loss," in r for r in rows) == 1
    assert "effective batch 4" in proc.stderr
    assert proc.stderr.count("is5net train: done") == 1


def test_commands_with_bars_take_quiet_and_quiet_training_draws_none(dataset, tmp_path, capsys):
    import argparse

    from is5net.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, parser in sub.choices.items():
        if name in ("convert-isnet", "doctor"):  # a fast file conversion, a short report: no progress bar
            continue
        options = {s for a in parser._actions for s in a.option_strings}
        assert {"-q", "--quiet"} <= options, f"is5net {name} has no -q/--quiet"

    argv = [
        "train",
        "--data",
        str(dataset),
        "--coarse-dir",
        "dataset",
        *TINY,
        "max_steps=2",
        "val_every=100",
        "gt_encoder=false",
        "feature_loss=false",
    ]
    assert main([*argv, "--out", str(tmp_path / "bars")]) == 0
    assert "refiner: 100%" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "quiet"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "%|" not in err
    # the last line says where the result is and how the run went; the last step is validated too
    # (max_steps is not a multiple of val_every), so the final weights compete for "best"
    done = f"is5net train: done -> {tmp_path / 'quiet' / 'refiner.safetensors'} (2 steps; best validation maxF "
    assert err.strip().splitlines()[-1].startswith(done)


def test_optimizer_fused_on_cpu_and_plain_where_torch_has_no_fused_cpu_kernel(monkeypatch):
    from is5net.train.optim import make_optimizer

    c = load_config(None, [])
    params = [torch.nn.Parameter(torch.randn(3, 3))]
    opt, _ = make_optimizer(c, params, 1e-3, torch.device("cpu"), 10)
    assert opt.defaults["fused"] is True

    class NoFusedCpu(torch.optim.AdamW):  # torch < 2.4 refuses fused=True for CPU tensors
        def __init__(self, params, fused=None, **kw):
            if fused:
                raise RuntimeError(
                    "`fused=True` requires all the params to be floating point Tensors of supported devices: ['cuda']"
                )
            super().__init__(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", NoFusedCpu)
    opt, _ = make_optimizer(c, params, 1e-3, torch.device("cpu"), 10)
    assert isinstance(opt, NoFusedCpu) and not opt.defaults.get("fused")
