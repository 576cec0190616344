"""Issue 28, a-e: nothing lost, nothing half-said where is5net writes files (data-driven: a new case is a row).

a. every output path of a run is unique before anything is written; b. written files get the mode a plain
``open()`` gives; c. an -o that holds the inputs drops only earlier outputs; d. a full disk is one line naming
the file, what was finished kept and listed; e. a link where is5net keeps its records is refused.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from is5net.cli import main


def _photo(path: Path, side: int = 64, seed: int = 0, noisy: bool = False) -> None:
    rng = np.random.default_rng(seed)
    if noisy:  # incompressible: its PNGs are large
        rgb = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    else:
        rgb = np.zeros((side, side, 3), np.uint8)
        rgb[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = (200, 60, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _predict(capsys, refiner: Path, *argv) -> tuple[int, list[str]]:
    base = ["--checkpoint", refiner, "--stage1", "grabcut", "--backend", "torch", "-q"]
    rc = main(["predict", *[str(a) for a in argv], *[str(a) for a in base]])
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


# --- a. output names collide --------------------------------------------------------------------------------

COLLISIONS = {
    # (photos, their boxes, options, the file both would write)
    "cut-out of one is the mask of the other": (["a.jpg", "a_cutout.jpg"], {}, ["--save", "both"], "a_cutout.png"),
    "first of two boxes and another photo": (
        ["a.jpg", "a_0.jpg"],
        {"a.jpg": [[0, 0, 40, 40], [8, 8, 56, 56]]},
        [],
        "a_0.png",
    ),  # fmt: skip
    "same stem": (["a.jpg", "a.png"], {}, [], "a.png"),
}


@pytest.mark.parametrize("names, boxes, options, shared", COLLISIONS.values(), ids=COLLISIONS.keys())
def test_a_run_whose_outputs_collide_is_refused_naming_both_inputs(
    tmp_path, capsys, tiny_refiner_checkpoint, names, boxes, options, shared
):
    for i, name in enumerate(names):
        _photo(tmp_path / "in" / name, seed=i)
    file = tmp_path / "boxes.json"
    file.write_text(json.dumps({name: boxes.get(name, [[8, 8, 56, 56]]) for name in names}))
    rc, lines = _predict(capsys, tiny_refiner_checkpoint, tmp_path / "in", "--boxes", file, *options,
                         "-o", tmp_path / "out")  # fmt: skip
    assert rc == 2 and len(lines) == 1, lines
    assert all(name in lines[0] for name in names) and shared in lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything was written


# --- b. file modes ------------------------------------------------------------------------------------------


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield 0o644
    os.umask(old)


def test_convert_isnet_writes_its_checkpoint_with_the_mode_open_gives(tmp_path, capsys, isnet_weights, umask_022):
    out = tmp_path / "is5net.safetensors"
    assert main(["convert-isnet", str(isnet_weights), str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == umask_022


def test_every_safetensors_the_library_writes_has_the_mode_open_gives(tmp_path, umask_022):
    from is5net.checkpoint import save_refiner
    from tiny import make_tiny_refiner

    path = tmp_path / "r.safetensors"
    save_refiner(make_tiny_refiner(5), path)
    assert stat.S_IMODE(path.stat().st_mode) == umask_022


# --- c. an -o that holds the inputs -------------------------------------------------------------------------

HOLDING = {
    "-o the inputs' parent": ("in/sub", "in"),
    "-o the current folder": ("in/sub", "."),
    "a pattern under -o": ("in/sub/*.jpg", "in"),
    "-o the input folder itself": ("in/sub", "in/sub"),
}


@pytest.mark.parametrize("given, out", HOLDING.values(), ids=HOLDING.keys())
def test_an_output_folder_that_holds_the_inputs_drops_only_earlier_outputs(
    tmp_path, capsys, monkeypatch, tiny_refiner_checkpoint, given, out
):
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        _photo(tmp_path / "in" / "sub" / f"p{i}.jpg", seed=i)  # the masks are .png: beside them in one row
    box = ["--box", "8,8,56,56"]
    rc, lines = _predict(capsys, tiny_refiner_checkpoint, given, *box, "-o", out)
    assert rc == 0 and "2 masks for 2 image(s)" in lines[-1], lines
    # The rerun finds the same two photos, not the masks the first run wrote beside or above them.
    rc, lines = _predict(capsys, tiny_refiner_checkpoint, given, *box, "-o", out)
    assert rc == 0 and "2 already done" in lines[-1], lines
    assert len(json.loads((tmp_path / out / "index.json").read_text())) == 2


# --- e. links where is5net keeps its records ----------------------------------------------------------------

LINKED = ["index.jsonl", "index.json", "index.part-0.jsonl"]


@pytest.mark.parametrize("record", LINKED)
def test_a_link_in_place_of_the_runs_records_is_refused_and_its_target_untouched(
    tmp_path, capsys, tiny_refiner_checkpoint, record
):
    _photo(tmp_path / "in" / "p.png")
    target = tmp_path / "someone_elses.txt"
    target.write_text("precious\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / record).symlink_to(target)
    rc, lines = _predict(capsys, tiny_refiner_checkpoint, tmp_path / "in", "--box", "8,8,56,56", "-o", tmp_path / "out")
    assert rc == 2 and len(lines) == 1 and "symbolic link" in lines[0] and record in lines[0], lines
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [record]


def test_training_log_refuses_a_link_too(tmp_path):
    from is5net.errors import IS5NetError
    from is5net.io import open_append

    target = tmp_path / "other.csv"
    target.write_text("x\n")
    (tmp_path / "log.csv").symlink_to(target)
    with pytest.raises(IS5NetError, match="symbolic link"):
        open_append(tmp_path / "log.csv")
    assert target.read_text() == "x\n"


# --- d. a full disk -----------------------------------------------------------------------------------------

FULL_DISK = {
    # (photos as (name, side, noisy), file size limit in bytes, --save): the limit stops one file of the run
    "an image's file": ([("a.png", 48, False), ("b.png", 160, True), ("c.png", 48, False)], 40_000, "cutout"),
    "the journal's append": ([(f"p{i:02d}.png", 32, False) for i in range(12)], 2_500, "mask"),
}


def _limited(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # as `ulimit -f`: writes past it fail

    return apply


@pytest.mark.parametrize("photos, limit, save", FULL_DISK.values(), ids=FULL_DISK.keys())
def test_a_full_disk_is_one_line_naming_the_file_and_keeps_what_was_finished(
    tmp_path, tiny_refiner_checkpoint, photos, limit, save
):
    for i, (name, side, noisy) in enumerate(photos):
        _photo(tmp_path / "in" / name, side=side, seed=i, noisy=noisy)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "is5net", "predict", str(tmp_path / "in"), "--box", "4,4,30,30", "--save", save,
            "--foreground", "raw", "--checkpoint", str(tiny_refiner_checkpoint), "--stage1", "grabcut",
            "--backend", "torch", "-q", "-o", str(out)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, preexec_fn=_limited(limit))
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("is5net: ")]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and len(lines) == 1 and "cannot write" in lines[0], proc.stderr
    assert str(out) in lines[0]  # the file is named
    entries = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]  # whole lines only
    assert entries, "the images finished before the failure are listed"
    for entry in entries:
        assert all((out / name).is_file() for name in entry["outputs"])
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
