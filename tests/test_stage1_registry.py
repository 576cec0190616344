"""The stage-1 registry: every name parses, the old flags are aliases, and every mistake is one line.

Mistakes: a bad name (the names listed), a type that contradicts the name, a checkpoint of another family
(named, with the --stage1 that fits it), a missing package (the extra named: the import is blocked with
``sys.modules[name] = None``, as when it is not installed), no weights. Through the library and the CLI.
"""

from __future__ import annotations

import sys

import pytest
import torch

from helpers import lines_of
from is5net.cli import build_parser
from is5net.defaults import STAGE1_NAMES
from is5net.errors import CheckpointError, IS5NetError
from is5net.inference.stage1 import FAMILIES, Stage1, choose_stage1, infer_sam_type, parse_name
from is5net.inference.stage1.sam2 import sam2_config
from is5net.weights import stage1_kind

T = torch.zeros(1)


def _keys(*names: str, **shaped) -> dict:
    """A state dict with just the keys (and shapes) that say which model a checkpoint holds."""
    sd = dict.fromkeys(names, T)
    sd.update({k: torch.zeros(*shape) for k, shape in shaped.items()})
    return sd


HQ_VIT_B = _keys(
    "mask_decoder.iou_token.weight", "mask_decoder.hf_token.weight", image_encoder__patch_embed__proj__weight=(768,)
)
HQ_TINY = _keys(
    "mask_decoder.iou_token.weight", "mask_decoder.hf_token.weight", "image_encoder.patch_embed.seq.0.c.weight"
)


def _fix(sd: dict) -> dict:
    return {k.replace("__", "."): v for k, v in sd.items()}


def _sam2_keys(width: int, blocks: int, v21: bool = True) -> dict:
    sd = {f"image_encoder.trunk.blocks.{i}.attn.qkv.weight": T for i in range(blocks)}
    sd["image_encoder.trunk.patch_embed.proj.weight"] = torch.zeros(width)
    sd["sam_mask_decoder.iou_token.weight"] = T
    if v21:
        sd["no_obj_embed_spatial"] = T
    return sd


def test_every_name_parses_to_a_family_and_one_of_its_types():
    for name in STAGE1_NAMES:
        family, stage_type = parse_name(name)
        assert family == "grabcut" or family in FAMILIES, name
        assert stage_type is None or stage_type in FAMILIES[family].types, name
    assert {"sam:vit_l", "hq-sam:vit_tiny", "sam2:base_plus", "grabcut"} <= set(STAGE1_NAMES)
    with pytest.raises(IS5NetError) as err:
        parse_name("sam3:huge")
    assert "--stage1 'sam3:huge': choose one of sam, sam:vit_b" in str(err.value) and "sam2:large" in str(err.value)


def test_checkpoint_keys_say_family_and_type():
    assert stage1_kind(_fix(HQ_VIT_B)) == ("hq-sam", "vit_b")  # SAM's keys too: once misread as SAM vit_b
    assert stage1_kind(HQ_TINY) == ("hq-sam", "vit_tiny")
    sam_l = _fix(_keys("mask_decoder.iou_token.weight", image_encoder__patch_embed__proj__weight=(1024,)))
    assert stage1_kind(sam_l) == ("sam", "vit_l")
    for (width, blocks), name in {
        (96, 12): "tiny",
        (96, 16): "small",
        (112, 24): "base_plus",
        (144, 48): "large",
    }.items():
        assert stage1_kind(_sam2_keys(width, blocks)) == ("sam2", name)
    assert stage1_kind({"conv_in.weight": T}) is None
    with pytest.raises(CheckpointError, match="SAM 2 trunk of width 80, 12 blocks matches no known type"):
        stage1_kind(_sam2_keys(80, 12), "odd.pt")
    # SAM 2.0 files (no no_obj_embed_spatial) are built from SAM 2.0's config, 2.1 files from 2.1's.
    assert sam2_config("small", _sam2_keys(96, 16, v21=False)) == "configs/sam2/sam2_hiera_s.yaml"
    assert sam2_config("base_plus", _sam2_keys(112, 24)) == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    with pytest.raises(CheckpointError, match="this is an HQ-SAM vit_b checkpoint, not SAM: give --stage1 hq-sam"):
        infer_sam_type(_fix(HQ_VIT_B), "sam_hq_vit_b.pth")


def test_the_old_flags_are_aliases_of_the_new_ones(tiny_sam_checkpoint):
    parse = build_parser().parse_args
    base = ["predict", "x.jpg", "--box", "1,2,3,4", "--checkpoint", "c"]
    old = parse([*base, "--sam-checkpoint", str(tiny_sam_checkpoint), "--sam-type", "vit_b"])
    new = parse([*base, "--stage1-checkpoint", str(tiny_sam_checkpoint), "--stage1", "sam:vit_b"])
    assert old.sam_checkpoint == new.sam_checkpoint == str(tiny_sam_checkpoint)
    choices = [
        choose_stage1(old.stage1, old.sam_checkpoint, old.sam_type),
        choose_stage1(new.stage1, new.sam_checkpoint, new.sam_type),
    ]
    assert choices[0] == choices[1] and choices[0].name == "sam:vit_b"
    # Read off the checkpoint when no type is given, whichever flag named it.
    read = choose_stage1("sam", tiny_sam_checkpoint, check_type=True)
    assert (
        read
        == choose_stage1("sam:tiny", tiny_sam_checkpoint, check_type=True)
        == Stage1("sam", "tiny", read.checkpoint)
    )
    assert choose_stage1("sam", None, "tiny") == choose_stage1("sam:tiny") == Stage1("sam", "tiny")


def test_mistakes_are_one_clear_line(tmp_path, tiny_sam_checkpoint):
    with pytest.raises(IS5NetError, match="--stage1 sam:vit_b and --sam-type vit_l disagree"):
        choose_stage1("sam:vit_b", "x.pth", "vit_l")
    with pytest.raises(IS5NetError, match="stage 1 \\(hq-sam\\) needs weights: --stage1-checkpoint PATH"):
        choose_stage1("hq-sam")
    with pytest.raises(CheckpointError, match="this is a SAM tiny checkpoint, not HQ-SAM: give --stage1 sam"):
        choose_stage1("hq-sam", tiny_sam_checkpoint, check_type=True)
    hq = tmp_path / "hq.pth"
    torch.save(HQ_TINY, hq)
    with pytest.raises(CheckpointError, match="this is an HQ-SAM vit_tiny checkpoint, not SAM 2: give --stage1 hq-sam"):
        choose_stage1("sam2:tiny", hq, check_type=True)
    with pytest.raises(IS5NetError, match="this is an HQ-SAM vit_tiny checkpoint, but --stage1 hq-sam:vit_b"):
        choose_stage1("hq-sam:vit_b", hq, check_type=True)


@pytest.mark.parametrize(
    "module, name, extra",
    [("segment_anything_hq", "hq-sam:vit_tiny", "'is5net[hq-sam]'"), ("sam2", "sam2", "'is5net[sam2]'")],
)
def test_a_missing_package_names_its_extra(monkeypatch, tmp_path, module, name, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what an uninstalled package looks like to import
    distribution = FAMILIES[name.partition(":")[0]].distribution
    with pytest.raises(IS5NetError) as err:
        choose_stage1(name, tmp_path / "weights.pth")
    assert str(err.value) == f"--stage1 {name} needs {distribution}: pip install {extra}"
    # At build time too (a choice made before the package went away).
    with pytest.raises(IS5NetError, match=f"needs {distribution}: pip install"):
        FAMILIES[name.partition(":")[0]].build(FAMILIES[name.partition(":")[0]].types[0])


def test_the_cli_says_each_mistake_in_one_line(
    tmp_path, run_cli, image_file, tiny_refiner_checkpoint, tiny_sam_checkpoint, monkeypatch
):
    base = ["predict", image_file, "--box", "60,40,230,170", "--checkpoint", tiny_refiner_checkpoint]
    cases = {
        "bad name": (["--stage1", "sam3", "--stage1-checkpoint", tiny_sam_checkpoint], "choose one of sam, sam:vit_b"),
        "contradiction": (
            ["--stage1", "sam:vit_b", "--sam-type", "vit_l", "--sam-checkpoint", tiny_sam_checkpoint],
            "disagree",
        ),
        "other family": (
            ["--stage1", "hq-sam", "--stage1-checkpoint", tiny_sam_checkpoint],
            "this is a SAM tiny checkpoint, not HQ-SAM: give --stage1 sam",
        ),
        "no weights": (["--stage1", "sam2:tiny"], "needs weights: --stage1-checkpoint"),
    }
    for name, (argv, needle) in cases.items():
        out = tmp_path / name.replace(" ", "_")
        rc, err = run_cli(*base, *argv, "-o", out)
        assert rc == 2 and len(lines_of(err)) == 1 and needle in err and "Traceback" not in err, (name, err)
        assert not out.exists(), name
    monkeypatch.setitem(sys.modules, "segment_anything_hq", None)
    for command in (base, ["cache-sam", "--data", tmp_path]):
        rc, err = run_cli(*command, "--stage1", "hq-sam:vit_tiny", "--stage1-checkpoint", tiny_sam_checkpoint)
        assert rc == 2 and lines_of(err) == [
            f"is5net {command[0]}: error: --stage1 hq-sam:vit_tiny needs segment-anything-hq: "
            "pip install 'is5net[hq-sam]'"
        ], err


def test_eval_and_serve_take_the_same_choice(tmp_path, run_cli, pairs_dataset, tiny_sam_checkpoint):
    from pathlib import Path

    from is5net.serve.models import stage1_label

    argv = ["eval", "--data", pairs_dataset, "--subsets", "DIS-VD", "--method", "sam", "--out", tmp_path / "e"]
    rc, err = run_cli(*argv, "--stage1", "sam2", "--stage1-checkpoint", tiny_sam_checkpoint)
    assert rc == 2 and len(lines_of(err)) == 1 and "this is a SAM tiny checkpoint, not SAM 2: give --stage1 sam" in err
    label = stage1_label(Stage1("hq-sam", "vit_tiny", Path("sam_hq_vit_tiny.pth")))
    assert label == {"name": "hq-sam", "detail": "HQ-SAM vit_tiny (sam_hq_vit_tiny.pth)"}
