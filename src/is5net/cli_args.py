"""The arguments of every ``is5net`` command, declared apart from the code that runs them.

``is5net --help``, ``is5net <cmd> --help`` and ``--version`` build the whole parser; if the arguments lived in
the command modules, building it would import torch, SAM, OpenCV and the metrics (seconds and ~750 MB) only to
print text. So this module imports nothing but :mod:`argparse`, :mod:`pathlib` and the light
:mod:`is5net.data.defaults`, and the command module is imported by :func:`is5net.cli.main` only once its
command is about to run.

Each function below declares one command's arguments; its docstring is the command's ``--help`` description.
The few names the choices need (SAM types, metric keys, defaults) are written here rather than imported from
the modules that own them (which import torch); ``tests/test_startup.py`` checks that both copies agree.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .defaults import (
    ALL_METRICS,
    BACKEND_CHOICES,
    DEFAULT_CACHE_NAME,
    DEFAULT_INPUT_SIZE,
    DEFAULT_MARGIN,
    DEFAULT_MAX_SIDE,
    JITTER_FRACTION,
    MASK_CHOICES,
    MAX_PIXELS_ENV,
    MIN_COMPONENT_FRACTION,
    REGIONS,
    SAM_TYPES,
    STAGE1_METHODS,
)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a pixel limit, a batch size)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def fraction_arg(text: str) -> float:
    """A number from 0 to 1 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def runtime_arguments(parser) -> None:
    """--device / --precision / --backend: where and how the models run (predict and serve alike, so a
    server's masks are predict's)."""
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="the refiner's runtime: auto (default: on a CPU the fastest installed one that "
        "matches the reference: openvino, then onnxruntime, then torch; torch on CUDA), "
        "torch, onnxruntime, openvino (pip install 'is5net[onnx]')",
    )


def region_arguments(parser, max_side: bool = True) -> None:
    """--region / --margin / --max-side: what part of the image the refiner sees (docs/input-contract.md)."""
    parser.add_argument(
        "--region",
        choices=REGIONS,
        default=None,
        help="image: the whole image at the model's input size (the paper's); box: the box plus "
        "--margin, at the model's input size, pasted back; tiles: that crop at native "
        "resolution in tiles (default: what the checkpoint was trained for; official: image)",
    )
    parser.add_argument(
        "--margin",
        type=fraction_arg,
        default=DEFAULT_MARGIN,
        metavar="F",
        help="box and tiles: grow the box by F of its width and height on each side, at least 16 px "
        f"(default {DEFAULT_MARGIN})",
    )
    if max_side:
        parser.add_argument(
            "--max-side",
            type=positive_int,
            default=DEFAULT_MAX_SIDE,
            metavar="N",
            help=f"tiles: refine at native resolution up to N pixels on the crop's longer side (default {DEFAULT_MAX_SIDE})",
        )


def demo(parser: argparse.ArgumentParser) -> None:
    """The paper's result in miniature, on built-in data, on a CPU, in minutes."""
    parser.add_argument("--out", type=Path, default=Path("is5net-demo"), help="output folder (default ./is5net-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training (default 0)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a much smaller run (for CI): seconds, not minutes; too short to show the result",
    )
    parser.add_argument(
        "--sam-checkpoint",
        help="make the coarse masks with real SAM instead of the simulation "
        "(on a CPU this takes far longer: ~15 s per image for ViT-B)",
    )
    parser.add_argument("--sam-type", help="SAM type (default: read off the checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="the paper's ablation: the refiner trained with inputs RGB, +box, +mask, +mask+box and the last "
        "without the GT-encoder phase; writes ablation.json, ablation.md and ablation.png (about 15-25 minutes)",
    )
    parser.add_argument(
        "--highres",
        action="store_true",
        help="full-resolution regions in miniature: photos at 4x the model input, refiners for "
        "the image and tiles regions, one table of image / box / tiles and loose boxes",
    )


def predict(parser: argparse.ArgumentParser) -> None:
    """Segment the objects in boxes: SAM gives a coarse mask, IS5Net refines it.

    Each image's outputs are written as soon as it is done; an image that cannot be read or segmented is
    reported in one line and the others still run (the exit status is then 1). A box with a negative
    coordinate is passed with '=': --box=-5,0,10,10 (argparse would read '-5,...' as an option).
    """
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="image files (any Pillow format), folders, or quoted glob patterns ('photos/*.jpg'); "
        "a folder or a pattern mirrors its tree under OUTDIR and keeps OUTDIR/index.jsonl, so "
        "a second run skips what is done",
    )
    parser.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="also the images in the folders' subfolders (and '**' in patterns)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="redo images that OUTDIR/index.jsonl lists as done (default: skip them)",
    )
    parser.add_argument(
        "--combine",
        choices=("separate", "union", "labels"),
        default="separate",
        help="several boxes: separate (one mask per box, <stem>_<k>.png), union (one mask), "
        "labels (one label PNG: 0 background, k+1 for box k; an overlap goes to the box "
        "whose soft mask is higher there)",
    )
    parser.add_argument(
        "--background",
        metavar="COLOR|IMAGE",
        help="cut-outs composited over this colour (name, #rrggbb, r,g,b) or image: RGB, no alpha",
    )
    parser.add_argument(
        "--foreground",
        choices=("estimate", "raw"),
        default="estimate",
        help="cut-out colours at soft edges: estimate (pymatting's foreground estimation, so hair "
        "does not carry the old background) or raw (the photo's pixels, as is5net serve)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        default=2,
        metavar="N",
        help="images decoded ahead in a background thread while the model runs (0: none)",
    )
    parser.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="x0,y0,x1,y1",
        help="a box in pixels of the image as displayed (XYXY, exclusive end); repeat for several; "
        "applies to every IMAGE. A box starting with a negative number needs '=': "
        "--box=-5,0,10,10",
    )
    parser.add_argument(
        "--boxes",
        type=Path,
        metavar="FILE",
        help="JSON mapping image file names (or stems) to lists of boxes, a COCO annotation "
        "file (its bbox fields, [x, y, w, h]), or a CSV with rows file,x0,y0,x1,y1",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH|NAME",
        help="refiner: DIS-SAM/IS-Net .pth or our .safetensors, or a name under IS5NET_HOME "
        "(dis-sam, isnet, isnet-general-use)",
    )
    stage1 = parser.add_mutually_exclusive_group()
    stage1.add_argument(
        "--sam-checkpoint",
        metavar="PATH|NAME",
        help="SAM weights (sam_vit_*.pth) or a name under IS5NET_HOME (vit_b, vit_l, vit_h)",
    )
    stage1.add_argument(
        "--coarse-mask",
        type=Path,
        metavar="FILE|DIR",
        help="stage-1 mask(s) from any method instead of SAM: a file (one image) or a directory "
        "of masks named like the images (<stem>.png, or <stem>_<k>.png per box)",
    )
    parser.add_argument(
        "--stage1",
        choices=STAGE1_METHODS,
        default="sam",
        help="stage 1: sam (default) or grabcut (OpenCV's GrabCut from the box: no weights needed)",
    )
    parser.add_argument("--sam-type", choices=SAM_TYPES, help="SAM architecture (default: read off the checkpoint)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("is5net-out"),
        metavar="OUTDIR",
        help="output directory (default: ./is5net-out)",
    )
    runtime_arguments(parser)
    parser.add_argument(
        "--save",
        choices=("mask", "cutout", "both"),
        default="mask",
        help="mask: grayscale PNG; cutout: RGBA PNG of the object; both: <name>.png and <name>_cutout.png",
    )
    parser.add_argument(
        "--threshold",
        metavar="T|otsu",
        help="binarise the mask at T in [0, 1] or at Otsu's threshold (default: keep the soft map)",
    )
    parser.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default="first",
        help="SAM mask kept: first (masks[0], what the released refiner was trained on) or best score",
    )
    parser.add_argument(
        "--box-channel",
        choices=("user", "sam_mask"),
        default="user",
        help="box channel: the given box (paper) or the tight box of the SAM mask (reference notebook)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=8, help="boxes refined per forward pass")
    parser.add_argument(
        "--sam-resize",
        choices=("pil", "torch"),
        default="pil",
        help="pil: SAM's own resize (reference masks); torch: on the device (faster on a GPU for "
        "large photos, masks may differ slightly)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"refuse images with more than N pixels, a guard against decompression bombs "
        f"(default: ${MAX_PIXELS_ENV}, else about 89 million, Pillow's own limit)",
    )
    region_arguments(parser)


def convert_isnet(parser: argparse.ArgumentParser) -> None:
    """Turn 3-channel IS-Net weights (``isnet.pth``, ``isnet-general-use.pth``) into a 5-channel IS5Net."""
    parser.add_argument("input", type=Path, help="IS-Net checkpoint (.pth or .safetensors, 3 input channels)")
    parser.add_argument(
        "output", type=Path, help="where to write the IS5Net weights (.safetensors; never the input file)"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=DEFAULT_INPUT_SIZE,
        metavar="S",
        help=f"input size stored in the metadata: a multiple of 32, at least 32 (default {DEFAULT_INPUT_SIZE})",
    )


def eval_(parser: argparse.ArgumentParser) -> None:
    """Score predicted masks against ground truth with the six DIS metrics (maxFβ, Fβw, M, Sα, Eφm, HCEγ)."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    folder = parser.add_argument_group("folder mode (score existing masks)")
    folder.add_argument("--pred", metavar="DIR", help="folder of predicted masks (8-bit grayscale, 0..255)")
    folder.add_argument("--gt", metavar="DIR", help="folder of ground-truth masks, paired with --pred by file stem")
    folder.add_argument(
        "--allow-missing",
        action="store_true",
        help="score the pairs that exist instead of failing when a GT has no prediction or a prediction no GT",
    )
    folder.add_argument("--per-image", metavar="CSV", help="write every image's own numbers to this CSV file")

    common = parser.add_argument_group("output and speed (both modes)")
    common.add_argument("--json", metavar="FILE", help="write the numbers as one JSON object")
    common.add_argument("--csv", metavar="FILE", help="write the table as CSV (one row per folder or subset)")
    common.add_argument(
        "--metrics",
        metavar="LIST",
        default=None,
        help="comma-separated subset of " + ",".join(ALL_METRICS) + " (or 'paper' for the first six); "
        "default: all in folder mode, the paper's six in dataset mode. HCE is the slow one",
    )
    common.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes for scoring (0 = one per CPU core; default 1)",
    )

    ds = parser.add_argument_group("dataset mode (run a method on DIS5K and write Table I)")
    ds.add_argument("--data", metavar="DIR", help="DIS5K root holding DIS-VD, DIS-TE1..4 (each with im/ and gt/)")
    ds.add_argument("--subsets", metavar="LIST", help="comma-separated subsets to run (default: DIS-TE1..4 and DIS-TE)")
    ds.add_argument("--method", metavar="NAME", help="what to evaluate (e.g. is5net, sam, isnet); names the table row")
    ds.add_argument("--checkpoint", metavar="PATH", help="refiner checkpoint (official .pth or ours .safetensors)")
    ds.add_argument("--sam-checkpoint", metavar="PATH", help="SAM checkpoint for the stage-1 mask")
    ds.add_argument(
        "--sam-type", metavar="TYPE", help="SAM architecture (vit_b, vit_l, vit_h; default: read off the checkpoint)"
    )
    ds.add_argument("--coarse-dir", metavar="DIR", help="take stage-1 masks from this folder instead of running SAM")
    ds.add_argument("--out", metavar="DIR", help="where predicted masks and tables are written")
    ds.add_argument("--resume", action="store_true", help="reuse predictions already in --out")
    ds.add_argument("--device", metavar="DEV", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    region_arguments(ds, max_side=False)
    ds.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=None,
        help="the refiner's runtime, as predict's --backend (default auto, so the masks scored are predict's)",
    )
    ds.add_argument(
        "--box-jitter",
        type=fraction_arg,
        default=0.0,
        metavar="F",
        help="move each edge of the GT's tight box by up to F of the box's side, as a hand-drawn or "
        "detected box would be (seeded; written in the table's caption; default 0: tight boxes)",
    )
    ds.add_argument("--jitter-seed", type=int, default=0, metavar="N", help="seed of --box-jitter (default 0)")


def check_data(parser: argparse.ArgumentParser) -> None:
    """Check a dataset before training: every file decoded, every image paired with a GT of its size."""
    parser.add_argument(
        "root", metavar="ROOT", help="a DIS5K root (DIS-TR/im, DIS-TR/gt, ...) or a folder with im/ and gt/"
    )
    parser.add_argument("--subsets", metavar="A,B", help="subsets to check, e.g. DIS-TR,DIS-VD (default: all found)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="decoding threads (default: up to 8)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def train(parser: argparse.ArgumentParser) -> None:
    """Train IS5Net (or IS-Net) the paper's way: GT encoder first, then the refiner with feature supervision.

    Which caps govern which phase: phase 1 (GT encoder) stops when its validation maxF exceeds
    gt_encoder_target_maxf (0.99), after early_stop validations without progress, or at gt_encoder_max_steps
    (default min(20000, max_steps)); phase 2 (refiner) stops after early_stop validations without progress in
    maxF or MAE, or at max_steps. early_stop=0: no plateau stop. region=image|box|tiles (crop_margin,
    max_side): what each sample shows the refiner, recorded in the checkpoint for predict.
    """
    parser.add_argument(
        "--data", help="DIS5K root (trains on DIS-TR, validates on DIS-VD) or a folder with im/ and gt/"
    )
    parser.add_argument("--out", type=Path, help="run directory (config, log, checkpoints, refiner.safetensors)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR exactly")
    parser.add_argument("--config", type=Path, help="YAML file of settings")
    parser.add_argument("--val", help="validation folder (im/ + gt/) when --data is not a DIS5K root")
    stage1 = parser.add_mutually_exclusive_group()
    stage1.add_argument(
        "--coarse-dir",
        help="coarse masks from any stage-1 method: DIR/<subset>/<stem>.png or "
        "DIR/<stem>.png ('dataset' = each subset's coarse/ folder)",
    )
    stage1.add_argument("--sam-checkpoint", help="SAM weights whose masks `is5net cache-sam` cached")
    parser.add_argument("--sam-type", help="SAM type (default: read off the checkpoint)")
    parser.add_argument("--cache", help="SAM-mask cache directory (default: DATA/.sam-cache)")
    parser.add_argument("--skip-bad", action="store_true", help="train on the good pairs of a dataset with problems")
    parser.add_argument(
        "-q", "--quiet", "--no-progress", dest="no_progress", action="store_true", help="no progress bars"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="setting overrides, e.g. lr=1e-4 max_steps=1000"
    )


def serve(parser: argparse.ArgumentParser) -> None:
    """A local web page and HTTP API: draw a box in the browser, get the mask (FastAPI + uvicorn).

    The models load once; inference runs in one worker, a bounded queue answers 429 when full. Binds
    127.0.0.1 by default: another --host needs --token (or $IS5NET_SERVE_TOKEN) or --insecure. Without SAM
    weights, --stage1 grabcut makes the coarse mask (and is5net demo's refiner.safetensors can be served).
    Needs the serve extra: pip install 'is5net[serve]'.
    """
    parser.add_argument(
        "--checkpoint",
        metavar="PATH|NAME",
        help="refiner: DIS-SAM .pth or our .safetensors, or a name under IS5NET_HOME (dis-sam)",
    )
    parser.add_argument(
        "--refiner", choices=("none",), default=None, help="none: serve the stage-1 mask alone (no --checkpoint)"
    )
    parser.add_argument(
        "--sam-checkpoint",
        metavar="PATH|NAME",
        help="SAM weights (sam_vit_*.pth) or a name under IS5NET_HOME (vit_b, vit_l, vit_h)",
    )
    parser.add_argument(
        "--stage1",
        choices=STAGE1_METHODS,
        default="sam",
        help="stage 1: sam (default) or grabcut (OpenCV's GrabCut from the box: no weights needed)",
    )
    parser.add_argument("--sam-type", choices=SAM_TYPES, help="SAM architecture (default: read off the checkpoint)")
    parser.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default="first",
        help="SAM mask kept: first (masks[0], the reference) or best score",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--token",
        default=None,
        metavar="T",
        help="require 'Authorization: Bearer T' on /api/ (default: $IS5NET_SERVE_TOKEN, else none)",
    )
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    parser.add_argument(
        "--cors",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of ORIGIN (e.g. https://example.org) call the API; repeatable (default: off)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=25.0,
        metavar="MB",
        help="largest request body, refused while it streams in (413; default 25)",
    )
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=50_000_000,
        metavar="N",
        help="largest image in pixels (413; default 50000000)",
    )
    parser.add_argument(
        "--cache-mb",
        type=float,
        default=1024.0,
        metavar="MB",
        help="memory for cached image embeddings, least recently used dropped first (default 1024)",
    )
    parser.add_argument(
        "--queue",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests waiting or running at once; more get 429 with Retry-After (default 8)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="per-request limit in seconds, queueing included (503 after; default 120)",
    )
    runtime_arguments(parser)
    region_arguments(parser)  # the default region for requests that name none; the API's "region" overrides
    parser.add_argument("--no-ui", action="store_true", help="the API only, no page at /")
    parser.add_argument("-q", "--quiet", action="store_true", help="no access log")


def cache_sam(parser: argparse.ArgumentParser) -> None:
    """The on-disk cache of stage-1 SAM masks for training, and ``is5net cache-sam`` to fill it."""
    parser.add_argument(
        "--data",
        required=True,
        metavar="ROOT",
        help="a DIS5K root (DIS-TR/im, DIS-TR/gt, ...) or a folder with im/ and gt/",
    )
    parser.add_argument(
        "--sam-checkpoint",
        metavar="PATH|NAME",
        help="SAM weights (sam_vit_*.pth) or a name under IS5NET_HOME (vit_b, vit_l, vit_h); "
        "may be left out only with --sam-type tiny (a random test SAM)",
    )
    parser.add_argument("--sam-type", choices=SAM_TYPES, help="SAM architecture (default: read off the checkpoint)")
    parser.add_argument("--cache", metavar="DIR", help=f"cache folder (default: ROOT/{DEFAULT_CACHE_NAME})")
    parser.add_argument("--subsets", metavar="A,B", help="subsets to cache, e.g. DIS-TR,DIS-VD (default: all found)")
    parser.add_argument(
        "--mask-choice",
        choices=MASK_CHOICES,
        default="first",
        help="SAM mask kept: first = masks[0] (the reference, default) or best = highest predicted IoU",
    )
    parser.add_argument(
        "--jitter",
        type=int,
        default=0,
        metavar="K",
        help="also cache K jittered boxes per sample (as training with --jitter K uses; default 0)",
    )
    parser.add_argument(
        "--jitter-fraction",
        type=float,
        default=JITTER_FRACTION,
        metavar="F",
        help=f"largest move of a box side, as a fraction of the box side (default {JITTER_FRACTION})",
    )
    parser.add_argument(
        "--min-fraction",
        type=float,
        default=MIN_COMPONENT_FRACTION,
        metavar="F",
        help=f"GT enrichment: smallest component, as a fraction of the image (default {MIN_COMPONENT_FRACTION})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the box jitter (default 0)")
    parser.add_argument(
        "--no-enrich", dest="enrich", action="store_false", help="whole GT masks only, no per-component samples"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when present)")
    parser.add_argument(
        "--batch-boxes", type=int, default=16, metavar="N", help="boxes per SAM decoder call (default 16)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def export_onnx(parser: argparse.ArgumentParser) -> None:
    """Export the refiner to ONNX, with its input contract in the model's metadata, and check it.

    The graph takes the normalised N x C x S x S input and gives side output 1's logits (before sigmoid);
    input size, channels, mean, std and region are in the model's metadata_props. After writing, ONNX
    Runtime and torch run on a real image (skimage's astronaut) and max |diff| and mask IoU are printed; over
    the tolerance the file is not kept and the exit status is 1.
    """
    parser.add_argument(
        "checkpoint",
        metavar="CKPT",
        help="refiner: official .pth, our .safetensors, or a name "
        "under IS5NET_HOME (dis-sam, isnet, isnet-general-use)",
    )
    parser.add_argument("output", type=Path, metavar="OUT.onnx", help="where to write the ONNX model")
    parser.add_argument("--dynamic-batch", action="store_true", help="a free batch dimension (default: batch 1)")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 11..21 (default 17)")
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="store the weights in float16 (half the file); runtimes still compute in float32",
    )
    parser.add_argument(
        "--sam-decoder",
        metavar="SAM",
        help="also export SAM's prompt decoder (segment_anything's SamOnnxModel) from these SAM "
        "weights (PATH or vit_b/vit_l/vit_h under IS5NET_HOME) to OUT.sam_decoder.onnx, "
        "checked the same way",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the check's verdict")


def weights(parser: argparse.ArgumentParser) -> None:
    """The official weight files: list them, verify the ones under IS5NET_HOME, download one on request.

    Nothing is downloaded except by `is5net weights download NAME`. Downloads show a progress bar, resume a
    partial file (HTTP Range), are checked against the size and checksums the publisher gives, and are moved
    into place only when they pass. Files published only on Google Drive get the steps to place them.
    """
    # -q before or after the action (`weights -q download vit_b` or `weights download vit_b -q`).
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="every known file: name, size, checksum, where it is published, whether present")
    verify = sub.add_parser("verify", help="check the files under IS5NET_HOME (size and checksums)")
    verify.add_argument("names", nargs="*", metavar="NAME", help="only these (default: every file present)")
    download = sub.add_parser("download", help="download NAME into IS5NET_HOME (or --to DIR)")
    download.add_argument("name", metavar="NAME", help="vit_b, vit_l, vit_h (the others are on Google Drive)")
    download.add_argument("--to", type=Path, metavar="DIR", help="folder to put the file in (default: IS5NET_HOME)")
    download.add_argument(
        "--mirror",
        metavar="URL",
        help="fetch <URL>/<file name> instead of the publisher's address (checked the same way)",
    )
    download.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bar")


def doctor(parser: argparse.ArgumentParser) -> None:
    """What this installation can do: versions, device and threads, backends and extras, weight files
    under IS5NET_HOME (verified), and what to do about anything missing."""
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="do not hash the weight files (the size is still checked): faster for big files",
    )
