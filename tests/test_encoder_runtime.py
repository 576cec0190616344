"""Stage-1 image encoders through ONNX Runtime and OpenVINO (is5net.inference.encoder_runtime): each runtime
computes what torch computes for SAM, HQ-SAM and SAM 2 (random weights, the packages' own builders), the
official predictors give the same masks with the swapped encoder, and the export cache keeps only checked
files, keyed by the weights."""

from __future__ import annotations

import copy
import functools
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from is5net.errors import IS5NetError
from is5net.export import cache_dir
from is5net.inference.encoder_runtime import RuntimeEncoder, accelerate, cached_encoder_onnx, runtime_image_encoder
from is5net.inference.export_check import encoder_check_input

# float32 in another operator order: measured 1e-6 .. 3e-6 of each output's scale for the three encoders
# on both runtimes; a wrong graph (a frozen branch, outputs swapped) is off by the whole scale.
RELATIVE_TOLERANCE = 1e-4
BOX = np.array([140, 15, 380, 300])  # the astronaut's head, in her 512 x 512 photo


def _seeded(build):
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's registry notes when segment_anything_hq is imported
        torch.manual_seed(0)
        return build().eval()


def _sam():
    from is5net.inference.stage1 import build_sam_tiny

    return build_sam_tiny()


def _hq_sam():
    from segment_anything_hq import sam_model_registry

    return sam_model_registry["vit_tiny"](checkpoint=None)


def _sam2():
    from sam2.build_sam import build_sam2

    return build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")


def _sam_mask(model, rgb):
    from segment_anything import SamPredictor

    p = SamPredictor(model)
    p.set_image(rgb)
    return p.predict(box=BOX, multimask_output=True)[0][0]


def _hq_mask(model, rgb):
    from segment_anything_hq import SamPredictor

    p = SamPredictor(model)
    p.set_image(rgb)
    return p.predict(box=BOX, multimask_output=False, hq_token_only=True)[0][0]


def _sam2_mask(model, rgb):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    p = SAM2ImagePredictor(model)
    p.set_image(rgb)
    return p.predict(box=BOX, multimask_output=True)[0][0] > 0


FAMILIES = {"sam": (_sam, _sam_mask), "hq-sam": (_hq_sam, _hq_mask), "sam2": (_sam2, _sam2_mask)}


@functools.lru_cache(maxsize=None)
def _reference(family: str):
    """(the model, torch's encoder outputs on the check input, the official predictor's mask): once per run."""
    build, mask_of = FAMILIES[family]
    model = _seeded(build)
    with torch.inference_mode():
        out = model.image_encoder(encoder_check_input(1024))
    from skimage import data

    return model, out, mask_of(model, data.astronaut())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def _assert_same_outputs(got, want):
    """Same structure (tensor / tuple / dict of lists), shapes, and values within RELATIVE_TOLERANCE."""
    got_leaves, got_spec = torch.utils._pytree.tree_flatten(got)
    want_leaves, want_spec = torch.utils._pytree.tree_flatten(want)
    assert got_spec == want_spec
    for g, w in zip(got_leaves, want_leaves):
        assert g.shape == w.shape and g.dtype == torch.float32
        rel = float((g - w).abs().max() / w.abs().max().clamp_min(1e-12))
        assert rel <= RELATIVE_TOLERANCE, rel


# OpenVINO first: the first test of a family pays the export, and its check runs on the runtime asked for.
@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("family", ["sam", "hq-sam", "sam2"])
def test_runtime_encoder_outputs_match_torch(family, backend):
    model, want, _ = _reference(family)
    fast = accelerate(copy.deepcopy(model), backend)
    assert isinstance(fast.image_encoder, RuntimeEncoder) and not fast.image_encoder.training
    assert backend in fast.image_encoder.description and "fp32" in fast.image_encoder.description
    with torch.inference_mode():
        _assert_same_outputs(fast.image_encoder(encoder_check_input(1024)), want)


@pytest.mark.parametrize("family", ["sam", "hq-sam", "sam2"])
def test_official_predictor_gives_the_same_mask_with_the_runtime_encoder(family):
    from skimage import data

    model, _, want_mask = _reference(family)
    # A mask of some hundreds of pixels, not all or nothing: else any two runs would "agree".
    assert 100 < want_mask.sum() < want_mask.size - 100
    fast = accelerate(copy.deepcopy(model), "openvino")
    assert _iou(FAMILIES[family][1](fast, data.astronaut()), want_mask) >= 0.999


def test_hq_sam_vit_b_shape_returns_every_global_block():
    """HQ-SAM's ViT encoders (vit_b/l/h) return (embeddings, [one map per global-attention block]); a narrow,
    shallow one with the same code runs here in seconds."""
    from functools import partial

    from segment_anything_hq.modeling import ImageEncoderViT

    def build():
        return ImageEncoderViT(
            img_size=256, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2, out_chans=16,
            qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=4,
            global_attn_indexes=(0, 1),
        )  # fmt: skip

    encoder = _seeded(build)
    x = encoder_check_input(256)
    with torch.inference_mode():
        want = encoder(x)
        fast = runtime_image_encoder(copy.deepcopy(encoder), "openvino")
        got = fast(x)
    assert isinstance(got, tuple) and isinstance(got[1], list) and len(got[1]) == 2
    _assert_same_outputs(got, want)


def test_batch_of_two_runs_image_by_image():
    model, *_ = _reference("sam")
    fast = runtime_image_encoder(copy.deepcopy(model.image_encoder), "onnxruntime")
    x = torch.cat([encoder_check_input(1024), encoder_check_input(1024).flip(-1)])
    with torch.inference_mode():
        _assert_same_outputs(fast(x), model.image_encoder(x))
    with pytest.raises(IS5NetError, match="3 x 1024 x 1024"):
        fast(x[:, :, :512])


def _exports(folder):
    return sorted(p.name for p in folder.glob("encoder-*"))


def test_cache_reuses_the_file_and_new_weights_make_another(tmp_path, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    model, *_ = _reference("sam")
    said: list[str] = []
    first = accelerate(copy.deepcopy(model), "openvino", log=said.append).image_encoder.onnx_path
    assert sum("exporting" in s for s in said) == 1 and any("ok" in s for s in said)
    inode = first.stat().st_ino
    said.clear()
    again = accelerate(copy.deepcopy(model), "onnxruntime", log=said.append).image_encoder.onnx_path
    assert again == first and first.stat().st_ino == inode and not said  # no export, no check: the file
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.image_encoder.neck[0].weight.mul_(1.01)
    other = accelerate(changed, "onnxruntime", log=said.append).image_encoder.onnx_path
    assert other != first and _exports(cache_dir()) == sorted([first.name, other.name])
    # The caller's own key for the weights (a checkpoint's checksum) names the file without hashing them.
    keyed = cached_encoder_onnx(model.image_encoder, 1024, key="sha256:abc vit_tiny")
    assert keyed not in (first, other)


class _Branchy(nn.Module):
    """An encoder whose output depends on a Python branch: tracing freezes the branch the dummy input took."""

    img_size = 64

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if bool(x.abs().sum() > 0) else -self.conv(x)


def test_an_export_failing_its_check_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    with pytest.raises(IS5NetError, match="does not match torch.*FAILED.*--backend torch"):
        runtime_image_encoder(_Branchy(), "onnxruntime", log=None)
    assert list(cache_dir().iterdir()) == []  # neither the file nor the staging folder


def test_weights_can_live_beside_the_file(tmp_path, monkeypatch):
    """ViT-H's encoder (2.5 GB) is past protobuf's 2 GiB: its weights go to a .data file, as here on demand."""
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    model, want, _ = _reference("sam")
    path = cached_encoder_onnx(model.image_encoder, 1024, external=True)
    data_file = path.with_suffix(".data")
    assert data_file.stat().st_size > 5 * path.stat().st_size  # the weights, but for a few tiny tensors
    with torch.inference_mode():
        _assert_same_outputs(RuntimeEncoder(path, "openvino").eval()(encoder_check_input(1024)), want)


def test_backend_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    model, *_ = _reference("sam")
    same = copy.deepcopy(model)
    assert accelerate(same, "torch").image_encoder is same.image_encoder
    assert isinstance(accelerate(copy.deepcopy(model), "auto").image_encoder, RuntimeEncoder)  # a CPU: a runtime
    with pytest.raises(IS5NetError, match="backend 'tensorrt'"):
        accelerate(copy.deepcopy(model), "tensorrt")
    with pytest.raises(IS5NetError, match="fp32 only"):
        accelerate(copy.deepcopy(model), "onnxruntime", precision="bf16")
    with pytest.raises(IS5NetError, match="precision 'int4'"):
        accelerate(copy.deepcopy(model), "openvino", precision="int4")
    with pytest.raises(IS5NetError, match="no image_encoder"):
        accelerate(nn.Linear(2, 2), "openvino")
    assert _exports(cache_dir()) and not list(cache_dir().glob(".*"))


class _Conv(nn.Module):
    """A one-convolution "encoder": an export in a fraction of a second."""

    img_size = 32

    def __init__(self, scale: float):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(scale)

    def forward(self, x):
        return self.conv(x)


def test_the_cache_keeps_the_most_recently_used_encoders(tmp_path, monkeypatch):
    from is5net.export import CACHE_KEEP, cached_onnx

    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    from tiny import make_tiny_refiner

    refiner_file = cached_onnx(make_tiny_refiner())
    paths = [cached_encoder_onnx(_Conv(1 + i / 10), 32, runtime="onnxruntime") for i in range(CACHE_KEEP + 2)]
    assert _exports(cache_dir()) == sorted(p.name for p in paths[-CACHE_KEEP:])
    assert refiner_file.exists()  # encoders evict encoders, not the refiner
