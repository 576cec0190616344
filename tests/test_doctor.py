"""`is5net doctor`: versions, device, backends and extras, weight files under IS5NET_HOME verified, advice."""

import torch

from is5net import cli
from is5net.doctor import collect
from is5net.inference.backends import BACKENDS, backend_versions
from is5net.weights import OFFICIAL


def test_doctor_on_an_empty_home_reports_and_advises(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path / "home"))
    assert cli.main(["doctor"]) == 0  # missing files are advice, not failures
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and "threads" in out
    for name, version in backend_versions().items():
        assert f"{name} {version}" in out
    assert "--backend auto picks openvino on the CPU" in out
    assert "does not exist yet" in out
    assert "vit_b (SAM ViT-B) missing: `is5net weights download vit_b`" in out
    assert "drive.google.com" in out and str(tmp_path / "home" / "dis-sam.pth") in out


def test_doctor_verifies_each_file_and_fails_on_a_corrupt_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    isnet = {"conv_in.weight": torch.zeros(4, 3, 3, 3)}
    torch.save(isnet, tmp_path / "isnet.pth")
    (tmp_path / "sam_vit_l_0b3195.pth").write_bytes(b"truncated")
    (tmp_path / "sam_vit_b_01ec64.pth.part").write_bytes(b"half")
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "isnet              ok: isnet.pth" in out
    assert "vit_l              FAILED: sam_vit_l_0b3195.pth: size 9 bytes, expected 1249524607" in out
    assert "sam_vit_l_0b3195.pth fails its check: delete it and `is5net weights download vit_l`" in out
    assert "an interrupted download" in out


def test_collect_lists_every_backend_and_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("IS5NET_HOME", str(tmp_path))
    report = collect(verify=False)
    assert list(report["backends"]) == list(BACKENDS)
    assert all(report["backends"].values())  # all three are installed here (the dev extra includes onnx)
    assert set(report["extras"]) >= {"onnx", "serve", "train", "dev", "hq-sam", "sam2"}
    assert report["device"]["torch_threads"] == torch.get_num_threads()
    assert report["openvino_cpu"]["default_precision"] in ("f32", "bf16", "f16")
    assert [w["status"] for w in report["weights"]] == ["missing"] * len(OFFICIAL) and report["problems"] == []
