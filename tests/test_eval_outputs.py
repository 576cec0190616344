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


def test_dataset_mode_backend_is_honoured_and_recorded(tmp_path, capsys):
    import json

    from is5net.checkpoint import save_refiner
    from tiny import make_tiny_refiner

    root = tmp_path / "data"
    for sub in ("im", "gt"):
        (root / "DIS-TE1" / sub).mkdir(parents=True)
    (tmp_path / "coarse").mkdir()
    rng = np.random.default_rng(0)
    m = np.zeros((64, 64), np.uint8)
    m[10:50, 12:44] = 255
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "DIS-TE1" / "im" / "a.png")
    Image.fromarray(m).save(root / "DIS-TE1" / "gt" / "a.png")
    Image.fromarray(np.roll(m, 3, axis=1)).save(tmp_path / "coarse" / "a.png")
    save_refiner(make_tiny_refiner(5, input_size=64), tmp_path / "r.safetensors")
    base = [
        "eval",
        "--data",
        str(root),
        "--checkpoint",
        str(tmp_path / "r.safetensors"),
        "--coarse-dir",
        str(tmp_path / "coarse"),
        "-q",
    ]
    runs = {}
    for backend in ("torch", "onnxruntime"):
        assert cli.main(base + ["--out", str(tmp_path / backend), "--backend", backend]) == 0
        prov = json.loads((tmp_path / backend / "provenance.json").read_text())
        assert prov["backend"] == backend
        runs[backend] = np.asarray(Image.open(tmp_path / backend / "predictions" / "DIS-TE1" / "a.png"), int)
    assert np.abs(runs["torch"] - runs["onnxruntime"]).max() <= 1  # the same masks, to a grey level
    # Folder mode has no refiner to run: the option is refused there.
    line = _one_line_error(["eval", "--pred", str(tmp_path), "--gt", str(tmp_path), "--backend", "torch"], capsys)
    assert "--backend" in line
