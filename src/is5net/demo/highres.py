"""``is5net demo --highres``: full-resolution regions proven in miniature, with a ground truth.

The demo's generator makes photos at 4x the refiner's input size (512 px for a 128 px model), so its 1-3 px
wires, spokes and lattice bars shrink to a quarter of a pixel when the whole image is resized to the model
input (the paper's ``image`` region). Two refiners are trained with the real ``is5net train`` code, the same
schedule and seed: one for ``image``, one for ``tiles`` (which also learns the ``box`` view: crops around the
jittered box at random margins, half of its samples; docs/input-contract.md, "Regions"). The held-out split
is scored with the real ``is5net eval`` code at full resolution: the coarse mask, IS5Net ``image``, IS5Net
``box`` and IS5Net ``tiles``, with the six metrics and the thin-structure recall; then the robustness to
loose boxes (``eval --box-jitter``) of the coarse mask and of IS5Net ``tiles``.

Two held-out splits are scored so, with the same checkpoints: ``main``, the photo's main object (``out/data``,
``DIS-TE1``), and ``small``, one small object (10-25 % of the side) in a photo at 8x the model input
(``out/data-small``: ``DIS-VD`` for validation sweeps and ``DIS-TE1``, no training photos; :class:`SmallSplit`),
the case the ``box`` region exists for. :func:`score_split` scores one split; the loose-box table is ``main``'s.

Stage 1 is simulated (no SAM weights can ship; ``is5net.demo.simulated_sam``). A box prompt
bounds what SAM can return, so for a jittered box the simulated coarse mask is clipped to that box.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..io import atomic_write_text, load_mask, save_png
from .experiment import Experiment, Schedule, clear
from .figures import HighresRows, highres_figure
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
# Each setting was measured on the validation split (DIS-VD of both splits), never on the test split:
# benchmarks/demo_sweep.md, "High resolution". The main demo's settings (width 1/4, IoU weight 20, the detail
# weight, the coarse-mask cut and hole) plus detail_spread, which keeps the detail weight from buying thick
# grey bands, and twice the main demo's steps: at 600 steps the maps were still grey where the coarse mask
# spills between branches.
_REFINER = {
    "model": "is5net_tiny",
    "width": 1 / 4,
    "coarse_dir": "dataset",
    "crop_margin": 0.1,
    "lr": 2e-3,
    "lr_schedule": "cosine",
    "warmup_steps": 30,
    "gt_encoder": False,
    "feature_loss": False,
    "bce_weight": 20.0,
    "iou_weight": 20.0,
    "detail_weight": 5.0,
    "detail_outside_mask": 3.0,
    "detail_spread": 2,
    "coarse_cut": 0.5,
    "coarse_hole": 0.5,
}
# The photos at 4x the model input (at least), and max_side their own size: tiles see them at full resolution.
# cache_images: every training photo stays decoded (a crop region cuts a new view of it every epoch).
FULL = Schedule(
    size=512,
    n_train=120,
    n_val=12,
    n_test=24,
    train={
        **_REFINER,
        "input_size": 128,
        "max_side": 512,
        "batch_size": 8,
        "max_steps": 1200,
        "val_every": 400,
        "cache_images": 120,
    },
    models=MODELS,
)
QUICK = Schedule(
    size=256,
    n_train=8,
    n_val=2,
    n_test=3,
    train={
        **_REFINER,
        "width": 1 / 8,
        "input_size": 64,
        "max_side": 256,
        "batch_size": 4,
        "max_steps": 3,
        "val_every": 3,
        "warmup_steps": 0,
        "cache_images": 8,
    },
    models=MODELS,
)


@dataclass(frozen=True)
class SmallSplit:
    """The ``small`` held-out set: one small object (its tight box ``target_scale`` of the side) in photos of
    ``size`` px, validation and test photos only (the refiners train on the main data alone)."""

    size: int
    n_val: int
    n_test: int
    target_scale: tuple[float, float] = (0.10, 0.25)


#: At 8x the refiner's input (FULL: 128 -> 1024, QUICK: 64 -> 512), the case the ``box`` region exists for.
FULL_SMALL = SmallSplit(1024, 12, 16)
QUICK_SMALL = SmallSplit(512, 2, 2)


def run_highres(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Generate both splits, train (image and tiles, in parallel processes), score ``main`` and ``small``, and
    write ``results.json``, ``table.md`` and ``highres.png`` under ``out``; returns the results and the printed
    tables."""
    exp = Experiment(Path(out), QUICK if quick else FULL, seed, device, progress)
    small = QUICK_SMALL if quick else FULL_SMALL
    exp.make_data()
    small_data = make_small_data(exp, small)
    ckpts = exp.train({name: exp.row(name, name) for name in MODELS}, here="is5net_tiles")

    eval_dirs = {"main": exp.out / "eval", "small": exp.out / "eval-small"}
    data = {"main": exp.data, "small": small_data}
    results = {k: score_split(exp, data[k], exp.split, ckpts, eval_dirs[k]) for k in eval_dirs}
    runs = _runs(ckpts, eval_dirs["main"] / _COARSE_VIEW)
    robustness = _robustness(exp, eval_dirs["main"], runs, results["main"])

    titles = [LABELS[n].replace("IS5Net, region ", "") for n in ROWS]
    sections = [HighresRows(k, data[k], exp.split, {n: eval_dirs[k] / n for n in ROWS}) for k in eval_dirs]
    highres_figure(sections, titles, exp.out / "highres.png")
    table, rob_table = _tables(exp.schedule, small, results, robustness)
    payload = {
        **{k: {name: results[k][name] for name in ROWS} for k in eval_dirs},
        "robustness": robustness,
        "seed": seed,
        "schedule": {**reported_schedule(exp.schedule), "small": _reported_small(small)},
        "seconds": exp.seconds(),
    }
    atomic_write_text(exp.out / "results.json", json.dumps(payload, indent=2))
    atomic_write_text(
        exp.out / "table.md",
        f"<!-- is5net demo --highres, seed {seed}{', quick' if quick else ''} -->\n{table}\n\n{rob_table}\n",
    )
    return {"results": payload, "table": table, "robustness_table": rob_table}


def make_small_data(exp: Experiment, small: SmallSplit) -> Path:
    """``exp.out/data-small``, emptied first: the small split's ``DIS-VD`` and ``DIS-TE1`` (DIS5K layout, with
    simulated coarse masks), from the run's seed but streams of their own."""
    from .synthetic import make_synthetic_dataset

    root = clear(exp.out / "data-small")
    make_synthetic_dataset(
        root,
        seed=exp.seed,
        n_train=0,
        n_val=small.n_val,
        n_test=small.n_test,
        size=small.size,
        target_scale=small.target_scale,
    )
    return root


#: The folder of each scored split's eval folder that holds its coarse masks as ``eval --coarse-dir`` reads them.
_COARSE_VIEW = "coarse-j0"


def score_split(exp: Experiment, data: Path, split: str, ckpts: Mapping[str, Path], eval_dir: Path) -> dict:
    """Score the coarse mask and IS5Net ``image`` / ``box`` / ``tiles`` on ``data/split`` at full resolution with
    ``is5net eval``'s own code, predictions under ``eval_dir`` (emptied first). ``ckpts``: ``is5net_image`` (for
    ``image``) and ``is5net_tiles`` (for ``box`` and ``tiles``); a row whose refiner is missing is left out.
    Returns ``{row: the keys of eval --json and thin_recall}`` in :data:`ROWS`' order."""
    clear(eval_dir)
    runs = _runs(ckpts, _coarse_for_jitter(data, split, eval_dir / _COARSE_VIEW, 0.0, exp.seed))
    results = exp.score(eval_dir, runs, data=data, split=split)
    thin = exp.thin_recall(eval_dir, runs, data=data, split=split)
    for name in runs:
        results[name]["thin_recall"] = thin[name]["thin_recall"]
    return results


def _runs(ckpts: Mapping[str, Path], coarse_dir: Path) -> dict[str, dict]:
    """``evaluate_dataset``'s keywords of each row of :data:`ROWS` whose refiner is in ``ckpts``."""
    image, tiles = ckpts.get("is5net_image"), ckpts.get("is5net_tiles")
    runs = {"coarse": dict(method="sam", checkpoint=None, coarse_dir=coarse_dir)}
    if image is not None:
        runs["is5net_image"] = dict(method="is5net", checkpoint=image, coarse_dir=coarse_dir, region="image")
    if tiles is not None:
        for region in ("box", "tiles"):
            runs[f"is5net_{region}"] = dict(method="is5net", checkpoint=tiles, coarse_dir=coarse_dir, region=region)
    return runs


def _robustness(exp: Experiment, eval_dir: Path, runs: dict, results: dict) -> dict[str, dict]:
    """maxFβ and HCEγ of the coarse mask and of IS5Net ``tiles`` at each box jitter (0: the runs as scored), on
    the main split."""
    names, keys = ("coarse", "is5net_tiles"), ("maxF", "HCE")
    robustness = {"0": {n: {k: results[n][k] for k in keys} for n in names}}
    for j in JITTERS[1:]:
        coarse_j = _coarse_for_jitter(exp.data, exp.split, eval_dir / f"coarse-j{j:g}", j, exp.seed)
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


def _reported_small(small: SmallSplit) -> dict:
    return {
        "image_size": small.size,
        "n_val": small.n_val,
        "n_test": small.n_test,
        "target_scale": list(small.target_scale),
    }


def _coarse_for_jitter(data: Path, split: str, view: Path, jitter: float, seed: int) -> Path:
    """``view/<split>/<stem>.png``: the simulated coarse masks, clipped to the box ``eval --box-jitter``
    prompts with (the same seeded draw), since SAM answers inside its box."""
    from ..contract import tight_box
    from ..data.samples import jitter_box

    target = view / split
    target.mkdir(parents=True, exist_ok=True)
    for p in sorted((data / split / "coarse").glob("*.png")):
        coarse = load_mask(p)
        if jitter > 0:
            gt = load_mask(data / split / "gt" / p.name)
            x0, y0, x1, y1 = jitter_box(
                tight_box(gt), 1, gt.shape, max_fraction=jitter, seed=seed, identity=f"{split}/{p.stem}"
            )
            inside = np.zeros_like(coarse, dtype=bool)
            inside[y0:y1, x0:x1] = True
            coarse = np.where(inside, coarse, 0).astype(np.uint8)
        save_png(target / p.name, coarse)
    return view


def _tables(s: Schedule, small: SmallSplit, results: dict, robustness: dict) -> tuple[str, str]:
    """One metric table of :data:`ROWS` per split, headed by what the split is, and the loose-box table."""
    input_size = s.settings("is5net_tiles")["input_size"]
    what = {
        "main": (s.size, "its main object, 62-85 % of the side"),
        "small": (
            small.size,
            "a small object, {:.0f}-{:.0f} % of the side".format(*(100 * v for v in small.target_scale)),
        ),
    }
    tables = []
    for k, (size, obj) in what.items():
        n = results[k]["coarse"]["n"]
        tables.append(
            f"Held-out split `{k}` ({n} photos of {size}x{size}, {obj}; refiner input {input_size}²), "
            "scored at full resolution:\n\n" + metric_table({LABELS[name]: results[k][name] for name in ROWS})
        )
    rob = [
        "Loose boxes on `main` (eval --box-jitter F: each edge moved by up to F of the box's side; maxFβ / HCEγ):",
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
    return "\n\n".join(tables), "\n".join(rob)
