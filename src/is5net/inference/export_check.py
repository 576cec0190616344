"""The check that an ONNX export computes what torch computes, on a real photograph, before it is kept.

The exported file runs in ONNX Runtime and the checkpoint in plain torch (BatchNorm unfolded, float32: the
official arithmetic) on the same input, built by the predictor from scikit-image's astronaut with a box and a
coarse mask; the sigmoid outputs (max |diff|) and the final masks (IoU of the soft masks > 0.5, at the
image's size, as ``predict`` makes them) are compared. ``is5net export-onnx`` removes a file that fails.
"""

from __future__ import annotations

from pathlib import Path

# The exported graph has BatchNorm folded into the convolutions, the reference has not: the same math in
# another order. On tiny models that is ~1e-7 in the sigmoid; on the full-width IS5Net with calibrated
# statistics up to ~5e-3 (benchmarks/bench_backends.py, mask IoU 1.0). A wrong graph is off by tenths and
# moves the mask. float16 weights round each weight by up to 2^-11 relative: looser bounds.
TOLERANCE = {False: (1e-2, 0.999), True: (5e-2, 0.99)}  # fp16 -> (max |diff| of the sigmoid, least IoU)
CHECK_BOXES = [[140, 15, 380, 300], [40, 160, 470, 512]]  # the astronaut's head; her upper body
SAM_DECODER_TOLERANCE = (1e-3, 0.999)


def check_input(refiner, batch: int):
    """``(rgb, x)``: the astronaut and the refiner input for ``batch`` of :data:`CHECK_BOXES`, each box with an
    elliptical coarse mask inside it (a stage-1 mask of about the right shape)."""
    import numpy as np
    from skimage import data

    from .predictor import PredictorOptions, build_predictor

    rgb = data.astronaut()
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    boxes = [CHECK_BOXES[i % len(CHECK_BOXES)] for i in range(batch)]
    masks = []
    for x0, y0, x1, y1 in boxes:
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2.4, (y1 - y0) / 2.4
        masks.append(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0)
    predictor = build_predictor(refiner, None, PredictorOptions(device="cpu", fast=False))
    predictor.set_image(rgb)
    return rgb, predictor.refiner_input(boxes, masks)


def compare(reference, candidate, size) -> tuple[float, float]:
    """``(max |diff| of the sigmoid, least mask IoU over the batch)`` of two logits tensors ``N x 1 x S x S``;
    the masks are the contract's soft masks at ``size`` thresholded at 0.5."""
    import torch

    from ..contract import soft_masks

    diff = float((torch.sigmoid(reference) - torch.sigmoid(candidate)).abs().max())
    a = soft_masks(reference, size) > 0.5
    b = soft_masks(candidate, size) > 0.5
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))  # both empty: agree
    return diff, float(iou.min())


def float64_sigmoid(refiner, x):
    """The refiner's sigmoid output computed in float64: the yardstick of float32 rounding."""
    import copy

    import torch

    with torch.inference_mode():
        return torch.sigmoid(copy.deepcopy(refiner).double().forward_logits(x.double()))


def check_refiner_onnx(refiner, onnx_path: Path, batch: int, fp16: bool) -> tuple[bool, str]:
    """Run the export and torch on the check input; ``(passed, the line that says how close they are)``."""
    import torch

    from .backends import OnnxRuntimeBackend

    max_diff, min_iou = TOLERANCE[bool(fp16)]
    rgb, x = check_input(refiner, batch)
    with torch.inference_mode():
        reference = refiner.float().eval().forward_logits(x)
    candidate = torch.from_numpy(OnnxRuntimeBackend(onnx_path).run(x.numpy()))
    diff, iou = compare(reference, candidate, rgb.shape[:2])
    close = diff <= max_diff
    floor_note = ""
    if not close and iou >= min_iou:
        # Some weights (random ones with calibrated BatchNorm, at least) make the network itself sensitive
        # to float32 rounding, and two float32 computations then differ by more than any fixed figure.
        # The export passes if it is as close to the float64 result as torch's own float32 is (twice, as
        # float16 weights or another summation order may err the other way).
        exact = float64_sigmoid(refiner, x)
        torch_err = float((torch.sigmoid(reference).double() - exact).abs().max())
        onnx_err = float((torch.sigmoid(candidate).double() - exact).abs().max())
        close = onnx_err <= max(max_diff, 2 * torch_err)
        floor_note = f"; from float64: onnxruntime {onnx_err:.2e}, torch float32 {torch_err:.2e}"
    passed = close and iou >= min_iou
    line = (
        f"check on skimage's astronaut, batch {batch}: onnxruntime vs torch: max |diff| of the sigmoid "
        f"{diff:.2e} (tolerance {max_diff:g}{floor_note}), mask IoU {iou:.5f} (at least {min_iou:g}): "
        f"{'ok' if passed else 'FAILED'}"
    )
    return passed, line


def check_sam_decoder_onnx(sam, onnx_path: Path) -> tuple[bool, str]:
    """SAM's exported prompt decoder against torch's; ``(passed, the line that says how close they are)``."""
    from ..export import check_sam_decoder

    diff, iou = check_sam_decoder(sam, onnx_path)
    max_diff, min_iou = SAM_DECODER_TOLERANCE
    passed = diff <= max_diff and iou >= min_iou
    line = (
        f"onnxruntime vs torch: max |diff| of the sigmoid {diff:.2e} (tolerance {max_diff:g}), mask IoU {iou:.5f} "
        f"(at least {min_iou:g}): {'ok' if passed else 'FAILED'}"
    )
    return passed, line


# ----------------------------------------------------------------------------------- stage-1 image encoders
# An encoder's export against the encoder in torch, both float32, on the astronaut: per output, the largest
# |difference| relative to the output's largest |value|. Another operator order in float32 is ~1e-6 of
# that (SAM tiny, HQ-SAM vit_tiny and SAM 2.1 tiny measured 1e-6 .. 3e-6; docs/speed.md); a wrong graph (a
# branch the tracer froze, a dropped output) is off by the whole scale. bf16 is not judged here: it is
# measured on the masks (benchmarks/bench_e2e_cpu.py).
ENCODER_TOLERANCE = 1e-3
# ImageNet's mean and std in 0..255: SAM's and HQ-SAM's pixel_mean/pixel_std, and SAM 2's transforms.
ENCODER_MEAN, ENCODER_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def encoder_check_input(size: int):
    """``1 x 3 x size x size`` float32: skimage's astronaut resized to the encoder's input and normalised as
    the stage-1 predictors normalise a photo (a real image: random noise would hide saturation errors)."""
    import numpy as np
    import torch
    from skimage import data
    from skimage.transform import resize

    rgb = resize(data.astronaut(), (size, size), anti_aliasing=True) * 255.0
    x = (rgb - np.array(ENCODER_MEAN)) / np.array(ENCODER_STD)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32))


def check_encoder_outputs(reference, candidate, names, runtime: str = "onnxruntime") -> tuple[bool, str]:
    """Torch's outputs (tensors) against the export's (arrays), in the same flattened order;
    ``(passed, the line that says how close they are)``: every output within :data:`ENCODER_TOLERANCE`."""
    import numpy as np

    if len(reference) != len(candidate):
        return False, f"{runtime} gave {len(candidate)} outputs, torch {len(reference)}: FAILED"
    worst, worst_name = 0.0, names[0] if names else "-"
    for name, ref, got in zip(names, reference, candidate):
        ref = ref.detach().float().cpu().numpy()
        if ref.shape != tuple(got.shape):
            return False, f"{runtime} output {name} has shape {tuple(got.shape)}, torch {ref.shape}: FAILED"
        rel = float(np.abs(ref - got).max() / max(float(np.abs(ref).max()), 1e-12))
        rel = float("inf") if np.isnan(rel) else rel  # a NaN is as far off as it gets
        if rel > worst:
            worst, worst_name = rel, name
    passed = worst <= ENCODER_TOLERANCE
    line = (
        f"check on skimage's astronaut: {runtime} vs torch: largest |diff| / largest |value| {worst:.2e} "
        f"(output {worst_name}; tolerance {ENCODER_TOLERANCE:g}): {'ok' if passed else 'FAILED'}"
    )
    return passed, line
