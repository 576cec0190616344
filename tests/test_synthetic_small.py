"""The small-object photos of `is5net demo --highres` (`target_scale`), and the main data left as it was."""

import hashlib
import json

import numpy as np
import pytest

from is5net.demo.synthetic import generate_sample, make_synthetic_dataset, tight_box
from is5net.io import load_mask

SMALL = (0.10, 0.25)


def _digest(s) -> str:
    h = hashlib.sha256()
    for a in (s.image, s.gt, s.distractors):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((s.box, s.kind, s.distractor_kinds)).encode())
    return h.hexdigest()


def test_main_data_with_default_arguments_is_unchanged():
    # Digests computed from the generator before target_scale existed: its defaults must not move one byte.
    s = generate_sample(np.random.default_rng([0, 0x5445, 1]), 256, kind="twig")
    assert _digest(s) == "ad6515b366acd0811f279fa5f429f64f36d9fb4c946e835d35e9d6df0587a97f"
    assert _digest(generate_sample(7)) == "5b7a88d3cb7c39bf6d63160d9a018132554f06870b61c5152ee45f74ba7a7432"


@pytest.mark.parametrize("seed", range(10))
def test_small_target_is_10_to_25_percent_of_the_side_and_the_largest_object(seed):
    s = generate_sample(seed, 512, target_scale=SMALL)
    x0, y0, x1, y1 = s.box
    assert 0.10 * 512 <= max(x1 - x0, y1 - y0) <= 0.25 * 512
    assert len(s.distractor_masks) >= 1
    n_target, area_target = int((s.gt > 0).sum()), (x1 - x0) * (y1 - y0)
    for m in s.distractor_masks:
        bx0, by0, bx1, by1 = tight_box(m)
        assert m.sum() <= 0.6 * n_target and (bx1 - bx0) * (by1 - by0) <= 0.6 * area_target
        assert not (m & (s.gt > 0)).any()


def test_small_dataset_is_deterministic_independent_of_the_main_data_and_in_range(tmp_path):
    kw = dict(seed=4, n_train=0, n_val=1, n_test=3, size=512)
    a = make_synthetic_dataset(tmp_path / "a", **kw, target_scale=SMALL)
    make_synthetic_dataset(tmp_path / "b", **kw, target_scale=SMALL)
    make_synthetic_dataset(tmp_path / "main", **kw)
    assert a["splits"]["DIS-TE1"]["count"] == 3 and a["splits"]["DIS-VD"]["count"] == 1
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == (3 + 1) * 3  # im, gt, coarse
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for rel in files:  # same seed, same stems, other streams: no file equal to the main data's
        assert (tmp_path / "a" / rel).read_bytes() != (tmp_path / "main" / rel).read_bytes(), rel
    meta = json.loads((tmp_path / "a" / "DIS-TE1" / "synthetic.json").read_text())
    assert meta["target_scale"] == list(SMALL)
    assert "target_scale" not in json.loads((tmp_path / "main" / "DIS-TE1" / "synthetic.json").read_text())
    for stem, item in meta["items"].items():
        x0, y0, x1, y1 = item["box"]
        assert 0.10 * 512 <= max(x1 - x0, y1 - y0) <= 0.25 * 512
        gt = load_mask(tmp_path / "a" / "DIS-TE1" / "gt" / f"{stem}.png")
        assert tight_box(gt) == tuple(item["box"])
        coarse = load_mask(tmp_path / "a" / "DIS-TE1" / "coarse" / f"{stem}.png")
        assert coarse.shape == gt.shape and coarse.any()


def test_target_scale_is_checked():
    with pytest.raises(ValueError):
        generate_sample(0, 256, target_scale=(0.3, 0.2))
