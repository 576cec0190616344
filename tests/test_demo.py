import json
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from is5net.checkpoint import load_refiner
from is5net.cli import main

PAPER_METRICS = ["maxF", "wF", "MAE", "Sm", "meanEm", "HCE"]
COLUMNS = ["maxFβ", "Fβw", "M", "Sα", "Eφm", "HCEγ"]


def _parse_table(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        if line.startswith("|") and not line.startswith("|:") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_quick_demo_writes_every_file_and_the_pasteable_command_works(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    for method in ("coarse", "isnet", "is5net"):
        assert all(isinstance(results[method][k], (int, float)) for k in PAPER_METRICS + ["n"])
        assert results[method]["n"] == 10
    assert "simulated" in results["coarse_label"]
    table = (out / "table.md").read_text()
    assert "simulated SAM" in table
    rows = _parse_table(table.split("Recall of GT")[0])  # the metric table; the thin-recall one follows
    thin = _parse_table(table.split("Recall of GT")[1])
    assert all(re.fullmatch(r"[0-9.]+", v) for label in ("coarse mask", "IS5Net (5-ch)") for v in thin[label])
    header = next(k for k in rows if k == "")
    assert all(any(col in h for h in rows[header]) for col in COLUMNS)
    for label in ("coarse mask", "IS-Net (3-ch)", "IS5Net (5-ch)"):
        assert len(rows[label]) >= 6 and all(re.fullmatch(r"[0-9.]+", v) for v in rows[label][:6])
    assert load_refiner(out / "isnet" / "refiner.safetensors").in_ch == 3
    assert load_refiner(out / "is5net" / "refiner.safetensors").in_ch == 5
    assert (out / "is5net" / "gt_encoder.safetensors").exists()
    fig = Image.open(out / "comparison.png")
    assert fig.width > 5 * 96 and fig.height > 96
    # The command printed at the end reruns one test image.
    cmd = next(line.strip() for line in printed.splitlines() if line.strip().startswith("is5net predict"))
    argv = shlex.split(cmd)[1:]
    assert main(argv) == 0
    outdir = out / "rerun"
    png = next(outdir.glob("*.png"))
    assert np.asarray(Image.open(png)).shape == (96, 96)


def test_demo_data_layout_is_read_like_dis5k(tmp_path):
    from is5net.data.pairs import find_pairs, is_dis5k_root
    from is5net.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path, seed=1, n_train=3, n_val=2, n_test=2, size=64)
    assert is_dis5k_root(tmp_path)
    assert {p.subset for p in find_pairs(tmp_path)} == {"DIS-TR", "DIS-VD", "DIS-TE1"}


@pytest.mark.slow
def test_full_demo_shows_the_paper_claim(tmp_path):
    """The default demo (minutes on 2 cores): IS5Net beats the coarse mask and IS-Net on maxF and HCE.

    The thin-structure recall is reported but not asserted: over 2 seeds x 3 learning rates it beat the
    coarse mask's in 3 runs of 6 (README), so it is no property of this miniature.
    """
    from is5net.demo import run_demo

    res = run_demo(tmp_path / "demo", progress=False)["results"]
    coarse, isnet, is5 = res["coarse"], res["isnet"], res["is5net"]
    assert is5["maxF"] > coarse["maxF"] and is5["maxF"] > isnet["maxF"]
    assert is5["HCE"] < coarse["HCE"] and is5["HCE"] < isnet["HCE"]
    assert res["thin_structures"]["coarse"]["thin_pixels"] > 0   # the data has thin structures to report on
