"""Dataset discovery, `is5net check-data`, samples (GT enrichment, tight boxes, box jitter).

The datasets are tiny DIS-layout folders made from real photos of ``skimage.data`` with drawn GT masks.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import photo, save
from is5net.cli import main
from is5net.contract import require_tight_box
from is5net.data.pairs import Pair, find_pairs, find_problems, is_dis5k_root, split_good_pairs, subset_names
from is5net.data.samples import enumerate_samples, jitter_box, pair_samples, sample_gt
from is5net.errors import IS5NetError
from is5net.io import load_image


# ------------------------------------------------------------------------------------------ builders
@pytest.fixture
def dataset(pairs_dataset) -> Path:
    return pairs_dataset


def plant_problems(root: Path) -> dict[str, str]:
    """Add one file of each problem kind to ``root/DIS-TR``; returns file name -> expected kind."""
    tr = root / "DIS-TR"
    img = photo("chelsea", 64, 96)
    mask = np.zeros((64, 96), bool)
    mask[10:50, 10:80] = True

    (tr / "im" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 20)
    save(tr / "gt" / "corrupt.png", mask)

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    (tr / "im" / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    save(tr / "gt" / "truncated.png", mask)

    save(tr / "im" / "mismatch.jpg", img)
    save(tr / "gt" / "mismatch.png", mask[:, :90])

    save(tr / "im" / "lonely.jpg", img)  # no GT
    save(tr / "gt" / "orphan.png", mask)  # no image

    save(tr / "im" / "blank.jpg", img)
    save(tr / "gt" / "blank.png", np.full((64, 96), 127, np.uint8))  # 127 is background (> 127 is foreground)

    (tr / "gt" / "notes.txt").write_text("ignored: not an image extension")
    return {
        "corrupt.jpg": "unreadable",
        "truncated.png": "unreadable",
        "mismatch.png": "size_mismatch",
        "lonely.jpg": "missing_gt",
        "orphan.png": "missing_image",
        "blank.png": "empty_gt",
    }


# --------------------------------------------------------------------------------------------- pairs
def test_find_pairs_dis5k_root(dataset):
    assert is_dis5k_root(dataset)
    assert subset_names(dataset) == ["DIS-TR", "DIS-VD"]
    pairs = find_pairs(dataset)
    assert [(p.subset, p.stem) for p in pairs] == [
        ("DIS-TR", "astronaut"),
        ("DIS-TR", "chelsea"),
        ("DIS-TR", "coffee"),
        ("DIS-VD", "camera"),
    ]
    assert pairs[0] == Pair(
        "astronaut", dataset / "DIS-TR/im/astronaut.jpg", dataset / "DIS-TR/gt/astronaut.png", "DIS-TR"
    )
    assert [p.stem for p in find_pairs(dataset, ["DIS-VD"])] == ["camera"]
    assert find_pairs(dataset, ["DIS-VD", "DIS-TR"]) == pairs
    with pytest.raises(IS5NetError, match="no subset DIS-TE1"):
        find_pairs(dataset, ["DIS-TE1"])


def test_find_pairs_folder_pair_root(dataset, tmp_path):
    root = dataset / "DIS-TR"
    assert not is_dis5k_root(root)
    assert subset_names(root) == ["DIS-TR"]
    pairs = find_pairs(root)
    assert [p.stem for p in pairs] == ["astronaut", "chelsea", "coffee"] and {p.subset for p in pairs} == {"DIS-TR"}
    with pytest.raises(IS5NetError, match="found no dataset"):
        find_pairs(tmp_path)
    with pytest.raises(IS5NetError, match="no such directory"):
        find_pairs(tmp_path / "nowhere")


def test_clean_dataset_has_no_problems(dataset, capsys):
    good, problems = split_good_pairs(dataset)
    assert problems == [] and good == find_pairs(dataset)
    assert main(["check-data", str(dataset), "-q"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["OK: 4 pairs (DIS-TR 3, DIS-VD 1), no problems"]


def test_check_data_finds_every_planted_problem(dataset, capsys):
    expected = plant_problems(dataset)
    problems = find_problems(dataset)
    assert {(p.path.name, p.kind) for p in problems} == set(expected.items())
    assert [str(p.path) for p in problems] == sorted(str(p.path) for p in problems)
    good, _ = split_good_pairs(dataset)
    assert [p.stem for p in good] == ["astronaut", "chelsea", "coffee", "camera"]

    assert main(["check-data", str(dataset), "-q"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(expected) + 1
    for name, kind in expected.items():
        hits = [ln for ln in lines if ln.startswith(f"{kind}: ") and f"{name}: " in ln]
        assert len(hits) == 1, (name, kind, lines)
    assert "size_mismatch" in lines[-1] and "4 good pairs" in lines[-1]
    mismatch = next(ln for ln in lines if ln.startswith("size_mismatch"))
    assert "90x64" in mismatch and "96x64" in mismatch

    # Only the DIS-VD subset: clean.
    assert main(["check-data", str(dataset), "--subsets", "DIS-VD", "-q"]) == 0
    assert main(["check-data", str(dataset), "--subsets", "DIS-XX", "-q"]) == 2


def test_duplicate_stems_and_exif_orientation(tmp_path):
    root = tmp_path / "pairs"
    img = photo("coffee", 40, 60)  # stored 60 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed 40 wide, 60 high
    save(root / "im" / "rot.jpg", img, exif=exif)
    mask = np.zeros((60, 40), bool)
    mask[5:50, 5:30] = True
    save(root / "gt" / "rot.png", mask)  # GT in the displayed frame: no mismatch
    save(root / "im" / "raw.jpg", img, exif=exif)
    save(root / "gt" / "raw.png", mask.T)  # GT in the stored frame (EXIF ignored): pairs too
    save(root / "im" / "odd.jpg", img, exif=exif)
    save(root / "gt" / "odd.png", np.ones((30, 30), bool))  # neither frame: mismatch
    save(root / "im" / "dup.jpg", img)
    save(root / "im" / "dup.png", img)
    save(root / "gt" / "dup.png", mask.T)
    problems = find_problems(root)
    assert {(p.path.name, p.kind) for p in problems} == {
        ("odd.png", "size_mismatch"),
        ("dup.jpg", "duplicate_stem"),
        ("dup.png", "duplicate_stem"),
        ("dup.png", "missing_image"),
    }
    with pytest.raises(IS5NetError, match="share the stem"):
        find_pairs(root)

    # Each image is read in the frame its GT was drawn in: displayed unless only the stored one fits.
    with Image.open(root / "im" / "raw.jpg") as f:
        stored = np.asarray(f.convert("RGB"))
    assert stored.shape == (40, 60, 3)
    assert np.array_equal(load_image(root / "im" / "raw.jpg", (40, 60)), stored)
    displayed = load_image(root / "im" / "rot.jpg", (60, 40))
    assert displayed.shape == (60, 40, 3) and np.array_equal(displayed, load_image(root / "im" / "rot.jpg"))
    assert np.array_equal(displayed, np.rot90(stored, -1))
    assert load_image(root / "im" / "odd.jpg", (30, 30)).shape == (60, 40, 3)  # no fit: displayed


# ------------------------------------------------------------------------------------------- samples
def test_tight_box_exclusive_end():
    m = np.zeros((10, 12), bool)
    m[3, 5] = True
    assert require_tight_box(m) == (5, 3, 6, 4)
    m[7, 9] = True
    x0, y0, x1, y1 = require_tight_box(m)
    assert (x0, y0, x1, y1) == (5, 3, 10, 8)
    assert m[y0:y1, x0:x1].sum() == m.sum()
    m[:, :] = True
    assert require_tight_box(m) == (0, 0, 12, 10)
    with pytest.raises(ValueError, match="empty"):
        require_tight_box(np.zeros((4, 4), bool))


def test_enrichment_counts(dataset):
    expected = {"coffee": 1, "astronaut": 3, "chelsea": 1, "camera": 1}
    samples = enumerate_samples(find_pairs(dataset))
    counts = {s: sum(x.pair.stem == s for x in samples) for s in expected}
    assert counts == expected
    assert len({s.key for s in samples}) == len(samples)
    assert enumerate_samples(find_pairs(dataset)) == samples  # deterministic

    astro = [s for s in samples if s.pair.stem == "astronaut"]
    assert [s.component for s in astro] == [None, 1, 2] and all(s.jitter == 0 for s in astro)
    assert astro[0].key == "DIS-TR/astronaut/all/j0" and astro[1].key == "DIS-TR/astronaut/c1/j0"
    whole = sample_gt(astro[0])
    assert astro[0].box == require_tight_box(whole) == (5, 15, 101, 103)  # the speck is in the whole mask
    for s in astro[1:]:
        g = sample_gt(s)
        assert s.box == require_tight_box(g) and g.sum() > 50 and not (g & ~whole).any()
    assert sample_gt(astro[1]).sum() + sample_gt(astro[2]).sum() + 9 == whole.sum()
    assert astro[1].box == (15, 15, 46, 46) and astro[2].box == (60, 55, 101, 96)

    # One qualifying component: that component alone, its box and GT without the speck beside it.
    camera = [s for s in samples if s.pair.stem == "camera"]
    assert [s.component for s in camera] == [1] and camera[0].box == (10, 8, 50, 40)
    assert sample_gt(camera[0]).sum() == 32 * 40  # the speck at (60, 60) left out
    assert [s.component for s in samples if s.pair.stem == "coffee"] == [1]

    # No enrichment: whole masks only.
    plain = enumerate_samples(find_pairs(dataset), enrich=False)
    assert [s.component for s in plain] == [None] * 4
    assert next(s for s in plain if s.pair.stem == "camera").box == (10, 8, 61, 61)


def test_enrichment_threshold_and_edge_cases(tmp_path):
    pair = Pair("x", tmp_path / "x.jpg", tmp_path / "x.png", "S")
    gt = np.zeros((50, 50), np.uint8)  # 2500 px: 0.4 % = 10 px
    gt[0:2, 0:5] = 255  # 10 px: qualifies
    gt[20:40, 20:40] = 255
    assert [s.component for s in pair_samples(pair, gt)] == [None, 1, 2]
    gt[0:2, 4] = 0  # 8 px: too small -> one qualifying -> it alone
    assert [(s.component, s.box) for s in pair_samples(pair, gt)] == [(2, (20, 20, 40, 40))]
    gt[0, 4] = 128  # 9 px (128 is foreground): still too small
    assert [s.component for s in pair_samples(pair, gt)] == [2]
    # Only pieces below 0.4 %: nothing to split, the whole mask (the image is not lost to training).
    dust = np.zeros((50, 50), np.uint8)
    dust[0:2, 0:3] = dust[30:32, 30:33] = 255
    assert [(s.component, s.box) for s in pair_samples(pair, dust)] == [(None, (0, 0, 33, 32))]
    # Diagonal neighbours are one 8-connected component.
    diag = np.zeros((50, 50), np.uint8)
    diag[10:20, 10:20] = 255
    diag[20:30, 20:30] = 255
    assert [s.component for s in pair_samples(pair, diag)] == [1]
    assert pair_samples(pair, np.full((50, 50), 127, np.uint8)) == []


def test_jitter_deterministic_and_bounded(dataset):
    box, shape = (40, 30, 90, 70), (100, 120)  # 50 wide, 40 high, image 120x100
    boxes = [jitter_box(box, k, shape, 0.1, seed=0, identity="a") for k in range(200)]
    assert boxes[0] == box
    assert boxes == [jitter_box(box, k, shape, 0.1, seed=0, identity="a") for k in range(200)]
    assert boxes != [jitter_box(box, k, shape, 0.1, seed=1, identity="a") for k in range(200)]
    assert boxes != [jitter_box(box, k, shape, 0.1, seed=0, identity="b") for k in range(200)]
    assert len(set(boxes)) > 100
    d = np.abs(np.array(boxes) - np.array(box))
    assert d[:, [0, 2]].max() <= 5 and d[:, [1, 3]].max() <= 4
    grown = sum(b[0] <= box[0] and b[1] <= box[1] and b[2] >= box[2] and b[3] >= box[3] for b in boxes)
    assert grown > 40  # mostly outward (0.8 per side)
    # Clipped to the image, never empty.
    edge = (0, 0, 3, 120)
    for k in range(1, 100):
        x0, y0, x1, y1 = jitter_box(edge, k, (120, 10), 0.5, seed=3, identity="e")
        assert 0 <= x0 < x1 <= 10 and 0 <= y0 < y1 <= 120
    for k in range(1, 100):
        x0, y0, x1, y1 = jitter_box((4, 4, 5, 5), k, (10, 10), 1.0, seed=0, identity="px")
        assert 0 <= x0 < x1 <= 10 and 0 <= y0 < y1 <= 10 and x0 <= 4 < x1 and y0 <= 4 < y1

    pairs = find_pairs(dataset)
    samples = enumerate_samples(pairs, jitter=2)
    assert len(samples) == 3 * 6
    assert samples == enumerate_samples(pairs, jitter=2)
    tight = {(s.pair.stem, s.component): s.box for s in samples if s.jitter == 0}
    assert tight == {(s.pair.stem, s.component): s.box for s in enumerate_samples(pairs)}
    assert [s.jitter for s in samples[:3]] == [0, 1, 2] and len({s.key for s in samples}) == len(samples)
    assert enumerate_samples(pairs, jitter=2, seed=5) != samples
