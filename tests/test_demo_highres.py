"""`is5net demo --highres --quick` end to end: both splits, every file, every row, the keys of `eval --json`."""

import json

from PIL import Image

from is5net.cli import main


def test_quick_highres_demo_writes_every_row_and_file(tmp_path, capsys):
    out = tmp_path / "hr"
    assert main(["demo", "--highres", "--quick", "-q", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["main", "small", "robustness", "seed", "schedule", "seconds"]
    small = results["schedule"]["small"]
    assert small == {"image_size": 512, "n_val": 2, "n_test": 2, "target_scale": [0.1, 0.25]}
    assert results["schedule"]["image_size"] == 256 and results["schedule"]["n_test"] == 3
    for split, n in (("main", 3), ("small", 2)):
        assert list(results[split]) == ["coarse", "is5net_image", "is5net_box", "is5net_tiles"]
        for row, r in results[split].items():
            assert r["n"] == n, (split, row)
            for key in ("maxF", "wF", "MAE", "Sm", "meanEm", "HCE", "thin_recall"):
                assert isinstance(r[key], (int, float)), (split, row, key)
            assert 0.0 <= r["thin_recall"] <= 1.0
    # The small split is its own data: 512 px photos, validation and test, none for training.
    assert len(list((out / "data-small" / "DIS-TE1" / "im").glob("*.png"))) == 2
    assert len(list((out / "data-small" / "DIS-VD" / "im").glob("*.png"))) == 2
    assert not list((out / "data-small").glob("DIS-TR/im/*"))
    assert Image.open(next((out / "data-small" / "DIS-TE1" / "im").glob("*.png"))).size == (512, 512)
    assert results["small"]["coarse"] != results["main"]["coarse"]
    assert set(results["robustness"]) == {"0", "0.05", "0.1", "0.2"}
    for row in results["robustness"].values():
        assert set(row) == {"coarse", "is5net_tiles"} and all("maxF" in v and "HCE" in v for v in row.values())
    # The jittered boxes change what IS5Net is given: its row at 0.2 is not its row at 0.
    assert results["robustness"]["0.2"]["is5net_tiles"] != results["robustness"]["0"]["is5net_tiles"]
    assert "region tiles" in printed and "box jitter" in printed
    assert "split `main` (3 photos of 256x256" in printed and "split `small` (2 photos of 512x512" in printed
    table = (out / "table.md").read_text()
    assert table.count("| IS5Net, region box |") == 2 and "box jitter" in table
    fig = Image.open(out / "highres.png")  # two photos of each split
    assert fig.width > 6 * 200 and fig.height > 4 * 200
    from is5net.checkpoint import load_refiner

    assert load_refiner(out / "is5net_tiles" / "refiner.safetensors").config.region == "tiles"
    assert load_refiner(out / "is5net_image" / "refiner.safetensors").config.region == "image"


def test_demo_modes_are_options_of_the_command():
    from is5net.cli import build_parser

    args = build_parser().parse_args(["demo", "--ablation", "--quick", "--out", "x"])
    assert args.ablation and args.quick and not args.highres
    assert build_parser().parse_args(["demo", "--highres"]).highres
