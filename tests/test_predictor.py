import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from is5net import IS5NetPredictor, load_image
from is5net.errors import BoxError, IS5NetError
from is5net.inference.boxes import validate_box
from is5net.inference.stage1 import SamStage
from tiny import make_tiny_refiner

BOX = [60, 40, 230, 170]


@pytest.fixture(scope="module")
def predictor(tiny_sam, tiny_refiner, coffee_rgb):
    p = IS5NetPredictor(tiny_sam, tiny_refiner, device="cpu")
    p.set_image(coffee_rgb)
    return p


def reference_refine(refiner, rgb, coarse_u8, box, size):
    """The reference recipe written plainly: 5-channel 0..255 tensor at full size, resized, normalised."""
    h, w = rgb.shape[:2]
    box_mask = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = box
    box_mask[y0:y1, x0:x1] = 255
    im = np.concatenate([rgb.astype(np.float32), coarse_u8[..., None].astype(np.float32), box_mask[..., None]], 2)
    t = torch.from_numpy(im).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    t[:, 4] = torch.where(t[:, 4] > 127, 255.0, 0.0)
    t = t / 255.0
    t = t - torch.tensor([0.5, 0.5, 0.5, 0, 0]).view(1, 5, 1, 1)
    with torch.no_grad():
        out = torch.sigmoid(refiner(t)[0][0])
    out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return ((out - out.min()) / (out.max() - out.min())).numpy()


def test_predict_shapes_ranges_and_sam_agreement(predictor, tiny_sam, coffee_rgb):
    out = predictor.predict(box=BOX)
    h, w = coffee_rgb.shape[:2]
    assert out.mask.shape == (h, w) and out.mask.dtype == np.float32
    assert out.mask.min() == 0.0 and out.mask.max() == 1.0
    assert out.sam_mask.shape == (h, w) and out.sam_mask.dtype == bool
    assert out.box == [float(v) for v in BOX]
    # The coarse mask is masks[0] of SAM's own multimask prediction for this box.
    from segment_anything import SamPredictor

    sp = SamPredictor(tiny_sam)
    sp.set_image(coffee_rgb)
    masks, scores, _ = sp.predict(box=np.array(BOX), multimask_output=True)
    assert np.array_equal(out.sam_mask, masks[0])
    assert out.sam_score == pytest.approx(float(scores[0]), abs=1e-5)


def test_best_mask_choice_keeps_highest_score(tiny_sam, coffee_rgb):
    stage = SamStage(tiny_sam, mask_choice="best", resize="pil")
    stage.set_image(coffee_rgb)
    from segment_anything import SamPredictor

    sp = SamPredictor(tiny_sam)
    sp.set_image(coffee_rgb)
    masks, scores, _ = sp.predict(box=np.array(BOX), multimask_output=True)
    got, score = stage.predict(np.array([BOX]))
    assert np.array_equal(got[0].numpy(), masks[int(np.argmax(scores))])
    assert float(score[0]) == pytest.approx(float(scores.max()), abs=1e-5)


def test_torch_resize_keeps_the_photos_aspect_as_sam_does(tiny_sam, coffee_rgb):
    """``sam_resize="torch"`` feeds SAM the image at the size ``SamPredictor.set_image`` uses (longest side
    1024, aspect kept), and an embedding close to the PIL path's."""
    pil, on_device = SamStage(tiny_sam, resize="pil"), SamStage(tiny_sam, resize="torch")
    pil.set_image(coffee_rgb)
    on_device.set_image(coffee_rgb)
    h, w = coffee_rgb.shape[:2]
    assert on_device.predictor.input_size == pil.predictor.input_size == (round(1024 * h / w), 1024)
    a, b = pil.predictor.features.flatten(), on_device.predictor.features.flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.99


def test_matches_reference_input_convention_with_given_coarse_mask(tiny_refiner, coffee_rgb):
    rng = np.random.default_rng(0)
    coarse = np.zeros(coffee_rgb.shape[:2], np.uint8)
    coarse[50:160, 70:220] = 255
    coarse[rng.random(coarse.shape) < 0.02] = 255
    p = IS5NetPredictor(None, tiny_refiner, device="cpu")
    assert p.input_size == (256, 256)  # from the refiner's config, not a hard-coded 1024
    p.set_image(coffee_rgb)
    out = p.predict(box=BOX, coarse_mask=coarse)
    expected = reference_refine(tiny_refiner, coffee_rgb, coarse, BOX, 256)
    np.testing.assert_allclose(out.mask, expected, atol=2e-4)
    assert out.sam_score is None and np.array_equal(out.sam_mask, coarse > 127)


def test_batched_boxes_equal_one_by_one(predictor):
    boxes = [BOX, [0, 0, 120, 90], [150, 100, 300, 200]]
    batched = predictor.predict_batch(boxes)
    for box, b in zip(boxes, batched):
        single = predictor.predict(box=box)
        np.testing.assert_allclose(b.mask, single.mask, atol=1e-4)
        assert np.array_equal(b.sam_mask, single.sam_mask)
        assert b.sam_score == pytest.approx(single.sam_score, abs=1e-5)
    assert not np.allclose(batched[0].mask, batched[1].mask)


def test_sam_mask_box_channel_uses_tight_box_of_coarse_mask(tiny_refiner, coffee_rgb):
    coarse = np.zeros(coffee_rgb.shape[:2], bool)
    coarse[30:90, 40:120] = True
    user = IS5NetPredictor(None, tiny_refiner, device="cpu")
    tight = IS5NetPredictor(None, tiny_refiner, device="cpu", box_channel="sam_mask")
    for p in (user, tight):
        p.set_image(coffee_rgb)
    got = tight.predict(box=[0, 0, 300, 200], coarse_mask=coarse).mask
    np.testing.assert_allclose(got, user.predict(box=[40, 30, 120, 90], coarse_mask=coarse).mask, atol=1e-5)
    assert not np.allclose(got, user.predict(box=[0, 0, 300, 200], coarse_mask=coarse).mask, atol=1e-3)


def test_three_channel_isnet_ignores_box_and_needs_no_sam(coffee_rgb):
    p = IS5NetPredictor(None, make_tiny_refiner(3), device="cpu")
    p.set_image(coffee_rgb)
    a, b = p.predict().mask, p.predict(box=BOX).mask
    assert a.shape == coffee_rgb.shape[:2] and np.array_equal(a, b)


def test_image_conversions(tiny_refiner, coffee_rgb, tmp_path):
    p = IS5NetPredictor(None, tiny_refiner, device="cpu")
    coarse = np.zeros(coffee_rgb.shape[:2], np.uint8)
    coarse[50:150, 60:200] = 255
    p.set_image(coffee_rgb)
    base = p.predict(box=BOX, coarse_mask=coarse).mask
    rgba = np.dstack([coffee_rgb, np.full(coffee_rgb.shape[:2], 128, np.uint8)])
    p.set_image(rgba)
    np.testing.assert_allclose(p.predict(box=BOX, coarse_mask=coarse).mask, base, atol=1e-5)
    p.set_image(coffee_rgb.astype(np.uint16) * 257)  # 16-bit with the same content
    np.testing.assert_allclose(p.predict(box=BOX, coarse_mask=coarse).mask, base, atol=1e-5)
    gray = coffee_rgb[:, :, 1]
    p.set_image(gray)
    assert p.predict(box=BOX, coarse_mask=coarse).mask.shape == gray.shape
    # EXIF orientation 6 (rotate 90° clockwise for display): load_image returns the displayed frame.
    stored = np.ascontiguousarray(np.rot90(coffee_rgb, 1))  # what a camera would store
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif, quality=98)
    shown = load_image(tmp_path / "rot.jpg")
    assert shown.shape == coffee_rgb.shape
    assert np.abs(shown.astype(int) - coffee_rgb.astype(int)).mean() < 3


def test_boxes_validated_clipped_and_refused(predictor, caplog):
    w, h = 300, 200
    with caplog.at_level(logging.WARNING, logger="is5net"):
        assert validate_box([-10, 5, 320, 150], w, h).tolist() == [0, 5, 300, 150]
    assert "clipped" in caplog.text
    for bad in (
        [10, 10, 10, 50],
        [50, 10, 20, 40],
        [400, 300, 500, 400],
        [-50, -50, -1, -1],
        [1, 2, 3],
        [0, 0, np.nan, 5],
    ):
        with pytest.raises(BoxError):
            validate_box(bad, w, h)
    with pytest.raises(BoxError):
        predictor.predict(box=[400, 300, 500, 400])
    with pytest.raises(IS5NetError, match="size"):
        predictor.predict(box=BOX, coarse_mask=np.zeros((10, 10), np.uint8))


def test_predict_before_set_image_and_no_sam_without_mask(tiny_refiner):
    p = IS5NetPredictor(None, tiny_refiner, device="cpu")
    with pytest.raises(IS5NetError, match="set_image"):
        p.predict(box=BOX)
    p.set_image(np.zeros((50, 60, 3), np.uint8))
    with pytest.raises(IS5NetError, match="coarse_mask"):
        p.predict(box=[0, 0, 10, 10])


def test_cuda_request_without_cuda_is_clear_error(tiny_refiner):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(IS5NetError, match="CUDA is not available"):
        IS5NetPredictor(None, tiny_refiner, device="cuda")


def test_bf16_on_cpu_stays_close(tiny_refiner, coffee_rgb):
    coarse = np.zeros(coffee_rgb.shape[:2], np.uint8)
    coarse[50:150, 60:200] = 255
    outs = []
    for precision in ("fp32", "bf16"):
        p = IS5NetPredictor(None, tiny_refiner, device="cpu", precision=precision)
        p.set_image(coffee_rgb)
        outs.append(p.predict(box=BOX, coarse_mask=coarse).mask)
    assert np.abs(outs[0] - outs[1]).mean() < 0.05
