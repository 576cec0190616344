"""`is5net eval --data` (dataset mode, Table I): methods, outputs, resume, errors, torchrun sharding."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data, draw, filters, transform

from helpers import torchrun
from is5net.eval import evaluate_folders
from is5net.eval.dis5k import OVERALL, choose_subsets, evaluate_dataset
from is5net.eval.metrics import PAPER_METRICS
from tiny import make_tiny_refiner

SUBSETS = ("DIS-VD", "DIS-TE1", "DIS-TE2")
# subset -> [(stem, skimage image, (H, W), GT shape)]
LAYOUT = {
    "DIS-VD": [("vd_cat", "chelsea", (64, 80), "disk"), ("vd_coffee", "coffee", (72, 96), "horse")],
    "DIS-TE1": [
        ("te1_astro", "astronaut", (80, 80), "bars"),
        ("te1_rocket", "rocket", (64, 88), "disk"),
        ("te1_cam", "camera", (70, 64), "ring"),
    ],
    "DIS-TE2": [("te2_coins", "coins", (64, 72), "horse"), ("te2_cat", "chelsea", (96, 72), "bars")],
}


def _gt(shape: str, hw: tuple[int, int]) -> np.ndarray:
    h, w = hw
    m = np.zeros(hw, np.uint8)
    if shape == "disk":
        m[draw.disk((h // 2, w // 2), min(h, w) // 3, shape=hw)] = 255
    elif shape == "ring":
        m[draw.disk((h // 2, w // 2), min(h, w) // 3, shape=hw)] = 255
        m[draw.disk((h // 2, w // 2), min(h, w) // 6, shape=hw)] = 0
    elif shape == "bars":
        m[h // 6 : h - h // 6, w // 4 : w // 4 + 3] = 255
        m[h // 6 : h - h // 6, w // 2 : w // 2 + 2] = 255
        m[h // 2 : h // 2 + 2, w // 8 : w - w // 8] = 255
    elif shape == "horse":
        horse = transform.resize(~data.horse(), (h - 8, w - 8), order=0, anti_aliasing=False)
        m[4 : h - 4, 4 : w - 4] = horse.astype(np.uint8) * 255
    return m


def _rgb(name: str, hw: tuple[int, int]) -> np.ndarray:
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return (transform.resize(img[..., :3], hw, anti_aliasing=True) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def dis_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("DIS5K")
    for subset, items in LAYOUT.items():
        (root / subset / "im").mkdir(parents=True)
        (root / subset / "gt").mkdir()
        for stem, img, hw, shape in items:
            Image.fromarray(_rgb(img, hw)).save(root / subset / "im" / f"{stem}.jpg", quality=95)
            Image.fromarray(_gt(shape, hw)).save(root / subset / "gt" / f"{stem}.png")
    return root


@pytest.fixture(scope="module")
def coarse_dir(tmp_path_factory, dis_root) -> Path:
    """Soft coarse masks (blurred, shifted GT): DIS-VD per subset folder, the others flat in DIR."""
    out = tmp_path_factory.mktemp("coarse")
    for subset, items in LAYOUT.items():
        folder = out / subset if subset == "DIS-VD" else out
        folder.mkdir(exist_ok=True)
        for stem, *_ in items:
            gt = np.asarray(Image.open(dis_root / subset / "gt" / f"{stem}.png"))
            soft = filters.gaussian(np.roll(gt, 2, axis=1) / 255.0, sigma=1.5)
            Image.fromarray(np.round(soft * 255).astype(np.uint8)).save(folder / f"{stem}.png")
    return out


@pytest.fixture(scope="module")
def refiner5(tmp_path_factory) -> Path:
    from is5net.checkpoint import save_refiner

    path = tmp_path_factory.mktemp("r5") / "is5net_tiny.safetensors"
    save_refiner(make_tiny_refiner(5, input_size=64), path)
    return path


@pytest.fixture(scope="module")
def refiner3(tmp_path_factory) -> Path:
    """A 3-channel IS-Net as a plain state-dict .pth (as the official isnet.pth)."""
    path = tmp_path_factory.mktemp("r3") / "isnet_tiny.pth"
    torch.save(make_tiny_refiner(3, input_size=64).state_dict(), path)
    return path


def _check_run(run_dir: Path, root: Path, subsets=SUBSETS) -> dict:
    """Every output is there, with every row and column; DIS-TE is the mean of the TE rows."""
    results = json.loads((run_dir / "results.json").read_text())
    te = [s for s in subsets if s.startswith("DIS-TE")]
    assert list(results) == list(subsets) + [OVERALL]
    for name, row in results.items():
        assert set(PAPER_METRICS) <= set(row), name
        assert all(np.isfinite(row[k]) for k in PAPER_METRICS)
    for k in PAPER_METRICS:
        assert results[OVERALL][k] == pytest.approx(np.mean([results[s][k] for s in te]), rel=1e-12)
    assert results[OVERALL]["n"] == sum(results[s]["n"] for s in te)

    rows = list(csv.DictReader(io.StringIO((run_dir / "table.csv").read_text())))
    assert [r["subset"] for r in rows] == list(results)
    assert set(PAPER_METRICS) <= set(rows[0])
    for r in rows:
        for k in PAPER_METRICS:
            assert float(r[k]) == pytest.approx(results[r["subset"]][k], rel=1e-12)

    md = (run_dir / "table.md").read_text()
    assert md.startswith("<!-- is5net eval provenance") and ("checkpoint_sha256" in md or "coarse_dir" in md)
    for name in results:
        assert f"| {name} |" in md
    for label in ("maxFβ", "Fβw", "M ↓", "Sα", "Eφm", "HCEγ"):
        assert label in md

    prov = json.loads((run_dir / "provenance.json").read_text())
    for key in (
        "method",
        "checkpoint_sha256",
        "sam_type",
        "sam_checkpoint_sha256",
        "coarse_dir",
        "is5net_version",
        "torch_version",
        "device",
        "date",
    ):
        assert key in prov
    assert prov["date"].endswith("+00:00")

    for subset in subsets:
        for stem, _, hw, _ in LAYOUT[subset]:
            pred = np.asarray(Image.open(run_dir / "predictions" / subset / f"{stem}.png"))
            assert pred.shape == hw and pred.dtype == np.uint8
    return results


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------- methods
def test_is5net_with_sam(tmp_path, run_cli, dis_root, refiner5, tiny_sam_checkpoint):
    out = tmp_path / "run"
    rc, stdout, err = run_cli(
        "eval",
        "--data",
        dis_root,
        "--subsets",
        ",".join(SUBSETS),
        "--method",
        "is5net",
        "--checkpoint",
        refiner5,
        "--sam-checkpoint",
        tiny_sam_checkpoint,
        "--out",
        out,
        "--device",
        "cpu",
        stdout=True,
    )
    assert rc == 0, err
    _check_run(out, dis_root)
    assert "| DIS-TE |" in stdout and "| DIS-VD |" in stdout
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["checkpoint_sha256"] == _sha256(refiner5)
    assert prov["sam_checkpoint_sha256"] == _sha256(tiny_sam_checkpoint)
    assert prov["sam_type"] == "tiny" and prov["method"] == "is5net" and prov["coarse_dir"] is None
    assert prov["device"] == "cpu" and prov["computed"] == 7
    pred = np.asarray(Image.open(out / "predictions" / "DIS-TE1" / "te1_astro.png"))
    assert len(np.unique(pred)) > 2  # the soft map


def test_is5net_with_coarse_dir_and_sam_alone(tmp_path, run_cli, dis_root, refiner5, coarse_dir, tiny_sam_checkpoint):
    out = tmp_path / "coarse_run"
    rc, err = run_cli(
        "eval",
        "--data",
        dis_root,
        "--subsets",
        ",".join(SUBSETS),
        "--checkpoint",
        refiner5,
        "--coarse-dir",
        coarse_dir,
        "--out",
        out,
        "--device",
        "cpu",
    )
    assert rc == 0, err
    _check_run(out, dis_root)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["coarse_dir"] == str(coarse_dir.resolve()) and prov["sam_checkpoint_sha256"] is None

    sam_out = tmp_path / "sam_run"
    rc, err = run_cli(
        "eval",
        "--data",
        dis_root,
        "--subsets",
        "DIS-VD,DIS-TE2",
        "--method",
        "sam",
        "--sam-checkpoint",
        tiny_sam_checkpoint,
        "--out",
        sam_out,
        "--device",
        "cpu",
    )
    assert rc == 0, err
    _check_run(sam_out, dis_root, subsets=("DIS-VD", "DIS-TE2"))
    pred = np.asarray(Image.open(sam_out / "predictions" / "DIS-VD" / "vd_cat.png"))
    assert set(np.unique(pred)) <= {0, 255}  # SAM's binary mask, saved as 0/255
    assert json.loads((sam_out / "provenance.json").read_text())["checkpoint_sha256"] is None


def test_isnet_method(tmp_path, run_cli, dis_root, refiner3):
    # An official-style .pth has no metadata, so it runs at 1024x1024: two images keep this test short.
    out = tmp_path / "isnet"
    rc, err = run_cli(
        "eval",
        "--data",
        dis_root,
        "--subsets",
        "DIS-TE2",
        "--method",
        "isnet",
        "--checkpoint",
        refiner3,
        "--out",
        out,
        "--device",
        "cpu",
        "--workers",
        "2",
    )
    assert rc == 0, err
    _check_run(out, dis_root, subsets=("DIS-TE2",))
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["refiner"]["in_ch"] == 3 and prov["box"] is None


def test_sam_with_coarse_dir_scores_exactly_like_evaluate_folders(tmp_path, dis_root, coarse_dir):
    rows = evaluate_dataset(
        dis_root,
        ["DIS-TE1", "DIS-VD"],
        "sam",
        None,
        tmp_path / "run",
        coarse_dir=coarse_dir,
        progress=False,
        metrics="all",
    )
    assert list(rows) == ["DIS-TE1", "DIS-VD", OVERALL]
    assert rows[OVERALL] == {**rows["DIS-TE1"]}  # one TE subset: the mean is that row
    import csv

    with open(tmp_path / "run" / "per_image.csv", newline="") as f:
        per_image = list(csv.DictReader(f))
    for subset, folder in (("DIS-TE1", coarse_dir), ("DIS-VD", coarse_dir / "DIS-VD")):
        expected, expected_images = evaluate_folders(
            folder, dis_root / subset / "gt", metrics="all", allow_missing=True
        )
        assert expected["n"] == rows[subset]["n"] == len(LAYOUT[subset])
        for k, v in rows[subset].items():
            assert v == expected[k], (subset, k)
        # per_image.csv: the same per-image numbers as folder mode, image by image
        mine = {r["stem"]: r for r in per_image if r["subset"] == subset}
        assert sorted(mine) == sorted(r["stem"] for r in expected_images)
        for r in expected_images:
            for k in ("maxF", "MAE", "HCE"):
                assert float(mine[r["stem"]][k]) == pytest.approx(r[k], rel=1e-12, abs=1e-12), (r["stem"], k)
    # the saved predictions are the coarse masks, unchanged
    a = np.asarray(Image.open(tmp_path / "run" / "predictions" / "DIS-VD" / "vd_cat.png"))
    b = np.asarray(Image.open(coarse_dir / "DIS-VD" / "vd_cat.png"))
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------------ resume
def test_resume_reuses_predictions_and_refuses_to_mix(tmp_path, run_cli, dis_root, refiner5, refiner3, coarse_dir):
    out = tmp_path / "run"
    args = [
        "--data",
        dis_root,
        "--subsets",
        "DIS-TE1,DIS-TE2",
        "--checkpoint",
        refiner5,
        "--coarse-dir",
        coarse_dir,
        "--out",
        out,
        "--device",
        "cpu",
    ]
    rc, err = run_cli("eval", *args)
    assert rc == 0, err
    first = json.loads((out / "results.json").read_text())
    preds = sorted((out / "predictions").rglob("*.png"))
    assert len(preds) == 5
    mtimes = {p: p.stat().st_mtime_ns for p in preds}

    # without --resume: an error, and nothing touched
    rc, err = run_cli("eval", *args)
    assert rc == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    assert {p: p.stat().st_mtime_ns for p in preds} == mtimes

    time.sleep(0.01)
    rc, err = run_cli("eval", *args, "--resume")
    assert rc == 0, err
    assert {p: p.stat().st_mtime_ns for p in preds} == mtimes
    assert json.loads((out / "results.json").read_text()) == first
    assert json.loads((out / "provenance.json").read_text())["reused"] == 5

    # a missing and a damaged prediction are computed again, the others are not
    gone, bad = preds[0], preds[1]
    gone.unlink()
    bad.write_bytes(b"not a png")
    rc, err = run_cli("eval", *args, "--resume")
    assert rc == 0, err
    hw = {stem: shape for items in LAYOUT.values() for stem, _, shape, _ in items}
    assert gone.is_file() and np.asarray(Image.open(bad)).shape == hw[bad.stem]
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in preds[2:])
    assert json.loads((out / "results.json").read_text()) == first
    prov = json.loads((out / "provenance.json").read_text())
    assert (prov["computed"], prov["reused"]) == (2, 3)

    # --resume with another method or checkpoint: refused
    rc, err = run_cli(
        "eval",
        "--data",
        dis_root,
        "--subsets",
        "DIS-TE1",
        "--method",
        "isnet",
        "--checkpoint",
        refiner3,
        "--out",
        out,
        "--device",
        "cpu",
        "--resume",
    )
    assert rc == 2 and "another run" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ errors
def test_errors_are_one_line_exit_2(tmp_path, run_cli, dis_root, refiner5, refiner3, coarse_dir, tiny_sam_checkpoint):
    out = tmp_path / "run"
    base = ["--out", out, "--device", "cpu"]
    partial = tmp_path / "partial"
    (partial / "DIS-TE1").mkdir(parents=True)
    Image.open(coarse_dir / "te1_astro.png").save(partial / "DIS-TE1" / "te1_astro.png")
    cases = [
        (["--data", tmp_path / "nope", "--checkpoint", refiner5, "--coarse-dir", coarse_dir], "no such directory"),
        (
            ["--data", dis_root, "--subsets", "DIS-TE9", "--checkpoint", refiner5, "--coarse-dir", coarse_dir],
            "no subset DIS-TE9",
        ),
        (["--data", dis_root, "--checkpoint", tiny_sam_checkpoint, "--coarse-dir", coarse_dir], "SAM checkpoint"),
        (["--data", dis_root, "--checkpoint", refiner3, "--coarse-dir", coarse_dir], "--method isnet"),
        (["--data", dis_root, "--method", "isnet", "--checkpoint", refiner5], "3-channel"),
        (["--data", dis_root, "--checkpoint", refiner5], "--coarse-dir"),
        (
            [
                "--data",
                dis_root,
                "--checkpoint",
                refiner5,
                "--coarse-dir",
                coarse_dir,
                "--sam-checkpoint",
                tiny_sam_checkpoint,
            ],
            "not both",
        ),
        (["--data", dis_root, "--method", "sam", "--coarse-dir", coarse_dir, "--sam-type", "vit_q"], "SAM type"),
        (["--data", dis_root, "--method", "magic", "--checkpoint", refiner5], "unknown method"),
        (
            ["--data", dis_root, "--subsets", "DIS-TE1,DIS-TE2", "--checkpoint", refiner5, "--coarse-dir", partial],
            "no coarse mask for 4 image(s): DIS-TE1/te1_cam, DIS-TE1/te1_rocket, DIS-TE2/te2_cat, DIS-TE2/te2_coins",
        ),
        (
            [
                "--data",
                dis_root,
                "--checkpoint",
                refiner5,
                "--coarse-dir",
                coarse_dir,
                "--per-image",
                tmp_path / "x.csv",
            ],
            "folder mode",
        ),
    ]
    for argv, expected in cases:
        rc, err = run_cli("eval", *argv, *base)
        assert rc == 2, (argv, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("is5net eval: error:") and expected in lines[0], (expected, lines[0])
    assert not (out / "predictions").exists()
    rc, err = run_cli(
        "eval", "--data", dis_root, "--checkpoint", refiner5, "--coarse-dir", coarse_dir, "--device", "cpu"
    )
    assert rc == 2 and "--out" in err


def test_choose_subsets(dis_root):
    assert choose_subsets(dis_root, None) == ["DIS-TE1", "DIS-TE2"]
    assert choose_subsets(dis_root, "DIS-TE") == ["DIS-TE1", "DIS-TE2"]
    assert choose_subsets(dis_root, "DIS-VD,DIS-TE") == ["DIS-VD", "DIS-TE1", "DIS-TE2"]
    assert choose_subsets(dis_root, ["DIS-TE2", "DIS-VD", "DIS-TE2"]) == ["DIS-TE2", "DIS-VD"]


def test_no_te_subset_no_overall_row(tmp_path, dis_root, coarse_dir):
    rows = evaluate_dataset(dis_root, "DIS-VD", "sam", None, tmp_path / "vd", coarse_dir=coarse_dir, progress=False)
    assert list(rows) == ["DIS-VD"] and set(rows["DIS-VD"]) == set(PAPER_METRICS) | {"n"}


def test_unpaired_files_are_left_out_with_a_warning(tmp_path, dis_root, coarse_dir, caplog):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(dis_root / "DIS-VD", root / "DIS-VD")
    first = sorted((root / "DIS-VD" / "im").iterdir())[0]
    shutil.copy(first, root / "DIS-VD" / "im" / "no_gt_here.jpg")
    with caplog.at_level("WARNING", logger="is5net"):
        rows = evaluate_dataset(root, "DIS-VD", "sam", None, tmp_path / "vd", coarse_dir=coarse_dir, progress=False)
    assert rows["DIS-VD"]["n"] == len(LAYOUT["DIS-VD"])
    assert any("1 image(s) without GT" in r.getMessage() and "no_gt_here" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_match_one(tmp_path, dis_root, refiner5, coarse_dir):
    subsets = ("DIS-TE1", "DIS-TE2")
    single = evaluate_dataset(
        dis_root,
        list(subsets),
        "is5net",
        refiner5,
        tmp_path / "one",
        coarse_dir=coarse_dir,
        device="cpu",
        progress=False,
    )
    out = tmp_path / "two"
    argv = ["eval", "--data", dis_root, "--subsets", ",".join(subsets), "--checkpoint", refiner5]
    proc = torchrun(*argv, "--coarse-dir", coarse_dir, "--out", out, "--device", "cpu", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| DIS-TE |") == 1  # rank 0 alone prints the table
    results = _check_run(out, dis_root, subsets=subsets)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["world_size"] == 2 and prov["computed"] == 5
    for name, row in single.items():
        for k in PAPER_METRICS:
            assert results[name][k] == pytest.approx(row[k], rel=1e-3, abs=2.0 if k == "HCE" else 2e-3), (name, k)
