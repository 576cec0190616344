"""Shared fixtures: tiny random models and real images from skimage.data (all offline)."""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
import torch
from PIL import Image

import helpers
from tiny import make_tiny_refiner

# Two shared cores: one intra-op thread per process keeps parallel test workers from thrashing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _private_is5net_home(tmp_path_factory):
    """Tests never read or write the user's IS5NET_HOME (weights, ONNX export cache): one of their own."""
    saved = os.environ.get("IS5NET_HOME")
    os.environ["IS5NET_HOME"] = str(tmp_path_factory.mktemp("is5net_home"))
    yield
    if saved is None:
        os.environ.pop("IS5NET_HOME", None)
    else:
        os.environ["IS5NET_HOME"] = saved


@pytest.fixture()
def run_cli(capsys):
    """``run_cli(*argv, stdout=False)``: ``is5net *argv`` in this process -> ``(exit status, stderr)``, or
    ``(status, stdout, stderr)`` with ``stdout=True``."""
    return functools.partial(helpers.run_cli, capsys)


@pytest.fixture(scope="session")
def training_dataset(tmp_path_factory):
    """``training_dataset(seed=, n_train=, n_val=, n_test=, size=)``: a new synthetic DIS-layout dataset with
    coarse masks (``--coarse-dir dataset``), in a folder of its own, for the tiny training runs."""
    from is5net.demo.synthetic import make_synthetic_dataset

    def make(**sizes):
        root = tmp_path_factory.mktemp("syn")
        make_synthetic_dataset(root, **sizes)
        return root

    return make


@pytest.fixture()
def pairs_dataset(tmp_path):
    """``tmp_path/DIS5K``: four photo/GT pairs in DIS-TR and DIS-VD (see ``helpers.make_dataset``)."""
    root = tmp_path / "DIS5K"
    helpers.make_dataset(root)
    return root


@pytest.fixture(scope="session")
def coffee_rgb() -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    img = data.coffee()  # 400x600 real photo
    return (resize(img, (200, 300), anti_aliasing=True) * 255).round().astype(np.uint8)


@pytest.fixture()
def image_file(tmp_path, coffee_rgb):
    """The coffee photo as a JPEG file in ``tmp_path/in`` (what the command-line tests segment)."""
    from PIL import Image

    path = tmp_path / "in" / "coffee.jpg"
    path.parent.mkdir()
    Image.fromarray(coffee_rgb).save(path, quality=95)
    return path


@pytest.fixture()
def photo_dataset(tmp_path, coffee_rgb):
    """One real photo (skimage's coffee, 200x300) with a GT and a coarse mask that differs from it."""
    root = tmp_path / "data"
    for sub in ("im", "gt", "coarse"):
        (root / "DIS-TR" / sub).mkdir(parents=True)
    gt = np.zeros(coffee_rgb.shape[:2], np.uint8)
    gt[37:161, 58:223] = 255
    gt[80:100, 100:140] = 0  # a hole
    coarse = np.zeros_like(gt)
    coarse[45:150, 50:215] = 255
    Image.fromarray(coffee_rgb).save(root / "DIS-TR" / "im" / "cup.png")
    Image.fromarray(gt).save(root / "DIS-TR" / "gt" / "cup.png")
    Image.fromarray(coarse).save(root / "DIS-TR" / "coarse" / "cup.png")
    return root, gt, coarse


@pytest.fixture(scope="session")
def tiny_sam():
    from is5net.inference.stage1 import build_sam_tiny

    torch.manual_seed(0)
    return build_sam_tiny().eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_sam_checkpoint(tmp_path_factory, tiny_sam):
    path = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_refiner():
    return make_tiny_refiner(5)


@pytest.fixture(scope="session")
def tiny_refiner_checkpoint(tmp_path_factory, tiny_refiner):
    from is5net.checkpoint import save_refiner

    path = tmp_path_factory.mktemp("ref") / "is5net_tiny.safetensors"
    save_refiner(tiny_refiner, path)
    return path


@pytest.fixture()
def isnet_weights(tmp_path):
    """A 3-channel IS-Net as safetensors: a file convert-isnet accepts as input and could name as output."""
    from safetensors.torch import save_file

    path = tmp_path / "w" / "isnet.safetensors"
    path.parent.mkdir()
    save_file({k: v.contiguous() for k, v in make_tiny_refiner(3).state_dict().items()}, str(path))
    return path
