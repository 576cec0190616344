"""Faults found by trying bad input as a new user would (issue 13, a-d, g in test_io.py, k): each test here
failed on the code before the fix."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from is5net.cli import main
from tiny import make_tiny_refiner


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err


def _lines(err: str) -> list[str]:
    return [ln for ln in err.strip().splitlines() if ln]


@pytest.fixture()
def isnet_weights(tmp_path):
    """A 3-channel IS-Net as safetensors: a file convert-isnet accepts as input and could name as output."""
    from safetensors.torch import save_file

    path = tmp_path / "w" / "isnet.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in make_tiny_refiner(3).state_dict().items()}, str(path))
    return path


@pytest.fixture()
def full_coarse(tmp_path):
    path = tmp_path / "coarse.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(path)
    return path


# --- a. convert-isnet never overwrites its input --------------------------------------------------------


def test_convert_refuses_to_write_over_its_input_through_any_path_or_link(tmp_path, capsys, isnet_weights):
    original = isnet_weights.read_bytes()
    (tmp_path / "sym.safetensors").symlink_to(isnet_weights)
    os.link(isnet_weights, tmp_path / "hard.safetensors")
    same = [
        isnet_weights,
        isnet_weights.parent / ".." / "w" / "isnet.safetensors",
        tmp_path / "sym.safetensors",
        tmp_path / "hard.safetensors",
    ]
    for output in same:
        rc, err = _run(capsys, "convert-isnet", isnet_weights, output)
        assert rc == 2, (output, err)
        assert len(_lines(err)) == 1 and "is the input checkpoint" in err and "Traceback" not in err
        assert isnet_weights.read_bytes() == original, output
    # ... and the other way round: the input named through a link, the output its real path
    rc, err = _run(capsys, "convert-isnet", tmp_path / "sym.safetensors", isnet_weights)
    assert rc == 2 and isnet_weights.read_bytes() == original
    assert (tmp_path / "sym.safetensors").is_symlink()
    # a new file is fine
    rc, err = _run(capsys, "convert-isnet", isnet_weights, tmp_path / "is5net.safetensors")
    assert rc == 0, err
    from is5net.checkpoint import load_refiner

    assert load_refiner(tmp_path / "is5net.safetensors").in_ch == 5


def test_convert_library_function_refuses_its_input_as_output(isnet_weights):
    from is5net.checkpoint import convert_isnet_to_is5net
    from is5net.errors import CheckpointError

    original = isnet_weights.read_bytes()
    with pytest.raises(CheckpointError, match="is the input checkpoint"):
        convert_isnet_to_is5net(isnet_weights, isnet_weights)
    assert isnet_weights.read_bytes() == original


# --- b. convert-isnet --input-size is checked -------------------------------------------------------------


@pytest.mark.parametrize("size", ["0", "-5", "1000", "16", "33"])
def test_convert_refuses_an_input_size_the_refiner_cannot_run_at(tmp_path, capsys, isnet_weights, size):
    out = tmp_path / "out.safetensors"
    rc, err = _run(capsys, "convert-isnet", isnet_weights, out, f"--input-size={size}")
    assert rc == 2, err
    assert len(_lines(err)) == 1 and "--input-size" in err and "multiple of 32" in err
    assert not out.exists()


def test_a_checkpoint_with_an_impossible_input_size_is_refused_on_load_and_never_written(tmp_path):
    from safetensors.torch import save_file

    from is5net.checkpoint import FORMAT_TAG, RefinerConfig, load_refiner, save_refiner
    from is5net.errors import CheckpointError

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


# --- c. predict keeps what it finished ---------------------------------------------------------------------


def test_predict_commits_each_image_and_a_bad_one_does_not_discard_the_others(
    tmp_path, capsys, coffee_rgb, tiny_refiner_checkpoint
):
    inp = tmp_path / "in"
    inp.mkdir()
    good = []
    for name in ("a", "b", "d"):
        Image.fromarray(coffee_rgb).save(inp / f"{name}.png")
        good.append(inp / f"{name}.png")
    # A truncated PNG: its header reads, its pixels do not (what an interrupted download leaves).
    whole = (inp / "a.png").read_bytes()
    (inp / "c_truncated.png").write_bytes(whole[: len(whole) // 2])
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    for name in ("a", "b", "c_truncated"):  # d has no coarse mask: a second kind of per-image failure
        Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse / f"{name}.png")
    out = tmp_path / "out"
    images = [good[0], good[1], inp / "c_truncated.png", good[2]]
    rc, err = _run(
        capsys,
        "predict",
        *images,
        "--box",
        "10,10,200,150",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        out,
    )
    assert rc == 1, err
    lines = _lines(err)
    assert "Traceback" not in err
    failed = [ln for ln in lines if ln.startswith("is5net predict: error:")]
    assert len(failed) == 2
    assert "c_truncated.png" in failed[0] and "not a readable image" in failed[0]
    assert "d.png" in failed[1] and "no mask for d.png" in failed[1]
    assert "2 of 4 image(s) failed" in lines[-1] and "c_truncated.png" in lines[-1] and "d.png" in lines[-1]
    assert "2 masks for 2 image(s) written" in lines[-1]
    # what was finished stays, whole, and is listed
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "index.json"]
    index = json.loads((out / "index.json").read_text())
    assert [(e["file"], e["image"]) for e in index] == [("a.png", str(good[0])), ("b.png", str(good[1]))]
    for name in ("a.png", "b.png"):
        assert np.asarray(Image.open(out / name)).shape == (200, 300)
    assert not list(out.glob(".*"))  # no temporaries


def test_predict_with_only_failing_images_writes_nothing_and_exits_2(
    tmp_path, capsys, coffee_rgb, tiny_refiner_checkpoint, full_coarse
):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b"):
        Image.fromarray(coffee_rgb).save(inp / f"{name}.png")
    out = tmp_path / "out"
    rc, err = _run(
        capsys,
        "predict",
        inp / "a.png",
        inp / "b.png",
        "--box",
        "400,300,500,400",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        tmp_path / "nowhere",
        "-o",
        out,
    )
    assert rc == 2 and "--coarse-mask" in err and len(_lines(err)) == 1  # an input mistake: before any work
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    for name in ("a", "b"):
        Image.open(full_coarse).save(coarse / f"{name}.png")
    rc, err = _run(
        capsys,
        "predict",
        inp / "a.png",
        inp / "b.png",
        "--box",
        "400,300,500,400",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        out,
    )
    lines = _lines(err)
    assert rc == 2, err
    assert len(lines) == 3 and all("entirely outside" in ln for ln in lines[:2])
    assert "2 of 2 image(s) failed" in lines[2] and "nothing written" in lines[2]
    assert not out.exists()


def test_predict_interrupted_keeps_and_lists_what_it_finished(
    tmp_path, capsys, coffee_rgb, monkeypatch, tiny_refiner_checkpoint, full_coarse
):
    from is5net.inference import predictor as predictor_module

    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(coffee_rgb).save(inp / f"{name}.png")
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    for name in ("a", "b", "c"):
        Image.open(full_coarse).save(coarse / f"{name}.png")
    calls = {"n": 0}
    real = predictor_module.IS5NetPredictor.set_image

    def set_image(self, image):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third image runs
        return real(self, image)

    monkeypatch.setattr(predictor_module.IS5NetPredictor, "set_image", set_image)
    out = tmp_path / "out"
    rc, err = _run(
        capsys,
        "predict",
        *(inp / f"{n}.png" for n in "abc"),
        "--box",
        "10,10,200,150",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        out,
    )
    assert rc == 130 and _lines(err) == ["is5net predict: interrupted"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "index.json"]
    assert [e["file"] for e in json.loads((out / "index.json").read_text())] == ["a.png", "b.png"]


# --- d. a malformed --boxes file is one line naming the entry ---------------------------------------------


MALFORMED_BOXES = {
    "bbox with 3 values": (
        {"images": [{"id": 1, "file_name": "coffee.jpg"}], "annotations": [{"image_id": 1, "bbox": [1, 2, 3]}]},
        "annotations[0]: bbox: expected four numbers [x, y, width, height], got [1, 2, 3]",
    ),
    "bbox a string": (
        {
            "images": [{"id": 1, "file_name": "coffee.jpg"}],
            "annotations": [{"id": 9, "image_id": 1, "bbox": "1,2,3,4"}],
        },
        'annotations[0] (id 9): bbox: expected four numbers [x, y, width, height], got "1,2,3,4"',
    ),
    "bbox null": (
        {
            "images": [{"id": 1, "file_name": "coffee.jpg"}],
            "annotations": [{"image_id": 1, "bbox": [10, 10, 20, 20]}, {"image_id": 1, "bbox": None}],
        },
        "annotations[1]: bbox: expected four numbers [x, y, width, height], got null",
    ),
    "bbox with a null": (
        {
            "images": [{"id": 1, "file_name": "coffee.jpg"}],
            "annotations": [{"image_id": 1, "bbox": [10, None, 20, 20]}],
        },
        "got [10, null, 20, 20]",
    ),
    "bbox of zero width": (
        {"images": [{"id": 1, "file_name": "coffee.jpg"}], "annotations": [{"image_id": 1, "bbox": [10, 10, 0, 20]}]},
        "annotations[0]: bbox [10, 10, 0, 20] has a width or height <= 0",
    ),
    "annotation without image_id": (
        {"images": [{"id": 1, "file_name": "coffee.jpg"}], "annotations": [{"bbox": [1, 2, 3, 4]}]},
        "annotations[0]: has no 'image_id'",
    ),
    "unknown image_id": (
        {"images": [{"id": 1, "file_name": "coffee.jpg"}], "annotations": [{"image_id": 2, "bbox": [1, 2, 3, 4]}]},
        "annotations[0]: image_id 2 is not the id of any entry of 'images'",
    ),
    "annotation without bbox": (
        {"images": [{"id": 1, "file_name": "coffee.jpg"}], "annotations": [{"image_id": 1}]},
        "annotations[0]: has no 'bbox'",
    ),
    "image without file_name": (
        {"images": [{"id": 1}], "annotations": []},
        "images[0] (id 1): needs a 'file_name' (a string), got null",
    ),
    "image without id": ({"images": [{"file_name": "coffee.jpg"}], "annotations": []}, "images[0]: needs an 'id'"),
    "non-object annotation": (
        {"images": [{"id": 1, "file_name": "coffee.jpg"}], "annotations": [[1, 2, 3, 4]]},
        "annotations[0]: expected an object with 'image_id' and 'bbox', got [1, 2, 3, 4]",
    ),
    "non-object image": (
        {"images": ["coffee.jpg"], "annotations": []},
        "images[0]: expected an object with 'id' and 'file_name', got \"coffee.jpg\"",
    ),
    "images as an object": (
        {"images": {"id": 1, "file_name": "coffee.jpg"}, "annotations": []},
        "COCO 'images' must be a list of objects",
    ),
    "annotations as an object": (
        {"images": [], "annotations": {"image_id": 1}},
        "COCO 'annotations' must be a list of objects",
    ),
    "plain box with 3 values": (
        {"coffee.jpg": [[1, 2, 3]]},
        "boxes of 'coffee.jpg', box 0: expected four numbers [x0, y0, x1, y1], got [1, 2, 3]",
    ),
    "plain box of strings": ({"coffee.jpg": [["1", "2", "30", "40"]]}, 'got ["1", "2", "30", "40"]'),
    "plain boxes a string": ({"coffee.jpg": "1,2,3,4"}, "boxes of 'coffee.jpg': expected a list"),
    "plain box null": ({"coffee.jpg": [[1, 2, 30, 40], None]}, "boxes of 'coffee.jpg', box 1: expected four"),
    "plain box with a boolean": ({"coffee.jpg": [[True, 2, 30, 40]]}, "got [true, 2, 30, 40]"),
    "top level a list": ([[1, 2, 3, 4]], "expected an object mapping image names"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_BOXES))
def test_a_malformed_boxes_file_is_one_line_naming_the_entry(
    tmp_path, capsys, image_file, full_coarse, tiny_refiner_checkpoint, case
):
    content, expected = MALFORMED_BOXES[case]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(content))
    out = tmp_path / "out"
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--boxes",
        boxes,
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        full_coarse,
        "-o",
        out,
    )
    assert rc == 2, err
    lines = _lines(err)
    assert len(lines) == 1 and "Traceback" not in err and "np.float64" not in err, err
    assert lines[0].startswith(f"is5net predict: error: {boxes}: ")
    assert expected in lines[0], lines[0]
    assert not out.exists()


# --- k. messages -------------------------------------------------------------------------------------------


def test_an_image_given_as_checkpoint_is_called_what_it_is(tmp_path, capsys, image_file, full_coarse):
    from is5net.checkpoint import load_refiner
    from is5net.errors import CheckpointError

    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tif"), ("BMP", "bmp"), ("WEBP", "webp")):
        path = tmp_path / f"weights_really_an_image.{ext}"
        Image.open(image_file).save(path, format=fmt)
        with pytest.raises(CheckpointError) as info:
            load_refiner(path)
        msg = str(info.value)
        assert "not a checkpoint" in msg and "arbitrary code" not in msg, msg
        assert fmt.replace("WEBP", "WebP") in msg
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--box",
        "1,1,50,50",
        "--checkpoint",
        full_coarse,
        "--coarse-mask",
        full_coarse,
        "-o",
        tmp_path / "o",
    )
    assert rc == 2 and _lines(err) == [
        f"is5net predict: error: {full_coarse}: not a checkpoint but a PNG image; "
        f"give the refiner's weights (.pth or .safetensors)"
    ]


def test_box_numbers_never_print_as_numpy_reprs(tmp_path, capsys, image_file, full_coarse, tiny_refiner_checkpoint):
    boxes = tmp_path / "boxes.json"
    for content in ({"coffee.jpg": [[1.5, 2, 3]]}, {"coffee.jpg": [[1e400, 2, 30, 40]]}):
        boxes.write_text(json.dumps(content).replace("Infinity", "1e400"))
        rc, err = _run(
            capsys,
            "predict",
            image_file,
            "--boxes",
            boxes,
            "--checkpoint",
            tiny_refiner_checkpoint,
            "--coarse-mask",
            full_coarse,
            "-o",
            tmp_path / "o",
        )
        assert rc == 2 and "np." not in err and "float64" not in err and len(_lines(err)) == 1, err


def test_a_three_channel_refiner_says_it_ignores_the_box(tmp_path, capsys, caplog, image_file, full_coarse):
    torch.save(make_tiny_refiner(3).state_dict(), tmp_path / "isnet.pth")
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--box",
        "10,10,100,100",
        "--coarse-mask",
        full_coarse,
        "--checkpoint",
        tmp_path / "isnet.pth",
        "-o",
        tmp_path / "o",
    )
    assert rc == 0, err
    warning = [r.getMessage() for r in caplog.records if "3-channel" in r.getMessage()]
    assert len(warning) == 1
    assert "isnet.pth" in warning[0] and "--box/--boxes and --coarse-mask are ignored" in warning[0]
    caplog.clear()
    rc, err = _run(capsys, "predict", image_file, "--checkpoint", tmp_path / "isnet.pth", "-o", tmp_path / "o2")
    assert rc == 0 and not [r for r in caplog.records if "3-channel" in r.getMessage()]  # nothing to ignore


def test_a_box_with_a_negative_coordinate_is_documented_and_works(
    tmp_path, capsys, image_file, full_coarse, tiny_refiner_checkpoint
):
    from pathlib import Path

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--box=-5,0,10,10" in help_text
    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert "--box=-5,0,10,10" in readme.read_text()
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--box=-5,0,100,100",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        full_coarse,
        "-o",
        tmp_path / "o",
    )
    assert rc == 0, err
    assert json.loads((tmp_path / "o" / "index.json").read_text())[0]["box"] == [0, 0, 100, 100]


def test_predict_max_pixels_refuses_a_large_image_in_one_line_naming_it(
    tmp_path, capsys, image_file, full_coarse, tiny_refiner_checkpoint, monkeypatch
):
    monkeypatch.delenv("IS5NET_MAX_PIXELS", raising=False)
    base = [image_file, "--box", "1,1,50,50", "--checkpoint", tiny_refiner_checkpoint, "--coarse-mask", full_coarse]
    rc, err = _run(capsys, "predict", *base, "--max-pixels", "50000", "-o", tmp_path / "o")
    assert rc == 2 and len(_lines(err)) == 1, err
    assert str(image_file) in err and "too many pixels" in err and "--max-pixels" in err
    assert not (tmp_path / "o").exists()
    rc, err = _run(capsys, "predict", *base, "--max-pixels", "60000", "-o", tmp_path / "o")
    assert rc == 0, err
    monkeypatch.setenv("IS5NET_MAX_PIXELS", "many")
    rc, err = _run(capsys, "predict", *base, "-o", tmp_path / "o3")
    assert rc == 2 and "IS5NET_MAX_PIXELS='many'" in err and len(_lines(err)) == 1
