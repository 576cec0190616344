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

What the loop calls lives beside it: the data (:mod:`is5net.data.training`), one step, its losses and
precision (:mod:`.step`), the optimiser and schedule (:mod:`.optim`), checkpoints (:mod:`.checkpoints`) and
the run's log (:mod:`.runlog`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import __version__
from ..checkpoint import RefinerConfig, load_gt_encoder, read_state_dict, save_refiner
from ..data.dataset import ResumableBatchSampler
from ..data.training import DataSettings, TrainingData, prepare_data
from ..distributed import ProcessGroup
from ..errors import IS5NetError
from ..modeling import build_model
from ..modeling.isnet import GTEncoder, ISNet
from ..runtime import resolve_device
from .checkpoints import Checkpoints, Resumed, rng_state, seed_everything, set_rng_state
from .config import TrainConfig, save_config
from .config import validate as validate_config
from .optim import make_optimizer
from .runlog import RunLog, Throughput, write_summary
from .step import (
    LossFn,
    TrainStep,
    channels_last_for,
    grad_scaler,
    gt_encoder_loss,
    refiner_loss,
    resolve_precision,
)

log = logging.getLogger("is5net")


# ---------------------------------------------------------------------------------------- train
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
    refiner_config.tile_scale = c.tile_scale
    data = prepare_data(DataSettings.of(c), refiner.in_ch)
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
    run = Run(c, data, procs, run_dir, refiner_config, resumed, progress, logger)
    summary: dict = {"skipped_pairs": data.skipped}
    try:
        gt_encoder = None
        if c.gt_encoder:
            gt_encoder = _gt_encoder_phase(run, refiner.width, resume, summary)
        # Phase 2: the refiner, 20*BCE + 0.5*IoU per side output + feature MSE + orthogonality.
        gt_features = gt_encoder.encode if c.feature_loss and gt_encoder is not None else None
        torch.manual_seed(c.seed)
        phase2 = Phase("refiner", refiner, c.lr, c.max_steps, c.val_every, refiner_loss(c, gt_features), gt_input=False)
        t2 = run_phase(phase2, run)
        summary["refiner"] = t2.summary()
        out = run_dir / "refiner.safetensors"
        if procs.is_main:
            _write_result(refiner, refiner_config, run_dir, t2.step)
            write_summary(run_dir, summary)
        procs.barrier()
        return out
    finally:
        logger.close()


@dataclass
class Run:
    """What the phases of one run share: its settings, data, processes, folder, checkpoint to resume and log."""

    c: TrainConfig
    data: TrainingData
    procs: ProcessGroup
    run_dir: Path
    refiner_config: RefinerConfig
    resumed: Optional[Resumed]
    progress: bool
    logger: RunLog


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


def _gt_encoder_phase(run: Run, width: float, resume: bool, summary: dict) -> GTEncoder:
    """Phase 1 (or its result, when a resumed run is past it): the GT encoder (as wide as the refiner) learns
    to reproduce the GT from the GT; returned frozen, its features then supervise phase 2."""
    c, procs = run.c, run.procs
    gt_path = run.run_dir / "gt_encoder.safetensors"
    if not (resume and gt_path.exists()):
        torch.manual_seed(c.seed)
        enc = GTEncoder(in_ch=1, width=width)
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
        t1 = run_phase(phase1, run)
        summary["gt_encoder"] = t1.summary()
        if procs.is_main:
            best = run.run_dir / "checkpoints" / "gt_encoder-best.safetensors"
            final_enc = load_gt_encoder(best) if best.exists() else enc
            save_refiner(final_enc, gt_path, None, {"val_maxF": str(t1.best_maxF)})
        procs.barrier()
    return _frozen(load_gt_encoder(gt_path), c, procs.device)


def _frozen(gt_encoder: GTEncoder, c: TrainConfig, device: torch.device) -> GTEncoder:
    """The trained GT encoder as phase 2 uses it: no gradients, on the device, in the step's memory format."""
    # Frozen and in eval mode: the official code forgets .eval(), letting BatchNorm statistics drift.
    gt_encoder = gt_encoder.eval()
    if resolve_precision(c, device) is not None:
        # Mixed precision (CUDA): being frozen, its BatchNorm folds into the convs, the same function
        # in fewer kernels per step. In fp32 it stays as trained, so fp32 runs reproduce bit for bit.
        gt_encoder = gt_encoder.fold_batchnorm()
    gt_encoder = gt_encoder.to(device).requires_grad_(False)
    if channels_last_for(c, device):
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


def run_phase(phase: Phase, run: Run) -> PhaseState:
    """Train ``phase.model`` until ``max_steps``, its maxF target or a plateau; returns where it stopped."""
    c, procs, device = run.c, run.procs, run.procs.device
    precision, channels_last = resolve_precision(c, device), channels_last_for(c, device)
    model = _on_device(phase.model, device, channels_last)
    opt, sched = make_optimizer(c, model.parameters(), phase.lr, device, phase.max_steps)
    scaler = grad_scaler(device, enabled=precision == torch.float16)
    state = _resume_phase(phase, model, opt, sched, scaler, run.resumed, procs)
    net = _parallel(model, c, procs)
    train_step = TrainStep(net, phase.loss_fn, opt, device, precision, scaler, sched, channels_last, agree=procs.all_ok)
    ckpts = Checkpoints(run.run_dir, c.keep_checkpoints)
    weights_config = run.refiner_config if phase.name == "refiner" else RefinerConfig.for_model(model)
    save_every = c.save_every or phase.val_every  # by default a checkpoint follows each validation step
    sampler = ResumableBatchSampler(len(run.data.train), c.batch_size, c.seed, procs.rank, procs.world_size)
    batches = _batches(run.data.train, sampler, c.workers, device, state.step)
    bar = _progress_bar(phase, state.step) if run.progress and procs.is_main else None
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
                _log_step(run.logger, bar, phase, state.step, result, opt, speed)
            # Also at the last step, so that the final weights compete for "best".
            if run.data.val is not None and (state.step % phase.val_every == 0 or last):
                stop = _validate_phase(phase, model, state, run, bar)
            if state.step % save_every == 0 or last or stop:
                if procs.is_main:
                    saved = _checkpoint_state(phase, state, opt, sched, scaler, sampler)
                    ckpts.save(phase.name, state.step, model, saved, weights_config)
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


def _on_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    return model


def _resume_phase(phase: Phase, model: nn.Module, opt, sched, scaler, resumed: Optional[Resumed], procs) -> PhaseState:
    """A fresh state, or, when the run resumes inside this phase, its checkpoint's weights, optimiser,
    schedule, loss scale, tracker and RNG, loaded in place."""
    if resumed is None or resumed.phase != phase.name:
        return PhaseState()
    model.load_state_dict(resumed.weights)
    opt.load_state_dict(resumed.state["optimizer"])
    sched.load_state_dict(resumed.state["scheduler"])
    if resumed.state.get("scaler"):
        scaler.load_state_dict(resumed.state["scaler"])
    state = PhaseState.resumed(resumed.step, resumed.state["tracker"])
    set_rng_state(resumed.state["rng"])
    if procs.is_main:
        log.info("resumed %s at step %d", phase.name, state.step)
    return state


def _parallel(model: nn.Module, c: TrainConfig, procs: ProcessGroup) -> nn.Module:
    """``model`` as the step runs it: in DDP over several processes, compiled when ``compile`` asks."""
    net = model
    if procs.world_size > 1:
        device = procs.device
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if c.compile:
        net = torch.compile(net)
    return net


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


def _progress_bar(phase: Phase, step: int):
    from tqdm import tqdm

    return tqdm(total=phase.max_steps, initial=step, desc=phase.name, unit="step", dynamic_ncols=True)


def _log_step(logger: RunLog, bar, phase: Phase, step: int, result, opt, speed: Throughput) -> None:
    """The loss (reading it is the host sync the loop makes only now), its parts, the lr and img/s."""
    loss = float(result.loss)
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.4f}")
    logger.write(
        phase.name, step, {"loss": loss, **result.parts, "lr": opt.param_groups[0]["lr"], "img_per_s": speed.rate()}
    )


def _non_finite(phase: Phase, state: PhaseState, nan_policy: str) -> None:
    """A batch whose loss is not finite (no update was made): stop the run, or count it as skipped."""
    if nan_policy == "stop":
        raise IS5NetError(
            f"{phase.name}: the loss is not finite at step {state.step}; stopped without saving "
            f"(the last checkpoint is intact). Lower lr, or set nan_policy=skip"
        )
    state.skipped_batches += 1
    log.warning("%s: non-finite loss at step %d: batch skipped", phase.name, state.step)


def _checkpoint_state(phase: Phase, state: PhaseState, opt, sched, scaler, sampler) -> dict:
    """The ``.state.pt`` beside the weights: everything a resume needs to go on exactly."""
    return {
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "step": state.step,
        "epoch": state.step // sampler.batches_per_epoch(),
        "tracker": state.tracker_json(),
        "rng": rng_state(),
        "phase": phase.name,
        "version": __version__,
    }


# ----------------------------------------------------------------------------------- validation
def _validate_phase(phase: Phase, model: nn.Module, state: PhaseState, run: Run, bar) -> bool:
    """Validate on rank 0: log, keep the best weights, decide whether the phase stops (every rank learns it)."""
    c, procs = run.c, run.procs
    reason = ""
    if procs.is_main:
        metrics = validate(
            model,
            run.data.val,
            procs,
            resolve_precision(c, procs.device),
            channels_last_for(c, procs.device),
            phase.gt_input,
            c.batch_size,
        )
        if state.record(metrics):
            save_refiner(
                model,
                run.run_dir / "checkpoints" / f"{phase.name}-best.safetensors",
                run.refiner_config if phase.name == "refiner" else None,
                {"step": str(state.step), "val_maxF": f"{metrics['maxF']:.6f}"},
            )
        run.logger.write(phase.name, state.step, {"val_maxF": metrics["maxF"], "val_MAE": metrics["MAE"]})
        if bar is not None:
            bar.write(f"{phase.name} step {state.step}: val maxF {metrics['maxF']:.4f} MAE {metrics['MAE']:.4f}")
        reason = stop_reason(phase, state, c.early_stop)
        if reason:
            state.stopped_early, state.stop_reason = True, reason
            log.info("%s: stopped at step %d: %s", phase.name, state.step, reason)
    return procs.broadcast(bool(reason))


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
