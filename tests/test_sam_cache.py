"""The SAM-mask cache and `is5net cache-sam`: keys, reuse, invalidation, torchrun sharding (tiny SAM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import disc, save, torchrun
from is5net.cli import main
from is5net.data.pairs import find_pairs
from is5net.data.sam_cache import (
    SamMaskCache,
    cache_sam,
    default_cache_dir,
    file_sha256,
    image_hash,
    sam_checkpoint_hash,
    sam_hash,
)
from is5net.data.samples import enumerate_samples
from is5net.io import load_image, save_png


@pytest.fixture
def dataset(pairs_dataset) -> Path:
    return pairs_dataset


@pytest.fixture(scope="module")
def other_sam_checkpoint(tmp_path_factory):
    from is5net.inference.stage1 import build_sam_tiny

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("sam2") / "sam_tiny_other.pth"
    torch.save(build_sam_tiny().state_dict(), path)
    return path


def _entries(cache: SamMaskCache) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in cache.root.rglob("*.png")}


def _run(root, ckpt, **kw) -> dict:
    return cache_sam(root, ckpt, progress=False, device="cpu", **kw)


def test_hashes_and_cache_entry_round_trip(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    h = file_sha256(f)
    assert h == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" and file_sha256(f) == h
    save_png(f, np.zeros((2, 2), np.uint8))  # rewritten: hashed afresh despite the memo
    assert file_sha256(f) != h and image_hash(f) == file_sha256(f)[:16] == sam_checkpoint_hash(f)
    assert sam_hash(None, "tiny") == sam_hash(None, "tiny")  # the random tiny SAM is seeded

    cache = SamMaskCache(tmp_path / "c", "0123456789abcdef", "best")
    ih = image_hash(f)
    assert cache.path(ih, (1, 2, 30, 40)) == tmp_path / "c" / "0123456789abcdef_best" / ih / "1_2_30_40.png"
    assert cache.get(f, (1, 2, 30, 40)) is None and not cache.has(ih, (1, 2, 30, 40))
    mask = disc(20, 30, 10, 15, 6)
    cache.put(f, (1, 2, 30, 40), mask, score=0.75)
    got, score = cache.get_with_score(str(f), (1, 2, 30, 40))
    assert got.dtype == np.uint8 and set(np.unique(got)) == {0, 255} and np.array_equal(got > 0, mask)
    assert score == 0.75 and np.array_equal(cache.get(ih, (1.0, 2, 30, 40)), got)
    assert cache.get(ih, (1, 2, 30, 41)) is None
    with pytest.raises(ValueError):
        cache.path(ih, (1.5, 2, 30, 40))


def test_cache_reused_and_invalidated(dataset, tiny_sam_checkpoint, other_sam_checkpoint):
    pairs = find_pairs(dataset)
    samples = enumerate_samples(pairs)
    n = len(samples)  # 6 distinct (image, box) entries
    # camera's lone rectangle stands in for its whole mask (rectangle + speck) in training; the whole
    # mask's box, the prompt of validation and evaluation, is cached too: one entry more than samples
    e = n + 1
    s1 = _run(dataset, tiny_sam_checkpoint)
    assert (s1["entries"], s1["computed"], s1["reused"], s1["images"], s1["samples"]) == (e, e, 0, 4, n)
    cache = SamMaskCache(default_cache_dir(dataset), sam_checkpoint_hash(tiny_sam_checkpoint), "first")
    assert s1["cache"] == str(cache.root) and cache.missing(samples) == []
    assert cache.missing(enumerate_samples(pairs, enrich=False)) == []
    assert (cache.root / "info.json").is_file()
    for s in samples:
        m = cache.get_sample(s)
        assert m.shape == load_image(s.pair.image).shape[:2] and m.dtype == np.uint8
    before = _entries(cache)
    assert len(before) == e

    # Nothing changed: nothing computed, nothing rewritten.
    s2 = _run(dataset, tiny_sam_checkpoint)
    assert (s2["computed"], s2["reused"], s2["images"]) == (0, e, 0)
    assert _entries(cache) == before

    # The image content changed (same name): its 3 entries are new keys; the rest are reused.
    astro = dataset / "DIS-TR/im/astronaut.jpg"
    rgb = load_image(astro)
    Image.fromarray(255 - rgb).save(astro, quality=95)
    s3 = _run(dataset, tiny_sam_checkpoint)
    assert (s3["computed"], s3["reused"], s3["images"]) == (3, e - 3, 1)
    new_astro = [s for s in enumerate_samples(pairs) if s.pair.stem == "astronaut"]
    assert cache.missing(new_astro) == []

    # The box changed (the GT moved): one new entry, the image's old box entry is not used.
    save(dataset / "DIS-TR/gt/coffee.png", disc(96, 128, 50, 60, 25))
    s4 = _run(dataset, tiny_sam_checkpoint)
    assert (s4["computed"], s4["reused"]) == (1, e - 1)

    # Jittered boxes: only the new boxes are computed.
    s5 = _run(dataset, tiny_sam_checkpoint, jitter=1)
    jittered = enumerate_samples(pairs, jitter=1)
    distinct = len({(s.pair.image, s.box) for s in jittered})
    assert s5["entries"] == distinct + 1 and s5["computed"] == distinct - n and s5["reused"] == e

    # Another SAM, or another mask choice: everything again, in another folder.
    s6 = _run(dataset, other_sam_checkpoint)
    assert (s6["computed"], s6["reused"]) == (e, 0) and s6["cache"] != s1["cache"]
    s7 = _run(dataset, tiny_sam_checkpoint, mask_choice="best")
    assert (s7["computed"], s7["reused"]) == (e, 0) and s7["cache"].endswith("_best")
    assert _run(dataset, tiny_sam_checkpoint, mask_choice="best")["computed"] == 0


def test_cache_sam_cli(dataset, tmp_path, tiny_sam_checkpoint, capsys):
    cache_dir = tmp_path / "cache"
    args = [
        "cache-sam",
        "--data",
        str(dataset),
        "--cache",
        str(cache_dir),
        "--sam-type",
        "tiny",
        "-q",
        "--device",
        "cpu",
        "--subsets",
        "DIS-VD",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "2 computed, 0 reused" in out[0] and str(cache_dir) in out[0]
    assert main(args + ["--no-enrich"]) == 0
    assert "0 computed, 1 reused" in capsys.readouterr().out

    assert main(args[:-2] + ["--sam-checkpoint", str(tiny_sam_checkpoint), "--no-enrich", "--jitter", "1"]) == 0
    assert "8 masks for 8 samples of 4 pairs: 8 computed, 0 reused" in capsys.readouterr().out

    # Errors are one line, exit 2.
    assert main(["cache-sam", "--data", str(dataset), "-q"]) == 2
    assert "--sam-checkpoint" in capsys.readouterr().err
    assert main(["cache-sam", "--data", str(dataset), "--sam-checkpoint", str(tmp_path / "none.pth"), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cache_sam_skips_bad_pairs(dataset, tiny_sam_checkpoint):
    (dataset / "DIS-VD/im/camera.png").write_bytes(b"not a png")
    save(dataset / "DIS-TR/gt/chelsea.png", np.zeros((80, 120), bool))
    stats = _run(dataset, tiny_sam_checkpoint, cache_dir=dataset.parent / "c")
    assert (stats["skipped"], stats["empty"], stats["computed"], stats["entries"]) == (1, 1, 4, 4)


def test_torchrun_two_processes_cover_every_entry_once(dataset, tmp_path, tiny_sam_checkpoint):
    cache_dir = tmp_path / "cache"
    argv = ["cache-sam", "--data", dataset, "--sam-checkpoint", tiny_sam_checkpoint, "--cache", cache_dir]
    proc = torchrun(*argv, "--jitter", "1", "-q", cpu_only=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = enumerate_samples(find_pairs(dataset), jitter=1)
    whole = enumerate_samples(find_pairs(dataset), enrich=False)  # + camera's whole-mask box (validation's)
    distinct = len({(s.pair.image, s.box) for s in samples + whole})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("cache-sam:")]
    assert len(lines) == 1, proc.stdout  # rank 0 prints
    assert f"{distinct} masks for {len(samples)} samples of 4 pairs: {distinct} computed, 0 reused" in lines[0]
    assert "(2 processes)" in lines[0]
    cache = SamMaskCache(cache_dir, sam_checkpoint_hash(tiny_sam_checkpoint), "first")
    assert cache.missing(samples) == [] and len(list(cache.root.rglob("*.png"))) == distinct
    # Same masks as one process computes (each rank built the same SAM and the same boxes).
    single = tmp_path / "single"
    assert _run(dataset, tiny_sam_checkpoint, cache_dir=single, jitter=1)["computed"] == distinct
    one = SamMaskCache(single, cache.sam_hash, "first")
    for s in samples:
        assert np.array_equal(one.get_sample(s), cache.get_sample(s))
