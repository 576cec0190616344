import json

import numpy as np
import pytest
import torch
from PIL import Image

from is5net.cli import main


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.err


def test_predict_with_tiny_sam_writes_masks_and_index(
    tmp_path, capsys, image_file, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    out = tmp_path / "out"
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--box",
        "60,40,230,170",
        "--box",
        "0,0,120,90",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--sam-checkpoint",
        tiny_sam_checkpoint,
        "-o",
        out,
        "--save",
        "both",
        "--device",
        "cpu",
    )
    assert rc == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["coffee_0.png", "coffee_0_cutout.png", "coffee_1.png", "coffee_1_cutout.png", "index.json"]
    mask = np.asarray(Image.open(out / "coffee_0.png"))
    assert mask.shape == (200, 300) and mask.dtype == np.uint8 and mask.min() == 0 and mask.max() == 255
    assert len(np.unique(mask)) > 2  # the soft map, not a thresholded one
    cut = Image.open(out / "coffee_1_cutout.png")
    assert cut.mode == "RGBA" and cut.size == (300, 200)
    index = json.loads((out / "index.json").read_text())
    assert [e["file"] for e in index] == ["coffee_0.png", "coffee_1.png"]
    assert index[0]["box"] == [60, 40, 230, 170] and isinstance(index[0]["sam_score"], float)
    assert "2 masks and cutouts for 1 image" in err


def test_predict_with_coarse_mask_dir_and_threshold_needs_no_sam(tmp_path, capsys, image_file, tiny_refiner_checkpoint):
    masks = tmp_path / "coarse"
    masks.mkdir()
    m = np.zeros((200, 300), np.uint8)
    m[40:170, 60:230] = 255
    Image.fromarray(m).save(masks / "coffee.png")
    out = tmp_path / "out"
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--box",
        "60,40,230,170",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        masks,
        "-o",
        out,
        "--threshold",
        "otsu",
    )
    assert rc == 0, err
    mask = np.asarray(Image.open(out / "coffee.png"))
    assert set(np.unique(mask)) <= {0, 255} and mask.shape == (200, 300)
    assert json.loads((out / "index.json").read_text())[0]["sam_score"] is None


def test_boxes_file_json_and_coco(tmp_path, capsys, caplog, image_file, tiny_refiner_checkpoint):
    coarse = tmp_path / "c.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse)
    (tmp_path / "boxes.json").write_text(json.dumps({"coffee.jpg": [[10, 10, 100, 100]]}))
    coco = {
        "images": [{"id": 7, "file_name": "coffee.jpg"}],
        "annotations": [{"image_id": 7, "bbox": [10, 20, 50, 60]}, {"image_id": 7, "bbox": [0, 0, 30, 30]}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--boxes",
        tmp_path / "boxes.json",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        tmp_path / "o1",
    )
    assert rc == 0, err
    assert (tmp_path / "o1" / "coffee.png").exists() and "one coarse mask" not in caplog.text
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--boxes",
        tmp_path / "coco.json",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        tmp_path / "o2",
    )
    assert rc == 0, err
    index = json.loads((tmp_path / "o2" / "index.json").read_text())
    assert [e["box"] for e in index] == [[10, 20, 60, 80], [0, 0, 30, 30]]
    assert "coffee.jpg: one coarse mask (c.png) for all 2 boxes" in caplog.text  # said, not silently reused


def test_isnet_checkpoint_runs_without_prompt(tmp_path, capsys, image_file):
    from tiny import make_tiny_refiner

    torch.save(make_tiny_refiner(3).state_dict(), tmp_path / "isnet.pth")
    rc, err = _run(capsys, "predict", image_file, "--checkpoint", tmp_path / "isnet.pth", "-o", tmp_path / "o")
    assert rc == 0, err
    assert np.asarray(Image.open(tmp_path / "o" / "coffee.png")).shape == (200, 300)


def test_weights_found_by_name_under_is5net_home(tmp_path, capsys, image_file, tiny_refiner, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    torch.save(tiny_refiner.state_dict(), home / "dis-sam.pth")
    monkeypatch.setenv("IS5NET_HOME", str(home))
    coarse = tmp_path / "c.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse)
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--box",
        "1,1,50,50",
        "--checkpoint",
        "dis-sam",
        "--coarse-mask",
        coarse,
        "-o",
        tmp_path / "o",
    )
    assert rc == 0, err
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--box",
        "1,1,50,50",
        "--checkpoint",
        "isnet",
        "--coarse-mask",
        coarse,
        "-o",
        tmp_path / "o3",
    )
    assert rc == 2 and "isnet.pth" in err and "IS5NET_HOME" in err


def _bad_cases(tmp_path, image_file, ref, sam):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(image_file.read_bytes()[:300])
    text = tmp_path / "weights.pth"
    text.write_text("not weights")
    base = ["--checkpoint", ref, "--sam-checkpoint", sam]
    return {
        "missing image": ([tmp_path / "nope.jpg", "--box", "1,1,20,20", *base], "nope.jpg"),
        "corrupt image": ([corrupt, "--box", "1,1,20,20", *base], "corrupt.jpg"),
        "zero-area box": ([image_file, "--box", "10,10,10,40", *base], "zero or negative area"),
        "outside box": ([image_file, "--box", "400,300,500,400", *base], "entirely outside"),
        "malformed box": ([image_file, "--box", "1,2,3", *base], "four numbers"),
        "sam as refiner": (
            [image_file, "--box", "1,1,20,20", "--checkpoint", sam, "--sam-checkpoint", sam],
            "SAM checkpoint",
        ),
        "text as refiner": (
            [image_file, "--box", "1,1,20,20", "--checkpoint", text, "--sam-checkpoint", sam],
            "weights.pth",
        ),
        "refiner as sam": (
            [image_file, "--box", "1,1,20,20", "--checkpoint", ref, "--sam-checkpoint", ref],
            "expected a SAM checkpoint",
        ),
        "no stage 1": ([image_file, "--box", "1,1,20,20", "--checkpoint", ref], "--sam-checkpoint"),
        "bad threshold": ([image_file, "--box", "1,1,20,20", *base, "--threshold", "7"], "--threshold"),
    }


def test_every_bad_input_is_one_line_and_leaves_nothing(
    tmp_path, capsys, image_file, tiny_refiner_checkpoint, tiny_sam_checkpoint
):
    cases = _bad_cases(tmp_path, image_file, tiny_refiner_checkpoint, tiny_sam_checkpoint)
    if not torch.cuda.is_available():
        cases["cuda absent"] = (
            [
                image_file,
                "--box",
                "1,1,20,20",
                "--checkpoint",
                tiny_refiner_checkpoint,
                "--sam-checkpoint",
                tiny_sam_checkpoint,
                "--device",
                "cuda",
            ],
            "CUDA",
        )
    for name, (argv, needle) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        rc, err = _run(capsys, "predict", *argv, "-o", out)
        lines = [ln for ln in err.strip().splitlines() if ln]
        assert rc == 2, (name, err)
        assert len(lines) == 1 and "error" in lines[0] and needle in lines[0], (name, err)
        assert "Traceback" not in err
        assert not out.exists(), name


def test_failure_on_second_image_keeps_existing_outdir_clean(tmp_path, capsys, image_file, tiny_refiner_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file")
    corrupt = tmp_path / "in" / "zz_bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    coarse = tmp_path / "c"
    coarse.mkdir()
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse / "coffee.png")
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        corrupt,
        "--box",
        "1,1,50,50",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        out,
    )
    assert rc == 2 and "zz_bad.png" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_help_on_every_command(capsys):
    from is5net.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage" in capsys.readouterr().out
