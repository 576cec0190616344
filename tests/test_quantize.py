"""--precision int8: the refiner quantised by NNCF and run by OpenVINO (is5net.inference.quantize), calibrated on
a folder or the demo's data (is5net.demo.calibration); bf16 through OpenVINO; the bad combinations as one line.

The model is the tiny random IS5Net at 64 px and the calibration set six synthetic pairs: one quantisation takes
about 15 s on two busy cores, so the module quantises twice (two calibration sets) and shares both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import lines_of
from is5net.checkpoint import save_refiner
from is5net.contract import build_input
from is5net.demo.calibration import calibration_set, folder_pairs
from is5net.errors import IS5NetError
from is5net.inference import quantize
from is5net.inference.backends import create_backend
from is5net.inference.predictor import IS5NetPredictor
from is5net.io import load_image, load_mask
from tiny import make_tiny_refiner

pytest.importorskip("nncf")
pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def refiner():
    return make_tiny_refiner(input_size=64, seed=4)


@pytest.fixture(scope="module")
def folded(refiner):
    """The refiner as the predictor hands it to a backend (BatchNorm folded): the weights the cache is keyed by."""
    return refiner.fold_batchnorm()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic pairs with simulated-SAM coarse masks: DIS-TR calibrates, DIS-TE1 is held out."""
    from is5net.demo.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("calibration")
    make_synthetic_dataset(root, seed=3, n_train=6, n_val=0, n_test=4, size=64)
    return root


class Quantisations:
    """Counts the real quantisations (the function is the real one, only counted)."""

    def __init__(self):
        self.calls = 0
        self.real = quantize.quantize_onnx

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture(scope="module")
def counted():
    with pytest.MonkeyPatch.context() as mp:
        counter = Quantisations()
        mp.setattr(quantize, "quantize_onnx", counter)
        yield counter


@pytest.fixture(scope="module")
def int8(refiner, data, counted):
    """Built as the predictor builds it, so the predictor and the command line below find it in the cache."""
    calibration = calibration_set(data / "DIS-TR", 4)
    p = IS5NetPredictor(None, refiner, device="cpu", precision="int8", backend="openvino", calibration=calibration)
    return p.refiner


@pytest.fixture(scope="module")
def held_out(refiner, data):
    """The refiner inputs of the held-out pairs, built by the contract: 4 x 5 x 64 x 64."""
    c = refiner.config
    xs = []
    for f in folder_pairs(data / "DIS-TE1"):
        gt = load_mask(f.gt)
        rgb = load_image(f.image, gt.shape)
        coarse = load_mask(f.coarse)
        ys, xs_ = np.nonzero(gt)
        box = [xs_.min(), ys.min(), xs_.max() + 1, ys.max() + 1]
        xs.append(build_input(rgb, coarse, box, c.input_size, c.mean, c.std))
    return torch.stack(xs).numpy()


def test_int8_is_quantised_and_close_to_fp32(int8, folded, held_out):
    fp32 = create_backend("openvino", folded, precision="fp32")
    a, b = int8(held_out), fp32(held_out)
    assert int8.precision == "int8" and "int8 (NNCF, calibrated on" in int8.description
    ops = {op.get_type_name() for op in int8.model.get_ops()}
    assert "FakeQuantize" in ops  # 8-bit convolutions, not the float model under another name
    # 8-bit rounding at each of ~120 convolutions moves the logits by a small fraction of their spread over
    # the images (the random tiny model's logits are small, so the bound is relative): measured 1.3 % on
    # average and 17 % at the worst pixel; the bounds (5 %, 50 %) leave room for other CPUs' int8 kernels and
    # still fail for a model whose scales are wrong (errors of the order of the spread itself).
    spread = float(b.std())
    err = np.abs(a - b)
    assert 0 < float(err.mean()) < 0.05 * spread, (float(err.mean()), spread)
    assert float(err.max()) < 0.5 * spread, (float(err.max()), spread)


def test_the_second_build_reads_the_cache(int8, folded, data, counted):
    before = counted.calls  # 1 (the fixture's), 2 after the next test
    again = create_backend("openvino", folded, precision="int8", calibration=calibration_set(data / "DIS-TR", 4))
    assert counted.calls == before and again.onnx_path == int8.onnx_path
    assert again.onnx_path.with_suffix(".bin").is_file() and again.onnx_path.parent.name == "int8"


def test_another_calibration_set_is_another_model(int8, folded, data, counted, held_out):
    before = counted.calls
    other = create_backend("openvino", folded, precision="int8", calibration=calibration_set(data / "DIS-TE1", 4))
    assert counted.calls == before + 1 and other.onnx_path != int8.onnx_path
    assert not np.array_equal(other(held_out), int8(held_out))  # other scales, other rounding


def test_the_predictor_takes_int8_with_its_calibration(int8, refiner, data, counted, held_out):
    calibration, before = calibration_set(data / "DIS-TR", 4), counted.calls
    p = IS5NetPredictor(None, refiner, device="cpu", precision="int8", backend="auto", calibration=calibration)
    assert counted.calls == before and "int8" in p.backend  # auto is OpenVINO here; the same cached model
    with pytest.raises(IS5NetError, match="int8 needs calibration images"):
        IS5NetPredictor(None, refiner, device="cpu", precision="int8", backend="openvino")
    for backend in ("torch", "onnxruntime"):
        with pytest.raises(IS5NetError, match=f"int8 runs through OpenVINO only, not {backend}"):
            IS5NetPredictor(None, refiner, device="cpu", precision="int8", backend=backend, calibration=calibration)


def test_bf16_asks_openvino_for_bf16_and_fp32_stays_exact(refiner, folded, held_out):
    import openvino as ov

    fp32 = create_backend("openvino", folded, precision="fp32")
    assert fp32.precision == "fp32"
    with torch.inference_mode():
        reference = refiner.forward_logits(torch.from_numpy(held_out)).numpy()
    assert float(np.abs(fp32(held_out) - reference).max()) < 1e-4
    bf16 = create_backend("openvino", folded, precision="bf16")
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert bf16.precision == "bf16"
        assert 0 < float(np.abs(bf16(held_out) - reference).max())  # it did round


def test_calibration_settings_are_checked(data, tmp_path):
    for count in (0, -1, 1.5, True):
        with pytest.raises(IS5NetError, match="calibration count"):
            calibration_set(data / "DIS-TR", count)
    with pytest.raises(IS5NetError, match="preset"):
        calibration_set(data / "DIS-TR", 4, preset="fast")
    with pytest.raises(IS5NetError, match="no such directory"):
        calibration_set(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IS5NetError, match="found no dataset"):
        calibration_set(tmp_path / "empty")
    demo = calibration_set(None, 8)
    assert "demo" in demo.name and demo.settings.count == 8


@pytest.fixture(scope="module")
def checkpoint(refiner, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_refiner(refiner, path)
    return path


@pytest.fixture()
def predict_args(tmp_path, data, checkpoint):
    f = folder_pairs(data / "DIS-TE1")[0]
    return [
        "predict",
        str(f.image),
        "--box",
        "4,4,60,60",
        "--checkpoint",
        str(checkpoint),
        "--coarse-mask",
        str(f.coarse),
        "--device",
        "cpu",
        "-q",
        "-o",
        str(tmp_path / "out"),
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--precision", "int8", "--backend", "torch"], "int8 runs through OpenVINO only, not torch"),
        (["--precision", "int8", "--backend", "onnxruntime"], "int8 runs through OpenVINO only, not onnxruntime"),
        (["--precision", "int8", "--calibration", "/nonexistent/calib"], "--calibration /nonexistent/calib: no such"),
        (["--precision", "int8", "--calibration", "EMPTY"], "found no dataset"),
        (["--calibration", "EMPTY"], "--calibration calibrates --precision int8"),
    ],
)
def test_bad_combinations_are_one_line(run_cli, tmp_path, predict_args, extra, message):
    (tmp_path / "EMPTY").mkdir()
    extra = [str(tmp_path / "EMPTY") if e == "EMPTY" else e for e in extra]
    rc, err = run_cli(*predict_args, *extra)
    lines = lines_of(err)
    assert rc == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--precision", "int4"], "argument --precision: invalid choice: 'int4'"),
        (["--precision", "int8", "--calibration-count", "0"], "--calibration-count: expected a number >= 1, got 0"),
        (["--precision", "int8", "--calibration-count", "x"], "--calibration-count: expected a whole number"),
    ],
)
def test_precision_values_are_checked(capsys, tmp_path, predict_args, extra, message):
    from is5net.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*predict_args, *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in lines_of(err)[-1] and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_predict_int8_from_the_command_line(run_cli, tmp_path, predict_args, data, int8, counted, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="is5net")
    before = counted.calls
    rc, err = run_cli(*predict_args, "--precision", "int8", "--calibration", data / "DIS-TR", "--calibration-count", 4)
    assert rc == 0, err
    assert counted.calls == before  # the checkpoint holds the fixture's weights: the same cached model
    assert any("int8 (NNCF, calibrated on" in r.getMessage() for r in caplog.records)
    (mask,) = list((tmp_path / "out").glob("*.png"))
    assert load_mask(mask).shape == (64, 64)


def test_auto_is_bf16_only_where_openvino_has_native_bf16(folded, held_out):
    from is5net.inference.backends import native_bf16, resolve_precision

    native = native_bf16()
    assert resolve_precision("auto", "openvino") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", "torch") == resolve_precision("auto", "onnxruntime") == "fp32"
    assert resolve_precision("fp32", "openvino") == "fp32"  # the exact path stays one flag away
    p = IS5NetPredictor(None, folded, device="cpu", precision="auto", backend="openvino")
    assert p.backend.endswith("bf16" if native else "fp32")
    assert IS5NetPredictor(None, folded, device="cpu", precision="auto", backend="torch").backend.endswith("fp32")


def test_serve_int8_answers_what_predict_int8_writes(run_cli, tmp_path, predict_args, data, checkpoint, int8, counted):
    import httpx

    from test_serve_support import RunningServer

    pytest.importorskip("fastapi")
    calib = ["--precision", "int8", "--calibration", str(data / "DIS-TR"), "--calibration-count", "4"]
    before = counted.calls
    rc, err = run_cli(*predict_args, *calib)
    assert rc == 0, err
    f = folder_pairs(data / "DIS-TE1")[0]
    argv = ["--checkpoint", checkpoint, "--stage1", "grabcut", "--device", "cpu", "-q", *calib]
    with RunningServer(argv) as server:
        health = httpx.get(f"{server.url}/api/health").json()
        assert "int8 (NNCF, calibrated on" in health["refiner"]["runtime"], health["refiner"]
        r = httpx.post(
            f"{server.url}/api/segment",
            timeout=60,
            data={"box": "4,4,60,60"},
            files={
                "image": ("a.png", f.image.read_bytes(), "image/png"),
                "coarse_mask": ("m.png", f.coarse.read_bytes()),
            },
        )
    assert r.status_code == 200 and r.content == next((tmp_path / "out").glob("*.png")).read_bytes()
    assert counted.calls == before  # predict and the server found the fixture's model


def test_eval_int8_scores_and_records_it(run_cli, tmp_path, data, checkpoint, int8, counted):
    import json

    out, before = tmp_path / "run", counted.calls
    rc, err = run_cli(
        "eval", "--data", data, "--subsets", "DIS-TE1", "--checkpoint", checkpoint, "--coarse-dir",
        data / "DIS-TE1" / "coarse", "--out", out, "--device", "cpu", "--metrics", "maxF,MAE", "-q",
        "--precision", "int8", "--calibration", data / "DIS-TR", "--calibration-count", "4",
    )  # fmt: skip
    assert rc == 0, err
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["precision"] == "int8" and provenance["calibration"] == str(data / "DIS-TR")
    assert counted.calls == before
