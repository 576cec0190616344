"""The training loop, readable top to bottom: data -> phase 1 (GT encoder) -> phase 2 (refiner).

- One process or many (``torchrun``: DDP, each rank its shard of every batch; ``is5net.distributed``);
  only rank 0 writes.
- bf16 autocast and channels_last on CUDA, fp32 on the CPU; fused AdamW (CUDA and CPU).
- Checkpoints: ``RUN_DIR/checkpoints/<phase>-<step>.safetensors`` (weights) and ``.state.pt`` (optimizer,
  scheduler, step, RNG; loadable with ``weights_only=True``), each written atomically, then
  ``latest.json`` names them (also atomically). A kill at any moment leaves the previous checkpoint whole;
  ``resume`` continues with the same step count and data order and ends with the same weights.
- A non-finite loss stops the run naming the step (or, with ``nan_policy=skip``, skips the batch); a
  checkpoint is never written from non-finite weights.
"""

from __future__ import annotations

import csv
import functools
import gc
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..checkpoint import RefinerConfig, default_mean, load_gt_encoder, read_state_dict, save_refiner
from ..distributed import ProcessGroup
from ..errors import IS5NetError
from ..io import atomic_path, atomic_write_text
from ..modeling import build_model
from ..modeling.isnet import GTEncoder, ISNet
from ..runtime import resolve_device
from .config import TrainConfig, save_config
from .losses import feature_loss, orthogonality_penalty, side_loss

log = logging.getLogger("is5net")


# ----------------------------------------------------------------------------------------- data
@dataclass
class Data:
    train: "RefinerDataset"  # noqa: F821
    val: Optional["RefinerDataset"]  # noqa: F821
    skipped: int
    description: str


def prepare_data(c: TrainConfig, in_ch: int, procs: ProcessGroup) -> Data:
    """Pairs -> checked pairs -> samples (enrichment, jitter) -> datasets with their coarse-mask source."""
    from ..data.dataset import CoarseCache, CoarseDir, RefinerDataset, check_coarse_complete
    from ..data.pairs import find_pairs, is_dis5k_root, split_good_pairs, subset_names
    from ..data.samples import enumerate_samples

    if not c.data:
        raise IS5NetError("no training data: give --data ROOT (a DIS5K root or a folder with im/ and gt/)")
    root = Path(c.data)
    if not root.is_dir():
        raise IS5NetError(f"--data {root}: no such directory")
    if is_dis5k_root(root):
        names = subset_names(root)
        train_subsets = ["DIS-TR"] if "DIS-TR" in names else [n for n in names if n != "DIS-VD"]
        val_subsets = ["DIS-VD"] if "DIS-VD" in names and c.val is None else None
    else:
        train_subsets, val_subsets = None, None
    good, problems = split_good_pairs(root, train_subsets)
    skipped = 0
    if problems:
        listing = "; ".join(str(p) for p in problems[:10]) + (" ..." if len(problems) > 10 else "")
        if not c.skip_bad:
            raise IS5NetError(f"{len(problems)} problem(s) in {root} (run `is5net check-data {root}`; "
                              f"--skip-bad trains on the rest): {listing}")
        skipped = len(find_pairs(root, train_subsets)) - len(good)
        log.warning("skipping %d bad pair(s) (--skip-bad): %s", skipped, listing)
    val_pairs: list = []
    if c.val is not None:
        val_pairs, vprob = split_good_pairs(Path(c.val))
        if vprob and not c.skip_bad:
            raise IS5NetError(f"{len(vprob)} problem(s) in --val {c.val}: {'; '.join(str(p) for p in vprob[:5])}")
    elif val_subsets:
        val_pairs, vprob = split_good_pairs(root, val_subsets)
        if vprob and not c.skip_bad:
            raise IS5NetError(f"{len(vprob)} problem(s) in DIS-VD: {'; '.join(str(p) for p in vprob[:5])}")
    elif c.val_fraction > 0:
        order = np.random.default_rng([c.seed, 7]).permutation(len(good))
        n_val = max(1, int(round(len(good) * c.val_fraction)))
        val_idx = set(order[:n_val].tolist())
        val_pairs = [p for i, p in enumerate(good) if i in val_idx]
        good = [p for i, p in enumerate(good) if i not in val_idx]

    five = in_ch == 5
    enrich = c.enrich and five and c.coarse_dir is None  # one coarse PNG per stem cannot serve components
    if c.enrich and five and c.coarse_dir is not None:
        log.info("GT enrichment is off with --coarse-dir (one coarse mask per image)")
    jitter = c.jitter if five and c.coarse_dir is None else 0
    samples = enumerate_samples(good, enrich=enrich, jitter=jitter, min_fraction=c.min_fraction,
                                jitter_fraction=c.jitter_fraction, seed=c.seed)
    val_samples = enumerate_samples(val_pairs, enrich=False, jitter=0, seed=c.seed) if val_pairs else []
    if c.val_limit and len(val_samples) > c.val_limit:
        val_samples = val_samples[: c.val_limit]
    if not samples:
        raise IS5NetError(f"no training samples in {root}")

    coarse = val_coarse = None
    if five:
        if c.coarse_dir is not None:
            coarse = CoarseDir(c.coarse_dir)
            hint = "expected one PNG per GT stem in DIR/<subset>/ or DIR/"
            val_coarse, val_hint = coarse, hint
        else:
            from ..data.sam_cache import SamMaskCache, default_cache_dir

            if c.sam_checkpoint is None and c.sam_type != "tiny":
                raise IS5NetError("IS5Net needs coarse masks: give --sam-checkpoint (after `is5net cache-sam`) "
                                  "or --coarse-dir DIR")

            def cache_for(data_root: Path):
                cache_dir = Path(c.cache) if c.cache else default_cache_dir(data_root)
                return CoarseCache(SamMaskCache.for_sam(cache_dir, c.sam_checkpoint, c.sam_type, c.mask_choice))

            def cache_sam_command(data_root: Path, sample_options: str) -> str:
                return (f"run `is5net cache-sam --data {data_root} --sam-checkpoint {c.sam_checkpoint}"
                        f"{' --sam-type ' + c.sam_type if c.sam_type else ''}"
                        f"{' --mask-choice ' + c.mask_choice if c.mask_choice != 'first' else ''}"
                        f"{' --cache ' + str(c.cache) if c.cache else ''}{sample_options}` first")

            coarse = cache_for(root)
            # The options that change which boxes training asks for, so the cached entries are those boxes.
            options = "" if enrich else " --no-enrich"
            if enrich and c.min_fraction != 0.004:
                options += f" --min-fraction {c.min_fraction:g}"
            if jitter:
                options += f" --jitter {jitter}"
                if c.jitter_fraction != 0.1:
                    options += f" --jitter-fraction {c.jitter_fraction:g}"
                if c.seed:
                    options += f" --seed {c.seed}"
            hint = cache_sam_command(root, options)
            val_coarse, val_hint = coarse, hint
            if c.val is not None:
                # `is5net cache-sam --data VAL` caches under VAL by default: look there for --val's masks.
                val_coarse = cache_for(Path(c.val))
                val_hint = cache_sam_command(Path(c.val), "")
        check_coarse_complete(coarse, samples, hint)
        if val_samples:
            check_coarse_complete(val_coarse, val_samples, val_hint)
    mean, std = default_mean(in_ch), [1.0] * in_ch
    input_cache = make_input_cache(c, root)
    train_ds = RefinerDataset(samples, coarse, c.input_size, mean, std, train=True, flips=c.flips, seed=c.seed,
                              input_cache=input_cache)
    val_ds = (RefinerDataset(val_samples, val_coarse, c.input_size, mean, std, train=False, seed=c.seed,
                             input_cache=input_cache)
              if val_samples else None)
    if input_cache is not None:
        t0 = time.perf_counter()
        for ds in (train_ds, val_ds):
            if ds is not None:
                ds.prepare_input_cache()
        log.debug("input cache keys in %.1f s", time.perf_counter() - t0)
    desc = (f"{len(train_ds)} training samples from {len(good)} images"
            f"{f' ({skipped} bad skipped)' if skipped else ''}, {len(val_samples)} validation images, "
            f"{coarse.describe() if coarse else 'no prompt (IS-Net)'}"
            f"{', ' + input_cache.describe() if input_cache else ''}")
    return Data(train_ds, val_ds, skipped, desc)


def make_input_cache(c: TrainConfig, root: Path):
    """The resized-input cache ``data_cache`` asks for, or None (off, or ``auto`` on a read-only dataset)."""
    from ..data.dataset import InputCache

    setting = str(c.data_cache).strip()
    if setting.lower() in ("off", "none", "false", ""):
        return None
    directory = root / ".input-cache" if setting.lower() == "auto" else Path(setting)
    cache = InputCache(directory, c.input_size)
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
        probe = cache.root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if setting.lower() == "auto":
            log.warning("no resized-input cache (%s is not writable: %s); set data_cache=DIR to have one",
                        directory, exc.strerror or exc)
            return None
        raise IS5NetError(f"data_cache={setting}: cannot write there ({exc.strerror or exc})") from None
    return cache


# ------------------------------------------------------------------------------- checkpointing
class Checkpoints:
    """Atomic weights + state files and a ``latest.json`` that names the last complete pair."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.dir = run_dir / "checkpoints"
        self.keep = max(1, keep)

    def latest(self) -> Optional[dict]:
        p = self.dir / "latest.json"
        if not p.is_file():
            return None
        return json.loads(p.read_text())

    def save(self, phase: str, step: int, model: nn.Module, state: dict, config: RefinerConfig) -> None:
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise IS5NetError(f"refusing to save a checkpoint at step {step}: weight {name} is not finite")
        stem = f"{phase}-{step:08d}"
        save_refiner(model, self.dir / f"{stem}.safetensors", config, {"phase": phase, "step": str(step)})
        with atomic_path(self.dir / f"{stem}.state.pt") as tmp:
            torch.save(state, tmp)
        atomic_write_text(self.dir / "latest.json", json.dumps(
            {"phase": phase, "step": step, "weights": f"{stem}.safetensors", "state": f"{stem}.state.pt"}))
        self._prune(phase, f"{stem}.safetensors")

    def _prune(self, phase: str, latest: str) -> None:
        files = sorted(self.dir.glob(f"{phase}-[0-9]*.safetensors"))  # numbered only: never "-best"
        # Never the one latest.json names, even if a crashed run left higher-numbered files behind.
        for old in [f for f in files[: -self.keep] if f.name != latest]:
            old.unlink(missing_ok=True)
            (self.dir / old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)

    def load(self, entry: dict) -> tuple[dict, dict]:
        sd, _ = read_state_dict(self.dir / entry["weights"])
        state = torch.load(self.dir / entry["state"], map_location="cpu", weights_only=True)
        return sd, state


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
        "python_pos": int(random.getstate()[1][-1]),
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if torch.cuda.is_available() and s.get("cuda"):
        torch.cuda.set_rng_state_all(s["cuda"])
    np.random.set_state(("MT19937", s["numpy"].numpy().astype(np.uint32), s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(int(v) for v in s["python"]), None))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(model: nn.Module, ds, procs: ProcessGroup, precision: Optional[torch.dtype], channels_last: bool,
             gt_input: bool, batch_size: int) -> dict[str, float]:
    """maxF and MAE at the original size, scoring exactly what the predictor outputs (min-max normalised)."""
    from ..data.samples import sample_gt
    from ..metrics import DISMetrics

    was_training = model.training
    model.eval()
    scorer = DISMetrics(["maxF", "MAE"])
    for start in range(0, len(ds), batch_size):
        idx = list(range(start, min(start + batch_size, len(ds))))
        items = [ds[i] for i in idx]
        key = "gt" if gt_input else "input"
        x = torch.stack([it[key] for it in items]).to(procs.device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(procs.device.type, dtype=precision or torch.float32, enabled=precision is not None):
            logits = model(x)[0][0]
        prob = torch.sigmoid(logits.float())
        for j, i in enumerate(idx):
            gt = sample_gt(ds.sample_for(i))
            p = F.interpolate(prob[j:j + 1], size=gt.shape, mode="bilinear", align_corners=False)[0, 0]
            lo, hi = p.min(), p.max()
            p = (p - lo) / (hi - lo) if hi > lo else torch.zeros_like(p)
            scorer.step((p * 255).byte().cpu().numpy(), gt.astype(np.uint8) * 255)
    if was_training:
        model.train()
    res = scorer.results()
    return {"maxF": float(res["maxF"]), "MAE": float(res["MAE"])}


# ------------------------------------------------------------------------------------ one phase
@dataclass
class Phase:
    name: str                      # "gt_encoder" or "refiner"
    model: nn.Module
    lr: float
    max_steps: int
    val_every: int
    loss_fn: Callable[[nn.Module, dict], tuple[torch.Tensor, dict]]
    gt_input: bool                 # validation feeds the GT (phase 1) or the 5-channel input (phase 2)
    stop_fn: Callable[[dict, dict], bool]   # (val metrics, tracker) -> stop?


def channels_last_for(c: TrainConfig, device: torch.device) -> bool:
    return c.channels_last == "true" or (c.channels_last == "auto" and device.type == "cuda")


def lr_factor(step: int, total_steps: int, schedule: str = "constant", warmup_steps: int = 0) -> float:
    """Multiplier of the base lr for the update after ``step`` updates: linear warm-up over ``warmup_steps``,
    then constant (the reference) or a cosine from 1 down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(c: TrainConfig, params, lr: float, device: torch.device, total_steps: int):
    kw = dict(lr=lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
    params = list(params)
    cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
    # One kernel over all parameters: on the CPU it is 4-5x faster than the default per-tensor loop
    # (is5net: 65 vs 252 ms per step, one thread), which is a tenth of a tiny model's step.
    try:
        opt = cls(params, fused=True if device.type in ("cuda", "cpu") else None, **kw)
    except RuntimeError:
        if device.type != "cpu":
            raise
        log.debug("this torch has no fused %s for the CPU: the default implementation", cls.__name__)
        opt = cls(params, **kw)
    # A function of the step alone (its state is the step count), so a resumed run follows the same curve.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(lr_factor, total_steps=total_steps, schedule=c.lr_schedule,
                               warmup_steps=c.warmup_steps))
    return opt, sched


def run_phase(phase: Phase, c: TrainConfig, data: Data, procs: ProcessGroup, run_dir: Path,
              refiner_config: RefinerConfig, resume_entry: Optional[dict], progress: bool, logger) -> dict:
    """Train ``phase.model`` until ``max_steps`` or ``stop_fn``; returns the tracker (best metrics etc.)."""
    device = procs.device
    precision = resolve_precision(c, device)
    channels_last = channels_last_for(c, device)
    model = phase.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt, sched = make_optimizer(c, model.parameters(), phase.lr, device, phase.max_steps)
    # fp16 gradients underflow without loss scaling (bf16 has fp32's range and needs none).
    scaler = _grad_scaler(device, enabled=precision == torch.float16)
    ckpts = Checkpoints(run_dir, c.keep_checkpoints)
    tracker = {"best_maxF": -1.0, "best_MAE": float("inf"), "bad_validations": 0, "skipped_batches": 0,
               "last_val": None, "stopped_early": False}
    step = 0
    if resume_entry is not None and resume_entry["phase"] == phase.name:
        sd, state = ckpts.load(resume_entry)
        model.load_state_dict(sd)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        tracker.update(json.loads(state["tracker"]))
        set_rng_state(state["rng"])
        if procs.is_main:
            log.info("resumed %s at step %d", phase.name, step)

    from ..data.dataset import ResumableBatchSampler

    sampler = ResumableBatchSampler(len(data.train), c.batch_size, c.seed, procs.rank, procs.world_size)
    per_epoch = sampler.batches_per_epoch()
    net = model
    if procs.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if c.compile:
        net = torch.compile(net)

    def state_dict_for_save() -> dict:
        return {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "step": step,
                "epoch": step // per_epoch, "tracker": json.dumps(tracker), "rng": rng_state(),
                "phase": phase.name, "version": __version__}

    bar = None
    if progress and procs.is_main:
        from tqdm import tqdm

        bar = tqdm(total=phase.max_steps, initial=step, desc=phase.name, unit="step", dynamic_ncols=True)
    t_last, seen = time.perf_counter(), 0
    stop = step >= phase.max_steps or tracker["stopped_early"]
    try:
        while not stop:
            epoch, start_batch = divmod(step, per_epoch)
            data.train.set_epoch(epoch)
            sampler.set_epoch(epoch, start_batch)
            loader = DataLoader(data.train, batch_sampler=sampler, num_workers=c.workers,
                                pin_memory=device.type == "cuda", persistent_workers=False)
            for batch in loader:
                x = batch["input"].to(device, non_blocking=True)
                y = batch["gt"].to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None):
                    loss, parts = phase.loss_fn(net, {"input": x, "gt": y})
                finite = procs.all_ok(bool(torch.isfinite(loss.detach()).item()))
                opt.zero_grad(set_to_none=True)
                if not finite:
                    if c.nan_policy == "stop":
                        raise IS5NetError(
                            f"{phase.name}: the loss is not finite at step {step + 1}; stopped without saving "
                            f"(the last checkpoint is intact). Lower lr, or set nan_policy=skip")
                    tracker["skipped_batches"] += 1
                    log.warning("%s: non-finite loss at step %d: batch skipped", phase.name, step + 1)
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)  # with fp16, skips a step whose gradients overflowed (then lowers the scale)
                    scaler.update()
                sched.step()  # a skipped batch still counts: the schedule follows the step, as max_steps does
                step += 1
                seen += x.shape[0] * procs.world_size
                if bar is not None:
                    bar.update(1)
                if procs.is_main and (step % max(1, c.log_every) == 0 or step == phase.max_steps):
                    now = time.perf_counter()
                    loss_value = float(loss.detach())
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss_value:.4f}")
                    logger.write(phase.name, step, {"loss": loss_value, **parts, "lr": opt.param_groups[0]["lr"],
                                                    "img_per_s": seen / max(now - t_last, 1e-9)})
                    t_last, seen = now, 0
                # Also at the last step, so that the final weights compete for "best" too.
                val_now = data.val is not None and (step % phase.val_every == 0 or step >= phase.max_steps)
                if val_now:
                    stop_flag = False
                    if procs.is_main:
                        metrics = validate(model, data.val, procs, precision, channels_last, phase.gt_input,
                                           c.batch_size)
                        tracker["last_val"] = metrics
                        improved = metrics["maxF"] > tracker["best_maxF"] or metrics["MAE"] < tracker["best_MAE"]
                        if metrics["maxF"] > tracker["best_maxF"]:
                            tracker["best_maxF"] = metrics["maxF"]
                            save_refiner(model, run_dir / "checkpoints" / f"{phase.name}-best.safetensors",
                                         refiner_config if phase.name == "refiner" else None,
                                         {"step": str(step), "val_maxF": f"{metrics['maxF']:.6f}"})
                        tracker["best_MAE"] = min(tracker["best_MAE"], metrics["MAE"])
                        tracker["bad_validations"] = 0 if improved else tracker["bad_validations"] + 1
                        logger.write(phase.name, step, {"val_maxF": metrics["maxF"], "val_MAE": metrics["MAE"]})
                        stop_flag = phase.stop_fn(metrics, tracker)
                        tracker["stopped_early"] = stop_flag
                        if bar is not None:
                            bar.write(f"{phase.name} step {step}: val maxF {metrics['maxF']:.4f} "
                                      f"MAE {metrics['MAE']:.4f}")
                    stop = procs.broadcast(stop_flag)
                # By default a checkpoint follows each validation step; with no validation set, the same steps.
                save_every = c.save_every or phase.val_every
                save_now = step % save_every == 0 or step >= phase.max_steps or stop
                if save_now and procs.is_main:
                    ckpts.save(phase.name, step, model, state_dict_for_save(),
                               refiner_config if phase.name == "refiner" else RefinerConfig.for_model(model))
                if save_now:
                    procs.barrier()
                if step >= phase.max_steps or stop:
                    stop = True
                    break
    finally:
        if bar is not None:
            bar.close()
        if procs.world_size > 1:
            # DESIGN §7: drop the DDP module before the process group goes away, also when an error (a
            # non-finite loss) is on its way up to train()'s procs.close().
            del net
            gc.collect()
    tracker["steps"] = step
    return tracker


def _grad_scaler(device: torch.device, enabled: bool):
    try:
        return torch.amp.GradScaler(device.type, enabled=enabled)
    except (AttributeError, TypeError):  # torch < 2.3: only the per-backend class (a no-op when disabled)
        return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


def resolve_precision(c: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if c.precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.precision]


# ----------------------------------------------------------------------------------------- log
class RunLog:
    """``RUN_DIR/log.csv`` (step, phase, metric, value), and TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "log.csv"
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed (an optional extra): CSV only
                self.tb = None

    def write(self, phase: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["time", "phase", "step", "name", "value"])
            for k, v in values.items():
                w.writerow([f"{time.time():.3f}", phase, step, k, f"{float(v):.6g}"])
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{phase}/{k}", float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# ---------------------------------------------------------------------------------------- train
def build_refiner(c: TrainConfig) -> ISNet:
    kw = {"width": c.width} if c.width is not None else {}
    model = build_model(c.model, **kw)
    if c.init != "scratch":
        from ..checkpoint import isnet_to_is5net_state_dict

        sd, _ = read_state_dict(c.init)
        w = sd.get("conv_in.weight")
        if w is None:
            raise IS5NetError(f"init {c.init}: not an IS-Net checkpoint")
        if w.shape[1] == 3 and model.in_ch == 5:
            sd = isnet_to_is5net_state_dict(sd)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise IS5NetError(f"init {c.init}: weights do not fit {c.model}: {str(exc).splitlines()[1:2]}") from None
    return model


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train per ``config`` into ``run_dir``; returns the path of ``refiner.safetensors``.

    ``resume``: continue from ``run_dir``'s last checkpoint (same steps, same data order, same result).
    """
    run_dir = Path(run_dir)
    c = config
    procs = ProcessGroup(resolve_device(c.device))
    try:
        return _train(c, run_dir, resume, progress, procs)
    finally:
        procs.close()


def _train(c: TrainConfig, run_dir: Path, resume: bool, progress: bool, procs: ProcessGroup) -> Path:
    ckpts = Checkpoints(run_dir, c.keep_checkpoints)
    entry = ckpts.latest() if resume else None
    if resume and entry is None and procs.is_main:
        log.info("no checkpoint in %s yet: starting from the beginning", run_dir)
    if not resume and (run_dir / "checkpoints" / "latest.json").exists():
        raise IS5NetError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    seed_everything(c.seed + procs.rank)

    refiner = build_refiner(c)
    refiner_config = RefinerConfig.for_model(refiner, c.input_size)
    data = prepare_data(c, refiner.in_ch, procs)
    # Only now, with the weights and the data accepted: a refused run leaves no run folder behind.
    if procs.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(c, run_dir / "config.yaml")
    procs.barrier()
    if procs.is_main:
        log.info("%s; batch %d x %d process(es) = effective batch %d; device %s", data.description,
                 c.batch_size, procs.world_size, c.batch_size * procs.world_size, procs.device)
    logger = RunLog(run_dir, procs.is_main)
    summary: dict = {"skipped_pairs": data.skipped}
    try:
        # Phase 1: the GT encoder learns to reproduce the GT from the GT; its features then supervise phase 2.
        gt_encoder: Optional[GTEncoder] = None
        if c.gt_encoder:
            gt_path = run_dir / "gt_encoder.safetensors"
            if gt_path.exists() and resume:
                gt_encoder = load_gt_encoder(gt_path)
            else:
                torch.manual_seed(c.seed)
                enc = GTEncoder(in_ch=1, width=refiner.width)
                gt_steps = c.gt_encoder_max_steps

                def gt_loss(net, b):
                    logits, _ = net(b["gt"])
                    loss = side_loss(logits, b["gt"], c.bce_weight, c.iou_weight)
                    if c.ortho_weight:  # the reference orthogonalises the GT encoder too
                        loss = loss + c.ortho_weight * orthogonality_penalty(_unwrapped(net))
                    return loss, {}

                phase1 = Phase("gt_encoder", enc, c.gt_encoder_lr, gt_steps, c.gt_encoder_val_every or c.val_every,
                               gt_loss, gt_input=True,
                               stop_fn=lambda m, t: m["maxF"] > c.gt_encoder_target_maxf)
                t1 = run_phase(phase1, c, data, procs, run_dir, refiner_config,
                               entry if entry and entry["phase"] == "gt_encoder" else None, progress, logger)
                summary["gt_encoder"] = t1
                if procs.is_main:
                    best = run_dir / "checkpoints" / "gt_encoder-best.safetensors"
                    final_enc = load_gt_encoder(best) if best.exists() else enc
                    save_refiner(final_enc, gt_path, None, {"val_maxF": str(t1.get("best_maxF"))})
                procs.barrier()
                gt_encoder = load_gt_encoder(gt_path)
                entry = None if entry and entry["phase"] == "gt_encoder" else entry
            # Frozen and in eval mode: the official code forgets .eval(), letting BatchNorm statistics drift.
            gt_encoder = gt_encoder.eval()
            if resolve_precision(c, procs.device) is not None:
                # Mixed precision (CUDA): being frozen, its BatchNorm folds into the convs, the same function
                # in fewer kernels per step. In fp32 it stays as trained, so fp32 runs reproduce bit for bit.
                gt_encoder = gt_encoder.fold_batchnorm()
            gt_encoder = gt_encoder.to(procs.device).requires_grad_(False)
            if channels_last_for(c, procs.device):
                gt_encoder = gt_encoder.to(memory_format=torch.channels_last)

        # Phase 2: the refiner, 20*BCE + 0.5*IoU per side output + feature MSE + orthogonality.
        def refiner_loss(net, b):
            logits, feats = net(b["input"])
            loss = side_loss(logits, b["gt"], c.bce_weight, c.iou_weight)
            parts = {"side": loss.detach()}
            if c.feature_loss and gt_encoder is not None:
                with torch.no_grad():
                    gt_feats = gt_encoder.encode(b["gt"])
                fl = feature_loss(feats, gt_feats, c.feature_weight)
                loss = loss + fl
                parts["feature"] = fl.detach()
            if c.ortho_weight:
                loss = loss + c.ortho_weight * orthogonality_penalty(_unwrapped(net))
            return loss, parts

        def refiner_stop(m, t):
            return bool(c.early_stop) and t["bad_validations"] >= c.early_stop

        torch.manual_seed(c.seed)
        phase2 = Phase("refiner", refiner, c.lr, c.max_steps, c.val_every, refiner_loss, gt_input=False,
                       stop_fn=refiner_stop)
        t2 = run_phase(phase2, c, data, procs, run_dir, refiner_config, entry, progress, logger)
        summary["refiner"] = t2
        out = run_dir / "refiner.safetensors"
        if procs.is_main:
            final = refiner.to("cpu")
            save_refiner(final, run_dir / "refiner_last.safetensors", refiner_config, {"step": str(t2["steps"])})
            best = run_dir / "checkpoints" / "refiner-best.safetensors"
            if best.exists():
                # The refiner of the best validation maxF is the result; the last weights stay beside it.
                sd, meta = read_state_dict(best)
                final_best = build_refiner_like(refiner)
                final_best.load_state_dict(sd)
                save_refiner(final_best, out, refiner_config, {"val_maxF": meta.get("val_maxF", "")})
            else:
                save_refiner(final, out, refiner_config, {"step": str(t2["steps"])})
            atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
        procs.barrier()
        return out
    finally:
        logger.close()


def _unwrapped(net: nn.Module) -> nn.Module:
    """The model inside DDP and/or torch.compile wrappers (its parameter names are the plain ones)."""
    module = getattr(net, "_orig_mod", net)
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


def build_refiner_like(model: ISNet) -> ISNet:
    return ISNet(in_ch=model.in_ch, width=model.width)
