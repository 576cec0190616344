"""`is5net convert-isnet`: 3-channel IS-Net weights in, 5-channel IS5Net weights out, the same outputs; it
never writes over its input (issue 13, fault a) and checks --input-size (fault b)."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import lines_of
from is5net.checkpoint import isnet_to_is5net_state_dict, load_refiner
from is5net.cli import main
from tiny import make_tiny_refiner


def test_three_to_five_conversion_keeps_outputs(tmp_path):
    isnet = make_tiny_refiner(3)
    torch.save(isnet.state_dict(), tmp_path / "isnet.pth")
    out = tmp_path / "is5net.safetensors"
    assert main(["convert-isnet", str(tmp_path / "isnet.pth"), str(out)]) == 0
    is5 = load_refiner(out)
    assert is5.in_ch == 5
    rgb = torch.randn(2, 3, 64, 64)
    prompts = torch.rand(2, 2, 64, 64)  # any coarse mask and box: the new channels start at zero
    with torch.no_grad():
        expected = isnet(rgb)[0]
        got = is5(torch.cat((rgb, prompts), 1))[0]
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
    sd = isnet_to_is5net_state_dict(isnet.state_dict())
    assert torch.count_nonzero(sd["conv_in.weight"][:, 3:]) == 0


# --- a. convert-isnet never overwrites its input --------------------------------------------------------


def test_convert_refuses_to_write_over_its_input_through_any_path_or_link(tmp_path, run_cli, isnet_weights):
    original = isnet_weights.read_bytes()
    (tmp_path / "sym.safetensors").symlink_to(isnet_weights)
    os.link(isnet_weights, tmp_path / "hard.safetensors")
    same = [
        isnet_weights,
        isnet_weights.parent / ".." / "w" / "isnet.safetensors",
        tmp_path / "sym.safetensors",
        tmp_path / "hard.safetensors",
    ]
    for output in same:
        rc, err = run_cli("convert-isnet", isnet_weights, output)
        assert rc == 2, (output, err)
        assert len(lines_of(err)) == 1 and "is the input checkpoint" in err and "Traceback" not in err
        assert isnet_weights.read_bytes() == original, output
    # ... and the other way round: the input named through a link, the output its real path
    rc, err = run_cli("convert-isnet", tmp_path / "sym.safetensors", isnet_weights)
    assert rc == 2 and isnet_weights.read_bytes() == original
    assert (tmp_path / "sym.safetensors").is_symlink()
    # a new file is fine
    rc, err = run_cli("convert-isnet", isnet_weights, tmp_path / "is5net.safetensors")
    assert rc == 0, err
    assert load_refiner(tmp_path / "is5net.safetensors").in_ch == 5


# --- b. convert-isnet --input-size is checked -------------------------------------------------------------


@pytest.mark.parametrize("size", ["0", "-5", "1000", "16", "33"])
def test_convert_refuses_an_input_size_the_refiner_cannot_run_at(tmp_path, run_cli, isnet_weights, size):
    out = tmp_path / "out.safetensors"
    rc, err = run_cli("convert-isnet", isnet_weights, out, f"--input-size={size}")
    assert rc == 2, err
    assert len(lines_of(err)) == 1 and "--input-size" in err and "multiple of 32" in err
    assert not out.exists()
