"""Box -> mask on a large photo: the reference notebook's way vs IS5NetPredictor (docs/benchmarks.md anchor).

Reference way: ``SamPredictor.set_image`` (resize on the CPU), ``predict(box, multimask_output=True)``,
then the full-resolution 5-channel tensor built and resized on the CPU, the refiner in default settings,
the output resized back. Ours: image resized on the GPU, masks and box channel built on the GPU, folded
BatchNorm, channels_last, TF32 (and bf16 as an option). Random weights (speed does not depend on them);
SAM ViT-L by default. Prints ms per box->mask and the agreement of the soft masks.

    python benchmarks/bench_pipeline.py --device cuda --sam-type vit_l --height 2000 --width 3000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import calibrate_batchnorm, time_ms, torch_defaults  # noqa: E402
from is5net import IS5NetPredictor  # noqa: E402
from is5net.checkpoint import RefinerConfig  # noqa: E402
from is5net.inference.stage1 import build_sam  # noqa: E402
from is5net.modeling import build_model  # noqa: E402


def photo(h: int, w: int) -> np.ndarray:
    from skimage import data
    from skimage.transform import resize

    return (resize(data.astronaut(), (h, w), anti_aliasing=False) * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sam-type", default="vit_l")
    ap.add_argument("--model", default="is5net")
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--width", type=int, default=3000)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    sam = build_sam(args.sam_type).to(dev).eval()
    refiner = build_model(args.model).to(dev)
    calibrate_batchnorm(refiner, 5, size=256)
    refiner.config = RefinerConfig.for_model(refiner)
    rgb = photo(args.height, args.width)
    box = np.array([args.width // 5, args.height // 6, args.width * 4 // 5, args.height * 5 // 6])
    size = refiner.config.input_size

    from segment_anything import SamPredictor

    ref_pred = SamPredictor(sam)

    # The reference notebook's pipeline, written out plainly on purpose: it is the baseline that the
    # predictor (is5net.contract's rules, docs/input-contract.md) is timed against.
    def reference():
        with torch_defaults(), torch.no_grad():
            ref_pred.set_image(rgb)
            masks, _, _ = ref_pred.predict(box=box, multimask_output=True)
            h, w = rgb.shape[:2]
            box_mask = np.zeros((h, w), np.float32)
            box_mask[box[1] : box[3], box[0] : box[2]] = 255
            im = np.concatenate(
                [rgb.astype(np.float32), masks[0][..., None].astype(np.float32) * 255, box_mask[..., None]], 2
            )
            t = torch.from_numpy(im).permute(2, 0, 1)[None]
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
            t[:, 4] = torch.where(t[:, 4] > 127, 255.0, 0.0)
            t = (t / 255.0 - torch.tensor([0.5, 0.5, 0.5, 0, 0]).view(1, 5, 1, 1)).to(dev)
            out = torch.sigmoid(refiner(t)[0][0])
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            out = (out - out.min()) / (out.max() - out.min())
            return out.cpu().numpy()

    results = {}
    ref_out = reference()
    results["reference"] = (time_ms(reference, dev, args.iters, args.warmup), 0.0)
    variants = [("fp32", "pil"), ("fp32", "torch"), ("bf16", "torch")] if dev.type == "cuda" else [("fp32", "pil")]
    for precision, resize in variants:
        p = IS5NetPredictor(sam, refiner, device=dev, precision=precision, sam_resize=resize)

        def ours():
            p.set_image(rgb)
            return p.predict(box=box).mask

        out = ours()
        results[f"ours {precision} {resize}"] = (
            time_ms(ours, dev, args.iters, args.warmup),
            float(np.abs(out - ref_out).max()),
        )
    base = results["reference"][0]
    print(
        f"device {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}; SAM {args.sam_type}; "
        f"photo {args.width}x{args.height}; refiner {args.model} at {size}²"
    )
    print(f"{'way':>18} {'ms/box':>9} {'speed-up':>9} {'max|diff|':>10}")
    for name, (ms, diff) in results.items():
        print(f"{name:>18} {ms:>9.1f} {base / ms:>8.2f}x {diff:>10.2e}")
    print(
        "(pil = SamPredictor's own resize, reference masks; torch = resize on the GPU. With random SAM weights "
        "any change of input pixels can flip whole masks, so only the pil row's agreement is meaningful.)"
    )


if __name__ == "__main__":
    main()
