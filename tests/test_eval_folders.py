"""`is5net eval` folder mode: pairing by stem, errors, outputs, workers; the table helpers."""

from __future__ import annotations

import csv
import io
import json
import sys
import types
import warnings

import numpy as np
import py_sod_metrics as sod
import pytest
from PIL import Image
from skimage import data, draw, filters, morphology, transform

import is5net
import is5net.eval
from is5net import cli
from is5net import eval as evaluate
from is5net.errors import IS5NetError
from is5net.eval import metrics as M
from is5net.io import load_mask

SIZE = (120, 144)  # H, W


def _gts() -> dict[str, np.ndarray]:
    horse = transform.resize(~data.horse(), SIZE, order=0, anti_aliasing=False).astype(np.uint8) * 255
    disk = np.zeros(SIZE, np.uint8)
    disk[draw.disk((60, 70), 35)] = 255
    bars = np.zeros(SIZE, np.uint8)
    bars[10:110, 20:30] = 255
    bars[10:110, 60:63] = 255
    bars[50:54, 0:144] = 255
    return {"horse": horse, "disk": disk, "bars": bars}


def _pred(gt: np.ndarray, kind: str) -> np.ndarray:
    if kind == "blur":
        return np.round(filters.gaussian(gt / 255.0, sigma=2.5) * 255).astype(np.uint8)
    if kind == "erode":
        return morphology.erosion(gt, morphology.disk(3))
    if kind == "dilate":
        return morphology.dilation(gt, morphology.disk(7))
    if kind == "noise":
        rng = np.random.default_rng(3)
        return np.clip(gt.astype(int) + rng.integers(-90, 90, gt.shape), 0, 255).astype(np.uint8)
    raise ValueError(kind)


# stem -> (GT name, prediction kind, prediction extension): extensions differ on purpose, pairing is by stem
LAYOUT = {
    "a_horse": ("horse", "blur", ".png"),
    "b_horse": ("horse", "erode", ".bmp"),
    "c_disk": ("disk", "dilate", ".tif"),
    "d_bars": ("bars", "noise", ".png"),
    "e_bars": ("bars", "blur", ".jpg"),
}


def _save(path, arr):
    Image.fromarray(arr).save(path)


@pytest.fixture()
def folders(tmp_path):
    gts = _gts()
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for stem, (gt_name, kind, ext) in LAYOUT.items():
        _save(gt_dir / f"{stem}.png", gts[gt_name])
        _save(pred_dir / f"{stem}{ext}", _pred(gts[gt_name], kind))
    (pred_dir / "index.json").write_text("{}")  # not an image: ignored
    return pred_dir, gt_dir


def _direct(pred_dir, gt_dir) -> dict:
    """pysodmetrics' classic meters over the same files, plus the official-style HCE per image."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm = sod.Fmeasure()
    em, wfm, mae, sm = sod.Emeasure(), sod.WeightedFmeasure(), sod.MAE(), sod.Smeasure()
    hces = []
    for stem in sorted(LAYOUT):
        ext = LAYOUT[stem][2]
        p = load_mask(pred_dir / f"{stem}{ext}")
        g = load_mask(gt_dir / f"{stem}.png")
        for meter in (fm, em, wfm, mae, sm):
            meter.step(p, g)
        hce = sod.HumanCorrectionEffortMeasure()
        hce.step((p > 128).astype(np.float64), g > 128, normalize=False)
        hces.append(hce.get_results()["hce"])
    return {
        "maxF": fm.get_results()["fm"]["curve"].max(),
        "meanF": fm.get_results()["fm"]["curve"].mean(),
        "wF": wfm.get_results()["wfm"],
        "MAE": mae.get_results()["mae"],
        "Sm": sm.get_results()["sm"],
        "meanEm": em.get_results()["em"]["curve"].mean(),
        "maxEm": em.get_results()["em"]["curve"].max(),
        "HCE": float(np.mean(hces)),
    }


@pytest.fixture()
def eval_only(monkeypatch):
    """Build the CLI with only our subcommand, so these tests do not depend on the others' modules."""
    monkeypatch.setattr(cli, "COMMANDS", {"eval": cli.COMMANDS["eval"]})


# -------------------------------------------------------------------------------------- Python API


def test_evaluate_folders_equals_pysod_over_the_same_files(folders):
    pred_dir, gt_dir = folders
    summary, rows = evaluate.evaluate_folders(pred_dir, gt_dir)
    assert summary["n"] == 5 and summary["missing_pred"] == 0 and summary["missing_gt"] == 0
    ref = _direct(pred_dir, gt_dir)
    for k, v in ref.items():
        assert summary[k] == pytest.approx(float(v), rel=1e-12, abs=1e-12), k
    assert summary["HCE"] > 0  # the eroded/dilated/noisy predictions do need corrections
    assert [r["stem"] for r in rows] == sorted(LAYOUT)
    assert rows[2]["pred"].endswith("c_disk.tif") and rows[2]["gt"].endswith("c_disk.png")
    assert all(set(M.ALL_METRICS) <= set(r) for r in rows)
    assert np.mean([r["MAE"] for r in rows]) == pytest.approx(summary["MAE"])
    assert np.mean([r["HCE"] for r in rows]) == pytest.approx(summary["HCE"])


def test_two_workers_give_the_same_numbers(folders):
    pred_dir, gt_dir = folders
    one = evaluate.evaluate_folders(pred_dir, gt_dir, workers=1)
    two = evaluate.evaluate_folders(pred_dir, gt_dir, workers=2)
    assert one == two


def test_missing_prediction_is_an_error_listing_the_file(folders):
    pred_dir, gt_dir = folders
    (pred_dir / "c_disk.tif").unlink()
    with pytest.raises(IS5NetError, match=r"1 GT mask.*no prediction.*c_disk\.png"):
        evaluate.evaluate_folders(pred_dir, gt_dir)


def test_prediction_without_gt_is_an_error(folders):
    pred_dir, gt_dir = folders
    _save(pred_dir / "zz_extra.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(IS5NetError, match=r"1 prediction.*no GT.*zz_extra\.png"):
        evaluate.evaluate_folders(pred_dir, gt_dir)


def test_allow_missing_scores_the_rest_and_counts(folders):
    pred_dir, gt_dir = folders
    (pred_dir / "c_disk.tif").unlink()
    (pred_dir / "d_bars.png").unlink()
    _save(pred_dir / "zz_extra.png", np.zeros(SIZE, np.uint8))
    summary, rows = evaluate.evaluate_folders(pred_dir, gt_dir, allow_missing=True)
    assert summary["n"] == 3 and summary["missing_pred"] == 2 and summary["missing_gt"] == 1
    assert [r["stem"] for r in rows] == ["a_horse", "b_horse", "e_bars"]


def test_size_mismatch_is_an_error_even_with_allow_missing(folders):
    pred_dir, gt_dir = folders
    _save(pred_dir / "b_horse.bmp", np.zeros((SIZE[0], SIZE[1] + 2), np.uint8))
    for allow in (False, True):
        with pytest.raises(IS5NetError, match=r"b_horse\.bmp is 146x120 but b_horse\.png is 144x120"):
            evaluate.evaluate_folders(pred_dir, gt_dir, allow_missing=allow)


def test_no_common_stem_and_missing_folder(tmp_path, folders):
    pred_dir, gt_dir = folders
    other = tmp_path / "other"
    other.mkdir()
    _save(other / "q.png", np.zeros(SIZE, np.uint8))
    with pytest.raises(IS5NetError, match="shares a file stem"):
        evaluate.evaluate_folders(other, gt_dir, allow_missing=True)
    with pytest.raises(IS5NetError, match="no such directory"):
        evaluate.evaluate_folders(tmp_path / "nope", gt_dir)


# --------------------------------------------------------------------------------------------- CLI


def test_cli_writes_json_csv_and_per_image(folders, tmp_path, capsys, eval_only):
    pred_dir, gt_dir = folders
    out = tmp_path / "out"
    rc = cli.main(
        [
            "eval",
            "--pred",
            str(pred_dir),
            "--gt",
            str(gt_dir),
            "--json",
            str(out / "r.json"),
            "--csv",
            str(out / "r.csv"),
            "--per-image",
            str(out / "per.csv"),
        ]
    )
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "maxFβ" in stdout and "HCEγ" in stdout and "| pred |" in stdout

    doc = json.loads((out / "r.json").read_text())
    summary, _ = evaluate.evaluate_folders(pred_dir, gt_dir)
    for k in M.ALL_METRICS:
        assert isinstance(doc[k], float) and doc[k] == pytest.approx(summary[k], rel=1e-12), k
    assert doc["n"] == 5 and doc["missing_pred"] == 0

    table = list(csv.DictReader(io.StringIO((out / "r.csv").read_text())))
    assert len(table) == 1 and table[0]["name"] == "pred" and int(table[0]["n"]) == 5
    for k in M.ALL_METRICS:
        assert float(table[0][k]) == pytest.approx(summary[k], rel=1e-12), k

    per = list(csv.DictReader(io.StringIO((out / "per.csv").read_text())))
    assert [r["stem"] for r in per] == sorted(LAYOUT)
    assert set(per[0]) == {"stem", "pred", "gt", *M.ALL_METRICS}
    assert np.mean([float(r["MAE"]) for r in per]) == pytest.approx(summary["MAE"])
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_cli_metric_subset(folders, tmp_path, capsys, eval_only):
    pred_dir, gt_dir = folders
    rc = cli.main(
        [
            "eval",
            "--pred",
            str(pred_dir),
            "--gt",
            str(gt_dir),
            "--metrics",
            "mae,HCE",
            "--json",
            str(tmp_path / "r.json"),
            "--workers",
            "1",
        ]
    )
    assert rc == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert {k for k in doc if k in M.ALL_METRICS} == {"MAE", "HCE"}
    assert "maxFβ" not in capsys.readouterr().out


def _error_case(argv, tmp_path, capsys):
    outputs = [tmp_path / "err.json", tmp_path / "err.csv", tmp_path / "err_per.csv"]
    rc = cli.main(argv + ["--json", str(outputs[0]), "--csv", str(outputs[1]), "--per-image", str(outputs[2])])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("is5net eval: error: "), err
    assert not any(p.exists() for p in outputs)
    assert not list(tmp_path.glob(".*.tmp"))
    return lines[0]


def test_cli_errors_are_one_line_and_write_nothing(folders, tmp_path, capsys, eval_only):
    pred_dir, gt_dir = folders
    base = ["eval", "--pred", str(pred_dir), "--gt", str(gt_dir)]

    assert "unknown metric" in _error_case(base + ["--metrics", "maxF,bogus"], tmp_path, capsys)
    assert "--pred and --gt go together" in _error_case(["eval", "--pred", str(pred_dir)], tmp_path, capsys)
    assert "--data" in _error_case(["eval"], tmp_path, capsys)
    assert "cannot be used together" in _error_case(base + ["--data", str(tmp_path)], tmp_path, capsys)
    assert "--checkpoint" in _error_case(base + ["--checkpoint", "x.pth"], tmp_path, capsys)

    _save(pred_dir / "b_horse.bmp", np.zeros((SIZE[0] + 1, SIZE[1]), np.uint8))
    assert "b_horse.bmp is 144x121" in _error_case(base, tmp_path, capsys)
    _save(pred_dir / "b_horse.bmp", _pred(_gts()["horse"], "erode"))

    (pred_dir / "a_horse.png").unlink()
    assert "a_horse.png" in _error_case(base, tmp_path, capsys)
    assert "a_horse.png" in _error_case(base + ["--workers", "2"], tmp_path, capsys)

    # with --allow-missing the same folders score and say how many were missing
    rc = cli.main(base + ["--allow-missing", "--json", str(tmp_path / "ok.json")])
    assert rc == 0
    doc = json.loads((tmp_path / "ok.json").read_text())
    assert doc["n"] == 4 and doc["missing_pred"] == 1


def test_cli_corrupt_mask_is_one_line(folders, tmp_path, capsys, eval_only):
    pred_dir, gt_dir = folders
    (pred_dir / "d_bars.png").write_bytes(b"not a png")
    assert "d_bars.png" in _error_case(["eval", "--pred", str(pred_dir), "--gt", str(gt_dir)], tmp_path, capsys)


def test_cli_dataset_mode_is_delegated(tmp_path, monkeypatch, eval_only):
    calls = []
    fake = types.ModuleType("is5net.eval.dis5k")
    fake.run_dataset = lambda args: calls.append(args) or 0
    monkeypatch.setitem(sys.modules, "is5net.eval.dis5k", fake)
    monkeypatch.setattr(is5net.eval, "dis5k", fake, raising=False)
    rc = cli.main(
        [
            "eval",
            "--data",
            str(tmp_path),
            "--subsets",
            "DIS-TE1,DIS-TE2",
            "--method",
            "is5net",
            "--checkpoint",
            "c.pth",
            "--sam-checkpoint",
            "s.pth",
            "--out",
            str(tmp_path / "o"),
            "--resume",
        ]
    )
    assert rc == 0 and len(calls) == 1
    args = calls[0]
    assert args.data == str(tmp_path) and args.subsets == "DIS-TE1,DIS-TE2" and args.method == "is5net"
    assert args.checkpoint == "c.pth" and args.sam_checkpoint == "s.pth" and args.resume is True
    assert args.coarse_dir is None and args.pred is None


# -------------------------------------------------------------------------------------------- tables


def test_table_helpers_and_dis_te_mean():
    rows = {
        f"DIS-TE{i}": {
            "maxF": 0.9 + i / 100,
            "wF": 0.8,
            "MAE": 0.03 * i,
            "Sm": 0.9,
            "meanEm": 0.95,
            "HCE": 100.0 * i,
            "n": 500,
        }
        for i in (1, 2, 3, 4)
    }
    rows["DIS-TE"] = evaluate.mean_row(rows.values())
    te = rows["DIS-TE"]
    assert te["maxF"] == pytest.approx(0.925) and te["MAE"] == pytest.approx(0.075)
    assert te["HCE"] == pytest.approx(250.0) and te["n"] == 2000

    md = evaluate.table_markdown(rows, metrics="paper")
    lines = md.strip().splitlines()
    assert len(lines) == 2 + 5
    assert lines[0] == "|  | maxFβ ↑ | Fβw ↑ | M ↓ | Sα ↑ | Eφm ↑ | HCEγ ↓ |"
    assert lines[-1] == "| DIS-TE | 0.925 | 0.800 | 0.075 | 0.900 | 0.950 | 250 |"
    assert "mIoU" not in md

    parsed = list(csv.DictReader(io.StringIO(evaluate.table_csv(rows))))
    assert [r["name"] for r in parsed] == ["DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4", "DIS-TE"]
    assert list(parsed[0]) == ["name", "maxF", "wF", "MAE", "Sm", "meanEm", "HCE", "n"]
    assert float(parsed[-1]["MAE"]) == pytest.approx(0.075) and parsed[-1]["n"] == "2000"

    with pytest.raises(IS5NetError):
        evaluate.mean_row([{"maxF": 0.5}, {"MAE": 0.1}])
