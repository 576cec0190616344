"""`is5net demo --highres --quick` end to end: every file, every row, the keys of `eval --json`."""

import json

from PIL import Image

from is5net.cli import main


def test_quick_highres_demo_writes_every_row_and_file(tmp_path, capsys):
    out = tmp_path / "hr"
    assert main(["demo", "--highres", "--quick", "-q", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    for row in ("coarse", "is5net_image", "is5net_box", "is5net_tiles"):
        r = results[row]
        assert r["n"] == 3
        for key in ("maxF", "wF", "MAE", "Sm", "meanEm", "HCE", "thin_recall"):
            assert isinstance(r[key], (int, float)), (row, key)
        assert 0.0 <= r["thin_recall"] <= 1.0
    assert set(results["robustness"]) == {"0", "0.05", "0.1", "0.2"}
    for row in results["robustness"].values():
        assert set(row) == {"coarse", "is5net_tiles"} and all("maxF" in v and "HCE" in v for v in row.values())
    # The jittered boxes change what IS5Net is given: its row at 0.2 is not its row at 0.
    assert results["robustness"]["0.2"]["is5net_tiles"] != results["robustness"]["0"]["is5net_tiles"]
    assert "region tiles" in printed and "box jitter" in printed
    fig = Image.open(out / "highres.png")
    assert fig.width > 6 * 200 and fig.height > 3 * 200
    from is5net.checkpoint import load_refiner

    assert load_refiner(out / "is5net_tiles" / "refiner.safetensors").config.region == "tiles"
    assert load_refiner(out / "is5net_image" / "refiner.safetensors").config.region == "image"


def test_demo_modes_are_options_of_the_command():
    from is5net.cli import build_parser

    args = build_parser().parse_args(["demo", "--ablation", "--quick", "--out", "x"])
    assert args.ablation and args.quick and not args.highres
    assert build_parser().parse_args(["demo", "--highres"]).highres
