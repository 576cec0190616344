"""Synthetic DIS-like data and the simulated SAM: determinism, thin parts, holes, distractors, layout."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from is5net.demo import synthetic as syn
from is5net.demo.shapes import _segment
from is5net.demo.synthetic import (
    OBJECT_KINDS,
    SIMULATED_SAM_LABEL,
    count_holes,
    generate_sample,
    make_synthetic_dataset,
    mask_iou,
    simulate_coarse_mask,
    thin_fraction,
    tight_box,
    write_coarse_masks,
)
from is5net.eval.thin import thin_parts
from is5net.io import list_images, load_image, load_mask

SIZE = 128
N_PER_KIND = 4


@pytest.fixture(scope="module")
def samples():
    """N_PER_KIND samples of every kind, with their simulated coarse masks."""
    out = {}
    for kind in OBJECT_KINDS:
        out[kind] = []
        for i in range(N_PER_KIND):
            s = generate_sample(1000 + i, SIZE, kind=kind)
            out[kind].append((s, simulate_coarse_mask(s.gt, i)))
    return out


def _all(samples):
    return [pair for kind in OBJECT_KINDS for pair in samples[kind]]


# --- measures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("angle", [0.0, 0.3, np.pi / 4, 1.2])
def test_thin_fraction_separates_bar_widths(angle):
    def bar(width):
        c = np.zeros((80, 80), np.uint8)
        d = 30 * np.array([np.cos(angle), np.sin(angle)])
        _segment(c, np.array([40.3, 39.7]) - d, np.array([40.3, 39.7]) + d, width)
        return c

    for w in (1, 2, 3):
        assert thin_fraction(bar(w), 3) > 0.85, w
    for w in (5, 7):
        assert thin_fraction(bar(w), 3) < 0.05, w
    # the width argument moves the cut
    assert thin_fraction(bar(5), 5) > 0.85
    assert thin_fraction(np.zeros((10, 10)), 3) == 0.0
    sq = np.zeros((40, 40), bool)
    sq[5:35, 5:35] = True
    assert thin_fraction(sq) == 0.0
    assert not thin_parts(sq).any()


def test_count_holes_and_box():
    m = np.zeros((60, 60), np.uint8)
    cv2.circle(m, (30, 30), 20, 255, 5)
    assert count_holes(m) == 1
    cv2.line(m, (30, 5), (30, 55), 255, 3)
    assert count_holes(m) == 2
    disk = np.zeros((60, 60), np.uint8)
    cv2.circle(disk, (30, 30), 20, 255, -1)
    assert count_holes(disk) == 0
    # a U shape is open to the outside of its box: no hole
    u = np.zeros((40, 40), np.uint8)
    u[5:35, 5:10] = u[30:35, 5:35] = u[5:35, 30:35] = 255
    assert count_holes(u) == 0
    assert tight_box(u) == (5, 5, 35, 35)
    assert tight_box(np.zeros((4, 4))) is None
    assert mask_iou(u, u) == 1.0 and mask_iou(u, np.roll(u, 3, axis=1)) < 1.0
    with pytest.raises(ValueError):
        mask_iou(u, disk)


# --- generator ------------------------------------------------------------------------------------------


def test_generator_is_deterministic():
    a = generate_sample(7, 96)
    b = generate_sample(7, 96)
    c = generate_sample(8, 96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.gt, b.gt)
    assert np.array_equal(a.distractors, b.distractors)
    assert a.box == b.box and a.kind == b.kind and a.distractor_kinds == b.distractor_kinds
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.gt, c.gt)


def test_sample_format(samples):
    extents = []
    for s, _ in _all(samples):
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert s.gt.shape == (SIZE, SIZE) and s.gt.dtype == np.uint8
        assert set(np.unique(s.gt)) == {0, 255}
        assert s.box == tight_box(s.gt)
        x0, y0, x1, y1 = s.box
        extents.append(max(x1 - x0, y1 - y0) / SIZE)
    # large enough: the target spans a good part of the image
    assert min(extents) >= 0.15 and np.median(extents) >= 0.35, extents
    s = generate_sample(3, (96, 140))
    assert s.image.shape == (96, 140, 3)
    with pytest.raises(ValueError):
        generate_sample(0, 32)
    with pytest.raises(ValueError):
        generate_sample(0, 96, kind="teapot")


def test_gt_has_thin_structures(samples):
    for kind, least in (("wires", 0.25), ("twig", 0.4), ("lattice", 0.15), ("wheel", 0.08)):
        fr = [thin_fraction(s.gt, 3) for s, _ in samples[kind]]
        assert np.mean(fr) > least, (kind, fr)
    for kind in ("wires", "twig"):
        fr = [thin_fraction(s.gt, 3) for s, _ in samples[kind]]
        assert min(fr) > 0.15, (kind, fr)
    # a fifth of the overall GT foreground lies in structures <= 3 px wide
    assert np.mean([thin_fraction(s.gt, 3) for s, _ in _all(samples)]) > 0.2


def test_gt_has_holes(samples):
    for s, _ in samples["ring"]:
        assert count_holes(s.gt) >= 1
    for s, _ in samples["lattice"]:
        assert count_holes(s.gt) >= 4
    for s, _ in samples["wheel"]:
        assert count_holes(s.gt) >= 4


def test_distractors_outside_the_target_box(samples):
    for s, _ in _all(samples):
        d = s.distractors > 0
        g = s.gt > 0
        assert 1 <= len(s.distractor_kinds) <= 3
        assert d.sum() > 50
        assert not (d & g).any()
        x0, y0, x1, y1 = s.box
        assert d[y0:y1, x0:x1].sum() <= 0.1 * d.sum()
        # the target's box never holds a whole distractor: each distractor component mostly lies outside
        n, lab = cv2.connectedComponents(d.astype(np.uint8), connectivity=8)
        for k in range(1, n):
            comp = lab == k
            if comp.sum() >= 20:
                assert comp[y0:y1, x0:x1].sum() < comp.sum()


def test_target_is_the_largest_object():
    """As in DIS5K the box's object is the photo's main object: measured over 100 images, the target has more
    pixels and a larger tight box than every distractor, by a margin (at most 60% of the target's)."""
    shares = []
    for i in range(100):
        s = generate_sample(500 + i, SIZE, kind=OBJECT_KINDS[i % len(OBJECT_KINDS)])
        g = s.gt > 0
        x0, y0, x1, y1 = s.box
        t_pixels, t_area = int(g.sum()), (x1 - x0) * (y1 - y0)
        assert len(s.distractor_masks) == len(s.distractor_kinds) >= 1
        union = np.zeros_like(g)
        for m in s.distractor_masks:
            bx0, by0, bx1, by1 = tight_box(m)
            assert m.sum() <= 0.6 * t_pixels
            assert (bx1 - bx0) * (by1 - by0) <= 0.6 * t_area
            union |= m
        assert np.array_equal(union, s.distractors > 0)
        shares.append(t_pixels / (t_pixels + union.sum()))
    # the main object of the photo: on average most of the image's object pixels are the target's
    assert np.mean(shares) > 0.6, np.mean(shares)


def test_objects_are_visible_and_distractors_look_like_the_target(samples):
    alike = []
    for s, _ in _all(samples):
        img = s.image.astype(np.float64)
        g = s.gt > 0
        d = s.distractors > 0
        near = cv2.dilate((g | d).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        bg = near & ~(g | d)
        target_mean = img[g].mean(axis=0)
        # distractors are objects: they stand out from the background around them
        near_d = (cv2.dilate(d.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0) & ~(g | d)
        assert np.linalg.norm(img[d].mean(axis=0) - img[near_d].mean(axis=0)) > 60
        # ... and usually share the target's appearance more than the background does (by design 80%)
        alike.append(
            np.linalg.norm(img[d].mean(axis=0) - target_mean) < 0.5 * np.linalg.norm(img[bg].mean(axis=0) - target_mean)
        )
        # thin parts stand out from the background right next to them
        tp = thin_parts(s.gt)
        if tp.sum() >= 20:
            ring = (cv2.dilate(tp.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) & ~(g | d)
            dist = np.linalg.norm(img[tp] - img[ring].mean(axis=0), axis=1)
            assert np.median(dist) > 60
        # not a flat colour: the object carries texture
        assert img[g].std(axis=0).max() > 3
    assert np.mean(alike) >= 0.6, alike


# --- simulated SAM --------------------------------------------------------------------------------------


def test_simulated_sam_label():
    assert SIMULATED_SAM_LABEL == "simulated SAM (coarse mask made from GT; not a real SAM)"


def test_coarse_mask_format_and_determinism(samples):
    s, _ = samples["wires"][0]
    a = simulate_coarse_mask(s.gt, 5)
    b = simulate_coarse_mask(s.gt > 0, np.random.default_rng(5))
    assert a.dtype == np.uint8 and a.shape == s.gt.shape
    assert set(np.unique(a)) <= {0, 255}
    assert np.array_equal(a, b)
    assert not all(np.array_equal(a, simulate_coarse_mask(s.gt, k)) for k in range(6, 9))
    # inside the box it is given
    box = (10, 20, 90, 100)
    m = simulate_coarse_mask(s.gt, 1, box=box)
    outside = np.ones_like(m, bool)
    outside[20:100, 10:90] = False
    assert not (m[outside] > 0).any()
    assert not simulate_coarse_mask(np.zeros((64, 64), np.uint8), 0).any()


def test_coarse_mask_loses_thin_parts_but_is_not_garbage(samples):
    pairs = _all(samples)
    thin_gt = np.mean([thin_fraction(s.gt) for s, _ in pairs])
    thin_c = np.mean([thin_fraction(c) for _, c in pairs])
    assert thin_c < 0.3 * thin_gt, (thin_gt, thin_c)
    ious = np.array([mask_iou(s.gt, c) for s, c in pairs])
    assert 0.4 < ious.mean() < 0.85, ious
    assert ious.max() < 0.99
    assert np.median(ious) > 0.3
    # the thick GT parts are mostly found; the thin parts that stick out (wires, twigs) mostly missed
    found = [(c > 0)[(s.gt > 0) & ~thin_parts(s.gt)].mean() for s, c in pairs]
    assert np.mean(found) > 0.75, found
    lost = [1 - (c > 0)[thin_parts(s.gt)].mean() for s, c in samples["wires"] + samples["twig"]]
    assert np.mean(lost) > 0.5, lost
    # holes of meshes are filled
    for s, c in samples["lattice"]:
        assert count_holes(c, s.box) < count_holes(s.gt)


# --- dataset on disk ------------------------------------------------------------------------------------


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dataset_layout_and_byte_determinism(tmp_path):
    kw = dict(n_train=3, n_val=2, n_test=2, size=96)
    summary = make_synthetic_dataset(tmp_path / "a", seed=1, **kw)
    make_synthetic_dataset(tmp_path / "b", seed=1, **kw)
    make_synthetic_dataset(tmp_path / "c", seed=2, **kw)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa == fb  # byte-identical
    assert fa.keys() == fc.keys()
    assert any(fa[k] != fc[k] for k in fa if k.endswith(".png") and "/gt/" in k)

    root = tmp_path / "a"
    assert summary["label"] == SIMULATED_SAM_LABEL
    counts = {"DIS-TR": 3, "DIS-VD": 2, "DIS-TE1": 2}
    assert {k: v["count"] for k, v in summary["splits"].items()} == counts
    for split, n in counts.items():
        ims = list_images(root / split / "im")
        gts = list_images(root / split / "gt")
        coarse = list_images(root / split / "coarse")
        assert len(ims) == n and ims.keys() == gts.keys() == coarse.keys()
        assert sorted(ims) == summary["splits"][split]["stems"]
        meta = json.loads((root / split / "synthetic.json").read_text())
        for stem in ims:
            assert syn.kind_from_stem(stem) == meta["items"][stem]["kind"]
            im = load_image(ims[stem])
            gt = load_mask(gts[stem])
            cm = load_mask(coarse[stem])
            assert im.shape == (96, 96, 3) and gt.shape == cm.shape == (96, 96)
            assert set(np.unique(gt)) == {0, 255} and set(np.unique(cm)) <= {0, 255}
            assert tuple(meta["items"][stem]["box"]) == tight_box(gt)
    # kinds cycle, and the splits are independent streams (same index, same kind, different image)
    assert [syn.kind_from_stem(s) for s in sorted(list_images(root / "DIS-TR" / "im"))] == list(OBJECT_KINDS[:3])
    tr = load_mask(root / "DIS-TR" / "gt" / "00000_wires.png")
    te = load_mask(root / "DIS-TE1" / "gt" / "00000_wires.png")
    assert not np.array_equal(tr, te)


def test_dataset_jpeg_and_no_coarse(tmp_path):
    summary = make_synthetic_dataset(
        tmp_path, seed=0, n_train=1, n_val=0, n_test=1, size=64, image_format="jpg", coarse=False
    )
    assert "label" not in summary
    assert (tmp_path / "DIS-TR" / "im" / "00000_wires.jpg").is_file()
    assert not (tmp_path / "DIS-TR" / "coarse").exists()
    assert list_images(tmp_path / "DIS-VD" / "im") == {}
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, image_format="gif")


def test_write_coarse_masks_any_root(tmp_path):
    # a DIS5K-like root that is not synthetic: coarse masks for every split with a gt/ folder
    from is5net.io import save_png

    for split in ("DIS-TE2", "mine"):
        for k in range(2):
            s = generate_sample(k, 64, kind="ring")
            save_png(tmp_path / split / "gt" / f"x{k}.png", s.gt)
    (tmp_path / "notes").mkdir()
    out = write_coarse_masks(tmp_path, seed=3)
    assert out["label"] == SIMULATED_SAM_LABEL
    assert sorted(out["splits"]) == ["DIS-TE2", "mine"]
    first = _files(tmp_path)
    write_coarse_masks(tmp_path, seed=3)
    assert _files(tmp_path) == first
    assert sorted(list_images(tmp_path / "mine" / "coarse")) == ["x0", "x1"]
    m = load_mask(tmp_path / "mine" / "coarse" / "x0.png")
    assert 0.3 < mask_iou(m, load_mask(tmp_path / "mine" / "gt" / "x0.png")) < 1.0
