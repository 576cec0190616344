"""`--backend` runs stage 1's image encoder too (docs/speed.md): a stage 1 from a checkpoint goes through the
runtime, its export is cached under IS5NET_HOME, and the masks are torch's; the tiny test SAM stays in torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from helpers import random_hq_sam_file
from is5net.inference.encoder_runtime import RuntimeEncoder, stage1_precision
from is5net.inference.predictor import PredictorOptions, build_predictor
from is5net.inference.stage1 import choose_stage1


@pytest.fixture(scope="module")
def hq_file(tmp_path_factory):
    return random_hq_sam_file(tmp_path_factory.mktemp("hq"), seed=11)[0]


def _encoder_files() -> list[Path]:
    return sorted((Path(os.environ["IS5NET_HOME"]) / "cache" / "onnx").glob("encoder-*.onnx"))


def _coarse(predictor, rgb, box, points=None, labels=None):
    predictor.set_image(rgb)
    return predictor.predict(box=box, points=points, point_labels=labels)


def test_openvino_backend_runs_the_encoder_and_gives_torchs_coarse_mask(hq_file, tiny_refiner, coffee_rgb):
    rgb = np.ascontiguousarray(coffee_rgb[::4, ::4])
    box = np.array([20, 10, 120, 90], dtype=np.float32)
    stage1 = choose_stage1("hq-sam:vit_tiny", hq_file)
    masks = {}
    for backend in ("torch", "openvino"):
        options = PredictorOptions(device="cpu", backend=backend, precision="fp32")
        predictor = build_predictor(tiny_refiner, stage1, options)
        encoder = predictor.sam_stage.model.image_encoder
        assert isinstance(encoder, RuntimeEncoder) == (backend == "openvino")
        masks[backend] = _coarse(predictor, rgb, box, [[60, 50]], [1])
    assert _encoder_files(), "the export is cached under IS5NET_HOME"
    a, b = (np.asarray(masks[k].sam_mask) > 0 for k in ("torch", "openvino"))
    assert a.any() and (a & b).sum() / (a | b).sum() >= 0.999


def test_the_tiny_test_sam_stays_in_torch(tiny_refiner):
    predictor = build_predictor(tiny_refiner, choose_stage1("sam:tiny"), PredictorOptions(backend="openvino"))
    assert not isinstance(predictor.sam_stage.model.image_encoder, RuntimeEncoder)


def test_the_encoders_precision_follows_the_predictors():
    assert stage1_precision("fp32", "openvino") == "fp32"
    assert stage1_precision("bf16", "openvino") == "bf16"
    assert stage1_precision("int8", "openvino") == "fp32"  # the refiner's alone
    assert stage1_precision("auto", "onnxruntime") == "fp32"
    assert stage1_precision("auto", "openvino") == "fp32"  # bf16 encoders failed the masks' IoU bar
