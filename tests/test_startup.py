"""Start-up: help and version import nothing heavy and return fast; Ctrl-C at any moment is one line and 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from is5net.cli import COMMANDS, main

HEAVY = (
    "torch",
    "torchvision",
    "numpy",
    "cv2",
    "skimage",
    "scipy",
    "py_sod_metrics",
    "PIL",
    "segment_anything",
    "safetensors",
    "tqdm",
    "yaml",
)

# Runs the CLI in a fresh interpreter as `python -m is5net` does, then reports which heavy modules got imported.
_PROBE = r"""
import json, sys
watched = json.loads(sys.argv[2])
sys.argv = ["is5net", *json.loads(sys.argv[1])]
from is5net.cli import main
try:
    code = main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in watched if m in sys.modules)
print("\n" + json.dumps({"code": code, "heavy": heavy}))
"""


def _probe(argv: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(HEAVY)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv", [["--help"], ["--version"], *[[name, "--help"] for name in COMMANDS]], ids=lambda a: " ".join(a)
)
def test_help_and_version_import_nothing_heavy(argv):
    result = _probe(argv)
    assert result["code"] == 0
    assert result["heavy"] == [], f"`is5net {' '.join(argv)}` imported {result['heavy']}"


def test_help_returns_in_well_under_a_second():
    # Best of three (a shared CI machine may stall one run); with torch imported this took 2-4 s.
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "is5net", "--help"], capture_output=True, text=True, timeout=120)
        walls.append(time.perf_counter() - t0)
        assert proc.returncode == 0 and "predict" in proc.stdout
    assert min(walls) < 0.5, walls


def test_help_on_every_command(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_every_command_module_has_a_run_and_its_arguments_parse():
    import importlib

    from is5net.cli import build_parser

    parser = build_parser()
    for name, command in COMMANDS.items():
        module = importlib.import_module(command.module)
        assert callable(module.run), name
        # Issue 24: one file per subcommand declares its arguments and runs them (light at import: see above).
        assert command.arguments is module.add_arguments, f"{command.module} does not declare its own arguments"
    args = parser.parse_args(["predict", "x.jpg", "--box", "1,2,3,4", "--checkpoint", "c", "--max-pixels", "10"])
    assert args.command == "predict" and args.box == ["1,2,3,4"] and args.max_pixels == 10


def test_the_light_copies_of_names_agree_with_their_owners():
    from is5net import checkpoint, io
    from is5net import defaults as cli_args  # the light home of the names --help shows
    from is5net.data import sam_cache
    from is5net.eval import metrics
    from is5net.inference import stage1

    assert cli_args.SAM_TYPES == stage1.SAM_TYPES
    assert cli_args.MASK_CHOICES == stage1.MASK_CHOICES
    assert cli_args.ALL_METRICS == metrics.ALL_METRICS
    assert cli_args.DEFAULT_INPUT_SIZE == checkpoint.DEFAULT_INPUT_SIZE
    assert cli_args.DEFAULT_CACHE_NAME == sam_cache.DEFAULT_CACHE_NAME
    assert cli_args.MAX_PIXELS_ENV == io.MAX_PIXELS_ENV


# --- h. Ctrl-C ---------------------------------------------------------------------------------------------


def test_interrupt_while_building_the_parser_or_importing_the_command_is_one_line(monkeypatch, capsys):
    import importlib

    from is5net import cli

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "train", cli.COMMANDS["train"]._replace(arguments=interrupted))
    assert main(["train", "--help"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["is5net train: interrupted"]
    monkeypatch.undo()

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert main(["check-data", "somewhere"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["is5net check-data: interrupted"]


@pytest.fixture(scope="module")
def predict_run(tmp_path_factory):
    """A predict run that imports torch, loads a refiner and segments an image, and how long it takes whole."""
    from is5net.checkpoint import save_refiner
    from tiny import make_tiny_refiner

    d = tmp_path_factory.mktemp("sigint")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "img.png")
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(d / "coarse.png")
    save_refiner(make_tiny_refiner(5, input_size=64), d / "ref.safetensors")
    argv = [
        sys.executable,
        "-m",
        "is5net",
        "predict",
        str(d / "img.png"),
        "--box",
        "1,1,40,40",
        "--checkpoint",
        str(d / "ref.safetensors"),
        "--coarse-mask",
        str(d / "coarse.png"),
        "-o",
        str(d / "out"),
        "--device",
        "cpu",
    ]
    walls = []
    for _ in range(2):  # the faster of two: the first may pay for a cold file cache
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        walls.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr
    return argv, min(walls)


# Not later than 0.6: a signal after the run's last line, while the interpreter shuts down, kills it by SIGINT
# (what a shell reports as 130 too), with nothing left to interrupt.
@pytest.mark.parametrize("moment", [0.05, 0.2, 0.4, 0.6])
def test_ctrl_c_at_any_moment_of_start_up_is_one_line_and_130(predict_run, moment):
    # The signal lands at a fraction of the whole run: while importing is5net, torch, the predictor, while
    # loading the refiner (the old code printed a long traceback from inside whatever was importing).
    argv, whole = predict_run
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(moment * whole)
    if proc.poll() is not None:
        pytest.fail(f"the run ended before the signal at {moment * whole:.2f}s of {whole:.2f}s")
    # A run faster than the reference may already have written its result line: what it printed before the
    # signal stays, and the interrupt adds exactly one line.
    before = _printed_so_far(proc.stderr)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = (before + rest).decode()
    assert "Traceback" not in err, err
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip().splitlines() == before.decode().strip().splitlines() + ["is5net predict: interrupted"], err


def _printed_so_far(stream) -> bytes:
    """What a child has written to ``stream`` (a pipe) up to now, without waiting for more."""
    import os
    import select

    data = b""
    while select.select([stream], [], [], 0)[0]:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        data += chunk
    return data
