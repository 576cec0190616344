"""Clicks beside a box (issue 27): the predictor's, ``predict --points`` and the boxes file's (tiny random SAM, CPU).

The coarse mask with clicks is ``SamPredictor``'s for the same image, box and clicks (``masks[0]`` of
``multimask_output=True``), the refiner then gets that mask and the box as it would without clicks, the image
is encoded once, and the command line gives the very files the Python call gives. Bad clicks are one line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from segment_anything import SamPredictor

from helpers import lines_of
from is5net import IS5NetPredictor, load_refiner
from is5net.errors import IS5NetError
from is5net.inference.boxes import attach_clicks, clicks_of_boxes, parse_points, validate_points
from is5net.inference.outputs import mask_uint8
from is5net.inference.stage1 import load_sam
from is5net.io import encode_png, load_image

BOX = [60, 40, 230, 170]
BOX2 = [0, 0, 120, 90]
CLICKS = ([[120, 80], [200, 150]], [1, 0])


@pytest.fixture(scope="module")
def predictor(tiny_sam, tiny_refiner, coffee_rgb):
    p = IS5NetPredictor(tiny_sam, tiny_refiner, device="cpu", backend="torch")
    p.set_image(coffee_rgb)
    return p


@pytest.fixture(scope="module")
def reference(tiny_sam, coffee_rgb):
    """segment-anything's own predictor on the same image: what SAM users run."""
    ref = SamPredictor(tiny_sam)
    ref.set_image(coffee_rgb)
    return ref


def _sam_first_mask(ref: SamPredictor, box, points, labels) -> np.ndarray:
    masks, _, _ = ref.predict(
        point_coords=np.asarray(points, float),
        point_labels=np.asarray(labels),
        box=np.asarray(box, float),
        multimask_output=True,
    )
    return masks[0]


# --- the predictor ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "points, labels",
    [CLICKS, ([[150, 100]], [1]), ([[70, 50]], [0]), ([[100, 60], [180, 120], [220, 160]], [1, 1, 0])],
)
def test_coarse_mask_with_clicks_is_sam_predictors(predictor, reference, points, labels):
    out = predictor.predict(box=BOX, points=points, point_labels=labels)
    expected = _sam_first_mask(reference, BOX, points, labels)
    assert out.sam_mask.shape == expected.shape == (200, 300)
    assert np.array_equal(out.sam_mask, expected)
    assert out.points == [[float(x), float(y)] for x, y in points] and out.point_labels == labels
    # The refiner got that coarse mask and the box, as it does without clicks: the same map as giving it the mask.
    given = predictor.predict(box=BOX, coarse_mask=expected)
    assert np.array_equal(out.mask, given.mask)


def test_clicks_change_the_coarse_mask_and_the_image_is_encoded_once(tiny_sam, tiny_refiner, coffee_rgb, reference):
    calls = []
    hook = tiny_sam.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        p = IS5NetPredictor(tiny_sam, tiny_refiner, device="cpu", backend="torch")
        p.set_image(coffee_rgb)
        plain = p.predict(box=BOX)
        clicked = p.predict(box=BOX, points=CLICKS[0], point_labels=CLICKS[1])
        again = p.predict(box=BOX, points=np.array(CLICKS[0], float), point_labels=np.array(CLICKS[1]))
    finally:
        hook.remove()
    assert len(calls) == 1  # set_image only: a click costs SAM's decoder and the refiner
    assert not np.array_equal(plain.sam_mask, clicked.sam_mask)  # the clicks reached stage 1
    assert not np.array_equal(plain.mask, clicked.mask)
    assert np.array_equal(clicked.mask, again.mask)  # lists or arrays, the same clicks
    assert np.array_equal(plain.sam_mask, reference.predict(box=np.array(BOX, float), multimask_output=True)[0][0])


def test_several_boxes_each_with_its_own_clicks(predictor, reference):
    boxes = [BOX, BOX2, [100, 20, 290, 190]]
    points = [CLICKS[0], None, np.array([[150.0, 100.0]])]
    labels = [CLICKS[1], None, np.array([0])]
    outs = predictor.predict_batch(boxes, points=points, point_labels=labels)
    assert np.array_equal(outs[0].sam_mask, _sam_first_mask(reference, BOX, *CLICKS))
    assert np.array_equal(outs[1].sam_mask, reference.predict(box=np.array(BOX2, float), multimask_output=True)[0][0])
    assert np.array_equal(outs[2].sam_mask, _sam_first_mask(reference, boxes[2], [[150, 100]], [0]))
    assert outs[1].points is None and outs[2].point_labels == [0]
    one = predictor.predict(box=boxes[2], points=[[150, 100]], point_labels=[0])
    assert np.allclose(outs[2].mask, one.mask, atol=1e-5)  # batched as one by one


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points": [[120, 80]]}, "clicks need their labels"),
        ({"point_labels": [1]}, "point_labels without points"),
        ({"points": [[120, 80]], "point_labels": [2]}, "a label is 1 (foreground) or 0 (background), got 2"),
        ({"points": [[120, 80]], "point_labels": [True]}, "a label is 1"),
        ({"points": [[120, 80], [1, 2]], "point_labels": [1]}, "2 points but 1 labels"),
        ({"points": [[301, 80]], "point_labels": [1]}, "[301, 80]: outside the 300x200 image"),
        ({"points": [[10, -1]], "point_labels": [1]}, "outside the 300x200 image"),
        ({"points": [[float("nan"), 80]], "point_labels": [1]}, "two finite numbers"),
        ({"points": [[1, 2, 3]], "point_labels": [1]}, "expected a point [x, y]"),
        ({"points": "120,80", "point_labels": [1]}, "expected a list of [x, y]"),
        ({"box": None, "points": [[120, 80]], "point_labels": [1]}, "clicks need a box"),
        ({"coarse_mask": np.ones((200, 300), bool), "points": [[120, 80]], "point_labels": [1]}, "one or the other"),
    ],
)
def test_bad_clicks_are_one_clear_error(predictor, kwargs, message):
    kwargs = {"box": BOX, **kwargs}
    with pytest.raises(IS5NetError) as info:
        predictor.predict(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_clicks_of_several_boxes_name_the_box(predictor):
    with pytest.raises(IS5NetError, match="points of box 1"):
        predictor.predict_batch([BOX, BOX2], points=[None, [[500, 1]]], point_labels=[None, [1]])
    with pytest.raises(IS5NetError, match=r"one entry per box \(2\), got 1 entries"):
        predictor.predict_batch([BOX, BOX2], points=[CLICKS[0]], point_labels=[CLICKS[1]])


def test_no_clicks_is_the_box_alone(predictor):
    plain = predictor.predict(box=BOX)
    for empty in ({"points": [], "point_labels": []}, {"points": None, "point_labels": None}):
        assert np.array_equal(predictor.predict(box=BOX, **empty).mask, plain.mask)


def test_a_stage_without_clicks_says_so(tiny_refiner, coffee_rgb):
    class BoxOnly:  # a stage of one's own, from before clicks: predict(boxes) only
        def set_image(self, rgb, rgb_tensor=None):
            self.shape = rgb.shape[:2]

        def predict(self, boxes):
            import torch

            return torch.ones((len(boxes), *self.shape), dtype=torch.bool), None

    p = IS5NetPredictor(BoxOnly(), tiny_refiner, device="cpu", backend="torch")
    p.set_image(coffee_rgb)
    assert p.predict(box=BOX).sam_mask.all()
    with pytest.raises(IS5NetError, match=r"stage 1 \(BoxOnly\) takes no clicks"):
        p.predict(box=BOX, points=[[1, 1]], point_labels=[1])


# --- the readers -------------------------------------------------------------------------------------------------
def test_click_text_and_json_readers():
    assert parse_points(["120,80", "300,40:0", "5.5,6:1"]) == ([[120, 80], [300, 40], [5.5, 6]], [1, 0, 1])
    assert parse_points(["120,80 300,40:0"]) == ([[120, 80], [300, 40]], [1, 0])  # one quoted argument
    for bad in ("120", "120,80:2", "a,b", "1,2,3", "inf,2", "1,2:"):
        with pytest.raises(IS5NetError, match="expected X,Y"):
            parse_points([bad])
    assert attach_clicks([(0, ["1,2"]), (1, ["3,4:0"]), (0, ["5,6"])], 3) == [
        ([[1, 2], [5, 6]], [1, 1]),
        ([[3, 4]], [0]),
        None,
    ]
    with pytest.raises(IS5NetError, match="give them after their --box"):
        attach_clicks([(-1, ["1,2"])], 0)
    # The API's layout: one entry per box, or one box's clicks bare.
    assert clicks_of_boxes([[1, 2]], [1], 1) == [([[1, 2]], [1])]
    assert clicks_of_boxes([[[1, 2]], None], [[0], None], 2) == [([[1, 2]], [0]), None]
    assert clicks_of_boxes([[], []], [[], []], 2) is None
    with pytest.raises(IS5NetError, match="at most 2 per box"):
        clicks_of_boxes([[1, 2]] * 3, [1] * 3, 1, max_clicks=2)
    points, labels = validate_points(np.array([[0, 0], [300, 200]]), np.array([1, 0]), 300, 200)
    assert points.dtype == np.float64 and points.shape == (2, 2) and labels.tolist() == [1, 0]
    with pytest.raises(IS5NetError, match=r"points\[0\]: expected a point \[x, y\]"):
        validate_points(np.zeros((2, 3)), np.array([1, 1, 1]), 300, 200)  # never reshaped into 3 points


# --- the command line ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def python_call(tiny_sam_checkpoint, tiny_refiner_checkpoint):
    """``predict_batch`` through the public API on the image file, as PNG bytes per box (the CLI's files)."""

    def run(image, boxes, points, labels) -> list[bytes]:
        sam = load_sam(None, tiny_sam_checkpoint)
        p = IS5NetPredictor(sam, load_refiner(tiny_refiner_checkpoint), device="cpu", backend="torch")
        p.set_image(load_image(image))
        preds = p.predict_batch(boxes, points=points, point_labels=labels)
        return [encode_png(mask_uint8(pred.mask, None)) for pred in preds]

    return run


def _models(tiny_sam_checkpoint, tiny_refiner_checkpoint) -> list:
    return [
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--sam-checkpoint",
        tiny_sam_checkpoint,
        "--device",
        "cpu",
        "--backend",
        "torch",
        "-q",
    ]


def test_cli_points_and_boxes_file_write_the_python_calls_files(
    tmp_path, run_cli, image_file, python_call, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    models = _models(tiny_sam_checkpoint, tiny_refiner_checkpoint)
    [one] = python_call(image_file, [BOX], [CLICKS[0]], [CLICKS[1]])
    [plain] = python_call(image_file, [BOX], None, None)
    assert one != plain

    rc, err = run_cli("predict", image_file, "--box", ",".join(map(str, BOX)), "--points", "120,80", "200,150:0",
                      "-o", tmp_path / "cli", *models)  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "cli" / "coffee.png").read_bytes() == one
    [entry] = json.loads((tmp_path / "cli" / "index.json").read_text())
    assert entry["points"] == [[120.0, 80.0], [200.0, 150.0]] and entry["point_labels"] == [1, 0]

    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps({"coffee.jpg": [{"box": BOX, "points": CLICKS[0], "point_labels": CLICKS[1]}]}))
    rc, err = run_cli("predict", image_file, "--boxes", boxes_file, "-o", tmp_path / "file", *models)
    assert rc == 0, err
    assert (tmp_path / "file" / "coffee.png").read_bytes() == one


def test_cli_clicks_belong_to_the_box_before_them(
    tmp_path, run_cli, image_file, python_call, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    models = _models(tiny_sam_checkpoint, tiny_refiner_checkpoint)
    boxes = [BOX, BOX2, [100, 20, 290, 190]]
    expected = python_call(image_file, boxes, [None, [[50, 40]], None], [None, [0], None])
    rc, err = run_cli("predict", image_file, "--box", "60,40,230,170", "--box", "0,0,120,90", "--points", "50,40:0",
                      "-o", tmp_path / "cli", *models)  # fmt: skip
    assert rc == 0, err
    # ... and in a boxes file, a box object beside a plain box.
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps({"coffee": [{"box": boxes[2]}]}))
    rc, err = run_cli("predict", image_file, "--box", "60,40,230,170", "--box", "0,0,120,90", "--points", "50,40:0",
                      "--boxes", boxes_file, "-o", tmp_path / "both", *models)  # fmt: skip
    assert rc == 0, err
    assert [(tmp_path / "both" / f"coffee_{k}.png").read_bytes() for k in range(3)] == expected
    index = json.loads((tmp_path / "both" / "index.json").read_text())
    assert ["points" in e for e in index] == [False, True, False]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--points", "120,80", "--box", "60,40,230,170"], "--points 120,80: clicks refine a box's mask"),
        (["--box", "60,40,230,170", "--points", "120,80:2"], "--points '120,80:2': expected X,Y"),
        (["--box", "60,40,230,170", "--points", "120;80"], "--points '120;80': expected X,Y"),
        (["--box", "60,40,230,170", "--points", "120,80", "--coarse-mask", "COARSE"], "one or the other"),
    ],
)
def test_cli_bad_clicks_are_one_line_before_any_model(
    tmp_path, run_cli, image_file, args, message, tiny_refiner_checkpoint
):
    coarse = tmp_path / "coarse.png"
    coarse.write_bytes(b"")  # never read: the clicks are refused first
    args = [str(coarse) if a == "COARSE" else a for a in args]
    rc, err = run_cli("predict", image_file, *args, "--checkpoint", tmp_path / "missing.pth", "-o", tmp_path / "o")
    assert rc == 2
    [line] = lines_of(err)
    assert message in line and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"box": BOX, "points": [[1, 2]]}, "box 1: point_labels: expected a list"),
        ({"box": BOX, "points": [[1, 2]], "point_labels": [3]}, "a label is 1 (foreground) or 0"),
        ({"box": BOX, "point_labels": [1]}, "point_labels without points"),
        ({"box": BOX, "clicks": [[1, 2]]}, "unknown key 'clicks'"),
        ({"points": [[1, 2]], "point_labels": [1]}, "no 'box'"),
        ({"box": BOX, "points": [[1, True]], "point_labels": [1]}, "expected a point [x, y]"),
    ],
)
def test_boxes_file_bad_clicks_name_the_entry(tmp_path, run_cli, image_file, entry, message):
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps({"coffee.jpg": [BOX, entry]}))
    rc, err = run_cli("predict", image_file, "--boxes", boxes_file, "--checkpoint", tmp_path / "missing.pth")
    assert rc == 2
    [line] = lines_of(err)
    assert f"{boxes_file}: boxes of 'coffee.jpg', box 1" in line and message in line


def test_cli_click_outside_the_image_fails_that_image_in_one_line(
    tmp_path, run_cli, image_file, tiny_sam_checkpoint, tiny_refiner_checkpoint
):
    rc, err = run_cli("predict", image_file, "--box", "60,40,230,170", "--points", "400,80", "-o", tmp_path / "o",
                      *_models(tiny_sam_checkpoint, tiny_refiner_checkpoint))  # fmt: skip
    assert rc == 2
    assert "[400, 80]: outside the 300x200 image" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "coffee.png").exists()
