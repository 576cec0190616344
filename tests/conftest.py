"""Shared fixtures: tiny random models and real images from skimage.data (all offline)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

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
