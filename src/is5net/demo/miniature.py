"""The paper's result in miniature, on built-in data, on a CPU, in minutes.

Generates DIS-like images (wires, twigs, lattices, rings, wheels over real textures; the box's object is the
photo's largest, with smaller distractors), trains a narrow 3-channel IS-Net and a narrow 5-channel IS5Net
(with its GT-encoder phase) with the real ``is5net train`` code on a fixed schedule, scores coarse mask /
IS-Net / IS5Net on the held-out split with the real ``is5net eval`` code, and writes the comparison table,
``results.json`` and ``comparison.png`` (with zoomed insets on thin structures). ``is5net.demo.ablation``
trains the refiner with the input sets of the paper's ablation on the same schedule.

Stage 1 is SIMULATED by default (no SAM weights can ship): the coarse mask is made from the GT by a model
of SAM's typical failures (low-resolution mask upsampled, thin parts lost, holes filled, boundary errors,
a stray blob; see ``is5net.demo.simulated_sam``). With ``--sam-checkpoint`` real SAM
makes it instead (far slower on a CPU: about 15 s per image for ViT-B).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from ..io import atomic_write_text, load_image, load_mask, save_png
from .experiment import Experiment, Schedule, clear
from .figures import comparison_figure
from .tables import metric_table, simple_table

log = logging.getLogger("is5net")

METHODS = ("coarse", "isnet", "is5net")
LABELS = {"coarse": "coarse mask", "isnet": "IS-Net (3-ch)", "is5net": "IS5Net (5-ch)"}

# Each setting below was measured with benchmarks/demo_sweep.py on DIS-VD, never on the test split; why each is
# what it is: benchmarks/demo_sweep.md, "Why the demo's settings".
#: What each model of the main run (and the ablation's refiners, from IS5Net's) changes on top of the schedule.
MODELS = {
    # IS-Net trains as its demo baseline always has: the same loss and schedule, no GT-encoder phase.
    "isnet": {"model": "isnet_tiny", "gt_encoder": False, "feature_loss": False},
    # IS-Net has no coarse mask and no box, so what teaches the use of them is IS5Net's alone.
    "is5net": {
        "model": "is5net_tiny",
        "coarse_dir": "dataset",
        "region": "image",
        "gt_encoder": True,
        "feature_loss": True,
        "coarse_cut": 0.5,
        "coarse_hole": 0.5,
        "detail_outside_mask": 10.0,
    },
}
# 64 px photos with the refiners' input at 128: IS-Net's finest side output is at half its input, so the
# output is at the photo's own resolution.
FULL = Schedule(
    size=64,
    n_train=300,
    n_val=40,
    n_test=100,
    train={
        "input_size": 128,
        "width": 1 / 4,
        "batch_size": 8,
        "lr": 2e-3,
        "lr_schedule": "cosine",
        "warmup_steps": 30,
        "max_steps": 600,
        "val_every": 100,
        "bce_weight": 20.0,
        "iou_weight": 20.0,
        "detail_weight": 5.0,
        "feature_weight": 1.0,
        "gt_encoder_max_steps": 450,
        "gt_encoder_lr": 2e-3,
        "gt_encoder_val_every": 225,
    },
    models=MODELS,
)
QUICK = Schedule(
    size=96,
    n_train=40,
    n_val=8,
    n_test=10,
    train={
        "width": 1 / 8,
        "batch_size": 4,
        "lr": 1e-3,
        "lr_schedule": "constant",
        "warmup_steps": 0,
        "max_steps": 16,
        "val_every": 8,
        "bce_weight": 20.0,
        "iou_weight": 20.0,
        "detail_weight": 5.0,
        "feature_weight": 1.0,
        "gt_encoder_max_steps": 6,
        "gt_encoder_lr": 1e-3,
        "gt_encoder_val_every": 3,
    },
    models=MODELS,
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
    """Generate, train IS-Net and IS5Net (in parallel processes), score them and the coarse mask, and write
    ``results.json``, ``table.md`` and ``comparison.png`` under ``out``; returns the results, the printed
    tables and a command that reruns one test image."""
    from .simulated_sam import SIMULATED_SAM_LABEL

    exp = Experiment(Path(out), QUICK if quick else FULL, seed, device, progress)
    stages = _stage_bar(progress)
    stages.set_postfix_str("data")
    exp.make_data(coarse=sam_checkpoint is None)
    coarse_label = SIMULATED_SAM_LABEL
    if sam_checkpoint is not None:
        coarse_label = _real_sam_coarse(exp.data, sam_checkpoint, sam_type, device, progress)
    stages.update(1)

    stages.set_postfix_str("train IS-Net + IS5Net")
    rows = {m: exp.row(m, m) for m in ("isnet", "is5net")}
    ckpts = exp.train(rows, here="is5net", on_here_done=lambda: stages.update(1))
    stages.update(1)

    stages.set_postfix_str("evaluate")
    eval_dir = clear(exp.out / "eval")
    view = exp.coarse_view(eval_dir / "coarse_masks")
    runs = {
        "coarse": dict(method="sam", checkpoint=None, coarse_dir=view),
        "isnet": dict(method="isnet", checkpoint=ckpts["isnet"], coarse_dir=None),
        "is5net": dict(method="is5net", checkpoint=ckpts["is5net"], coarse_dir=view),
    }
    results = exp.score(eval_dir, runs)
    thin = exp.thin_recall(eval_dir, METHODS)
    stages.update(1)

    stages.set_postfix_str("figure")
    comparison_figure(exp.data, eval_dir, METHODS, exp.out / "comparison.png", coarse_label)
    stages.update(1)
    stages.close()
    return _write_results(exp, results, thin, coarse_label, quick, ckpts["is5net"])


def _stage_bar(progress: bool):
    from tqdm import tqdm

    return tqdm(
        total=5,
        desc="demo",
        unit="stage",
        disable=not progress,
        position=0,
        leave=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}",
    )


def _write_results(exp: Experiment, results: dict, thin: dict, coarse_label: str, quick: bool, ckpt: Path) -> dict:
    """``results.json`` and ``table.md``; returns them with the printed tables and the rerun command."""
    for m in METHODS:
        results[m]["thin_recall"] = thin[m]["thin_recall"]
    table = (
        f"Held-out split ({results['is5net']['n']} images), seed {exp.seed}; coarse = {coarse_label}\n\n"
        + metric_table({LABELS[m]: results[m] for m in METHODS})
    )
    thin_rows = {
        LABELS[m]: {"thin recall": t["thin_recall"], "thick recall": t["thick_recall"], "extra": t["extra"]}
        for m, t in thin.items()
    }
    thin_table = (
        "Recall of GT pixels in structures <= 3 px wide (thin) and wider (thick), masks at 0.5, and the\n"
        "predicted pixels outside the GT per GT pixel (extra):\n\n" + simple_table(thin_rows)
    )
    payload = {m: results[m] for m in METHODS}
    payload["coarse_label"] = coarse_label
    payload["thin_structures"] = thin
    payload["seed"] = exp.seed
    payload["schedule"] = reported_schedule(exp.schedule)
    payload["seconds"] = exp.seconds()
    atomic_write_text(exp.out / "results.json", json.dumps(payload, indent=2))
    atomic_write_text(
        exp.out / "table.md",
        f"<!-- is5net demo, seed {exp.seed}{', quick' if quick else ''}, "
        f"{payload['seconds']:.0f} s -->\n"
        f"{table}\n\n{thin_table}\n",
    )
    return {"results": payload, "table": table, "thin_table": thin_table, "predict_command": _rerun(exp, ckpt)}


#: results.json's "schedule": its keys, in their order, have stayed those of the demo's first schedule, each
#: read off IS5Net's settings (input_size 0: the image size), two of them under their old names.
_REPORTED = (
    "steps",
    "gt_encoder_steps",
    "batch_size",
    "val_every",
    "width",
    "lr",
    "input_size",
    "lr_schedule",
    "warmup_steps",
    "bce_weight",
    "iou_weight",
    "detail_weight",
    "detail_outside_mask",
    "coarse_cut",
    "feature_weight",
    "region",
    "coarse_hole",
)
_OLD_NAMES = {"steps": "max_steps", "gt_encoder_steps": "gt_encoder_max_steps"}


def reported_schedule(s: Schedule) -> dict:
    """The schedule as ``results.json`` reports it: the data sizes, then IS5Net's settings (:data:`_REPORTED`)."""
    settings = {"input_size": 0, **s.settings("is5net")}
    sizes = {"size": s.size, "n_train": s.n_train, "n_val": s.n_val, "n_test": s.n_test}
    return {**sizes, **{name: settings[_OLD_NAMES.get(name, name)] for name in _REPORTED}}


def _rerun(exp: Experiment, ckpt: Path) -> str:
    """The ``is5net predict`` command that reruns the first test image with the trained IS5Net."""
    gt_path = sorted((exp.data / "DIS-TE1" / "gt").glob("*.png"))[0]
    ys, xs = np.nonzero(load_mask(gt_path) > 127)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    split = exp.data / "DIS-TE1"
    return (
        f"is5net predict {split / 'im' / (gt_path.stem + '.png')} --box {','.join(map(str, box))} "
        f"--checkpoint {ckpt} --coarse-mask {split / 'coarse' / (gt_path.stem + '.png')} "
        f"-o {exp.out / 'rerun'}"
    )


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
