"""``is5net demo --highres``: full-resolution regions proven in miniature, with a ground truth.

The demo's generator makes photos at 4x the refiner's input size (512 px for a 128 px model), so its 1-3 px
wires, spokes and lattice bars shrink to a quarter of a pixel when the whole image is resized to the model
input (the paper's ``image`` region). Two refiners are trained with the real ``is5net train`` code, the same
schedule and seed: one for ``image``, one for ``tiles`` (which also learns the ``box`` view: crops around the
jittered box at random margins, half of its samples; docs/input-contract.md, "Regions"). The held-out split
is scored with the real ``is5net eval`` code at full resolution: the coarse mask, IS5Net ``image``, IS5Net
``box`` and IS5Net ``tiles``, with the six metrics and the thin-structure recall; then the robustness to
loose boxes (``eval --box-jitter``) of the coarse mask and of IS5Net ``tiles``.

Stage 1 is simulated (no SAM weights can ship; ``is5net.demo.synthetic.simulate_coarse_mask``). A box prompt
bounds what SAM can return, so for a jittered box the simulated coarse mask is clipped to that box.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write_text, load_mask, save_png

ROWS = ("coarse", "is5net_image", "is5net_box", "is5net_tiles")
LABELS = {
    "coarse": "coarse mask (simulated SAM)",
    "is5net_image": "IS5Net, region image",
    "is5net_box": "IS5Net, region box",
    "is5net_tiles": "IS5Net, region tiles",
}
JITTERS = (0.0, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class HighresSchedule:
    image_size: int  # the photos' side: at least 4x the model input
    input_size: int
    n_train: int
    n_val: int
    n_test: int
    steps: int
    batch_size: int
    val_every: int
    lr: float = 2e-3
    width: float = 1 / 8


FULL = HighresSchedule(
    image_size=512, input_size=128, n_train=120, n_val=12, n_test=24, steps=600, batch_size=8, val_every=200
)
QUICK = HighresSchedule(image_size=256, input_size=64, n_train=8, n_val=2, n_test=3, steps=3, batch_size=4, val_every=3)


def run_highres(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu", progress: bool = True) -> dict:
    """Generate, train (image and tiles, in parallel processes), score, and write ``results.json``,
    ``table.md`` and ``highres.png`` under ``out``; returns the results and the printed tables."""
    import multiprocessing as mp

    import torch

    from .synthetic import make_synthetic_dataset

    s = QUICK if quick else FULL
    out = Path(out)
    torch.set_num_threads(1)  # the same table on any machine; the two trainings use one core each
    started = time.perf_counter()
    data = out / "data"
    make_synthetic_dataset(data, seed=seed, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test, size=s.image_size)
    with mp.get_context("spawn").Pool(1) as pool:
        image_job = pool.apply_async(_train, (data, out / "is5net_image", s, seed, "image", device, False))
        tiles_ckpt = _train(data, out / "is5net_tiles", s, seed, "tiles", device, progress)
        image_ckpt = image_job.get()

    eval_dir = out / "eval"
    if eval_dir.exists():
        shutil.rmtree(eval_dir)
    coarse0 = _coarse_for_jitter(data, eval_dir / "coarse-j0", 0.0, seed)
    runs = {
        "coarse": dict(method="sam", checkpoint=None, coarse_dir=coarse0),
        "is5net_image": dict(method="is5net", checkpoint=image_ckpt, coarse_dir=coarse0, region="image"),
        "is5net_box": dict(method="is5net", checkpoint=tiles_ckpt, coarse_dir=coarse0, region="box"),
        "is5net_tiles": dict(method="is5net", checkpoint=tiles_ckpt, coarse_dir=coarse0, region="tiles"),
    }
    results = {name: _score(data, eval_dir / name, device, progress, **kw) for name, kw in runs.items()}
    thin = thin_recall(data, {name: eval_dir / name for name in runs})
    for name in runs:
        results[name]["thin_recall"] = thin[name]

    robustness: dict[str, dict] = {}
    for j in JITTERS:
        coarse_j = coarse0 if j == 0 else _coarse_for_jitter(data, eval_dir / f"coarse-j{j:g}", j, seed)
        row = {}
        for name, kw in (("coarse", runs["coarse"]), ("is5net_tiles", runs["is5net_tiles"])):
            if j == 0:
                row[name] = {k: results[name][k] for k in ("maxF", "HCE")}
                continue
            kw = {**kw, "coarse_dir": coarse_j}
            r = _score(data, eval_dir / f"{name}-j{j:g}", device, progress, box_jitter=j, jitter_seed=seed, **kw)
            row[name] = {k: r[k] for k in ("maxF", "HCE")}
        robustness[f"{j:g}"] = row

    _figure(data, {name: eval_dir / name for name in runs}, out / "highres.png")
    table, rob_table = _tables(results, robustness, s)
    payload = {
        **{name: results[name] for name in ROWS},
        "robustness": robustness,
        "seed": seed,
        "schedule": asdict(s),
        "seconds": round(time.perf_counter() - started, 1),
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2))
    atomic_write_text(
        out / "table.md",
        f"<!-- is5net demo --highres, seed {seed}{', quick' if quick else ''} -->\n{table}\n\n{rob_table}\n",
    )
    return {"results": payload, "table": table, "robustness_table": rob_table}


def _train(data: Path, run_dir: Path, s: HighresSchedule, seed: int, region: str, device: str, progress: bool) -> Path:
    import torch

    from ..train import load_config, train

    torch.set_num_threads(1)
    config = load_config(
        None,
        None,
        base={
            "data": str(data),
            "model": "is5net_tiny",
            "width": s.width,
            "input_size": s.input_size,
            "coarse_dir": "dataset",
            "region": region,
            "max_side": s.image_size,
            "crop_margin": 0.1,
            "batch_size": s.batch_size,
            "lr": s.lr,
            "lr_schedule": "cosine",
            "optimizer": "adamw",
            "max_steps": s.steps,
            "val_every": s.val_every,
            "early_stop": 0,
            "seed": seed,
            "workers": 0,
            "device": device,
            "log_every": 20,
            "enrich": False,
            "data_cache": "off",
            # Both refiners are trained the same way, without the GT-encoder phase: the table compares regions.
            "gt_encoder": False,
            "feature_loss": False,
        },
    )
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return train(config, run_dir, progress=progress)


def _score(data: Path, run_dir: Path, device: str, progress: bool, **kw) -> dict:
    from ..eval.dis5k import evaluate_dataset

    rows = evaluate_dataset(data, ["DIS-TE1"], out_dir=run_dir, device=device, metrics="all", progress=progress, **kw)
    return dict(rows["DIS-TE1"])


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


def thin_recall(data: Path, run_dirs: dict[str, Path], split: str = "DIS-TE1") -> dict[str, float]:
    """Recall of the GT's thin pixels (structures <= 3 px wide) by each run's masks at 0.5, over the split."""
    from ..contract import binary_mask
    from .synthetic import thin_parts

    hit = {name: 0 for name in run_dirs}
    total = 0
    for gt_path in sorted((data / split / "gt").glob("*.png")):
        thin = thin_parts(binary_mask(load_mask(gt_path)), 3)
        total += int(thin.sum())
        for name, run_dir in run_dirs.items():
            pred = binary_mask(load_mask(run_dir / "predictions" / split / gt_path.name))
            hit[name] += int((pred & thin).sum())
    return {name: hit[name] / max(total, 1) for name in run_dirs}


def _tables(results: dict, robustness: dict, s: HighresSchedule) -> tuple[str, str]:
    from ..eval.report import format_value

    cols = [
        ("maxF", "maxFβ ↑"),
        ("wF", "Fβw ↑"),
        ("MAE", "M ↓"),
        ("Sm", "Sα ↑"),
        ("meanEm", "Eφm ↑"),
        ("HCE", "HCEγ ↓"),
        ("thin_recall", "thin recall ↑"),
    ]
    n = results["coarse"]["n"]
    lines = [
        f"Held-out split ({n} photos of {s.image_size}x{s.image_size}, refiner input {s.input_size}²), "
        "scored at full resolution:",
        "",
        "|  | " + " | ".join(c[1] for c in cols) + " |",
        "|:---|" + "---:|" * len(cols),
    ]
    for name in ROWS:
        r = results[name]
        lines.append(
            f"| {LABELS[name]} | "
            + " | ".join(f"{r[k]:.3f}" if k == "thin_recall" else format_value(k, r[k]) for k, _ in cols)
            + " |"
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
    return "\n".join(lines), "\n".join(rob)


def _figure(data: Path, run_dirs: dict[str, Path], path: Path, n_rows: int = 3, zoom: int = 96) -> None:
    """Rows of test photos: the photo with its box, then each row's mask, each with a zoomed inset on the
    photo's densest thin structure (nearest-neighbour, so single pixels stay visible)."""
    from PIL import Image, ImageDraw

    from ..contract import binary_mask, tight_box
    from ..io import load_image
    from .synthetic import thin_parts

    gts = sorted((data / "DIS-TE1" / "gt").glob("*.png"))[:n_rows]
    cols = ["photo + box"] + [LABELS[n].replace("IS5Net, region ", "") for n in run_dirs] + ["GT"]
    cell = 256
    canvas = Image.new("RGB", (len(cols) * (cell + 4) + 4, 18 + len(gts) * (cell + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(cols):
        draw.text((4 + j * (cell + 4), 3), title, fill=(0, 0, 0))
    for i, g in enumerate(gts):
        gt = load_mask(g)
        thin = thin_parts(binary_mask(gt), 3).astype(np.float32)
        # The zoom window: where the thin pixels are densest (a box filter over the thin map).
        from scipy.ndimage import uniform_filter

        density = uniform_filter(thin, size=zoom)
        cy, cx = np.unravel_index(int(np.argmax(density)), density.shape)
        y0 = int(np.clip(cy - zoom // 2, 0, gt.shape[0] - zoom))
        x0 = int(np.clip(cx - zoom // 2, 0, gt.shape[1] - zoom))
        photo = load_image(data / "DIS-TE1" / "im" / g.name)
        masks = [
            np.repeat(load_mask(d / "predictions" / "DIS-TE1" / g.name)[:, :, None], 3, 2) for d in run_dirs.values()
        ]
        tiles = [photo] + masks + [np.repeat(gt[:, :, None], 3, 2)]
        for j, t in enumerate(tiles):
            img = Image.fromarray(t.astype(np.uint8)).resize((cell, cell), Image.BILINEAR)
            d = ImageDraw.Draw(img)
            f = cell / gt.shape[1]
            if j == 0:
                bx = tight_box(gt)
                d.rectangle([bx[0] * f, bx[1] * f, bx[2] * f, bx[3] * f], outline=(255, 0, 0), width=2)
            d.rectangle([x0 * f, y0 * f, (x0 + zoom) * f, (y0 + zoom) * f], outline=(0, 160, 255), width=1)
            inset = Image.fromarray(t[y0 : y0 + zoom, x0 : x0 + zoom].astype(np.uint8)).resize(
                (cell // 2, cell // 2), Image.NEAREST
            )
            img.paste(inset, (cell - cell // 2, cell - cell // 2))
            d.rectangle([cell - cell // 2, cell - cell // 2, cell - 1, cell - 1], outline=(0, 160, 255), width=2)
            canvas.paste(img, (4 + j * (cell + 4), 22 + i * (cell + 4)))
    save_png(path, np.asarray(canvas))
