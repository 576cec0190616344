"""Box -> mask on a CPU, end to end: the reference notebook pipeline against IS5NetPredictor with each stage 1
and runtime (issue 26; docs/speed.md).

Reference: the DIS-SAM notebook's way, ``segment_anything.SamPredictor`` (ViT-B) + the official-shape
``ISNetDIS(in_ch=5)`` in eager torch, the 5-channel input built and resized on the CPU. Ours:
``IS5NetPredictor`` with stage 1 ``sam:vit_b``, ``hq-sam:vit_tiny`` or ``sam2:tiny`` whose image encoder
runs in torch, ONNX Runtime or OpenVINO (``is5net.inference.encoder_runtime.accelerate``), the refiner on the
same runtime (``backend=``), fp32, and bf16 through OpenVINO's precision hint. Same random weights of the
official shapes everywhere (seeded), one real photo (skimage's coffee, resized to 3000 x 2000), two boxes
(cup and saucer; the spoon).

Each row runs in a process of its own (its peak RSS is its own); the ONNX exports are made first, in a
process of their own, so every row finds them cached (their one-time cost is printed apart). Columns: ms
for the first box of a new image (set_image + predict), ms for each further box (predict), peak RSS,
IoU of the coarse (stage-1) and final masks against the reference's (SAM rows) or against the same stage
1 in torch (HQ-SAM, SAM 2 rows: another stage 1 gives other masks by design).

    python benchmarks/bench_e2e_cpu.py                # the full table (about 15 min on 2 busy cores)
    python benchmarks/bench_e2e_cpu.py --quick        # smoke run: tiny SAM, 600 x 400, one iteration
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PHOTO_SIZE = (600, 400)  # skimage's coffee, width x height; the boxes below are in its pixels
BOXES = [(75, 15, 480, 390), (325, 65, 425, 325)]  # cup and saucer (first box); the spoon (further box)
STAGE1 = ("sam:vit_b", "hq-sam:vit_tiny", "sam2:tiny")
BACKENDS = ("torch", "onnxruntime", "openvino")


# ------------------------------------------------------------------------------------------ one row
def _models(stage1: str, refiner_name: str = "is5net"):
    """(stage-1 model, refiner) with seeded random weights of the official shapes (same in every process);
    ``refiner_name`` ``is5net_tiny`` (at 256²) for the smoke run."""
    import torch

    sys.path.insert(0, str(HERE))
    from common import calibrate_batchnorm, calibrate_output, real_input
    from is5net.checkpoint import RefinerConfig
    from is5net.modeling import build_model

    family, kind = stage1.split(":")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's registry and sam2's torch.jit notes
        if family == "sam":
            from is5net.inference.stage1 import build_sam

            model = build_sam(kind)
        elif family == "hq-sam":
            from is5net.inference.stage1 import build_hq_sam

            model = build_hq_sam(kind)
        else:
            from is5net.inference.stage1 import build_sam2_model

            model = build_sam2_model(kind)
    torch.manual_seed(1)
    refiner = build_model(refiner_name)
    size = 1024 if refiner_name == "is5net" else 256
    calibrate_batchnorm(refiner, 5, size=256)
    calibrate_output(refiner, real_input(1, 5, size))  # a spread-out output, so agreement means something
    refiner.config = RefinerConfig.for_model(refiner, input_size=size)
    return model.eval().requires_grad_(False), refiner.eval()


def _stage(stage1: str, model):
    from is5net.inference.stage1 import HQSamStage, Sam2Stage

    family = stage1.split(":")[0]
    return model if family == "sam" else (HQSamStage(model) if family == "hq-sam" else Sam2Stage(model))


def photo(width: int, height: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.coffee()).resize((width, height), Image.BILINEAR))


def scaled_boxes(width: int) -> list[np.ndarray]:
    s = width / PHOTO_SIZE[0]
    return [np.array([round(v * s) for v in b]) for b in BOXES]


def reference_runner(model, refiner, rgb):
    """The DIS-SAM notebook's pipeline, written out plainly on purpose (as benchmarks/bench_pipeline.py):
    ``(new_image(box), further_box(box))`` -> (soft mask, coarse mask)."""
    import torch
    import torch.nn.functional as F
    from segment_anything import SamPredictor

    predictor, size, (h, w) = SamPredictor(model), int(refiner.config.input_size), rgb.shape[:2]

    @torch.no_grad()
    def further_box(box):
        masks, _, _ = predictor.predict(box=box, multimask_output=True)
        box_mask = np.zeros((h, w), np.float32)
        box_mask[box[1] : box[3], box[0] : box[2]] = 255
        coarse = masks[0][..., None].astype(np.float32) * 255
        im = np.concatenate([rgb.astype(np.float32), coarse, box_mask[..., None]], 2)
        t = F.interpolate(torch.from_numpy(im).permute(2, 0, 1)[None], size=(size, size), mode="bilinear")
        t[:, 4] = torch.where(t[:, 4] > 127, 255.0, 0.0)
        t = t / 255.0 - torch.tensor([0.5, 0.5, 0.5, 0, 0]).view(1, 5, 1, 1)
        out = F.interpolate(torch.sigmoid(refiner(t)[0][0]), size=(h, w), mode="bilinear")[0, 0]
        return ((out - out.min()) / (out.max() - out.min())).numpy(), masks[0]

    def new_image(box):
        predictor.set_image(rgb)
        return further_box(box)

    return new_image, further_box


def ours_runner(stage1: str, model, refiner, rgb, backend: str, precision: str):
    """IS5NetPredictor with the encoder on ``backend`` (``accelerate``) and the refiner on the same runtime."""
    from is5net import IS5NetPredictor
    from is5net.inference.backends import create_backend, resolve_precision
    from is5net.inference.encoder_runtime import accelerate, stage1_precision

    # "bf16-encoder": the encoder in bf16, the refiner in fp32 (what bf16 costs stage 1 alone). "auto": what
    # the commands' default --precision gives on this CPU, by the library's own two rules.
    encoder_precision, refiner_precision = ("bf16", "fp32") if precision == "bf16-encoder" else (precision,) * 2
    if precision == "auto":
        encoder_precision, refiner_precision = stage1_precision("auto", backend), resolve_precision("auto", backend)
    model = accelerate(model, backend, encoder_precision, log=None)
    runtime = backend if backend == "torch" else create_backend(backend, refiner, precision=refiner_precision)
    p = IS5NetPredictor(_stage(stage1, model), refiner, device="cpu", backend=runtime)

    def further_box(box):
        out = p.predict(box=box)
        return out.mask, out.sam_mask

    def new_image(box):
        p.set_image(rgb)
        return further_box(box)

    encoder = getattr(model.image_encoder, "description", "torch")
    return new_image, further_box, f"encoder {encoder}; refiner {p.backend}"


def _median_ms(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def run_row(spec: dict) -> dict:
    """One row, in this process: build, warm up once, time, save the first box's masks."""
    import torch

    torch.set_grad_enabled(False)
    width, height = spec["size"]
    rgb, (box, box2) = photo(width, height), scaled_boxes(width)
    model, refiner = _models(spec["stage1"], spec["refiner"])
    t0 = time.perf_counter()
    if spec["backend"] == "reference":
        new_image, further_box = reference_runner(model, refiner, rgb)
        what = "SamPredictor + ISNetDIS, eager torch"
    else:
        new_image, further_box, what = ours_runner(
            spec["stage1"], model, refiner, rgb, spec["backend"], spec["precision"]
        )
    mask, coarse = new_image(box)  # the warm-up: first inference of a compiled model, allocator growth
    setup_s = time.perf_counter() - t0
    first = _median_ms(lambda: new_image(box), spec["iters"])
    further = _median_ms(lambda: further_box(box2), spec["iters"])
    np.savez_compressed(spec["masks"], mask=np.asarray(mask) > 0.5, coarse=np.asarray(coarse, bool))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {**spec, "what": what, "setup_s": setup_s, "first_ms": first, "further_ms": further, "peak_mb": peak_mb}


def prepare(spec: dict) -> dict:
    """Export (and check) every encoder and the refiner once, so the timed rows find them cached."""
    from is5net.export import cached_onnx
    from is5net.inference.encoder_runtime import cached_encoder_onnx

    seconds = {}
    for stage1 in spec["stage1s"]:
        model, refiner = _models(stage1, spec["refiner"])
        t0 = time.perf_counter()
        size = getattr(model.image_encoder, "img_size", None) or model.image_size
        cached_encoder_onnx(model.image_encoder, int(size))
        seconds[stage1] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cached_onnx(refiner.fold_batchnorm())
    seconds["refiner"] = time.perf_counter() - t0
    return {"export_s": seconds}


# ------------------------------------------------------------------------------------------ the table
def _child(kind: str, spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--{kind}", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {**spec, "error": tail[0]}
    return json.loads(lines[-1])


def _iou(a_path: str, b_path: str) -> tuple[float, float]:
    a, b = np.load(a_path), np.load(b_path)

    def iou(x, y):
        union = (x | y).sum()
        return 1.0 if union == 0 else float((x & y).sum() / union)

    return iou(a["coarse"], b["coarse"]), iou(a["mask"], b["mask"])


def rows_to_run(args) -> list[dict]:
    rows = [{"stage1": f"sam:{args.sam_type}", "backend": "reference", "precision": "fp32"}]
    for stage1 in args.stage1:
        stage1 = stage1.replace(":vit_b", f":{args.sam_type}")
        for backend in args.backends:
            rows.append({"stage1": stage1, "backend": backend, "precision": "fp32"})
        if "openvino" in args.backends and args.bf16:
            rows.append({"stage1": stage1, "backend": "openvino", "precision": "bf16"})
            rows.append({"stage1": stage1, "backend": "openvino", "precision": "bf16-encoder"})
            rows.append({"stage1": stage1, "backend": "openvino", "precision": "auto"})
    return rows


def print_table(rows: list[dict], export: dict, args) -> None:
    cpu = _cpu_name()
    ref = next(r for r in rows if r["backend"] == "reference")
    print(f"\n{cpu}; {os.cpu_count()} cores; torch threads default; photo {args.width} x {args.height}; "
          f"load average at the end {os.getloadavg()[0]:.1f} (shared machine: compare ratios within this run)\n")  # fmt: skip
    print(
        "| stage 1 | runtime | first box ms | vs reference | further box ms | peak RSS MB | IoU coarse | IoU mask | against |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['stage1']} | {r['backend']} {r['precision']} | failed: {r['error']} | | | | | | |")
            continue
        runtime = "reference notebook" if r["backend"] == "reference" else f"{r['backend']} {r['precision']}"
        iou = "" if r.get("iou") is None else f"{r['iou'][0]:.4f} | {r['iou'][1]:.4f} | {r['against']}"
        print(
            f"| {r['stage1']} | {runtime} | {r['first_ms']:.0f} | {ref.get('first_ms', float('nan')) / r['first_ms']:.2f}x | "
            f"{r['further_ms']:.0f} | {r['peak_mb']:.0f} | {iou or ' | | '} |"
        )
    print("\none-time export + parity check (cached under IS5NET_HOME afterwards): " + ", ".join(
        f"{k} {v:.0f} s" for k, v in export.get("export_s", {}).items()))  # fmt: skip
    for r in rows:
        if "what" in r:
            print(f"- {r['stage1']} {r['backend']} {r['precision']}: {r['what']}; setup {r['setup_s']:.1f} s")


def _cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny SAM, 600 x 400 photo, one iteration")
    ap.add_argument("--stage1", default=",".join(STAGE1), help="comma-separated stage-1 names")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--sam-type", default="vit_b", help="the SAM of the reference and the sam rows")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the OpenVINO bf16 rows")
    ap.add_argument("--width", type=int, default=3000)
    ap.add_argument("--height", type=int, default=2000)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--refiner", default="is5net", help="is5net (the official shape, 1024²) or is5net_tiny (256²)")
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--prepare", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row or args.prepare:
        print(json.dumps(run_row(json.loads(args.row)) if args.row else prepare(json.loads(args.prepare))))
        return
    if args.quick:
        args.sam_type, args.width, args.height, args.iters, args.refiner = "tiny", 600, 400, 1, "is5net_tiny"
    args.stage1, args.backends = args.stage1.split(","), args.backends.split(",")
    work = Path(tempfile.mkdtemp(prefix="bench_e2e_"))
    rows = rows_to_run(args)
    stage1s = sorted({r["stage1"] for r in rows if r["backend"] in ("onnxruntime", "openvino")})
    export = _child("prepare", {"stage1s": stage1s, "refiner": args.refiner}, 3600) if stage1s else {}
    if "error" in export:
        print(f"export failed: {export['error']}", file=sys.stderr)
    results = []
    for i, row in enumerate(rows):
        spec = {**row, "size": [args.width, args.height], "iters": args.iters, "refiner": args.refiner}
        spec["masks"] = str(work / f"{i}.npz")
        print(f"running {row['stage1']} {row['backend']} {row['precision']} ...", file=sys.stderr, flush=True)
        results.append(_child("row", spec, 3600))
    for r in results:
        if "error" in r or r["backend"] == "reference":
            continue
        same = r["stage1"] == results[0]["stage1"]
        # Without a torch row, the first fp32 row of that stage 1 (the runtimes' fp32 masks equal torch's).
        fp32 = [b for b in results if b["stage1"] == r["stage1"] and b["precision"] == "fp32" and "error" not in b]
        base = results[0] if same else next((b for b in fp32 if b["backend"] == "torch"), fp32[0] if fp32 else None)
        if base is not None and base is not r and "error" not in base:
            r["iou"], r["against"] = (
                _iou(base["masks"], r["masks"]),
                "reference" if same else f"its {base['backend']} fp32 row",
            )
    print_table(results, export, args)


if __name__ == "__main__":
    main()
