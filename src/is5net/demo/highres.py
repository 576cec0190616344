"""``is5net demo --highres``: full-resolution regions proven in miniature, with a ground truth.

The demo's generator makes photos at 4x the refiner's input size (512 px for a 128 px model), so its 1-3 px
wires, spokes and lattice bars shrink to a quarter of a pixel when the whole image is resized to the model
input (the paper's ``image`` region). Two refiners are trained with the real ``is5net train`` code, the same
schedule and seed: one for ``image``, one for ``tiles`` (which also learns the ``box`` view: crops around the
jittered box at random margins, half of its samples; docs/input-contract.md, "Regions"). The held-out split
is scored with the real ``is5net eval`` code at full resolution: the coarse mask, IS5Net ``image``, IS5Net
``box`` and IS5Net ``tiles``, with the six metrics and the thin-structure recall; then the robustness to
loose boxes (``eval --box-jitter``) of the coarse mask and of IS5Net ``tiles``.

Stage 1 is simulated (no SAM weights can ship; ``is5net.demo.simulated_sam``). A box prompt
bounds what SAM can return, so for a jittered box the simulated coarse mask is clipped to that box.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io import atomic_write_text, load_mask, save_png
from .experiment import Experiment, Schedule, clear
from .figures import highres_figure
from .tables import metric_table

ROWS = ("coarse", "is5net_image", "is5net_box", "is5net_tiles")
LABELS = {
    "coarse": "coarse mask (simulated SAM)",
    "is5net_image": "IS5Net, region image",
    "is5net_box": "IS5Net, region box",
    "is5net_tiles": "IS5Net, region tiles",
}
#: The box jitters of the loose-box table; the first, 0, is the runs as scored above.
JITTERS = (0.0, 0.05, 0.1, 0.2)

#: The two refiners differ only in their region; both train without the GT-encoder phase, since the table
#: compares regions.
MODELS = {"is5net_image": {"region": "image"}, "is5net_tiles": {"region": "tiles"}}
_REFINER = {
    "model": "is5net_tiny",
    "width": 1 / 8,
    "coarse_dir": "dataset",
    "crop_margin": 0.1,
    "lr": 2e-3,
    "lr_schedule": "cosine",
    "gt_encoder": False,
    "feature_loss": False,
}
# The photos at 4x the model input (at least), and max_side their own size: tiles see them at full resolution.
FULL = Schedule(
    size=512,
    n_train=120,
    n_val=12,
    n_test=24,
    train={**_REFINER, "input_size": 128, "max_side": 512, "batch_size": 8, "max_steps": 600, "val_every": 200},
    models=MODELS,
)
QUICK = Schedule(
    size=256,
    n_train=8,
    n_val=2,
    n_test=3,
    train={**_REFINER, "input_size": 64, "max_side": 256, "batch_size": 4, "max_steps": 3, "val_every": 3},
    models=MODELS,
)


def run_highres(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Generate, train (image and tiles, in parallel processes), score, and write ``results.json``,
    ``table.md`` and ``highres.png`` under ``out``; returns the results and the printed tables."""
    exp = Experiment(Path(out), QUICK if quick else FULL, seed, device, progress)
    exp.make_data()
    ckpts = exp.train({name: exp.row(name, name) for name in MODELS}, here="is5net_tiles")

    eval_dir = clear(exp.out / "eval")
    coarse0 = _coarse_for_jitter(exp.data, eval_dir / "coarse-j0", 0.0, seed)
    runs = {
        "coarse": dict(method="sam", checkpoint=None, coarse_dir=coarse0),
        "is5net_image": dict(method="is5net", checkpoint=ckpts["is5net_image"], coarse_dir=coarse0, region="image"),
        "is5net_box": dict(method="is5net", checkpoint=ckpts["is5net_tiles"], coarse_dir=coarse0, region="box"),
        "is5net_tiles": dict(method="is5net", checkpoint=ckpts["is5net_tiles"], coarse_dir=coarse0, region="tiles"),
    }
    results = exp.score(eval_dir, runs)
    thin = exp.thin_recall(eval_dir, runs)
    for name in runs:
        results[name]["thin_recall"] = thin[name]["thin_recall"]
    robustness = _robustness(exp, eval_dir, runs, results)

    titles = [LABELS[n].replace("IS5Net, region ", "") for n in runs]
    highres_figure(exp.data, {name: eval_dir / name for name in runs}, titles, exp.out / "highres.png")
    table, rob_table = _tables(exp.schedule, results, robustness)
    payload = {
        **{name: results[name] for name in ROWS},
        "robustness": robustness,
        "seed": seed,
        "schedule": reported_schedule(exp.schedule),
        "seconds": exp.seconds(),
    }
    atomic_write_text(exp.out / "results.json", json.dumps(payload, indent=2))
    atomic_write_text(
        exp.out / "table.md",
        f"<!-- is5net demo --highres, seed {seed}{', quick' if quick else ''} -->\n{table}\n\n{rob_table}\n",
    )
    return {"results": payload, "table": table, "robustness_table": rob_table}


def _robustness(exp: Experiment, eval_dir: Path, runs: dict, results: dict) -> dict[str, dict]:
    """maxFβ and HCEγ of the coarse mask and of IS5Net ``tiles`` at each box jitter (0: the runs as scored)."""
    names, keys = ("coarse", "is5net_tiles"), ("maxF", "HCE")
    robustness = {"0": {n: {k: results[n][k] for k in keys} for n in names}}
    for j in JITTERS[1:]:
        coarse_j = _coarse_for_jitter(exp.data, eval_dir / f"coarse-j{j:g}", j, exp.seed)
        jittered = {
            f"{n}-j{j:g}": {**runs[n], "coarse_dir": coarse_j, "box_jitter": j, "jitter_seed": exp.seed} for n in names
        }
        scored = exp.score(eval_dir, jittered)
        robustness[f"{j:g}"] = {n: {k: scored[f"{n}-j{j:g}"][k] for k in keys} for n in names}
    return robustness


def reported_schedule(s: Schedule) -> dict:
    """The schedule as ``results.json`` reports it (its keys and their order as they have always been)."""
    t = s.settings("is5net_tiles")
    return {
        "image_size": s.size,
        "input_size": t["input_size"],
        "n_train": s.n_train,
        "n_val": s.n_val,
        "n_test": s.n_test,
        "steps": t["max_steps"],
        "batch_size": t["batch_size"],
        "val_every": t["val_every"],
        "lr": t["lr"],
        "width": t["width"],
    }


def _coarse_for_jitter(data: Path, view: Path, jitter: float, seed: int) -> Path:
    """``view/DIS-TE1/<stem>.png``: the simulated coarse masks, clipped to the box ``eval --box-jitter``
    prompts with (the same seeded draw), since SAM answers inside its box."""
    from ..contract import tight_box
    from ..data.samples import jitter_box

    target = view / "DIS-TE1"
    target.mkdir(parents=True, exist_ok=True)
    for p in sorted((data / "DIS-TE1" / "coarse").glob("*.png")):
        coarse = load_mask(p)
        if jitter > 0:
            gt = load_mask(data / "DIS-TE1" / "gt" / p.name)
            x0, y0, x1, y1 = jitter_box(
                tight_box(gt), 1, gt.shape, max_fraction=jitter, seed=seed, identity=f"DIS-TE1/{p.stem}"
            )
            inside = np.zeros_like(coarse, dtype=bool)
            inside[y0:y1, x0:x1] = True
            coarse = np.where(inside, coarse, 0).astype(np.uint8)
        save_png(target / p.name, coarse)
    return view


def _tables(s: Schedule, results: dict, robustness: dict) -> tuple[str, str]:
    """The metric table of :data:`ROWS` and the loose-box table."""
    n = results["coarse"]["n"]
    size, input_size = s.size, s.settings("is5net_tiles")["input_size"]
    table = (
        f"Held-out split ({n} photos of {size}x{size}, refiner input {input_size}²), scored at full resolution:\n\n"
        + metric_table({LABELS[name]: results[name] for name in ROWS})
    )
    rob = [
        "Loose boxes (eval --box-jitter F: each edge moved by up to F of the box's side; maxFβ / HCEγ):",
        "",
        "| box jitter | coarse mask | IS5Net, region tiles |",
        "|---:|---:|---:|",
    ]
    for j, row in robustness.items():
        rob.append(
            f"| {j} | "
            + " | ".join(f"{row[n]['maxF']:.3f} / {row[n]['HCE']:.0f}" for n in ("coarse", "is5net_tiles"))
            + " |"
        )
    return table, "\n".join(rob)
