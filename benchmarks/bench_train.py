"""Training-step speed: our step (as ``is5net train`` phase 2 runs it) vs a plain step, and data loading.

Ours  = what ``is5net.train.loop`` runs on CUDA: bf16 autocast, channels_last refiner, fused AdamW, PyTorch's
        default backend flags; the frozen GT encoder in eval mode with BatchNorm folded, channels_last,
        features only, and the feature MSE without fp32 copies (``losses.feature_mse``).
        ``ours_v1`` is the previous version (GT encoder as the official code runs it, MSE on fp32 copies).
Plain = what the official code runs: fp32, eager, NCHW, default backend flags (``common.torch_defaults``),
        non-fused AdamW (PyTorch's default implementation).
Both: the same architecture and initial weights, the same batch (real photos via ``common.real_input``, GT =
the mask channel), and the very step loop.py's phase 2 runs (``is5net.train.step``: ``TrainStep`` with
``refiner_loss``, i.e. ``side_loss`` (20*BCE + 0.5*IoU per side output) + ``feature_loss`` (MSE to the frozen
GT encoder's maps) + ``1e-8 * orthogonality_penalty``, and its per-step finiteness check, one host sync).

On the CPU the default pair is ``plain`` and ``ours_cpu``: what loop.py runs there (fp32, NCHW, fused AdamW,
the GT encoder features only, unfolded), the CPU's own ratio.

Optional variants: ``ours_tuned`` (ours + cuDNN autotuning/TF32 and a channels_last GT encoder: what loop.py
could add), ``compile`` (ours + ``torch.compile``, as ``compile=true``; run last, after the data part, as
its compilation can take minutes). Rows print as each variant ends; ``--json`` is rewritten after each.

Data: writes a small synthetic DIS-layout dataset (``DIS-TR`` with im/gt/coarse) to a temp dir, times a
``DataLoader`` over ``RefinerDataset`` alone (img/s) without the resized-input cache, filling it, and
reading it (what training does from the second epoch), then our step fed by the cached loader, reporting
the fraction of the wall time spent blocked in ``next(loader)`` (= GPU idle: each step ends with a host
sync). ``--data-only`` measures the loader alone (no GPU needed); ``--data-size 2560`` makes photos of
about DIS5K's pixel count.

Memory without a GPU: ``--count-saved`` counts, per variant, the bytes autograd holds for backward after
forward + loss (at batch B and 2B, so the per-image and per-step parts separate) and extrapolates them to
``--predict-size``/``--predict-batch`` (1024², 8). Autocast decides the same dtypes on the CPU, so this
predicts the GPU's activation memory; the GPU's peak adds weights, gradients, AdamW state and workspaces.

    python benchmarks/bench_train.py                         # CUDA, is5net, 1024², batch 8
    python benchmarks/bench_train.py --variants plain,ours,ours_tuned --compile --json train.json
    python benchmarks/bench_train.py --device cpu --count-saved --size 256 --batch 1 --variants plain,ours_v1,ours
    python benchmarks/bench_train.py --device cpu --data-only --size 1024 --batch 4 --data-n 16 --data-size 2560 \\
        --workers 2
    python benchmarks/bench_train.py --device cpu --size 256 --batch 2 --interleave --skip-data  # the CPU ratio
    python benchmarks/bench_train.py --device cpu --size 128 --batch 2 --model is5net_tiny \\
        --iters 2 --warmup 1 --workers 0 --data-size 128    # smoke check on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import real_input, sync, torch_defaults  # noqa: E402
from is5net.checkpoint import default_mean  # noqa: E402
from is5net.modeling import build_model, gt_encoder_for  # noqa: E402
from is5net.runtime import enable_fast_cuda  # noqa: E402
from is5net.train.config import TrainConfig  # noqa: E402
from is5net.train.losses import feature_loss  # noqa: E402
from is5net.train.step import TrainStep, refiner_loss  # noqa: E402

GIB = 1024**3
VARIANTS = {
    # name: (autocast dtype, channels_last, fused AdamW, compile, fast backend flags, channels_last GT encoder)
    "plain": (None, False, False, False, False, False),
    "ours": (torch.bfloat16, True, True, False, False, False),
    "ours_tuned": (torch.bfloat16, True, True, False, True, True),
    "compile": (torch.bfloat16, True, True, True, False, False),
    # What loop.py runs on the CPU (fp32, NCHW; the GT encoder lean but not folded): the CPU's own ratio.
    "ours_cpu": (None, False, True, False, False, False),
}
# Attribution of "ours": the same step with one ingredient changed (name -> (base variant, config changes)).
ABLATIONS = {
    "ours_noortho": ("ours", {"ortho_weight": 0.0}),
    "ours_nofeat": ("ours", {"feature_loss": False}),
    "ours_up32": ("ours", {}),  # bilinear resizes computed in fp32 inside the model (bf16 atomics in backward?)
    # loop.py before the lean feature loss: GT encoder unfolded, NCHW, with its side heads; MSE on fp32 copies
    "ours_v1": ("ours", {}),
}
for _name, (_base, _) in ABLATIONS.items():
    VARIANTS[_name] = VARIANTS[_base]


def _fp32_upsample_like(src, target):
    import torch.nn.functional as F

    if src.shape[2:] == target.shape[2:]:
        return src
    return F.interpolate(src.float(), size=target.shape[2:], mode="bilinear", align_corners=False).to(src.dtype)


def _feature_loss_fp32_copies(features, gt_features, weight: float = 1.0):
    """The feature MSE as loop.py computed it before ``losses.feature_mse``: on fp32 copies of both maps."""
    import torch.nn.functional as F

    total = features[0].new_zeros((), dtype=torch.float32)
    for f, g in zip(features, gt_features):
        total = total + F.mse_loss(f.float(), g.detach().float())
    return weight * total


# --------------------------------------------------------------------------------------- memory
def _proc_status_kb(key: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class MemoryMeter:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on CUDA, peak RSS growth on the CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = 0
        else:
            self.ok = _reset_peak_rss()
            self.base = _proc_status_kb("VmRSS")

    def peak_bytes(self) -> Optional[int]:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        hwm = _proc_status_kb("VmHWM")
        if not self.ok or hwm is None or self.base is None:
            return None
        return max(0, hwm - self.base) * 1024

    @property
    def label(self) -> str:
        return "peak GiB" if self.device.type == "cuda" else "RSS+ GiB"


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    else:
        try:  # hand freed heap back to the OS so the next variant's RSS growth is its own
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@contextlib.contextmanager
def fast_flags(on: bool):
    """``enable_fast_cuda`` (cuDNN autotuning, TF32) inside the block when ``on``; flags restored after."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if on:
        enable_fast_cuda()
    try:
        yield
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) = saved


def calibrate_gt_encoder(
    enc: torch.nn.Module, device: torch.device, size: int = 256, batch: int = 4, steps: int = 3, seed: int = 0
) -> None:
    """BatchNorm statistics of the (random-weight) GT encoder from random blob masks, then eval mode.

    Mask-like inputs give its features the scale they have on GT masks, so the feature MSE is a sensible
    number. Always at 256² with several different masks: statistics from tiny maps, or from one mask
    repeated, have near-zero variances and make the eval-mode features blow up.
    """
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch, 1, size, size, generator=g)
    masks = (F.avg_pool2d(noise, 31, stride=1, padding=15, count_include_pad=False) > 0.5).float()
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the passes
            m.reset_running_stats()
    enc.to(device).train()
    with torch.no_grad():
        for _ in range(steps):
            enc(masks.to(device))
    enc.eval().cpu()


# ----------------------------------------------------------------------------------------- step
class BenchStep:
    """loop.py's phase-2 step (``is5net.train.step.TrainStep``) set up as a variant; ``step(x, y)`` -> loss."""

    def __init__(
        self, variant: str, model_name: str, refiner_sd: dict, gt_sd: dict, device: torch.device, c: TrainConfig
    ):
        amp, cl, fused, compiled, _fast, gt_cl = VARIANTS[variant]
        if variant in ABLATIONS:
            import copy

            c = copy.deepcopy(c)
            for k, v in ABLATIONS[variant][1].items():
                setattr(c, k, v)
        self.patched = variant == "ours_up32"
        if self.patched:
            import is5net.modeling.isnet as isnet_mod
            import is5net.modeling.rsu as rsu_mod

            self._saved = (rsu_mod.upsample_like, isnet_mod.upsample_like)
            rsu_mod.upsample_like = isnet_mod.upsample_like = _fp32_upsample_like
        self.device, self.amp = device, amp
        model = build_model(model_name)
        model.load_state_dict(refiner_sd)
        model = model.to(device)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.train()
        # The official code's GT encoder (unfolded, all heads), in plain and in the previous version of ours.
        lean_gt = variant not in ("plain", "ours_v1")
        gt_enc = gt_encoder_for(model)
        gt_enc.load_state_dict(gt_sd)
        if lean_gt and amp is not None:  # as loop.py under mixed precision: frozen, so BatchNorm folded
            gt_enc = gt_enc.eval().fold_batchnorm()
            gt_cl = gt_cl or cl
        gt_enc = gt_enc.to(device)
        if gt_cl:
            gt_enc = gt_enc.to(memory_format=torch.channels_last)
        # Frozen and in eval mode, as loop.py.
        self.gt_encoder = gt_enc.eval().requires_grad_(False)
        gt_features = None
        if c.feature_loss:
            gt_features = self.gt_encoder.encode if lean_gt else (lambda y: self.gt_encoder(y)[1])
        loss_fn = refiner_loss(c, gt_features, feature_loss if variant != "ours_v1" else _feature_loss_fp32_copies)
        kw = dict(lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay)
        if fused:
            kw["fused"] = True
        self.opt = torch.optim.AdamW(self.model.parameters(), **kw)
        self.compiled = compiled
        net = torch.compile(self.model) if compiled else self.model
        self.train_step = TrainStep(
            net, loss_fn, self.opt, device, precision=amp, channels_last=cl, gt_channels_last=gt_cl
        )
        self.non_finite = 0

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.train_step.to_device(x, y)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step (its finiteness check is loop.py's host sync); the detached loss."""
        result = self.train_step(x, y)
        self.non_finite += not result.finite
        return result.loss

    def close(self) -> None:
        if self.patched:
            import is5net.modeling.isnet as isnet_mod
            import is5net.modeling.rsu as rsu_mod

            rsu_mod.upsample_like, isnet_mod.upsample_like = self._saved
        self.opt.zero_grad(set_to_none=True)
        del self.train_step, self.model, self.gt_encoder, self.opt
        if self.compiled:
            torch._dynamo.reset()  # the compiled graphs hold the model


def describe(variant: str, device: torch.device) -> str:
    amp, cl, fused, compiled, fast, gt_cl = VARIANTS[variant]
    parts = [
        "bf16" if amp is not None else "fp32",
        "channels_last" if cl else "NCHW",
        "fused AdamW" if fused else "AdamW",
    ]
    if fast:
        parts.append("cudnn.benchmark+TF32")
    if variant in ("plain", "ours_v1"):
        parts.append("GT enc as official")
    elif amp is None:
        parts.append("lean GT enc (features only)")
    else:
        parts.append("lean GT enc+MSE")
    if gt_cl:
        parts.append("CL GT enc")
    if compiled:
        parts.append("compile")
    return ", ".join(parts)


def time_steps(
    ts: BenchStep, x: torch.Tensor, y: torch.Tensor, iters: int, warmup: int
) -> tuple[list[float], float, float]:
    """(step times in ms, loss of the first step, seconds of the first step: compilation, autotuning)."""
    t0 = time.perf_counter()
    first = float(ts.step(x, y))
    first_s = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        ts.step(x, y)
    sync(ts.device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        ts.step(x, y)
        sync(ts.device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times, first, first_s


@contextlib.contextmanager
def open_step(
    variant: str, args, refiner_sd: dict, gt_sd: dict, device: torch.device, c: TrainConfig, fast: bool = False
):
    """A :class:`BenchStep` under the plain backend defaults (``fast``: plus ``fast_flags``); closed and its
    memory handed back afterwards, whatever happened, so the next measurement starts clean."""
    ts = None
    try:
        with torch_defaults(), fast_flags(fast and device.type == "cuda"):
            ts = BenchStep(variant, args.model, refiner_sd, gt_sd, device, c)
            yield ts
    finally:
        if ts is not None:
            ts.close()
        del ts
        free_memory(device)


def run_variant(
    variant: str,
    args,
    refiner_sd: dict,
    gt_sd: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    c: TrainConfig,
) -> dict:
    meter = MemoryMeter(device)
    free_memory(device)
    meter.start()
    res: dict = {"variant": variant, "setup": describe(variant, device)}
    fast = VARIANTS[variant][4]
    try:
        with open_step(variant, args, refiner_sd, gt_sd, device, c, fast) as ts:
            xd, yd = ts.prepare(x, y)
            t0 = time.perf_counter()
            times, first, first_s = time_steps(ts, xd, yd, args.iters, args.warmup)
            total = time.perf_counter() - t0
            if getattr(args, "profile", None) == variant:
                from torch.profiler import ProfilerActivity, profile

                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                with profile(activities=acts) as prof:
                    for _ in range(3):
                        ts.step(xd, yd)
                    sync(device)
                key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))
        ms = float(np.median(times))
        peak = meter.peak_bytes()
        res.update(
            ms_per_step=ms,
            img_per_s=args.batch * 1000.0 / ms,
            ms_min=float(np.min(times)),
            ms_max=float(np.max(times)),
            first_loss=first,
            non_finite_steps=ts.non_finite,
            peak_mem_bytes=peak,
            peak_mem_gib=None if peak is None else peak / GIB,
            first_step_s=first_s,
            wall_s=total,
        )
        if ts.non_finite:
            print(f"warning: {variant}: {ts.non_finite} step(s) with a non-finite loss (skipped, timing too low)")
    except torch.cuda.OutOfMemoryError as exc:
        res.update(error=f"out of memory: {str(exc).splitlines()[0]}")
    except Exception as exc:  # keep the other variants' numbers
        traceback.print_exc()
        res.update(error=f"{type(exc).__name__}: {exc}")
    return res


def run_interleaved(
    variants: list[str],
    args,
    refiner_sd: dict,
    gt_sd: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    c: TrainConfig,
) -> list[dict]:
    """Speed only: every variant's step in turn, round after round (``--interleave``).

    On a shared machine the speed drifts over minutes (other load, clocks); run back to back, variants see
    different machines. Alternating step by step, the drift hits every variant alike, so their ratio holds.
    All steps live at once, so memory is not measured per variant.
    """
    results = {
        v: {
            "variant": v,
            "setup": describe(v, device),
            "peak_mem_bytes": None,
            "peak_mem_gib": None,
            "interleaved": True,
        }
        for v in variants
    }
    times: dict[str, list[float]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        steps, inputs = {}, {}
        for v in variants:
            steps[v] = stack.enter_context(open_step(v, args, refiner_sd, gt_sd, device, c))
            inputs[v] = steps[v].prepare(x, y)
        for v in variants:  # first steps (allocation, autotuning) are not timed
            results[v]["first_loss"] = float(steps[v].step(*inputs[v]))
            for _ in range(args.warmup - 1):
                steps[v].step(*inputs[v])
        sync(device)
        for _ in range(args.iters):
            for v in variants:
                t0 = time.perf_counter()
                steps[v].step(*inputs[v])
                sync(device)
                times[v].append((time.perf_counter() - t0) * 1000.0)
        for v in variants:
            ms = float(np.median(times[v]))
            results[v].update(
                ms_per_step=ms,
                img_per_s=args.batch * 1000.0 / ms,
                ms_min=float(np.min(times[v])),
                ms_max=float(np.max(times[v])),
                non_finite_steps=steps[v].non_finite,
            )
    return [results[v] for v in variants]


def count_saved(
    variant: str,
    args,
    refiner_sd: dict,
    gt_sd: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    c: TrainConfig,
) -> dict:
    """Bytes autograd holds for backward at the end of one forward + loss (distinct storages), any device.

    That is what sets the peak of a training step besides the weights, gradients and optimizer state
    (reported apart as ``state``: fp32 weights + gradients + two AdamW moments). It needs no GPU: the same
    autocast rules decide what is saved in which dtype, so a CPU count predicts the GPU's activation memory
    (cuDNN's own workspaces excepted), and it scales with batch x pixels.
    """
    res: dict = {"variant": variant, "setup": describe(variant, device)}
    try:
        with open_step(variant, args, refiner_sd, gt_sd, device, c) as ts:
            xd, yd = ts.prepare(x, y)
            storages: dict = {}

            def pack(t):
                st = t.untyped_storage()
                storages[(st.device.type, st.data_ptr())] = st.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss, _ = ts.train_step.forward(xd, yd)
            n_params = sum(p.numel() for p in ts.model.parameters())
            res.update(
                saved_bytes=sum(storages.values()),
                saved_gib=sum(storages.values()) / GIB,
                state_gib=n_params * 4 * 4 / GIB,
                loss=float(loss.detach()),
            )
            del loss
    except Exception as exc:
        traceback.print_exc()
        res.update(error=f"{type(exc).__name__}: {exc}")
    return res


# ----------------------------------------------------------------------------------------- data
class CyclingBatches(Sampler):
    """``n_batches`` batches of ``batch`` indices, from successive seeded permutations of ``range(n)``."""

    def __init__(self, n: int, batch: int, n_batches: int, seed: int = 0):
        self.n, self.batch, self.n_batches, self.seed = n, batch, n_batches, seed

    def __iter__(self):
        made, epoch = 0, 0
        while made < self.n_batches:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            for b in range(self.n // self.batch):
                if made == self.n_batches:
                    return
                yield perm[b * self.batch : (b + 1) * self.batch].tolist()
                made += 1
            epoch += 1

    def __len__(self) -> int:
        return self.n_batches


def make_loader(ds, args, device: torch.device, n_batches: int) -> DataLoader:
    return DataLoader(
        ds,
        batch_sampler=CyclingBatches(len(ds), args.batch, n_batches),
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def run_data(
    args, refiner_sd: dict, gt_sd: dict, device: torch.device, c: TrainConfig, root: Path, steps_img_s: Optional[float]
) -> dict:
    from is5net.data.dataset import CoarseDir, InputCache, RefinerDataset
    from is5net.data.pairs import find_pairs
    from is5net.data.samples import enumerate_samples
    from is5net.demo.synthetic import make_synthetic_dataset

    out: dict = {"data_size": args.data_size, "workers": args.workers}
    n_train = args.data_n or 4 * args.batch
    if not (root / "DIS-TR").is_dir():
        t0 = time.perf_counter()
        make_synthetic_dataset(root, n_train=n_train, n_val=0, n_test=0, size=args.data_size)
        out["generate_s"] = time.perf_counter() - t0
    samples = enumerate_samples(find_pairs(root, ["DIS-TR"]), enrich=False)
    in_ch = build_model(args.model).in_ch
    coarse = CoarseDir("dataset") if in_ch == 5 else None

    def dataset(input_cache=None):
        return RefinerDataset(
            samples, coarse, args.size, mean=default_mean(in_ch), std=[1.0] * in_ch, train=True, input_cache=input_cache
        )

    ds_plain = dataset()
    out["images"] = len(ds_plain)
    if len(ds_plain) < args.batch:
        raise RuntimeError(f"{len(ds_plain)} samples cannot fill a batch of {args.batch}")
    n_batches = args.warmup + args.data_iters

    def loader_alone(ds, batches: int) -> tuple[float, float]:
        """(img/s after the first batch, seconds to the first batch)."""
        loader = make_loader(ds, args, device, batches)
        t0 = time.perf_counter()
        arrivals = []
        for batch in loader:
            arrivals.append(time.perf_counter())
            del batch
        del loader
        if len(arrivals) > 1:
            rate = (len(arrivals) - 1) * args.batch / max(arrivals[-1] - arrivals[0], 1e-9)
        else:
            rate = args.batch / max(arrivals[0] - t0, 1e-9)
        return rate, arrivals[0] - t0

    # 1. The loader alone: decoding + resizing every time (data_cache=off), then with the resized-input
    #    cache as training runs by default: one pass that fills it, then the passes that read it.
    out["uncached_img_per_s"], _ = loader_alone(ds_plain, n_batches)
    with tempfile.TemporaryDirectory(prefix="bench_inputs_") as cache_dir:
        ds = dataset(InputCache(cache_dir, args.size))
        t0 = time.perf_counter()
        ds.prepare_input_cache()
        out["cache_keys_s"] = time.perf_counter() - t0
        out["cache_fill_img_per_s"], _ = loader_alone(ds, max(1, len(ds) // args.batch))
        out["loader_img_per_s"], out["first_batch_s"] = loader_alone(ds, n_batches)
        out["cache_mib_per_sample"] = (
            sum(f.stat().st_size for f in Path(cache_dir).rglob("*") if f.is_file()) / max(1, len(ds)) / 2**20
        )
        if steps_img_s:
            out["loader_keeps_up"] = out["loader_img_per_s"] >= steps_img_s
        if not args.data_only:
            out.update(_fed_by_loader(ds, args, refiner_sd, gt_sd, device, c, n_batches, steps_img_s))
    return out


def _fed_by_loader(ds, args, refiner_sd, gt_sd, device, c, n_batches: int, steps_img_s: Optional[float]) -> dict:
    out: dict = {}

    # 2. Our step fed by the loader; time blocked in next(loader) over the timed steps.
    with open_step("ours" if device.type == "cuda" else "ours_cpu", args, refiner_sd, gt_sd, device, c) as ts:
        it = iter(make_loader(ds, args, device, n_batches))
        wait = total = 0.0
        for i in range(n_batches):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            xd, yd = ts.prepare(batch["input"], batch["gt"])
            ts.step(xd, yd)  # ends with a host sync (the finiteness check)
            sync(device)
            t2 = time.perf_counter()
            if i >= args.warmup:
                wait += t1 - t0
                total += t2 - t0
        del it
    out["timed_steps"] = args.data_iters
    out["fed_img_per_s"] = args.data_iters * args.batch / max(total, 1e-9)
    out["idle_fraction"] = wait / max(total, 1e-9)
    out["wait_ms_per_step"] = 1000.0 * wait / max(args.data_iters, 1)
    if steps_img_s:
        out["fed_vs_in_memory"] = out["fed_img_per_s"] / steps_img_s
    return out


# ----------------------------------------------------------------------------------------- main
def fmt(v, spec: str, na: str = "n/a") -> str:
    return na if v is None else format(v, spec)


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    """The arguments and the variants to run (checked: an unknown or impossible one is a usage error)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="is5net", help="registry name (is5net, is5net_tiny, isnet ...)")
    ap.add_argument("--size", type=int, default=1024, help="training input size")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument(
        "--variants",
        help=f"comma list of: {', '.join(VARIANTS)} (default: plain,ours on CUDA, plain,ours_cpu on the CPU)",
    )
    ap.add_argument("--compile", action="store_true", help="add the torch.compile variant")
    ap.add_argument("--profile", metavar="VARIANT", help="print the top kernels of 3 steps of this variant")
    ap.add_argument("--skip-data", action="store_true", help="skip the data-loading measurement")
    ap.add_argument(
        "--data-only",
        action="store_true",
        help="only the loader's own img/s (no training steps): the CPU-side measurement",
    )
    ap.add_argument(
        "--interleave",
        action="store_true",
        help="time the variants step by step in turn (speed only, no memory): a steadier ratio on a "
        "busy machine, e.g. a shared CPU",
    )
    ap.add_argument(
        "--count-saved",
        action="store_true",
        help="instead of timing: the memory autograd holds for backward, per variant (no GPU needed)",
    )
    ap.add_argument("--predict-size", type=int, default=1024, help="--count-saved: extrapolate to this size")
    ap.add_argument("--predict-batch", type=int, default=8, help="--count-saved: ... and this batch")
    ap.add_argument("--workers", type=int, default=8, help="DataLoader workers for the data measurement")
    ap.add_argument("--data-size", type=int, default=1024, help="side of the synthetic images on disk")
    ap.add_argument("--data-n", type=int, default=0, help="synthetic training images (default 4 x batch)")
    ap.add_argument(
        "--data-iters",
        type=int,
        default=0,
        help="timed batches of the data measurement (default 50 on CUDA, --iters on the CPU): more "
        "than the loader's prefetch depth, so a slow loader cannot hide behind its queue",
    )
    ap.add_argument("--data-dir", type=Path, help="reuse/keep the synthetic dataset here (default: a temp dir)")
    ap.add_argument("--target-speedup", type=float, default=1.7)
    ap.add_argument("--target-mem-gib", type=float, default=12.0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--json", type=Path, help="also write all numbers here")
    args = ap.parse_args()

    if args.variants is None:
        args.variants = "plain,ours" if args.device.startswith("cuda") else "plain,ours_cpu"
    variants = [v for v in args.variants.split(",") if v]
    if args.compile and "compile" not in variants:
        variants.append("compile")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.iters < 1 or args.warmup < 1:
        ap.error("--iters and --warmup must be >= 1")
    if args.interleave:
        # Backend flags are process-wide, compiled graphs are cached and ours_up32 patches the model module:
        # none of them can alternate step by step.
        mixed = [v for v in variants if VARIANTS[v][3] or VARIANTS[v][4] or v == "ours_up32"]
        if mixed or args.count_saved:
            ap.error(f"--interleave times plain eager variants only (not {', '.join(mixed) or '--count-saved'})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("CUDA is not available here; use --device cpu")
    if args.data_iters <= 0:
        args.data_iters = 50 if args.device.startswith("cuda") else args.iters
    return args, variants


@dataclass
class Inputs:
    """What every variant starts from: the same batch and the same initial weights."""

    x: torch.Tensor
    y: torch.Tensor
    refiner_sd: dict
    gt_sd: dict


def make_inputs(args, device: torch.device) -> Inputs:
    """Real photos + rough mask + box (the GT is the mask channel); a refiner's initial weights and a GT encoder
    with BatchNorm statistics from masks (eval mode)."""
    x5 = real_input(args.batch, 5, args.size)
    y = (x5[:, 3:4] > 0.5).float().contiguous()
    torch.manual_seed(0)
    model = build_model(args.model)
    refiner_sd = {k: v.clone() for k, v in model.state_dict().items()}
    in_ch = model.in_ch
    gt_enc = gt_encoder_for(model)
    del model
    calibrate_gt_encoder(gt_enc, device)
    gt_sd = {k: v.clone() for k, v in gt_enc.state_dict().items()}
    del gt_enc
    x = (x5 if in_ch == 5 else x5[:, :3]).contiguous()
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return Inputs(x, y, refiner_sd, gt_sd)


def print_header(args, device: torch.device, c: TrainConfig) -> dict:
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {dev_name}  torch {torch.__version__}  model: {args.model}  input {args.size}²  "
        f"batch {args.batch}  iters {args.iters} (+{args.warmup} warmup)"
    )
    print(
        f"loss: side (20*BCE + 0.5*IoU, 6 outputs) + feature MSE (frozen eval GT encoder) + "
        f"{c.ortho_weight:g} * ortho;  AdamW lr {c.lr:g}"
    )
    if device.type == "cpu":
        print(
            "note: on the CPU loop.py trains in fp32/NCHW, as 'ours_cpu'; 'ours' runs the CUDA settings to "
            "exercise the code path (bf16 on a CPU), so its ratio means nothing; RSS+ = growth of the peak "
            "resident memory (approximate: the first variant also pays one-time library allocations)"
        )
    return dict(
        device=dev_name,
        torch=torch.__version__,
        model=args.model,
        size=args.size,
        batch=args.batch,
        iters=args.iters,
        warmup=args.warmup,
        args=vars(args),
        cudnn=torch.backends.cudnn.version() if device.type == "cuda" else None,
    )


def report_saved_memory(
    variants: list[str], args, inputs: Inputs, device: torch.device, c: TrainConfig, header: dict
) -> int:
    """``--count-saved``: the memory each variant holds for backward, measured at batch B and 2B and
    extrapolated. The difference is the per-image part (it scales with batch x pixels); the rest is per step
    (bf16 weight copies, the orthogonality penalty's stacks). Both extrapolate exactly."""
    big_px = (args.predict_size / args.size) ** 2
    print(
        f"\nheld for backward after forward + loss; predicted for batch {args.predict_batch} at "
        f"{args.predict_size}² from batch {args.batch} and {2 * args.batch} at {args.size}²"
    )
    print(
        f"{'variant':<13} {'setup':<60} {'per step GiB':>12} {'per image GiB':>13} "
        f"{'predicted GiB':>13} {'+ state GiB':>11}"
    )
    x, y = inputs.x, inputs.y
    x2, y2 = torch.cat([x, x]), torch.cat([y, y])
    results = []
    for v in variants:
        r = count_saved(v, args, inputs.refiner_sd, inputs.gt_sd, x, y, device, c)
        r2 = count_saved(v, args, inputs.refiner_sd, inputs.gt_sd, x2, y2, device, c) if "error" not in r else r
        if "error" in r2:
            r = r2
        results.append(r)
        if "error" in r:
            print(f"{v:<13} {r['setup']:<60} failed: {r['error'][:80]}")
            continue
        per_image = (r2["saved_bytes"] - r["saved_bytes"]) / args.batch
        fixed = r["saved_bytes"] - per_image * args.batch
        predicted = fixed + per_image * big_px * args.predict_batch
        r.update(
            per_image_gib=per_image / GIB,
            per_step_gib=fixed / GIB,
            predicted_gib=predicted / GIB,
            predicted_for={"size": args.predict_size, "batch": args.predict_batch},
        )
        print(
            f"{v:<13} {r['setup']:<60} {fixed / GIB:>12.3f} {per_image / GIB:>13.4f} "
            f"{predicted / GIB:>13.2f} {r['state_gib']:>11.2f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"config": header, "saved": results}, indent=2, default=str))
    return 1 if any("error" in r for r in results) else 0


class SpeedTable:
    """The timing rows, printed as each variant ends, with the speed-up over ``plain``; ``--json`` rewritten
    after each, so a run cut short keeps what it measured."""

    def __init__(self, args, inputs: Inputs, device: torch.device, c: TrainConfig, header: dict, variants: list[str]):
        self.args, self.inputs, self.device, self.c, self.header = args, inputs, device, c, header
        self.results: list[dict] = []
        self.summary: dict = {}
        self.data: Optional[dict] = None
        self.base: Optional[dict] = None
        self.width = max((len(describe(v, device)) for v in variants), default=10)

    def print_head(self) -> None:
        print(
            f"\n{'variant':<11} {'setup':<{self.width}} {'ms/step':>9} {'img/s':>8} "
            f"{MemoryMeter(self.device).label:>9} {'speed-up':>9} {'loss@1':>9}",
            flush=True,
        )

    def run(self, v: str, r: Optional[dict] = None) -> None:
        """Time variant ``v`` (or take its result ``r``, timed elsewhere) and print its row."""
        i = self.inputs
        r = r if r is not None else run_variant(v, self.args, i.refiner_sd, i.gt_sd, i.x, i.y, self.device, self.c)
        self.results.append(r)
        if "error" in r:
            print(f"{v:<11} {r['setup']:<{self.width}} failed: {r['error'][:80]}", flush=True)
            self.write_json()
            return
        if v == "plain":
            self.base = r
        if self.base is not None:
            r["speedup_vs_plain"] = self.base["ms_per_step"] / r["ms_per_step"]
        sp = r.get("speedup_vs_plain")
        print(
            f"{v:<11} {r['setup']:<{self.width}} {r['ms_per_step']:>9.1f} {r['img_per_s']:>8.1f} "
            f"{fmt(r['peak_mem_gib'], '.2f'):>9} {fmt(sp, '.2f') + ('x' if sp else ''):>9} "
            f"{r['first_loss']:>9.4g}",
            flush=True,
        )
        self.write_json()

    def ours(self) -> Optional[dict]:
        """The row of the step loop.py runs on this device: the CUDA settings, or on the CPU its fp32 step."""
        mine = "ours" if self.device.type == "cuda" else "ours_cpu"
        ok = [r for r in self.results if "error" not in r]
        return next((r for r in ok if r["variant"] == mine), None) or next(
            (r for r in ok if r["variant"] == "ours"), None
        )

    def write_json(self) -> None:
        if self.args.json:
            self.args.json.parent.mkdir(parents=True, exist_ok=True)
            self.args.json.write_text(
                json.dumps(
                    {"config": self.header, "variants": self.results, "summary": self.summary, "data": self.data},
                    indent=2,
                    default=str,
                )
            )


def time_variants(table: SpeedTable, variants: list[str]) -> None:
    """Every variant but ``compile`` (timed last), one after the other or, with ``--interleave``, in turn."""
    args, i = table.args, table.inputs
    if args.interleave and variants:
        for r in run_interleaved(variants, args, i.refiner_sd, i.gt_sd, i.x, i.y, table.device, table.c):
            table.run(r["variant"], r)
        return
    for v in variants:
        if v != "compile":
            table.run(v)


def summarise_ours(table: SpeedTable) -> None:
    """Our step over the plain one (speed, and memory on CUDA), against the targets on CUDA."""
    ours, base, args = table.ours(), table.base, table.args
    if ours is None or base is None:
        return
    table.summary["ours_over_plain"] = ours["speedup_vs_plain"]
    cuda = table.device.type == "cuda"
    if cuda and base.get("peak_mem_gib") and ours.get("peak_mem_gib"):
        table.summary["memory_ours_over_plain"] = ours["peak_mem_gib"] / base["peak_mem_gib"]
    line = f"\n{ours['variant']} / plain: {ours['speedup_vs_plain']:.2f}x speed"
    if "memory_ours_over_plain" in table.summary:
        line += f", {table.summary['memory_ours_over_plain']:.2f}x memory"
    print(line)
    if cuda:
        ok_speed = ours["speedup_vs_plain"] >= args.target_speedup
        ok_mem = ours["peak_mem_gib"] <= args.target_mem_gib
        table.summary["target_met"] = ok_speed and ok_mem
        print(
            f"target (H200, 1024², batch 8): ours >= {args.target_speedup}x plain "
            f"[{'ok' if ok_speed else 'MISSED'}] at <= {args.target_mem_gib} GiB "
            f"[{'ok' if ok_mem else 'MISSED'}]"
        )


def measure_data(table: SpeedTable) -> bool:
    """The loader's own speed and our step fed by it, into ``table.data``; False when it failed."""
    args, device, i = table.args, table.device, table.inputs
    ours = table.ours()
    steps_img_s = ours["img_per_s"] if ours else None
    print(
        f"\ndata: synthetic DIS-TR, {args.data_n or 4 * args.batch} images at {args.data_size}² on disk -> "
        f"{args.size}² inputs, {args.workers} worker(s), pin_memory={device.type == 'cuda'}"
    )
    try:
        if args.data_dir is not None:
            args.data_dir.mkdir(parents=True, exist_ok=True)
            table.data = run_data(args, i.refiner_sd, i.gt_sd, device, table.c, args.data_dir, steps_img_s)
        else:
            with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
                table.data = run_data(args, i.refiner_sd, i.gt_sd, device, table.c, Path(tmp), steps_img_s)
    except Exception as exc:
        traceback.print_exc()
        table.data = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"data: failed: {table.data['error']}")
        return False
    print_data(table.data, ours)
    return True


def print_data(data: dict, ours: Optional[dict]) -> None:
    if "generate_s" in data:
        print(f"  wrote {data['images']} images in {data['generate_s']:.1f} s")
    need = ""
    if ours:
        need = f" ({'keeps up with' if data['loader_keeps_up'] else 'SLOWER than'} our step's {ours['img_per_s']:.1f})"
    print(f"  loader alone, no cache:  {data['uncached_img_per_s']:8.1f} img/s (data_cache=off)")
    print(
        f"  loader filling cache:    {data['cache_fill_img_per_s']:8.1f} img/s (first epoch; keys "
        f"{data['cache_keys_s']:.2f} s, {data['cache_mib_per_sample']:.2f} MiB/sample)"
    )
    print(
        f"  loader alone, cached:    {data['loader_img_per_s']:8.1f} img/s{need}, "
        f"first batch after {data['first_batch_s']:.2f} s"
    )
    if "fed_img_per_s" in data:
        rel = f" = {data['fed_vs_in_memory']:.2f} x in-memory" if "fed_vs_in_memory" in data else ""
        print(f"  ours fed by loader:      {data['fed_img_per_s']:8.1f} img/s{rel} over {data['timed_steps']} steps")
        print(
            f"  idle waiting for data:   {100 * data['idle_fraction']:8.1f} % of the step time "
            f"({data['wait_ms_per_step']:.1f} ms/step in next(loader))"
        )


def time_compile(table: SpeedTable) -> None:
    """The torch.compile variant, last: its compilation can take minutes."""
    table.print_head()
    table.run("compile")
    r = table.results[-1]
    if "error" not in r:
        table.summary["compile_over_plain"] = r.get("speedup_vs_plain")
        print(f"(first compiled step: {r['first_step_s']:.1f} s)")


def main() -> int:
    args, variants = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    c = TrainConfig()
    inputs = make_inputs(args, device)
    header = print_header(args, device, c)
    if args.count_saved:
        return report_saved_memory(variants, args, inputs, device, c, header)

    if "plain" in variants:  # the baseline first, so every row can show its speed-up as it comes
        variants = ["plain"] + [v for v in variants if v != "plain"]
    table = SpeedTable(args, inputs, device, c, header, variants)
    if args.data_only:
        variants = []
    table.print_head()
    time_variants(table, variants)
    summarise_ours(table)
    data_ok = True if args.skip_data else measure_data(table)
    if "compile" in variants and not args.interleave:
        time_compile(table)
    table.write_json()
    if args.json:
        print(f"\nwrote {args.json}")
    failed = not data_ok or any("error" in r for r in table.results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
