import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from is5net.checkpoint import (
    FORMAT_TAG,
    RefinerConfig,
    convert_isnet_to_is5net,
    load_gt_encoder,
    load_refiner,
    save_refiner,
)
from is5net.errors import CheckpointError
from is5net.modeling import ISNet, build_model
from tiny import make_tiny_refiner


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_style_pth_round_trip(tmp_path, prefix):
    model = make_tiny_refiner(5)
    path = tmp_path / "dis_sam.pth"
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, path)
    loaded = load_refiner(path)
    assert _same_weights(model, loaded)
    assert loaded.in_ch == 5 and not loaded.training
    assert loaded.config.input_size == 1024 and loaded.config.mean == [0.5, 0.5, 0.5, 0.0, 0.0]


def test_full_size_official_shapes_load_strictly_and_infer_channels(tmp_path):
    path = tmp_path / "isnet.pth"
    torch.save(ISNet(3).state_dict(), path)
    model = load_refiner(path)
    assert model.in_ch == 3 and model.width == 1.0 and model.config.std == [1.0, 1.0, 1.0]


def test_safetensors_round_trip_keeps_metadata(tmp_path):
    model = make_tiny_refiner(5, input_size=512)
    path = save_refiner(model, tmp_path / "ours.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "is5net"
    cfg = json.loads(meta["config"])
    assert cfg["input_size"] == 512 and cfg["in_ch"] == 5 and cfg["model"] == "is5net_tiny"
    loaded = load_refiner(path)
    assert _same_weights(model, loaded)
    assert loaded.config == RefinerConfig(**cfg)


def test_gt_encoder_round_trip(tmp_path):
    enc = build_model("gt_encoder_tiny")
    save_refiner(enc, tmp_path / "gt.safetensors")
    assert _same_weights(enc, load_gt_encoder(tmp_path / "gt.safetensors"))
    with pytest.raises(CheckpointError, match="GT encoder"):
        load_refiner(tmp_path / "gt.safetensors")


class _Evil:
    def __reduce__(self):
        return (print, ("this ran arbitrary code",))


def test_bad_checkpoints_are_clear_errors(tmp_path, tiny_sam):
    cases = {}
    torch.save(tiny_sam.state_dict(), tmp_path / "sam.pth")
    cases["sam.pth"] = "SAM checkpoint"
    (tmp_path / "notes.txt").write_text("hello, not weights")
    cases["notes.txt"] = "not a readable PyTorch checkpoint|refused"
    (tmp_path / "notes.pth").write_text("hello world, this is text")  # the unpickler's raw KeyError (101)
    cases["notes.pth"] = r"not a readable PyTorch checkpoint \(truncated or corrupt\? not a torch.save file\)"
    good = tmp_path / "good.pth"
    torch.save(make_tiny_refiner(5).state_dict(), good)
    (tmp_path / "truncated.pth").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated.pth"] = "not a readable PyTorch checkpoint"
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"conv_in.weight": _Evil()}, f)
    cases["evil.pth"] = "refused to load"
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    cases["bad.safetensors"] = "not a readable safetensors"
    cases["missing.pth"] = "no such checkpoint"
    for name, pattern in cases.items():
        with pytest.raises(CheckpointError, match=pattern) as info:
            load_refiner(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="do not fit"):
        sd = make_tiny_refiner(5).state_dict()
        sd.pop("side6.bias")
        torch.save(sd, tmp_path / "partial.pth")
        load_refiner(tmp_path / "partial.pth")


# --- convert-isnet and impossible input sizes (issue 13, faults a and b) ------------------------------------


def test_convert_library_function_refuses_its_input_as_output(isnet_weights):
    original = isnet_weights.read_bytes()
    with pytest.raises(CheckpointError, match="is the input checkpoint"):
        convert_isnet_to_is5net(isnet_weights, isnet_weights)
    assert isnet_weights.read_bytes() == original


def test_a_checkpoint_with_an_impossible_input_size_is_refused_on_load_and_never_written(tmp_path):
    model = make_tiny_refiner(5)
    with pytest.raises(CheckpointError, match="multiple of 32"):
        save_refiner(model, tmp_path / "bad.safetensors", RefinerConfig.for_model(model, input_size=1000))
    assert not (tmp_path / "bad.safetensors").exists()
    # one written before the check (as the old convert-isnet did) is refused when loaded, not a crash later
    config = json.dumps({**RefinerConfig.for_model(model).__dict__, "input_size": 0})
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "old.safetensors"),
        metadata={"format": FORMAT_TAG, "config": config},
    )
    with pytest.raises(CheckpointError, match="old.safetensors: its metadata's input size 0"):
        load_refiner(tmp_path / "old.safetensors")
    for good in (32, 64, 512, 1024):
        save_refiner(model, tmp_path / f"{good}.safetensors", RefinerConfig.for_model(model, input_size=good))
        assert load_refiner(tmp_path / f"{good}.safetensors").config.input_size == good
