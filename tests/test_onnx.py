"""ONNX export and the refiner backends (torch, ONNX Runtime, OpenVINO) on tiny models: parity with torch,
the metadata, `is5net export-onnx`, the backend choice honoured (`predict --backend` is in test_cli_predict.py)."""

import json

import numpy as np
import pytest
import torch

from is5net import cli, defaults
from is5net.checkpoint import convert_isnet_to_is5net
from is5net.errors import IS5NetError
from is5net.export import export_refiner, read_metadata
from is5net.inference.backends import BACKENDS, create_backend, resolve_backend
from is5net.inference.predictor import IS5NetPredictor
from tiny import make_tiny_refiner

ONNX_BACKENDS = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def refiner():
    return make_tiny_refiner(input_size=64)


@pytest.fixture(scope="module")
def exported(refiner, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_refiner(refiner, path, dynamic_batch=True)
    return path


@pytest.mark.parametrize("name", ONNX_BACKENDS)
@pytest.mark.parametrize("batch", [1, 3])
def test_exported_refiner_matches_torch(refiner, exported, name, batch):
    torch.manual_seed(batch)
    x = torch.randn(batch, 5, 64, 64)
    with torch.inference_mode():
        reference = refiner.forward_logits(x)  # BatchNorm unfolded: the official arithmetic
    backend = create_backend(name, exported, precision="fp32")
    out = backend(x)
    assert isinstance(out, torch.Tensor) and out.shape == (batch, 1, 64, 64)
    assert float((out - reference).abs().max()) < 1e-4
    assert float((out - reference).abs().max()) < 1e-3 * float(reference.abs().max())  # not trivially small
    as_array = backend(x.numpy())  # numpy in, numpy out
    assert isinstance(as_array, np.ndarray) and np.allclose(as_array, out.numpy(), atol=1e-6)


def test_metadata_carries_the_input_contract(exported, refiner):
    meta = read_metadata(exported)
    assert meta["format"] == "is5net-refiner"
    assert json.loads(meta["input_size"]) == 64 and meta["in_ch"] == "5"
    assert json.loads(meta["mean"]) == [0.5, 0.5, 0.5, 0.0, 0.0] and json.loads(meta["std"]) == [1.0] * 5
    assert json.loads(meta["channels"]) == ["R", "G", "B", "coarse_mask", "box_mask"]
    assert meta["region"] == "image" and meta["weights"] == "float32"


def _official_isnet_pth(path):
    """A tiny IS-Net saved as the official files are: a plain state dict with DataParallel's prefix."""
    isnet = make_tiny_refiner(in_ch=3, seed=3)
    torch.save({f"module.{k}": v for k, v in isnet.state_dict().items()}, path)
    return path


def test_export_onnx_cli_on_a_converted_official_checkpoint(tmp_path, capsys):
    converted = convert_isnet_to_is5net(
        _official_isnet_pth(tmp_path / "isnet.pth"), tmp_path / "is5.safetensors", input_size=128
    )
    out = tmp_path / "refiner.onnx"
    assert cli.main(["export-onnx", str(converted), str(out), "--dynamic-batch", "--opset", "17"]) == 0
    printed = capsys.readouterr().out
    assert "batch 2" in printed and printed.rstrip().endswith(": ok")
    assert json.loads(read_metadata(out)["input_size"]) == 128
    # The exported file, run by both ONNX backends, agrees with the checkpoint it came from.
    from is5net.checkpoint import load_refiner

    model = load_refiner(converted)
    x = torch.randn(2, 5, 128, 128)
    with torch.inference_mode():
        reference = model.forward_logits(x)
    for name in ONNX_BACKENDS:
        assert float((create_backend(name, out)(x) - reference).abs().max()) < 1e-4


def test_export_onnx_fp16_weights_halve_the_file(tmp_path, capsys):
    ckpt = tmp_path / "isnet.pth"
    _official_isnet_pth(ckpt)
    full, half = tmp_path / "full.onnx", tmp_path / "half.onnx"
    assert cli.main(["export-onnx", str(ckpt), str(full)]) == 0
    assert cli.main(["export-onnx", str(ckpt), str(half), "--fp16"]) == 0
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert read_metadata(half)["weights"] == "float16"
    assert capsys.readouterr().out.count(": ok") == 2


def test_export_onnx_over_the_tolerance_keeps_nothing(tmp_path, capsys, monkeypatch):
    from is5net.inference import export_check as export_cli

    ckpt = _official_isnet_pth(tmp_path / "isnet.pth")
    monkeypatch.setitem(export_cli.TOLERANCE, False, (-1.0, 2.0))  # a tolerance nothing can meet
    out = tmp_path / "refiner.onnx"
    assert cli.main(["export-onnx", str(ckpt), str(out)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "was not kept" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isnet.pth"]  # no file, no temporary


def test_predictor_honours_and_reports_the_backend(refiner, tmp_path, monkeypatch, coffee_rgb):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))  # the cached export goes there
    coarse = np.zeros(coffee_rgb.shape[:2], bool)
    coarse[40:170, 60:230] = True
    boxes = [[60, 40, 230, 170], [10, 10, 120, 90]]
    masks = {}
    for name in ("torch", *ONNX_BACKENDS):
        p = IS5NetPredictor(None, refiner, device="cpu", backend=name)
        assert p.backend.startswith(f"{name} ") and p.backend.endswith("fp32")
        p.set_image(coffee_rgb)
        masks[name] = [r.mask for r in p.predict_batch(boxes, [coarse, coarse])]
    for name in ONNX_BACKENDS:
        for a, b in zip(masks[name], masks["torch"]):
            assert np.abs(a - b).max() < 1e-3
    exported = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exported) == 1  # both ONNX backends used one export of these weights
    inode = exported[0].stat().st_ino
    IS5NetPredictor(None, refiner, device="cpu", backend="onnxruntime")
    assert exported[0].stat().st_ino == inode  # reused, not exported again (an export is a new file renamed in)


def test_auto_is_the_fastest_installed_on_a_cpu_and_torch_on_cuda():
    assert resolve_backend("auto", torch.device("cpu")) == "openvino"  # all three are installed here
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert defaults.BACKEND_CHOICES == ("auto", *BACKENDS)  # the light home agrees with its owner


def test_onnx_backends_refuse_cuda_and_onnxruntime_refuses_bf16(refiner):
    with pytest.raises(IS5NetError, match="runs the refiner on the CPU"):
        resolve_backend("openvino", torch.device("cuda"))
    with pytest.raises(IS5NetError, match="fp32 only"):
        create_backend("onnxruntime", refiner, precision="bf16")
    with pytest.raises(IS5NetError, match="choose one of auto"):
        resolve_backend("tensorrt", torch.device("cpu"))


def test_export_onnx_with_sams_prompt_decoder(tmp_path, capsys):
    import onnxruntime as ort

    from is5net.export import sam_decoder_inputs
    from is5net.inference.stage1 import load_sam

    ckpt = _official_isnet_pth(tmp_path / "isnet.pth")
    out = tmp_path / "refiner.onnx"
    assert cli.main(["export-onnx", str(ckpt), str(out), "--sam-decoder", "tiny"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("SAM prompt decoder -> refiner.sam_decoder.onnx") and lines[-1].endswith(": ok")
    decoder = tmp_path / "refiner.sam_decoder.onnx"
    assert read_metadata(decoder)["format"] == "sam-prompt-decoder"
    # A box is two points (labels 2 and 3): the number of points is free in the exported graph.
    inputs = {k: v.numpy() for k, v in sam_decoder_inputs(load_sam("tiny", None), points=2).items()}
    masks, scores, low = ort.InferenceSession(str(decoder)).run(None, inputs)
    assert masks.shape == (1, 4, 1500, 2250) and scores.shape == (1, 4) and low.shape == (1, 4, 256, 256)


def test_the_export_cache_keeps_the_most_recently_used(tmp_path, monkeypatch):
    from is5net import export

    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    monkeypatch.setattr(export, "CACHE_KEEP", 2)  # the real limit (6) would need six exports
    paths = [export.cached_onnx(make_tiny_refiner(input_size=32, seed=s)) for s in range(3)]
    assert [p.exists() for p in paths] == [False, True, True]  # the oldest went
    export.cached_onnx(make_tiny_refiner(input_size=32, seed=1))  # used again: now the most recent
    export.cached_onnx(make_tiny_refiner(input_size=32, seed=3))
    assert [p.exists() for p in paths] == [False, True, False]


def test_export_check_measures_both_against_float64_when_float32_noise_is_large(tmp_path, capsys, monkeypatch):
    import re

    from is5net.inference import export_check as export_cli

    ckpt = _official_isnet_pth(tmp_path / "isnet.pth")
    monkeypatch.setitem(export_cli.TOLERANCE, False, (0.0, 0.0))  # every difference is "large" here
    code = cli.main(["export-onnx", str(ckpt), str(tmp_path / "r.onnx")])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.search(r"from float64: onnxruntime ([0-9.e+-]+), torch float32 ([0-9.e+-]+)", line)
    assert found, line
    onnx_err, torch_err = float(found[1]), float(found[2])
    assert torch_err < 1e-5 and onnx_err < 1e-5  # float32 rounding on the tiny model, both sides
    assert (code == 0) == (onnx_err <= 2 * torch_err) and line.endswith(": ok" if code == 0 else ": FAILED")
