"""`is5net predict` from the command line: masks, cut-outs and the index it writes; boxes given every way (--box,
--boxes as JSON, COCO or CSV, several per photo); the stage 1 and refiner backend chosen; bad input as one line
that leaves nothing behind; what a run keeps when some images fail or Ctrl-C stops it (issue 13, faults c, d, k).

Folder runs (discovery, the journal, resume, torchrun sharding) are in test_batch.py."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import lines_of
from is5net.cli import main
from is5net.inference.outputs import cutout_rgba
from tiny import make_tiny_refiner


@pytest.fixture()
def full_coarse(tmp_path):
    """A coarse mask that is all foreground, the size of the coffee photo."""
    path = tmp_path / "coarse.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(path)
    return path


# --- masks, cut-outs and the index ---------------------------------------------------------------------------


def test_predict_with_tiny_sam_writes_masks_and_index(
    tmp_path, run_cli, image_file, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    out = tmp_path / "out"
    rc, err = run_cli(
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


def test_predict_with_coarse_mask_dir_and_threshold_needs_no_sam(
    tmp_path, run_cli, image_file, tiny_refiner_checkpoint
):
    masks = tmp_path / "coarse"
    masks.mkdir()
    m = np.zeros((200, 300), np.uint8)
    m[40:170, 60:230] = 255
    Image.fromarray(m).save(masks / "coffee.png")
    out = tmp_path / "out"
    rc, err = run_cli(
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


def test_isnet_checkpoint_runs_without_prompt(tmp_path, run_cli, image_file):
    from tiny import make_tiny_refiner

    torch.save(make_tiny_refiner(3).state_dict(), tmp_path / "isnet.pth")
    rc, err = run_cli("predict", image_file, "--checkpoint", tmp_path / "isnet.pth", "-o", tmp_path / "o")
    assert rc == 0, err
    assert np.asarray(Image.open(tmp_path / "o" / "coffee.png")).shape == (200, 300)


def test_weights_found_by_name_under_is5net_home(tmp_path, run_cli, image_file, tiny_refiner, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    torch.save(tiny_refiner.state_dict(), home / "dis-sam.pth")
    monkeypatch.setenv("IS5NET_HOME", str(home))
    coarse = tmp_path / "c.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse)
    rc, err = run_cli(
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
    rc, err = run_cli(
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


def test_predict_stage1_grabcut_needs_no_weights_and_refuses_sam_too(
    tmp_path, run_cli, coffee_rgb, tiny_refiner_checkpoint, tiny_sam_checkpoint
):
    image = tmp_path / "coffee.png"
    Image.fromarray(coffee_rgb).save(image)
    base = [image, "--box", "60,40,230,170", "--stage1", "grabcut", "--checkpoint", tiny_refiner_checkpoint]
    rc, err = run_cli("predict", *base, "-o", tmp_path / "out", "--device", "cpu", "-q")
    assert rc == 0, err
    assert np.asarray(Image.open(tmp_path / "out" / "coffee.png")).shape == (200, 300)
    rc, err = run_cli("predict", *base, "--sam-checkpoint", tiny_sam_checkpoint, "-o", tmp_path / "o2")
    assert rc == 2 and "--stage1 grabcut" in err and err.count("\n") == 1 and not (tmp_path / "o2").exists()


def test_predict_cli_with_backend_reports_it(tmp_path, caplog, coffee_rgb, tiny_refiner_checkpoint, monkeypatch):
    caplog.set_level(logging.INFO, logger="is5net")  # the CLI logs to stderr; under pytest, to caplog
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path / "home"))
    image = tmp_path / "coffee.png"
    Image.fromarray(coffee_rgb).save(image)
    coarse = np.zeros(coffee_rgb.shape[:2], np.uint8)
    coarse[40:170, 60:230] = 255
    Image.fromarray(coarse).save(tmp_path / "coarse.png")
    outs = {}
    for name in ("torch", "onnxruntime"):
        out = tmp_path / name
        code = main(
            [
                "predict",
                str(image),
                "--box",
                "60,40,230,170",
                "--checkpoint",
                str(tiny_refiner_checkpoint),
                "--coarse-mask",
                str(tmp_path / "coarse.png"),
                "-o",
                str(out),
                "--backend",
                name,
                "-q",
            ]
        )
        assert code == 0
        assert f"refiner: {name} " in caplog.text
        caplog.clear()
        outs[name] = np.asarray(Image.open(out / "coffee.png")).astype(int)
    assert np.abs(outs["torch"] - outs["onnxruntime"]).max() <= 1  # 8-bit masks: one grey level at most


def test_cutout_command_with_background_colour_and_image(
    tmp_path, run_cli, image_file, tiny_refiner_checkpoint, coffee_rgb
):
    full = tmp_path / "c.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(full)
    base = [
        image_file,
        "--box",
        "60,40,230,170",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        full,
        "--save",
        "both",
        "--device",
        "cpu",
    ]
    rc, err = run_cli("predict", *base, "-o", tmp_path / "raw", "--foreground", "raw")
    assert rc == 0, err
    mask = np.asarray(Image.open(tmp_path / "raw" / "coffee.png"))
    raw = np.asarray(Image.open(tmp_path / "raw" / "coffee_cutout.png"))
    assert np.array_equal(raw, cutout_rgba(np.asarray(Image.open(image_file).convert("RGB")), mask))  # serve's
    rc, err = run_cli("predict", *base, "-o", tmp_path / "est")
    assert rc == 0, err
    est = np.asarray(Image.open(tmp_path / "est" / "coffee_cutout.png"))
    soft = (mask > 0) & (mask < 255)
    assert np.array_equal(est[..., 3], mask) and not np.array_equal(est[..., :3][soft], raw[..., :3][soft])
    assert np.array_equal(est[mask == 255], raw[mask == 255])
    rc, err = run_cli("predict", *base, "-o", tmp_path / "green", "--background", "0,255,0")
    assert rc == 0, err
    green = Image.open(tmp_path / "green" / "coffee_cutout.png")
    assert green.mode == "RGB" and green.size == (300, 200)
    g = np.asarray(green)
    assert np.array_equal(g[mask == 0], np.tile([0, 255, 0], ((mask == 0).sum(), 1)))
    Image.fromarray(coffee_rgb[::-1]).resize((150, 100)).save(tmp_path / "bg.png")
    rc, err = run_cli("predict", *base, "-o", tmp_path / "img", "--background", tmp_path / "bg.png")
    assert rc == 0 and Image.open(tmp_path / "img" / "coffee_cutout.png").size == (300, 200)
    for bad in ("notacolour", "300,0,0"):
        rc, err = run_cli("predict", *base, "-o", tmp_path / "bad", "--background", bad)
        assert rc == 2 and "--background" in err and len(lines_of(err)) == 1 and not (tmp_path / "bad").exists()


# --- boxes: --box, --boxes (JSON, COCO, CSV), several per photo ----------------------------------------------


def test_boxes_file_json_and_coco(tmp_path, run_cli, caplog, image_file, tiny_refiner_checkpoint):
    coarse = tmp_path / "c.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse)
    (tmp_path / "boxes.json").write_text(json.dumps({"coffee.jpg": [[10, 10, 100, 100]]}))
    coco = {
        "images": [{"id": 7, "file_name": "coffee.jpg"}],
        "annotations": [{"image_id": 7, "bbox": [10, 20, 50, 60]}, {"image_id": 7, "bbox": [0, 0, 30, 30]}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    rc, err = run_cli(
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
    rc, err = run_cli(
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


def test_csv_boxes(tmp_path, run_cli, image_file, tiny_refiner_checkpoint):
    full = tmp_path / "coarse"
    full.mkdir()
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(full / "coffee.png")
    csv = tmp_path / "boxes.csv"
    csv.write_text("file,x0,y0,x1,y1\ncoffee.jpg,10,20,60,80\n\ncoffee.jpg, 0,0,30,30\n")
    rc, err = run_cli(
        "predict",
        image_file,
        "--boxes",
        csv,
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        full,
        "-o",
        tmp_path / "o",
    )
    assert rc == 0, err
    assert [e["box"] for e in json.loads((tmp_path / "o" / "index.json").read_text())] == [
        [10, 20, 60, 80],
        [0, 0, 30, 30],
    ]
    for text, needle in (
        ("coffee.jpg,1,2,3\n", "line 1: expected 5 fields"),
        ("file,x0,y0,x1,y1\ncoffee.jpg,1,2,x,4\n", "line 2: x0,y0,x1,y1 must be numbers"),
        ("coffee.jpg,1,2,inf,4\n", "must be finite"),
        ("", "no rows"),
    ):
        csv.write_text(text)
        rc, err = run_cli(
            "predict",
            image_file,
            "--boxes",
            csv,
            "--checkpoint",
            tiny_refiner_checkpoint,
            "--coarse-mask",
            full,
            "-o",
            tmp_path / "o2",
        )
        assert rc == 2 and len(lines_of(err)) == 1 and needle in err and str(csv) in err, err
        assert not (tmp_path / "o2").exists()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode, numpy 2
def test_label_png_union_and_rle_round_trip(
    tmp_path, run_cli, image_file, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    from pycocotools import mask as coco_mask

    base = [
        image_file,
        "--box",
        "60,40,230,170",
        "--box",
        "20,20,160,120",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--sam-checkpoint",
        tiny_sam_checkpoint,
        "--device",
        "cpu",
    ]
    outs = {c: tmp_path / c for c in ("separate", "union", "labels")}
    for combine, out in outs.items():
        rc, err = run_cli("predict", *base, "--combine", combine, "-o", out)
        assert rc == 0, err
    m0, m1 = (np.asarray(Image.open(outs["separate"] / f"coffee_{k}.png")) for k in (0, 1))
    assert sorted(p.name for p in outs["union"].iterdir()) == ["coffee.png", "index.json"]
    assert np.array_equal(np.asarray(Image.open(outs["union"] / "coffee.png")), np.maximum(m0, m1))
    labels = np.asarray(Image.open(outs["labels"] / "coffee.png"))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    fg0, fg1 = m0 > 127, m1 > 127
    assert np.array_equal(labels == 0, ~(fg0 | fg1))
    assert np.all(labels[fg0 & ~fg1] == 1) and np.all(labels[fg1 & ~fg0] == 2)
    both = fg0 & fg1
    assert both.any()  # the boxes overlap, so the rule is exercised
    assert np.all(labels[both & (m0 > m1)] == 1) and np.all(labels[both & (m1 > m0)] == 2)
    index = json.loads((outs["labels"] / "index.json").read_text())
    assert [(e["file"], e["label"]) for e in index] == [("coffee.png", 1), ("coffee.png", 2)]
    # COCO RLE in the index: pycocotools decodes it to each box's foreground, in every mode.
    for out in outs.values():
        entries = json.loads((out / "index.json").read_text())
        for entry, fg in zip(entries, (fg0, fg1), strict=True):
            rle = {"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode()}
            assert np.array_equal(coco_mask.decode(rle).astype(bool), fg)
            assert coco_mask.area(rle) == fg.sum()


def test_a_box_with_a_negative_coordinate_is_documented_and_works(
    tmp_path, capsys, run_cli, image_file, full_coarse, tiny_refiner_checkpoint
):
    from pathlib import Path

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--box=-5,0,10,10" in help_text
    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert "--box=-5,0,10,10" in readme.read_text()
    rc, err = run_cli(
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


# --- d. a malformed --boxes file is one line naming the entry ------------------------------------------------


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
    tmp_path, run_cli, image_file, full_coarse, tiny_refiner_checkpoint, case
):
    content, expected = MALFORMED_BOXES[case]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(content))
    out = tmp_path / "out"
    rc, err = run_cli(
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
    lines = lines_of(err)
    assert len(lines) == 1 and "Traceback" not in err and "np.float64" not in err, err
    assert lines[0].startswith(f"is5net predict: error: {boxes}: ")
    assert expected in lines[0], lines[0]
    assert not out.exists()


def test_box_numbers_never_print_as_numpy_reprs(tmp_path, run_cli, image_file, full_coarse, tiny_refiner_checkpoint):
    boxes = tmp_path / "boxes.json"
    for content in ({"coffee.jpg": [[1.5, 2, 3]]}, {"coffee.jpg": [[1e400, 2, 30, 40]]}):
        boxes.write_text(json.dumps(content).replace("Infinity", "1e400"))
        rc, err = run_cli(
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
        assert rc == 2 and "np." not in err and "float64" not in err and len(lines_of(err)) == 1, err


# --- bad input: one line, exit 2, nothing left behind (k. messages) ------------------------------------------


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
    tmp_path, run_cli, image_file, tiny_refiner_checkpoint, tiny_sam_checkpoint
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
        rc, err = run_cli("predict", *argv, "-o", out)
        lines = [ln for ln in err.strip().splitlines() if ln]
        assert rc == 2, (name, err)
        assert len(lines) == 1 and "error" in lines[0] and needle in lines[0], (name, err)
        assert "Traceback" not in err
        assert not out.exists(), name


def test_failure_on_second_image_keeps_existing_outdir_clean(tmp_path, run_cli, image_file, tiny_refiner_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's file")
    corrupt = tmp_path / "in" / "zz_bad.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    coarse = tmp_path / "c"
    coarse.mkdir()
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse / "coffee.png")
    rc, err = run_cli(
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


def test_an_image_given_as_checkpoint_is_called_what_it_is(tmp_path, run_cli, image_file, full_coarse):
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
    rc, err = run_cli(
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
    assert rc == 2 and lines_of(err) == [
        f"is5net predict: error: {full_coarse}: not a checkpoint but a PNG image; "
        f"give the refiner's weights (.pth or .safetensors)"
    ]


def test_a_three_channel_refiner_says_it_ignores_the_box(tmp_path, run_cli, caplog, image_file, full_coarse):
    torch.save(make_tiny_refiner(3).state_dict(), tmp_path / "isnet.pth")
    rc, err = run_cli(
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
    rc, err = run_cli("predict", image_file, "--checkpoint", tmp_path / "isnet.pth", "-o", tmp_path / "o2")
    assert rc == 0 and not [r for r in caplog.records if "3-channel" in r.getMessage()]  # nothing to ignore


def test_predict_max_pixels_refuses_a_large_image_in_one_line_naming_it(
    tmp_path, run_cli, image_file, full_coarse, tiny_refiner_checkpoint, monkeypatch
):
    monkeypatch.delenv("IS5NET_MAX_PIXELS", raising=False)
    base = [image_file, "--box", "1,1,50,50", "--checkpoint", tiny_refiner_checkpoint, "--coarse-mask", full_coarse]
    rc, err = run_cli("predict", *base, "--max-pixels", "50000", "-o", tmp_path / "o")
    assert rc == 2 and len(lines_of(err)) == 1, err
    assert str(image_file) in err and "too many pixels" in err and "--max-pixels" in err
    assert not (tmp_path / "o").exists()
    rc, err = run_cli("predict", *base, "--max-pixels", "60000", "-o", tmp_path / "o")
    assert rc == 0, err
    monkeypatch.setenv("IS5NET_MAX_PIXELS", "many")
    rc, err = run_cli("predict", *base, "-o", tmp_path / "o3")
    assert rc == 2 and "IS5NET_MAX_PIXELS='many'" in err and len(lines_of(err)) == 1


def test_an_unavailable_backend_is_one_clear_line(tmp_path, tiny_refiner_checkpoint):
    # A real interpreter in which openvino cannot be imported (as on a machine without it).
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'openvino':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from is5net.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            str(image),
            "--box",
            "0,0,16,16",
            "--checkpoint",
            str(tiny_refiner_checkpoint),
            "--coarse-mask",
            str(image),
            "--backend",
            "openvino",
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "backend 'openvino' is not installed" in lines[0] and "pip install" in lines[0]
    assert not (tmp_path / "out").exists()


# --- c. predict keeps what it finished -----------------------------------------------------------------------


def test_predict_commits_each_image_and_a_bad_one_does_not_discard_the_others(
    tmp_path, run_cli, coffee_rgb, tiny_refiner_checkpoint
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
    rc, err = run_cli(
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
    lines = lines_of(err)
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
    tmp_path, run_cli, coffee_rgb, tiny_refiner_checkpoint, full_coarse
):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("a", "b"):
        Image.fromarray(coffee_rgb).save(inp / f"{name}.png")
    out = tmp_path / "out"
    rc, err = run_cli(
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
    assert rc == 2 and "--coarse-mask" in err and len(lines_of(err)) == 1  # an input mistake: before any work
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    for name in ("a", "b"):
        Image.open(full_coarse).save(coarse / f"{name}.png")
    rc, err = run_cli(
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
    lines = lines_of(err)
    assert rc == 2, err
    assert len(lines) == 3 and all("entirely outside" in ln for ln in lines[:2])
    assert "2 of 2 image(s) failed" in lines[2] and "nothing written" in lines[2]
    assert not out.exists()


def test_predict_interrupted_keeps_and_lists_what_it_finished(
    tmp_path, run_cli, coffee_rgb, monkeypatch, tiny_refiner_checkpoint, full_coarse
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
    rc, err = run_cli(
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
    assert rc == 130 and lines_of(err) == ["is5net predict: interrupted"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "index.json"]
    assert [e["file"] for e in json.loads((out / "index.json").read_text())] == ["a.png", "b.png"]
