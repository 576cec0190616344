"""is5net predict over folders (issue 16): the tree mirrored, the journal (resume, SIGKILL, torn lines), bad
images in the middle, torchrun sharding, --combine, COCO RLE, CSV boxes, cut-out colours."""

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

from is5net.batch import Journal, decode_ahead, discover, is_done, remove_stale_temporaries
from is5net.cli import main
from is5net.errors import IS5NetError


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def _lines(err: str) -> list[str]:
    return [ln for ln in err.strip().splitlines() if ln]


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
    tmp_path, capsys, coffee_rgb, tiny_refiner_checkpoint
):
    src, coarse = _folder(tmp_path, coffee_rgb, ["a.png", "b.png", "d.png", "e.png"])
    whole = (src / "a.png").read_bytes()
    (src / "c.png").write_bytes(whole[: len(whole) // 2])  # truncated: the header reads, the pixels do not
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(coarse / "c.png")
    out = tmp_path / "out"
    rc, err = _run(
        capsys,
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
    lines = _lines(err)
    assert "Traceback" not in err
    errors = [ln for ln in lines if ln.startswith("is5net predict: error:")]
    assert len(errors) == 1 and str(src / "c.png") in errors[0]
    assert "1 of 5 image(s) failed" in lines[-1] and str(src / "c.png") in lines[-1]
    assert _tree(out) == ["a.png", "b.png", "d.png", "e.png", "index.json", "index.jsonl"]
    assert [e["input"] for e in _journal(out)] == ["a.png", "b.png", "d.png", "e.png"]
    assert [e["file"] for e in json.loads((out / "index.json").read_text())] == ["a.png", "b.png", "d.png", "e.png"]
    # The rerun skips the four and tries the bad one again: still exit 1, nothing rewritten.
    stamps = {p: (out / p).stat().st_mtime_ns for p in ("a.png", "e.png")}
    rc, err = _run(
        capsys,
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
    assert rc == 1 and "1 of 1 image(s) failed" in _lines(err)[-1] and "4 already done" in err
    assert {p: (out / p).stat().st_mtime_ns for p in stamps} == stamps
    assert len(_journal(out)) == 4


def test_the_input_tree_is_mirrored_and_a_rerun_skips_what_is_done(
    tmp_path, capsys, coffee_rgb, tiny_refiner_checkpoint
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
    rc, err = _run(capsys, "predict", src, *base, "-o", tmp_path / "flat")
    assert rc == 0, err
    assert _tree(tmp_path / "flat") == ["index.json", "index.jsonl", "top.png", "top_cutout.png"]
    out = tmp_path / "out"
    rc, err = _run(capsys, "predict", src, "--recursive", *base, "-o", out)
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
    rc, err = _run(capsys, "predict", f"{src}/**/*.*", "--recursive", *base, "-o", out)
    assert rc == 0 and "3 already done" in err and "for 0 image(s)" in err, err
    assert (out / "sub/x.png").stat().st_mtime_ns == stamp
    rc, err = _run(capsys, "predict", src, "--recursive", *base, "-o", out, "--overwrite")
    assert rc == 0 and "for 3 image(s)" in err
    assert (out / "sub/x.png").stat().st_mtime_ns != stamp
    assert [e["input"] for e in _journal(out)] == ["sub/deeper/y.png", "sub/x.jpg", "top.png"]  # no duplicates
    # A deleted output is redone; other options name other files, so those images are redone too.
    (out / "top.png").unlink()
    rc, err = _run(capsys, "predict", src, "--recursive", *base, "-o", out)
    assert rc == 0 and "2 already done" in err and (out / "top.png").is_file()


def test_discovery_globs_and_usage_mistakes(tmp_path, capsys, coffee_rgb, tiny_refiner_checkpoint):
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
    rc, err = _run(
        capsys,
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
    assert rc == 2 and len(_lines(err)) == 1 and "would write the same outputs" in err
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


def test_two_torchrun_processes_equal_one_process(tmp_path, capsys, coffee_rgb, tiny_refiner_checkpoint):
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
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "is5net.cli",
        "predict",
        *base,
        "-o",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = [ln for ln in proc.stderr.splitlines() if ln.startswith("is5net predict:")]
    assert len(summary) == 1 and "10 masks and cutouts for 5 image(s)" in summary[0] and "2 processes" in summary[0]
    rc, err = _run(capsys, "predict", *base, "-o", tmp_path / "one")
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


# --- several objects per photo ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode, numpy 2
def test_label_png_union_and_rle_round_trip(tmp_path, capsys, image_file, tiny_sam_checkpoint, tiny_refiner_checkpoint):
    from pycocotools import mask as coco_mask

    base = [
        image_file,
        "--box",
        "60,40,230,170",
        "--box",
        "20,20,160,120",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--sam-checkpoint",
        tiny_sam_checkpoint,
        "--device",
        "cpu",
    ]
    outs = {c: tmp_path / c for c in ("separate", "union", "labels")}
    for combine, out in outs.items():
        rc, err = _run(capsys, "predict", *base, "--combine", combine, "-o", out)
        assert rc == 0, err
    m0, m1 = (np.asarray(Image.open(outs["separate"] / f"coffee_{k}.png")) for k in (0, 1))
    assert sorted(p.name for p in outs["union"].iterdir()) == ["coffee.png", "index.json"]
    assert np.array_equal(np.asarray(Image.open(outs["union"] / "coffee.png")), np.maximum(m0, m1))
    labels = np.asarray(Image.open(outs["labels"] / "coffee.png"))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    fg0, fg1 = m0 > 127, m1 > 127
    assert np.array_equal(labels == 0, ~(fg0 | fg1))
    assert np.all(labels[fg0 & ~fg1] == 1) and np.all(labels[fg1 & ~fg0] == 2)
    both = fg0 & fg1
    assert both.any()  # the boxes overlap, so the rule is exercised
    assert np.all(labels[both & (m0 > m1)] == 1) and np.all(labels[both & (m1 > m0)] == 2)
    index = json.loads((outs["labels"] / "index.json").read_text())
    assert [(e["file"], e["label"]) for e in index] == [("coffee.png", 1), ("coffee.png", 2)]
    # COCO RLE in the index: pycocotools decodes it to each box's foreground, in every mode.
    for out in outs.values():
        entries = json.loads((out / "index.json").read_text())
        for entry, fg in zip(entries, (fg0, fg1), strict=True):
            rle = {"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode()}
            assert np.array_equal(coco_mask.decode(rle).astype(bool), fg)
            assert coco_mask.area(rle) == fg.sum()


def test_label_map_rule_and_sixteen_bits():
    from is5net.inference.outputs import label_map

    fg = [np.array([[1, 1, 0, 0]], bool), np.array([[0, 1, 1, 0]], bool), np.array([[0, 1, 1, 0]], bool)]
    conf = [np.array([[0.9, 0.6, 0.0, 0.0]]), np.array([[0.0, 0.7, 0.8, 0.0]]), np.array([[0.0, 0.7, 0.8, 0.0]])]
    assert label_map(fg, conf).tolist() == [[1, 2, 2, 0]]  # 0.7 beats 0.6; box 1 and 2 tie: the earlier
    many = label_map([np.eye(300, dtype=bool)[k : k + 1] for k in range(300)], [np.ones((1, 300))] * 300)
    assert many.dtype == np.uint16 and many.max() == 300 and many[0, 299] == 300


def test_csv_boxes(tmp_path, capsys, image_file, tiny_refiner_checkpoint):
    full = tmp_path / "coarse"
    full.mkdir()
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(full / "coffee.png")
    csv = tmp_path / "boxes.csv"
    csv.write_text("file,x0,y0,x1,y1\ncoffee.jpg,10,20,60,80\n\ncoffee.jpg, 0,0,30,30\n")
    rc, err = _run(
        capsys,
        "predict",
        image_file,
        "--boxes",
        csv,
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        full,
        "-o",
        tmp_path / "o",
    )
    assert rc == 0, err
    assert [e["box"] for e in json.loads((tmp_path / "o" / "index.json").read_text())] == [
        [10, 20, 60, 80],
        [0, 0, 30, 30],
    ]
    for text, needle in (
        ("coffee.jpg,1,2,3\n", "line 1: expected 5 fields"),
        ("file,x0,y0,x1,y1\ncoffee.jpg,1,2,x,4\n", "line 2: x0,y0,x1,y1 must be numbers"),
        ("coffee.jpg,1,2,inf,4\n", "must be finite"),
        ("", "no rows"),
    ):
        csv.write_text(text)
        rc, err = _run(
            capsys,
            "predict",
            image_file,
            "--boxes",
            csv,
            "--checkpoint",
            tiny_refiner_checkpoint,
            "--coarse-mask",
            full,
            "-o",
            tmp_path / "o2",
        )
        assert rc == 2 and len(_lines(err)) == 1 and needle in err and str(csv) in err, err
        assert not (tmp_path / "o2").exists()


# --- cut-outs ------------------------------------------------------------------------------------------------


def _matte_scene():
    """A red object with a soft edge photographed against green: I = a*F + (1-a)*B."""
    h, w = 48, 64
    alpha = np.zeros((h, w), np.float64)
    ramp = np.clip((np.arange(w) - 24) / 16.0, 0, 1)  # opaque from x=40, transparent up to x=24
    alpha[:] = ramp
    fg = np.array([220.0, 40.0, 30.0])
    bg = np.array([20.0, 200.0, 40.0])
    image = alpha[..., None] * fg + (1 - alpha[..., None]) * bg
    return np.rint(image).astype(np.uint8), np.rint(alpha * 255).astype(np.uint8), fg, bg


def test_cutout_colours_at_an_edge_lose_the_old_background():
    from is5net.inference.outputs import composite, cutout_rgba, foreground_colours

    image, alpha, fg, _ = _matte_scene()
    edge = (alpha > 30) & (alpha < 225)
    raw = cutout_rgba(image, alpha)  # what the server answers: the photo's pixels
    assert raw[..., 1][edge].mean() > 80  # green fringe: the old background mixed in
    est = cutout_rgba(image, alpha, estimate_foreground=True)
    assert np.array_equal(est[..., 3], alpha)
    assert np.abs(est[..., :3][edge].astype(float) - fg).max() < 20  # the object's own red
    assert np.array_equal(est[alpha == 255], raw[alpha == 255])  # opaque pixels are the photo's
    # Over a blue background the edge is red blended into blue, with no green from the old background.
    blue = (0, 0, 255)
    over = composite(foreground_colours(image, alpha), alpha, blue)
    a = alpha[edge].astype(float)[:, None] / 255.0
    expected = a * fg + (1 - a) * np.array(blue, float)
    assert over.shape == image.shape and np.abs(over[edge] - expected).max() < 12
    naive = composite(image, alpha, blue)
    assert naive[..., 1][edge].mean() > 40 > over[..., 1][edge].mean()
    assert np.array_equal(foreground_colours(image, np.where(alpha > 127, 255, 0).astype(np.uint8)), image)


def test_cutout_command_with_background_colour_and_image(
    tmp_path, capsys, image_file, tiny_refiner_checkpoint, coffee_rgb
):
    full = tmp_path / "c.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(full)
    base = [
        image_file,
        "--box",
        "60,40,230,170",
        "--checkpoint",
        tiny_refiner_checkpoint,
        "--coarse-mask",
        full,
        "--save",
        "both",
        "--device",
        "cpu",
    ]
    rc, err = _run(capsys, "predict", *base, "-o", tmp_path / "raw", "--foreground", "raw")
    assert rc == 0, err
    from is5net.inference.outputs import cutout_rgba

    mask = np.asarray(Image.open(tmp_path / "raw" / "coffee.png"))
    raw = np.asarray(Image.open(tmp_path / "raw" / "coffee_cutout.png"))
    assert np.array_equal(raw, cutout_rgba(np.asarray(Image.open(image_file).convert("RGB")), mask))  # serve's
    rc, err = _run(capsys, "predict", *base, "-o", tmp_path / "est")
    assert rc == 0, err
    est = np.asarray(Image.open(tmp_path / "est" / "coffee_cutout.png"))
    soft = (mask > 0) & (mask < 255)
    assert np.array_equal(est[..., 3], mask) and not np.array_equal(est[..., :3][soft], raw[..., :3][soft])
    assert np.array_equal(est[mask == 255], raw[mask == 255])
    rc, err = _run(capsys, "predict", *base, "-o", tmp_path / "green", "--background", "0,255,0")
    assert rc == 0, err
    green = Image.open(tmp_path / "green" / "coffee_cutout.png")
    assert green.mode == "RGB" and green.size == (300, 200)
    g = np.asarray(green)
    assert np.array_equal(g[mask == 0], np.tile([0, 255, 0], ((mask == 0).sum(), 1)))
    Image.fromarray(coffee_rgb[::-1]).resize((150, 100)).save(tmp_path / "bg.png")
    rc, err = _run(capsys, "predict", *base, "-o", tmp_path / "img", "--background", tmp_path / "bg.png")
    assert rc == 0 and Image.open(tmp_path / "img" / "coffee_cutout.png").size == (300, 200)
    for bad in ("notacolour", "300,0,0"):
        rc, err = _run(capsys, "predict", *base, "-o", tmp_path / "bad", "--background", bad)
        assert rc == 2 and "--background" in err and len(_lines(err)) == 1 and not (tmp_path / "bad").exists()
