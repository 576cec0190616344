"""HQ-SAM and SAM 2.1 weight files by name: the table, a download from a loopback mirror checked to load as
that family and type (their publishers state no checksum), and ``--stage1-checkpoint NAME`` finding them."""

from __future__ import annotations

import pytest
import torch

from is5net import cli
from is5net.errors import IS5NetError
from is5net.inference.stage1 import choose_stage1, parse_name
from is5net.weights import OFFICIAL, download, official, verify_file
from test_weights import server  # noqa: F401  (the loopback HTTP server fixture)

T = torch.zeros(1)
HQ_TINY = {
    "mask_decoder.iou_token.weight": T,
    "mask_decoder.hf_token.weight": T,
    "image_encoder.patch_embed.seq.0.c.weight": T,
}
SAM_VIT_L = {"mask_decoder.iou_token.weight": T, "image_encoder.patch_embed.proj.weight": torch.zeros(1024, 1)}


def _bytes(tmp_path, state_dict, wrap: bool = False) -> bytes:
    path = tmp_path / "sd.pt"
    torch.save({"model": state_dict} if wrap else state_dict, path)
    return path.read_bytes()


def test_the_table_knows_hq_sam_and_sam2_by_their_publishers_names():
    for kind in ("tiny", "b", "l", "h"):
        entry = OFFICIAL[f"sam_hq_vit_{kind}"]
        assert entry.url == f"https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_{kind}.pth"
        assert entry.stage1 == f"hq-sam:vit_{kind}" and official(entry.stage1) is entry
    for kind in ("tiny", "small", "base_plus", "large"):
        entry = OFFICIAL[f"sam2.1_hiera_{kind}"]
        assert entry.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{kind}.pt"
        assert entry.stage1 == f"sam2:{kind}" and official(entry.stage1) is entry
    for entry in OFFICIAL.values():
        if entry.stage1:
            assert parse_name(entry.stage1)[1] is not None  # a full FAMILY:TYPE name
            assert entry.size is None and entry.sha256 is None and entry.md5_prefix is None  # nothing invented
            assert "loads as" in entry.checks


def test_download_from_a_mirror_is_checked_to_be_that_model(server, tmp_path):  # noqa: F811
    server.files["sam_hq_vit_tiny.pth"] = _bytes(tmp_path, HQ_TINY)
    server.files["sam2.1_hiera_tiny.pt"] = _bytes(tmp_path, SAM_VIT_L, wrap=True)  # another model
    home = tmp_path / "home"
    got = download("sam_hq_vit_tiny", to=home, mirror=server.url, quiet=True)
    assert got == home / "sam_hq_vit_tiny.pth"
    verdict = verify_file(OFFICIAL["sam_hq_vit_tiny"], got)
    assert verdict.ok and "loads as hq-sam:vit_tiny weights" in verdict.detail
    with pytest.raises(IS5NetError, match="holds sam:vit_l weights, expected sam2:tiny: another file"):
        download("sam2:tiny", to=home, mirror=server.url, quiet=True)
    assert not list(home.glob("sam2.1_hiera_tiny.pt*"))  # deleted, neither in place nor to resume


def test_stage1_checkpoint_names_resolve_under_is5net_home(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(_bytes(tmp_path, {"x": T}))
    for name in ("sam2.1_hiera_tiny", "sam2:tiny"):
        assert choose_stage1("sam2", name).checkpoint == tmp_path / "sam2.1_hiera_tiny.pt"
    with pytest.raises(IS5NetError, match="no sam_hq_vit_l.pth under .*`is5net weights download sam_hq_vit_l`"):
        choose_stage1("hq-sam", "sam_hq_vit_l")
    # verify: the SAM 2 file holds no SAM 2 model, the HQ-SAM file is one.
    (tmp_path / "sam_hq_vit_tiny.pth").write_bytes(_bytes(tmp_path, HQ_TINY))
    assert cli.main(["weights", "verify"]) == 1
    out = capsys.readouterr().out
    assert "sam2.1_hiera_tiny: sam2.1_hiera_tiny.pt: FAILED: holds no stage-1 model weights, expected sam2:tiny" in out
    assert "sam_hq_vit_tiny: sam_hq_vit_tiny.pth: ok" in out
