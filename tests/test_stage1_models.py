"""Each model family's stage against its own package's predictor: same image, box and clicks -> the same mask.

SAM (the tiny test SAM), HQ-SAM ``vit_tiny`` and SAM 2.1 ``tiny`` with random weights, written to files of
the publishers' formats (``torch.save(state_dict)``; SAM 2's ``{"model": state_dict}``) and loaded through
our path (``choose_stage1(...).build``). Several boxes with different numbers of clicks go through one
``predict``; each box's mask must equal what the package's ``predict(point_coords, point_labels, box)``
gives for that box alone (docs/stage1.md, "Clicks"). Small photos: the encoders resize to 1024² anyway.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import photo, random_hq_sam_file
from is5net.inference.stage1 import (
    HQSamStage,
    Sam2Stage,
    SamStage,
    build_sam2_model,
    choose_stage1,
    stage_for,
)

BOXES = np.array([[10, 8, 90, 70], [30, 20, 120, 90], [0, 0, 64, 48], [50, 40, 110, 95]], dtype=np.float64)
# Box 0 and box 3 have two clicks each (one decoder call), box 1 none, box 2 one background click.
POINTS = [np.array([[40.0, 30.0], [70.5, 60.25]]), None, np.array([[20.0, 20.0]]), np.array([[80, 60], [60, 50]])]
LABELS = [np.array([1, 0]), None, np.array([0]), np.array([1, 1])]


@pytest.fixture(scope="module")
def rgb():
    return photo("coffee", 96, 128)


def _compare(stage, reference, rgb, plain_checked=(0, 1, 2, 3), **package_kw):
    """Our stage's masks and scores for BOXES (with and without clicks) against the package predictor's.

    ``reference``: a package predictor with ``rgb`` set, or None for the stage's own (``stage.predictor``:
    the package's class; :meth:`set_image` is its ``set_image``, so one encoder pass serves both).
    ``plain_checked``: the boxes checked without clicks (every box is checked with its clicks).
    """
    stage.set_image(rgb)
    reference = stage.predictor if reference is None else reference
    results = []
    for points, labels in ((None, None), (POINTS, LABELS)):
        masks, scores = stage.predict(BOXES, points, labels)
        assert masks.shape == (len(BOXES), *rgb.shape[:2]) and masks.dtype == torch.bool
        for i, box in enumerate(BOXES):
            if points is None and i not in plain_checked:
                continue
            p, lab = (None, None) if points is None else (points[i], labels[i])
            want, want_scores, _ = reference.predict(point_coords=p, point_labels=lab, box=box, **package_kw)
            k = int(np.argmax(want_scores)) if getattr(stage, "mask_choice", "first") == "best" else 0
            assert np.array_equal(masks[i].numpy(), want[k].astype(bool)), (i, p)
            assert float(scores[i]) == pytest.approx(float(want_scores[k]), abs=1e-5)
        results.append((masks, scores))
    # The clicks reach the decoder (a test that could fail), and a box without clicks is as without them.
    (plain, plain_scores), (clicked, clicked_scores) = results
    for i in (0, 2, 3):
        assert float(plain_scores[i]) != float(clicked_scores[i])
    assert torch.equal(plain[1], clicked[1])  # the score up to the rounding of another batch size
    assert float(plain_scores[1]) == pytest.approx(float(clicked_scores[1]), abs=1e-5)


@pytest.mark.parametrize("mask_choice", ["first", "best"])
def test_sam_stage_equals_sam_predictor_with_and_without_clicks(tiny_sam, rgb, mask_choice):
    from segment_anything import SamPredictor

    stage = SamStage(tiny_sam, mask_choice=mask_choice)
    assert type(stage_for(tiny_sam)) is SamStage  # a SAM built by segment_anything itself
    reference = SamPredictor(tiny_sam)
    reference.set_image(rgb)
    _compare(stage, reference, rgb, multimask_output=True)


@pytest.fixture(scope="module")
def hq_checkpoint(tmp_path_factory):
    return random_hq_sam_file(tmp_path_factory.mktemp("hq"), seed=1)


def test_hq_sam_stage_loads_our_way_and_equals_its_predictor(hq_checkpoint, rgb):
    from segment_anything_hq import SamPredictor

    path, saved = hq_checkpoint
    source = choose_stage1("hq-sam", path, check_type=True)
    assert (source.method, source.sam_type, source.name) == ("hq-sam", "vit_tiny", "hq-sam:vit_tiny")
    stage = source.build("cpu")
    assert isinstance(stage, HQSamStage) and stage.model.sam_type == "vit_tiny" and not stage.model.training
    assert all(not p.requires_grad for p in stage.model.parameters())
    loaded = stage.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert isinstance(stage_for(stage.model), HQSamStage)  # a loaded model knows its family (the predictor's way)
    # The mask kept: the HQ token's alone (hq_token_only=True, multimask_output=False: docs/stage1.md).
    assert type(stage.predictor) is SamPredictor
    # HQ-SAM's decoder is the slow part on a CPU (its HQ features are made per call): fewer plain calls.
    _compare(stage, None, rgb, plain_checked=(1,), multimask_output=False, hq_token_only=True)
    # hq_token_only=False: the HQ mask's logits added to SAM's single output, as the predictor adds them.
    stage.hq_token_only = False
    masks, scores = stage.predict(BOXES[:1], POINTS[:1], LABELS[:1])
    want, want_scores, _ = stage.predictor.predict(
        point_coords=POINTS[0], point_labels=LABELS[0], box=BOXES[0], multimask_output=False, hq_token_only=False
    )
    assert np.array_equal(masks[0].numpy(), want[0]) and float(scores[0]) == pytest.approx(float(want_scores[0]))


@pytest.fixture(scope="module")
def sam2_checkpoint(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        model = build_sam2_model("tiny")
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)  # the publisher's layout
    return path


def test_sam2_stage_loads_our_way_and_equals_its_predictor(sam2_checkpoint, rgb):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    stage = choose_stage1("sam2", sam2_checkpoint).build("cpu")
    assert isinstance(stage, Sam2Stage) and stage.model.sam_type == "tiny" and not stage.model.training
    assert isinstance(stage_for(stage.model), Sam2Stage)
    assert type(stage.predictor) is SAM2ImagePredictor
    _compare(stage, None, rgb, multimask_output=True)


def test_a_stage_refuses_clicks_that_do_not_fit_their_box(tiny_sam, rgb):
    from is5net.errors import IS5NetError

    stage = SamStage(tiny_sam)
    stage.set_image(rgb)
    with pytest.raises(IS5NetError, match="one entry per box"):
        stage.predict(BOXES[:2], POINTS, LABELS)
    with pytest.raises(IS5NetError, match="box 0: points must be K x 2"):
        stage.predict(BOXES[:1], [np.array([[1.0, 2.0]])], [np.array([1, 0])])
    with pytest.raises(IS5NetError, match="labels 1 .* or 0"):
        stage.predict(BOXES[:1], [np.array([[1.0, 2.0]])], [np.array([2])])
