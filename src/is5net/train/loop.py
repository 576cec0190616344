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
import dataclasses
import functools
import gc
import io
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..checkpoint import RefinerConfig, default_mean, load_gt_encoder, read_state_dict, save_refiner
from ..distributed import ProcessGroup
from ..errors import IS5NetError
from ..io import atomic_write_text
from ..modeling import build_model
from ..modeling.isnet import GTEncoder, ISNet
from ..runtime import resolve_device
from .checkpoints import PHASES, Checkpoints, Resumed, rng_state, seed_everything, set_rng_state
from .config import TrainConfig, default_of, save_config
from .config import validate as validate_config
from .step import LossFn, TrainStep, grad_scaler, gt_encoder_loss, refiner_loss

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
            raise IS5NetError(
                f"{len(problems)} problem(s) in {root} (run `is5net check-data {root}`; "
                f"--skip-bad trains on the rest): {listing}"
            )
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
    samples = enumerate_samples(
        good, enrich=enrich, jitter=jitter, min_fraction=c.min_fraction, jitter_fraction=c.jitter_fraction, seed=c.seed
    )
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
                raise IS5NetError(
                    "IS5Net needs coarse masks: give --sam-checkpoint (after `is5net cache-sam`) or --coarse-dir DIR"
                )

            def cache_for(data_root: Path):
                cache_dir = Path(c.cache) if c.cache else default_cache_dir(data_root)
                return CoarseCache(SamMaskCache.for_sam(cache_dir, c.sam_checkpoint, c.sam_type, c.mask_choice))

            def cache_sam_command(data_root: Path, sample_options: str) -> str:
                return (
                    f"run `is5net cache-sam --data {data_root} --sam-checkpoint {c.sam_checkpoint}"
                    f"{' --sam-type ' + c.sam_type if c.sam_type else ''}"
                    f"{' --mask-choice ' + c.mask_choice if c.mask_choice != 'first' else ''}"
                    f"{' --cache ' + str(c.cache) if c.cache else ''}{sample_options}` first"
                )

            coarse = cache_for(root)
            # The options that change which boxes training asks for, so the cached entries are those boxes.
            options = "" if enrich else " --no-enrich"
            if enrich and c.min_fraction != default_of("min_fraction"):
                options += f" --min-fraction {c.min_fraction:g}"
            if jitter:
                options += f" --jitter {jitter}"
                if c.jitter_fraction != default_of("jitter_fraction"):
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
    regions = dict(region=c.region, margin=c.crop_margin, max_side=c.max_side)
    train_ds = RefinerDataset(
        samples,
        coarse,
        c.input_size,
        mean,
        std,
        train=True,
        flips=c.flips,
        seed=c.seed,
        input_cache=input_cache,
        coarse_cut=c.coarse_cut,
        coarse_hole=c.coarse_hole,
        **regions,
    )
    val_ds = (
        RefinerDataset(
            val_samples,
            val_coarse,
            c.input_size,
            mean,
            std,
            train=False,
            seed=c.seed,
            input_cache=input_cache,
            **regions,
        )
        if val_samples
        else None
    )
    if input_cache is not None:
        t0 = time.perf_counter()
        for ds in (train_ds, val_ds):
            if ds is not None:
                ds.prepare_input_cache()
        log.debug("input cache keys in %.1f s", time.perf_counter() - t0)
    desc = (
        f"{len(train_ds)} training samples from {len(good)} images"
        f"{f' ({skipped} bad skipped)' if skipped else ''}, {len(val_samples)} validation images, "
        f"{coarse.describe() if coarse else 'no prompt (IS-Net)'}"
        f"{', ' + input_cache.describe() if input_cache else ''}"
    )
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
            log.warning(
                "no resized-input cache (%s is not writable: %s); set data_cache=DIR to have one",
                directory,
                exc.strerror or exc,
            )
            return None
        raise IS5NetError(f"data_cache={setting}: cannot write there ({exc.strerror or exc})") from None
    return cache


# ----------------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(
    model: nn.Module,
    ds,
    procs: ProcessGroup,
    precision: Optional[torch.dtype],
    channels_last: bool,
    gt_input: bool,
    batch_size: int,
) -> dict[str, float]:
    """maxF and MAE at the original size, scoring exactly what the predictor outputs (min-max normalised)."""
    from ..data.samples import sample_gt
    from ..eval.metrics import DISMetrics

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
            # A crop region's map goes back where predict pastes it (0 outside the crop).
            window = getattr(ds, "view_window", lambda _: None)(i)
            x0, y0, x1, y1 = window or (0, 0, gt.shape[1], gt.shape[0])
            p = F.interpolate(prob[j : j + 1], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
            lo, hi = p.min(), p.max()
            p = (p - lo) / (hi - lo) if hi > lo else torch.zeros_like(p)
            if window is not None:
                p = F.pad(p, (x0, gt.shape[1] - x1, y0, gt.shape[0] - y1))
            scorer.step((p * 255).byte().cpu().numpy(), gt.astype(np.uint8) * 255)
    if was_training:
        model.train()
    res = scorer.results()
    return {"maxF": float(res["maxF"]), "MAE": float(res["MAE"])}


# ------------------------------------------------------------------------------------ one phase
@dataclass
class Phase:
    name: str  # "gt_encoder" or "refiner"
    model: nn.Module
    lr: float
    max_steps: int
    val_every: int
    loss_fn: LossFn
    gt_input: bool  # validation feeds the GT (phase 1) or the 5-channel input (phase 2)
    target_maxf: Optional[float] = None  # stop once validation maxF exceeds it (phase 1)


@dataclass
class PhaseState:
    """Where a phase stands; all of it but ``step`` is the checkpoint's ``tracker`` (and the summary's)."""

    step: int = 0
    best_maxF: float = -1.0
    best_MAE: float = float("inf")
    bad_validations: int = 0  # validations in a row without improvement in maxF or MAE
    skipped_batches: int = 0
    last_val: Optional[dict] = None
    stopped_early: bool = False
    stop_reason: str = ""

    def tracker_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if k != "step"})

    @classmethod
    def resumed(cls, step: int, tracker_json: str) -> "PhaseState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(step=step, **{k: v for k, v in json.loads(tracker_json).items() if k in known})

    def record(self, metrics: dict[str, float]) -> bool:
        """Count a validation; True when its maxF is the best so far."""
        best = metrics["maxF"] > self.best_maxF
        improved = best or metrics["MAE"] < self.best_MAE
        self.best_maxF = max(self.best_maxF, metrics["maxF"])
        self.best_MAE = min(self.best_MAE, metrics["MAE"])
        self.bad_validations = 0 if improved else self.bad_validations + 1
        self.last_val = metrics
        return best

    def summary(self) -> dict:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "step"}, "steps": self.step}


def stop_reason(phase: Phase, state: PhaseState, early_stop: int) -> str:
    """Why ``phase`` stops after this validation ("" = it goes on): its maxF target, or a plateau."""
    maxf = state.last_val["maxF"]
    if phase.target_maxf is not None and maxf > phase.target_maxf:
        return f"validation maxF {maxf:.4f} > gt_encoder_target_maxf {phase.target_maxf:g}"
    if early_stop and state.bad_validations >= early_stop:
        return f"no better maxF or MAE in {state.bad_validations} validations (early_stop={early_stop})"
    return ""


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
        opt, functools.partial(lr_factor, total_steps=total_steps, schedule=c.lr_schedule, warmup_steps=c.warmup_steps)
    )
    return opt, sched


def run_phase(
    phase: Phase,
    c: TrainConfig,
    data: Data,
    procs: ProcessGroup,
    run_dir: Path,
    refiner_config: RefinerConfig,
    resumed: Optional[Resumed],
    progress: bool,
    logger: "RunLog",
) -> PhaseState:
    """Train ``phase.model`` until ``max_steps``, its maxF target or a plateau; returns where it stopped."""
    device = procs.device
    precision = resolve_precision(c, device)
    channels_last = channels_last_for(c, device)
    model = phase.model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt, sched = make_optimizer(c, model.parameters(), phase.lr, device, phase.max_steps)
    scaler = grad_scaler(device, enabled=precision == torch.float16)
    state = PhaseState()
    if resumed is not None and resumed.phase == phase.name:
        model.load_state_dict(resumed.weights)
        opt.load_state_dict(resumed.state["optimizer"])
        sched.load_state_dict(resumed.state["scheduler"])
        if resumed.state.get("scaler"):
            scaler.load_state_dict(resumed.state["scaler"])
        state = PhaseState.resumed(resumed.step, resumed.state["tracker"])
        set_rng_state(resumed.state["rng"])
        if procs.is_main:
            log.info("resumed %s at step %d", phase.name, state.step)
    net = model
    if procs.world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if c.compile:
        net = torch.compile(net)
    train_step = TrainStep(net, phase.loss_fn, opt, device, precision, scaler, sched, channels_last, agree=procs.all_ok)
    ckpts = Checkpoints(run_dir, c.keep_checkpoints)
    weights_config = refiner_config if phase.name == "refiner" else RefinerConfig.for_model(model)
    save_every = c.save_every or phase.val_every  # by default a checkpoint follows each validation step
    from ..data.dataset import ResumableBatchSampler

    sampler = ResumableBatchSampler(len(data.train), c.batch_size, c.seed, procs.rank, procs.world_size)
    batches = _batches(data.train, sampler, c.workers, procs.device, state.step)
    bar = _progress_bar(phase, state.step) if progress and procs.is_main else None
    speed = Throughput()
    stop = state.step >= phase.max_steps or state.stopped_early
    try:
        while not stop:
            x, gt = train_step.to_device(*next(batches))
            result = train_step(x, gt)
            state.step += 1
            if not result.finite:
                _non_finite(phase, state, c.nan_policy)
            speed.count(x.shape[0] * procs.world_size)
            last = state.step >= phase.max_steps
            if bar is not None:
                bar.update(1)
            if procs.is_main and (state.step % c.log_every == 0 or last):
                loss = float(result.loss)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}")
                logger.write(
                    phase.name,
                    state.step,
                    {"loss": loss, **result.parts, "lr": opt.param_groups[0]["lr"], "img_per_s": speed.rate()},
                )
            # Also at the last step, so that the final weights compete for "best".
            if data.val is not None and (state.step % phase.val_every == 0 or last):
                stop = _validate_phase(phase, model, state, c, data, procs, run_dir, refiner_config, logger, bar)
            if state.step % save_every == 0 or last or stop:
                if procs.is_main:
                    ckpts.save(
                        phase.name,
                        state.step,
                        model,
                        {
                            "optimizer": opt.state_dict(),
                            "scheduler": sched.state_dict(),
                            "scaler": scaler.state_dict(),
                            "step": state.step,
                            "epoch": state.step // sampler.batches_per_epoch(),
                            "tracker": state.tracker_json(),
                            "rng": rng_state(),
                            "phase": phase.name,
                            "version": __version__,
                        },
                        weights_config,
                    )
                procs.barrier()
            stop = stop or last
    finally:
        batches.close()  # its DataLoader (and worker processes) go now, not whenever it is collected
        if bar is not None:
            bar.close()
        if procs.world_size > 1:
            # DESIGN §7: drop the DDP module before the process group goes away, also when an error (a
            # non-finite loss) is on its way up to train()'s procs.close().
            del net, train_step
            gc.collect()
    return state


def _batches(ds, sampler, workers: int, device: torch.device, start_step: int):
    """The training batches ``(input, gt)`` from step ``start_step`` on, epoch after epoch, in the order an
    uninterrupted run sees them (a resumed run starts mid-epoch where it stopped)."""
    epoch, start_batch = divmod(start_step, sampler.batches_per_epoch())
    while True:
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch, start_batch)
        loader = DataLoader(
            ds, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=False
        )
        for batch in loader:
            yield batch["input"], batch["gt"]
        epoch, start_batch = epoch + 1, 0


def _non_finite(phase: Phase, state: PhaseState, nan_policy: str) -> None:
    """A batch whose loss is not finite (no update was made): stop the run, or count it as skipped."""
    if nan_policy == "stop":
        raise IS5NetError(
            f"{phase.name}: the loss is not finite at step {state.step}; stopped without saving "
            f"(the last checkpoint is intact). Lower lr, or set nan_policy=skip"
        )
    state.skipped_batches += 1
    log.warning("%s: non-finite loss at step %d: batch skipped", phase.name, state.step)


def _validate_phase(
    phase: Phase,
    model: nn.Module,
    state: PhaseState,
    c: TrainConfig,
    data: Data,
    procs: ProcessGroup,
    run_dir: Path,
    refiner_config: RefinerConfig,
    logger: "RunLog",
    bar,
) -> bool:
    """Validate on rank 0: log, keep the best weights, decide whether the phase stops (every rank learns it)."""
    reason = ""
    if procs.is_main:
        metrics = validate(
            model,
            data.val,
            procs,
            resolve_precision(c, procs.device),
            channels_last_for(c, procs.device),
            phase.gt_input,
            c.batch_size,
        )
        if state.record(metrics):
            save_refiner(
                model,
                run_dir / "checkpoints" / f"{phase.name}-best.safetensors",
                refiner_config if phase.name == "refiner" else None,
                {"step": str(state.step), "val_maxF": f"{metrics['maxF']:.6f}"},
            )
        logger.write(phase.name, state.step, {"val_maxF": metrics["maxF"], "val_MAE": metrics["MAE"]})
        if bar is not None:
            bar.write(f"{phase.name} step {state.step}: val maxF {metrics['maxF']:.4f} MAE {metrics['MAE']:.4f}")
        reason = stop_reason(phase, state, c.early_stop)
        if reason:
            state.stopped_early, state.stop_reason = True, reason
            log.info("%s: stopped at step %d: %s", phase.name, state.step, reason)
    return procs.broadcast(bool(reason))


class Throughput:
    """Images per second since the last :meth:`rate`."""

    def __init__(self):
        self.t, self.images = time.perf_counter(), 0

    def count(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        now = time.perf_counter()
        value = self.images / max(now - self.t, 1e-9)
        self.t, self.images = now, 0
        return value


def _progress_bar(phase: Phase, step: int):
    from tqdm import tqdm

    return tqdm(total=phase.max_steps, initial=step, desc=phase.name, unit="step", dynamic_ncols=True)


def resolve_precision(c: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    if c.precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if c.precision == "fp16" and device.type == "cpu":
        problem = _cpu_fp16_problem()
        if problem:
            raise IS5NetError(f"precision=fp16 on the CPU: {problem}; use fp32 or bf16 there")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.precision]


def _cpu_fp16_problem() -> str:
    """Why this torch would not really train in fp16 on the CPU ("" when it would).

    Without a CPU ``GradScaler`` (torch < 2.3) fp16 gradients underflow unscaled, and where CPU autocast has
    no fp16 it quietly runs fp32: either way the run would not be what ``precision=fp16`` asked for.
    """
    try:
        torch.amp.GradScaler("cpu")
    except (AttributeError, TypeError, RuntimeError):
        return "this torch has no loss scaling (GradScaler) on the CPU"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the warning of an autocast that disables itself
        with torch.autocast("cpu", dtype=torch.float16):
            if (torch.ones(1, 1) @ torch.ones(1, 1)).dtype != torch.float16:
                return "this torch's CPU autocast has no fp16"
    return ""


# ----------------------------------------------------------------------------------------- log
class RunLog:
    """``RUN_DIR/log.csv`` (time, phase, step, name, value), and TensorBoard when it is installed."""

    HEADER = ["time", "phase", "step", "name", "value"]

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

    def resume_at(self, resumed: Optional[Resumed]) -> None:
        """Drop the rows a resumed run will write again: those after its checkpoint (every row when it starts
        over), so that ``log.csv`` reads as one run. A row cut short by the kill goes too."""
        if not self.enabled or not self.path.is_file():
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if len(r) == len(self.HEADER) and _logged_before(r[1], r[2], resumed)]
        if len(kept) != len(rows) - 1:
            lines = io.StringIO()
            csv.writer(lines).writerows([self.HEADER, *kept])
            atomic_write_text(self.path, lines.getvalue())

    def write(self, phase: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(self.HEADER)
            for k, v in values.items():
                w.writerow([f"{time.time():.3f}", phase, step, k, f"{float(v):.6g}"])
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{phase}/{k}", float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _logged_before(phase: str, step: str, resumed: Optional[Resumed]) -> bool:
    """Whether a row of ``phase`` at ``step`` was logged at or before ``resumed``'s checkpoint."""
    if resumed is None or phase not in PHASES or not step.isdigit():
        return False
    return (PHASES.index(phase), int(step)) <= (PHASES.index(resumed.phase), resumed.step)


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
    validate_config(config)  # also a config built in Python rather than by load_config
    run_dir = Path(run_dir)
    procs = ProcessGroup(resolve_device(config.device))
    try:
        return _train(config, run_dir, resume, progress, procs)
    finally:
        procs.close()


def _train(c: TrainConfig, run_dir: Path, resume: bool, progress: bool, procs: ProcessGroup) -> Path:
    resolve_precision(c, procs.device)  # refuses what this device cannot do before anything is written
    if not resume and (run_dir / "checkpoints" / "latest.json").exists():
        raise IS5NetError(f"{run_dir} already holds a run; use --resume {run_dir} or another --out")
    resumed = Checkpoints(run_dir, c.keep_checkpoints).resume_point() if resume else None
    if resume and resumed is None and procs.is_main:
        log.info("no checkpoint in %s yet: starting from the beginning", run_dir)
    seed_everything(c.seed + procs.rank)

    refiner = build_refiner(c)
    refiner_config = RefinerConfig.for_model(refiner, c.input_size)
    refiner_config.region = c.region  # predict refines the way the model was trained
    data = prepare_data(c, refiner.in_ch, procs)
    # Only now, with the weights and the data accepted: a refused run leaves no run folder behind.
    if procs.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(c, run_dir / "config.yaml")
    procs.barrier()
    if procs.is_main:
        log.info(
            "%s; batch %d x %d process(es) = effective batch %d; device %s",
            data.description,
            c.batch_size,
            procs.world_size,
            c.batch_size * procs.world_size,
            procs.device,
        )
    logger = RunLog(run_dir, procs.is_main)
    if resume:
        logger.resume_at(resumed)
    summary: dict = {"skipped_pairs": data.skipped}
    try:
        gt_encoder = None
        if c.gt_encoder:
            gt_encoder = _gt_encoder_phase(
                c, data, procs, run_dir, refiner, refiner_config, resume, resumed, progress, logger, summary
            )
        # Phase 2: the refiner, 20*BCE + 0.5*IoU per side output + feature MSE + orthogonality.
        gt_features = gt_encoder.encode if c.feature_loss and gt_encoder is not None else None
        torch.manual_seed(c.seed)
        phase2 = Phase("refiner", refiner, c.lr, c.max_steps, c.val_every, refiner_loss(c, gt_features), gt_input=False)
        t2 = run_phase(phase2, c, data, procs, run_dir, refiner_config, resumed, progress, logger)
        summary["refiner"] = t2.summary()
        out = run_dir / "refiner.safetensors"
        if procs.is_main:
            _write_result(refiner, refiner_config, run_dir, t2.step)
            atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
        procs.barrier()
        return out
    finally:
        logger.close()


def _gt_encoder_phase(
    c: TrainConfig,
    data: Data,
    procs: ProcessGroup,
    run_dir: Path,
    refiner: ISNet,
    refiner_config: RefinerConfig,
    resume: bool,
    resumed: Optional[Resumed],
    progress: bool,
    logger: RunLog,
    summary: dict,
) -> GTEncoder:
    """Phase 1 (or its result, when a resumed run is past it): the GT encoder learns to reproduce the GT from
    the GT; returned frozen, its features then supervise phase 2."""
    gt_path = run_dir / "gt_encoder.safetensors"
    if not (resume and gt_path.exists()):
        torch.manual_seed(c.seed)
        enc = GTEncoder(in_ch=1, width=refiner.width)
        phase1 = Phase(
            "gt_encoder",
            enc,
            c.gt_encoder_lr,
            c.gt_encoder_steps,
            c.gt_encoder_val_every or c.val_every,
            gt_encoder_loss(c),
            gt_input=True,
            target_maxf=c.gt_encoder_target_maxf,
        )
        t1 = run_phase(phase1, c, data, procs, run_dir, refiner_config, resumed, progress, logger)
        summary["gt_encoder"] = t1.summary()
        if procs.is_main:
            best = run_dir / "checkpoints" / "gt_encoder-best.safetensors"
            final_enc = load_gt_encoder(best) if best.exists() else enc
            save_refiner(final_enc, gt_path, None, {"val_maxF": str(t1.best_maxF)})
        procs.barrier()
    gt_encoder = load_gt_encoder(gt_path)
    # Frozen and in eval mode: the official code forgets .eval(), letting BatchNorm statistics drift.
    gt_encoder = gt_encoder.eval()
    if resolve_precision(c, procs.device) is not None:
        # Mixed precision (CUDA): being frozen, its BatchNorm folds into the convs, the same function
        # in fewer kernels per step. In fp32 it stays as trained, so fp32 runs reproduce bit for bit.
        gt_encoder = gt_encoder.fold_batchnorm()
    gt_encoder = gt_encoder.to(procs.device).requires_grad_(False)
    if channels_last_for(c, procs.device):
        gt_encoder = gt_encoder.to(memory_format=torch.channels_last)
    return gt_encoder


def _write_result(refiner: ISNet, refiner_config: RefinerConfig, run_dir: Path, steps: int) -> None:
    """``refiner.safetensors``: the weights of the best validation maxF (the last ones when nothing was
    validated); ``refiner_last.safetensors`` beside it."""
    final = refiner.to("cpu")
    save_refiner(final, run_dir / "refiner_last.safetensors", refiner_config, {"step": str(steps)})
    best = run_dir / "checkpoints" / "refiner-best.safetensors"
    if best.exists():
        sd, meta = read_state_dict(best)
        final_best = build_refiner_like(refiner)
        final_best.load_state_dict(sd)
        save_refiner(
            final_best, run_dir / "refiner.safetensors", refiner_config, {"val_maxF": meta.get("val_maxF", "")}
        )
    else:
        save_refiner(final, run_dir / "refiner.safetensors", refiner_config, {"step": str(steps)})


def build_refiner_like(model: ISNet) -> ISNet:
    return ISNet(in_ch=model.in_ch, width=model.width)
