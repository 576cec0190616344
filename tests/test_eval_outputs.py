"""`is5net eval` checks every output location before any work (a path under a file, an unwritable folder)."""

import numpy as np
import pytest
from PIL import Image

from is5net import cli


@pytest.fixture()
def folders(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    m = np.zeros((32, 32), np.uint8)
    m[8:24, 8:24] = 255
    Image.fromarray(m).save(gt / "a.png")
    # A corrupt prediction: scoring would fail on it with another message, so the output error must come first.
    (pred / "a.png").write_bytes(b"not a png")
    return pred, gt


def _one_line_error(argv, capsys) -> str:
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("option", ["--json", "--csv", "--per-image"])
def test_folder_mode_output_under_a_file_fails_before_scoring(folders, tmp_path, capsys, option):
    pred, gt = folders
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / "sub" / "out.json"
    line = _one_line_error(["eval", "--pred", str(pred), "--gt", str(gt), option, str(target)], capsys)
    assert option in line and "is a file, not a folder" in line and "a.png" not in line


def test_dataset_mode_checks_out_json_and_csv_before_predicting(tmp_path, capsys):
    root = tmp_path / "data"
    for sub in ("im", "gt"):
        (root / "DIS-TE1" / sub).mkdir(parents=True)
    m = np.zeros((32, 32), np.uint8)
    m[8:24, 8:24] = 255
    Image.fromarray(np.stack([m] * 3, -1)).save(root / "DIS-TE1" / "im" / "a.png")
    Image.fromarray(m).save(root / "DIS-TE1" / "gt" / "a.png")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    base = ["eval", "--data", str(root), "--method", "sam", "--coarse-dir", str(tmp_path / "nowhere")]
    line = _one_line_error(base + ["--out", str(blocker / "run")], capsys)
    assert "--out" in line and "is a file" in line
    line = _one_line_error(base + ["--out", str(tmp_path / "run"), "--csv", str(blocker / "t.csv")], capsys)
    assert "--csv" in line and "is a file" in line
    assert not (tmp_path / "run").exists()
