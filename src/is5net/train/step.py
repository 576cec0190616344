"""One optimisation step: what ``is5net train`` runs in each phase and what ``benchmarks/bench_train.py`` times.

forward + loss under autocast -> a finiteness check every process agrees on -> backward through the
``GradScaler`` (loss scaling for fp16, a pass-through otherwise) -> optimizer -> lr scheduler.

The losses of the two phases (the reference recipe) are built here too: phase 1 trains the GT encoder to
reproduce the GT from the GT, phase 2 the refiner with ``20*BCE + 0.5*IoU`` per side output, the feature MSE
to the frozen GT encoder's maps and the orthogonality penalty. So are the step's settings on a device: its
autocast dtype (:func:`resolve_precision`: bf16 on CUDA, fp32 on the CPU by default) and memory format.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..contract import COARSE_CHANNEL
from ..errors import IS5NetError
from .config import TrainConfig
from .losses import detail_weights, feature_loss, orthogonality_penalty, side_loss

# (network, input, GT) -> (loss, parts to log); the network may be wrapped (DDP, torch.compile).
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]]


def gt_encoder_loss(c: TrainConfig) -> LossFn:
    """Phase 1: the GT encoder's side outputs from the GT itself (+ orthogonality: the reference does it here too)."""

    def loss_fn(net: nn.Module, x: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits, _ = net(gt)
        loss = side_loss(logits, gt, c.bce_weight, c.iou_weight, loss_weights(c, gt))
        if c.ortho_weight:
            loss = loss + c.ortho_weight * orthogonality_penalty(unwrapped(net))
        return loss, {}

    return loss_fn


def loss_weights(c: TrainConfig, gt: torch.Tensor, x: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """The per-pixel weights of the side loss (docs/training.md, "Loss weights"), or None: the reference's
    unweighted loss, when ``detail_weight`` is 0. ``x``: the refiner's input batch; when it has a coarse-mask
    channel, ``detail_outside_mask`` weighs the detail that mask leaves out more (an IS-Net has none)."""
    if not c.detail_weight:
        return None
    coarse = None
    if c.detail_outside_mask and x is not None and x.shape[1] > COARSE_CHANNEL:
        coarse = x[:, COARSE_CHANNEL : COARSE_CHANNEL + 1]
    return detail_weights(gt, c.detail_weight, coarse, c.detail_outside_mask, c.detail_spread)


def refiner_loss(
    c: TrainConfig,
    gt_features: Optional[Callable[[torch.Tensor], list]] = None,
    feature_loss_fn: Callable = feature_loss,
) -> LossFn:
    """Phase 2: side loss + (with ``gt_features``, the frozen GT encoder's maps of the GT) feature loss +
    orthogonality. ``feature_loss_fn`` lets the benchmark time an older form of the same feature loss."""

    def loss_fn(net: nn.Module, x: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        logits, feats = net(x)
        loss = side_loss(logits, gt, c.bce_weight, c.iou_weight, loss_weights(c, gt, x))
        parts = {"side": loss.detach()}
        if gt_features is not None:
            with torch.no_grad():
                targets = gt_features(gt)
            fl = feature_loss_fn(feats, targets, c.feature_weight)
            loss = loss + fl
            parts["feature"] = fl.detach()
        if c.ortho_weight:
            loss = loss + c.ortho_weight * orthogonality_penalty(unwrapped(net))
        return loss, parts

    return loss_fn


def unwrapped(net: nn.Module) -> nn.Module:
    """The model inside DDP and/or torch.compile wrappers (its parameter names are the plain ones)."""
    module = getattr(net, "_orig_mod", net)
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


def resolve_precision(c: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``c.precision`` on ``device`` (None = fp32); refuses fp16 where it would not be."""
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


def channels_last_for(c: TrainConfig, device: torch.device) -> bool:
    return c.channels_last == "true" or (c.channels_last == "auto" and device.type == "cuda")


def grad_scaler(device: torch.device, enabled: bool):
    """Loss scaling for fp16 (whose gradients underflow without it; bf16 has fp32's range and needs none)."""
    try:
        return torch.amp.GradScaler(device.type, enabled=enabled)
    except (AttributeError, TypeError):  # torch < 2.3: only the per-backend class (a no-op when disabled)
        return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


@dataclass
class StepResult:
    loss: torch.Tensor  # detached; reading it is a host sync, so the loop does it only when it logs
    parts: dict
    finite: bool  # False: no update was made (the batch is skipped or the run stops)


class TrainStep:
    """``step(x, gt)``: one optimisation step of ``net`` on a batch already on the device (:meth:`to_device`).

    ``precision``: the autocast dtype (None = fp32); ``scaler``: a :func:`grad_scaler` (default: one for
    ``precision``); ``scheduler`` steps after every batch, a skipped one included (the schedule follows the
    step count, as ``max_steps`` does); ``agree``: combines the finiteness of every process's loss (DDP), so
    that all skip or stop together.
    """

    def __init__(
        self,
        net: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        precision: Optional[torch.dtype] = None,
        scaler=None,
        scheduler=None,
        channels_last: bool = False,
        gt_channels_last: bool = False,
        agree: Callable[[bool], bool] = bool,
    ):
        self.net, self.loss_fn, self.optimizer, self.device = net, loss_fn, optimizer, device
        self.precision = precision
        self.scaler = scaler if scaler is not None else grad_scaler(device, precision == torch.float16)
        self.scheduler = scheduler
        self.channels_last, self.gt_channels_last = channels_last, gt_channels_last
        self.agree = agree

    def to_device(self, x: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        gt = gt.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.gt_channels_last:
            gt = gt.contiguous(memory_format=torch.channels_last)
        return x, gt

    def forward(self, x: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The loss (and its logged parts) under the step's autocast, before any backward."""
        with torch.autocast(
            self.device.type, dtype=self.precision or torch.float32, enabled=self.precision is not None
        ):
            return self.loss_fn(self.net, x, gt)

    def __call__(self, x: torch.Tensor, gt: torch.Tensor) -> StepResult:
        loss, parts = self.forward(x, gt)
        finite = self.agree(bool(torch.isfinite(loss.detach()).item()))  # one host sync per step
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # with fp16, skips a step whose gradients overflowed
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return StepResult(loss.detach(), parts, finite)
