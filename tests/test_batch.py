"""is5net predict over folders (issue 16): discovery, the tree mirrored, the journal (resume, SIGKILL, torn
lines), bad images in the middle, decoding ahead, torchrun sharding. What predict does with each image (boxes,
--combine, cut-outs) is in test_cli_predict.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import lines_of, torchrun
from is5net.batch import Journal, decode_ahead, discover, is_done, remove_stale_temporaries
from is5net.errors import IS5NetError


def _journal(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "index.jsonl").read_text().splitlines()]


def _photo(coffee_rgb, k: int) -> np.ndarray:
    """A different 200x300 photo per k (shifted coffee), so outputs differ between images."""
    return np.roll(coffee_rgb, shift=7 * k, axis=1)


def _folder(tmp_path, coffee_rgb, names, size=None) -> tuple[Path, Path]:
    """Images at ``names`` (paths under the folder) and a coarse-mask folder with one full mask per stem."""
    src, coarse = tmp_path / "photos", tmp_path / "coarse"
    coarse.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = _photo(coffee_rgb, k)
        if size is not None:
            rgb = np.asarray(Image.fromarray(rgb).resize(size))
        Image.fromarray(rgb).save(path)
        Image.fromarray(np.full(rgb.shape[:2], 255, np.uint8)).save(coarse / f"{Path(name).stem}.png")
    return src, coarse


def _tree(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


# --- a folder: the bad image in the middle, the tree, the rerun ---------------------------------------------


def test_folder_run_with_a_corrupt_image_in_the_middle_writes_the_others_and_names_it(
    tmp_path, run_cli, coffee_rgb, tiny_refiner_checkpoint
):
    src, coarse = _folder(tmp_path, coffee_rgb, ["a.png", "b.png", "d.png", "e.png"])
    whole = (src / "a.png").read_bytes()
    (src / "c.png").write_bytes(whole[: len(whole) // 2])  # truncated: the header reads, the pixels do not
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse / "c.png")
    out = tmp_path / "out"
    rc, err = run_cli(
        "predict",
        src,
        "--box",
        "10,10,200,150",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        out,
        "--device",
        "cpu",
    )
    assert rc == 1, err
    lines = lines_of(err)
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("is5net predict: error:")]
    assert len(errors) == 1 and str(src / "c.png") in errors[0]
    assert "1 of 5 image(s) failed" in lines[-1] and str(src / "c.png") in lines[-1]
    assert _tree(out) == ["a.png", "b.png", "d.png", "e.png", "index.json", "index.jsonl"]
    assert [e["input"] for e in _journal(out)] == ["a.png", "b.png", "d.png", "e.png"]
    assert [e["file"] for e in json.loads((out / "index.json").read_text())] == ["a.png", "b.png", "d.png", "e.png"]
    # The rerun skips the four and tries the bad one again: still exit 1, nothing rewritten.
    stamps = {p: (out / p).stat().st_mtime_ns for p in ("a.png", "e.png")}
    rc, err = run_cli(
        "predict",
        src,
        "--box",
        "10,10,200,150",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        out,
        "--device",
        "cpu",
    )
    assert rc == 1 and "1 of 1 image(s) failed" in lines_of(err)[-1] and "4 already done" in err
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps
    assert len(_journal(out)) == 4


def test_the_input_tree_is_mirrored_and_a_rerun_skips_what_is_done(
    tmp_path, run_cli, coffee_rgb, tiny_refiner_checkpoint
):
    src, coarse = _folder(tmp_path, coffee_rgb, ["top.png", "sub/x.jpg", "sub/deeper/y.png", "sub/notes.txt"][:3])
    (src / "sub" / "notes.txt").write_text("not an image: not picked up")
    base = [
        "--box",
        "10,10,200,150",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "--device",
        "cpu",
        "--save",
        "both",
    ]
    rc, err = run_cli("predict", src, *base, "-o", tmp_path / "flat")
    assert rc == 0, err
    assert _tree(tmp_path / "flat") == ["index.json", "index.jsonl", "top.png", "top_cutout.png"]
    out = tmp_path / "out"
    rc, err = run_cli("predict", src, "--recursive", *base, "-o", out)
    assert rc == 0, err
    assert _tree(out) == [
        "index.json",
        "index.jsonl",
        "sub/deeper/y.png",
        "sub/deeper/y_cutout.png",
        "sub/x.png",
        "sub/x_cutout.png",
        "top.png",
        "top_cutout.png",
    ]
    entries = _journal(out)
    assert [e["input"] for e in entries] == ["sub/deeper/y.png", "sub/x.jpg", "top.png"]
    assert entries[1]["outputs"] == ["sub/x.png", "sub/x_cutout.png"] and entries[1]["image"] == str(src / "sub/x.jpg")
    assert entries[1]["boxes"] == [[10, 10, 200, 150]] and entries[1]["time"] and entries[1]["seconds"] >= 0
    # The same run again does nothing; a quoted glob of the same files is the same batch; --overwrite redoes.
    stamp = (out / "sub/x.png").stat().st_mtime_ns
    rc, err = run_cli("predict", f"{src}/**/*.*", "--recursive", *base, "-o", out)
    assert rc == 0 and "3 already done" in err and "for 0 image(s)" in err, err
    assert (out / "sub/x.png").stat().st_mtime_ns == stamp
    rc, err = run_cli("predict", src, "--recursive", *base, "-o", out, "--overwrite")
    assert rc == 0 and "for 3 image(s)" in err
    assert (out / "sub/x.png").stat().st_mtime_ns != stamp
    assert [e["input"] for e in _journal(out)] == ["sub/deeper/y.png", "sub/x.jpg", "top.png"]  # no duplicates
    # A deleted output is redone; other options name other files, so those images are redone too.
    (out / "top.png").unlink()
    rc, err = run_cli("predict", src, "--recursive", *base, "-o", out)
    assert rc == 0 and "2 already done" in err and (out / "top.png").is_file()


def test_discovery_globs_and_usage_mistakes(tmp_path, run_cli, coffee_rgb, tiny_refiner_checkpoint):
    src, coarse = _folder(tmp_path, coffee_rgb, ["a.png", "b.jpg", "s/c.png"])
    found = discover([f"{src}/*.png", src / "b.jpg", src / "a.png"])
    assert [(str(i.rel), i.path.name) for i in found.items] == [("a.png", "a.png"), ("b.jpg", "b.jpg")]
    assert found.batch and found.named == [src / "b.jpg", src / "a.png"]
    found = discover([f"{src}/**/*.png"], recursive=True)
    assert [str(i.rel) for i in found.items] == ["a.png", "s/c.png"]
    assert not discover([src / "a.png"]).batch
    (src / "s" / "out").mkdir()  # an output folder inside the input folder: its masks are not photos
    Image.fromarray(coffee_rgb).save(src / "s" / "out" / "c.png")
    assert [str(i.rel) for i in discover([src], recursive=True, exclude=src / "s" / "out").items] == [
        "a.png",
        "b.jpg",
        "s/c.png",
    ]
    assert len(discover([src], recursive=True).items) == 4
    with pytest.raises(IS5NetError, match="no image file matches"):
        discover([f"{src}/*.gif"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(IS5NetError, match="no image files in this folder"):
        discover([tmp_path / "empty"])
    # Two images whose outputs collide, a --boxes file for some images only: one line, exit 2 / a failed image.
    Image.fromarray(coffee_rgb).save(src / "a.jpg")
    rc, err = run_cli(
        "predict",
        src,
        "--box",
        "1,1,50,50",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        coarse,
        "-o",
        tmp_path / "o",
    )
    assert rc == 2 and len(lines_of(err)) == 1 and "would write the same outputs" in err
    assert not (tmp_path / "o").exists()


# --- SIGKILL ---------------------------------------------------------------------------------------------


def test_sigkill_mid_run_then_rerun_completes_with_no_duplicate_or_partial_entry(
    tmp_path, coffee_rgb, tiny_refiner_checkpoint
):
    names = [f"img_{k:03d}.png" for k in range(60)]
    src, coarse = _folder(tmp_path, coffee_rgb, names, size=(96, 64))
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "is5net",
        "predict",
        str(src),
        "--box",
        "5,5,80,60",
        "--checkpoint",
        str(tiny_refiner_checkpoint),
        "--coarse-mask",
        str(coarse),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--save",
        "both",
        "-q",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    journal = out / "index.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done_then = journal.read_bytes().count(b"\n")
    assert 5 <= done_then < len(names)
    # What a kill in the middle of a write leaves, made sure of: a torn line and an unrenamed temporary.
    with open(journal, "ab") as f:
        f.write(b'{"input":"img_059.png","image":"x","outp')
    (out / ".img_059.png.0123abcd.tmp").write_bytes(b"\x89PNG half")
    rerun = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done_then} already done" in rerun.stderr
    entries = _journal(out)  # every line parses: the torn one is gone
    assert [e["input"] for e in entries] == names  # each image once, in order
    expected = sorted(
        [*(n for n in names), *(n.replace(".png", "_cutout.png") for n in names), "index.json", "index.jsonl"]
    )
    assert _tree(out) == expected  # no temporary, nothing else
    for name in names[::7]:
        assert np.asarray(Image.open(out / name)).shape == (64, 96)
        assert Image.open(out / name.replace(".png", "_cutout.png")).mode == "RGBA"


def test_journal_drops_a_torn_line_and_appends_on_a_fresh_one(tmp_path):
    j = Journal(tmp_path)
    j.append({"input": "a.png", "outputs": ["a.png"]})
    with open(j.path, "ab") as f:
        f.write(b'{"input": "b.png", "outp')  # a kill in the middle of the write
    j.append({"input": "c.png", "outputs": ["c.png"]})
    latest, dropped = j.entries()
    assert list(latest) == ["a.png", "c.png"] and dropped == 1
    j.append({"input": "a.png", "outputs": ["a.png", "a_cutout.png"]})  # redone with other outputs
    assert [e["input"] for e in j.compact(["a.png", "b.png", "c.png"])] == ["a.png", "c.png"]
    assert [json.loads(ln)["outputs"] for ln in j.path.read_text().splitlines()] == [
        ["a.png", "a_cutout.png"],
        ["c.png"],
    ]
    (tmp_path / "a.png").write_bytes(b"x")
    assert not is_done(j.entries()[0]["a.png"], ["a.png", "a_cutout.png"], tmp_path)  # a_cutout.png is missing
    (tmp_path / "a_cutout.png").write_bytes(b"x")
    assert is_done(j.entries()[0]["a.png"], ["a.png", "a_cutout.png"], tmp_path)
    assert not is_done(j.entries()[0]["a.png"], ["a.png"], tmp_path)  # other options: other files
    assert not is_done(j.entries()[0]["a.png"], ["a.png", "a_cutout.png"], tmp_path, combine="labels")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".a.png.deadbeef.tmp").write_bytes(b"")
    (tmp_path / "s" / ".keep.tmp").write_bytes(b"")  # not one of ours
    assert remove_stale_temporaries(tmp_path) == 1 and (tmp_path / "s" / ".keep.tmp").exists()


def test_decode_ahead_runs_in_another_thread_keeps_order_and_hands_over_errors():
    main_thread = threading.get_ident()
    threads = set()

    def load(k):
        threads.add(threading.get_ident())
        if k == 2:
            raise IS5NetError("bad image 2")
        return k * 10

    got = list(decode_ahead(list(range(6)), load, depth=2))
    assert [(k, v) for k, v, e in got if e is None] == [(0, 0), (1, 10), (3, 30), (4, 40), (5, 50)]
    assert [str(e) for _, _, e in got if e is not None] == ["bad image 2"]
    assert threads and main_thread not in threads
    threads.clear()
    assert [v for _, v, _ in decode_ahead([1, 3], load, depth=0)] == [10, 30] and threads == {main_thread}
    # A consumer that stops early stops the thread too.
    started = []
    gen = decode_ahead(list(range(1000)), lambda k: started.append(k) or k, depth=2)
    next(gen)
    gen.close()
    time.sleep(0.3)
    assert len(started) < 10
    assert not [t for t in threading.enumerate() if t.name == "is5net-decode"]


# --- torchrun --------------------------------------------------------------------------------------------


def test_two_torchrun_processes_equal_one_process(tmp_path, run_cli, coffee_rgb, tiny_refiner_checkpoint):
    names = ["a.png", "b.png", "sub/c.png", "sub/d.png", "e.png"]
    src, coarse = _folder(tmp_path, coffee_rgb, names, size=(96, 64))
    base = [
        str(src),
        "--recursive",
        "--box",
        "5,5,80,60",
        "--box",
        "0,0,40,40",
        "--checkpoint",
        str(tiny_refiner_checkpoint),
        "--coarse-mask",
        str(coarse),
        "--device",
        "cpu",
        "--save",
        "both",
        "-q",
    ]
    proc = torchrun("predict", *base, "-o", tmp_path / "two", cpu_only=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = [ln for ln in proc.stderr.splitlines() if ln.startswith("is5net predict:")]
    assert len(summary) == 1 and "10 masks and cutouts for 5 image(s)" in summary[0] and "2 processes" in summary[0]
    rc, err = run_cli("predict", *base, "-o", tmp_path / "one")
    assert rc == 0, err
    one, two = tmp_path / "one", tmp_path / "two"
    assert _tree(one) == _tree(two)  # one merged index, no parts left behind

    def comparable(entries):
        return [{k: v for k, v in e.items() if k not in ("seconds", "time")} for e in entries]

    assert comparable(_journal(two)) == comparable(_journal(one))
    assert json.loads((two / "index.json").read_text()) == json.loads((one / "index.json").read_text())
    for name in _tree(one):
        if name.endswith(".png"):
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
