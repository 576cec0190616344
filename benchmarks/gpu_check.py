"""CUDA paths that CI (CPU only) cannot run: predictor on CUDA vs CPU, bf16, batched boxes, training.

python benchmarks/gpu_check.py     # prints PASS/FAIL lines; exit 1 on any failure
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from is5net import IS5NetPredictor  # noqa: E402
from is5net.inference.stage1 import build_sam_tiny  # noqa: E402
from tiny import make_tiny_refiner  # noqa: E402

failures = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}")
    if not ok:
        failures.append(name)


def main() -> int:
    from skimage import data

    assert torch.cuda.is_available(), "needs CUDA"
    rgb = data.coffee()
    torch.manual_seed(0)
    sam = build_sam_tiny().eval()
    ref = make_tiny_refiner(5, input_size=512)
    boxes = [[100, 50, 450, 380], [0, 0, 300, 200], [300, 150, 600, 400]]
    outs = {}
    for dev, prec, resize in (
        ("cpu", "fp32", "pil"),
        ("cuda", "fp32", "pil"),
        ("cuda", "fp32", "torch"),
        ("cuda", "bf16", "pil"),
    ):
        p = IS5NetPredictor(sam, ref, device=dev, precision=prec, sam_resize=resize)
        p.set_image(rgb)
        outs[(dev, prec, resize)] = p.predict_batch(boxes)
    cpu = outs[("cpu", "fp32", "pil")]
    for key, res in outs.items():
        if key[0] == "cpu":
            continue
        sam_agree = np.mean([np.mean(a.sam_mask == b.sam_mask) for a, b in zip(cpu, res)])
        diff = max(float(np.abs(a.mask - b.mask).mean()) for a, b in zip(cpu, res))
        if key[2] == "torch":  # another resize, so (with a random SAM) other masks: report, do not judge
            print(f"INFO predictor {key} vs cpu: SAM-mask pixel agreement {sam_agree:.5f}, mean |soft diff| {diff:.2e}")
            continue
        tol = 2e-2 if key[1] == "bf16" else 2e-3
        check(
            f"predictor {key} vs cpu",
            sam_agree > 0.99 and diff < tol,
            f"SAM-mask pixel agreement {sam_agree:.5f}, mean |soft diff| {diff:.2e}",
        )
    single = IS5NetPredictor(sam, ref, device="cuda")
    single.set_image(rgb)
    one = single.predict(box=boxes[1]).mask
    # cuDNN picks other (TF32) algorithms for batch 3 than for batch 1: equal up to that rounding.
    d = np.abs(one - outs[("cuda", "fp32", "pil")][1].mask)
    check("cuda batched == one by one", float(d.mean()) < 2e-3, f"mean {d.mean():.2e} max {d.max():.2e}")

    from is5net.checkpoint import load_refiner
    from is5net.demo.synthetic import make_synthetic_dataset
    from is5net.train import load_config, train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "syn"
        make_synthetic_dataset(root, n_train=16, n_val=4, n_test=2, size=128)
        cfg = load_config(
            None,
            [
                "model=is5net_tiny",
                "input_size=128",
                "batch_size=4",
                "max_steps=20",
                "val_every=10",
                "gt_encoder_max_steps=10",
                "workers=2",
                "device=cuda",
            ],
            base={"data": str(root), "coarse_dir": "dataset"},
        )
        out = train(cfg, Path(tmp) / "run", progress=False)
        model = load_refiner(out)
        check(
            "train on cuda (bf16 autocast, channels_last, fused AdamW)",
            model.in_ch == 5
            and all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()),
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
