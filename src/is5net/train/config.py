"""Training configuration: defaults are the DIS-SAM reference recipe (DESIGN §1).

A run is configured by, in order: the defaults below, a ``preset`` (``isnet`` = the original IS-Net
recipe), a YAML file (``--config``), then ``key=value`` overrides on the command line. The resolved config
is saved as ``RUN_DIR/config.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import IS5NetError


def default_workers() -> int:
    """Loader processes per training process: this machine's cores shared among the local processes, one left
    for the training process itself, at most 8 (with the input cache, ~6 feed 70 img/s at 1024²)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(8, (os.cpu_count() or 2) // local - 1))


@dataclass
class TrainConfig:
    # model and input
    model: str = "is5net"                 # any registry name: is5net, isnet, is5net_tiny, isnet_tiny, ...
    width: Optional[float] = None         # channel multiplier override (None = the model's own)
    input_size: int = 1024
    init: str = "scratch"                 # scratch | path to IS-Net (.pth, converted 3->5) | DIS-SAM / ours
    # optimisation (phase 2: the refiner)
    optimizer: str = "adamw"              # adamw | adam
    lr: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"         # constant (the reference) | cosine (to 0 at each phase's last step)
    warmup_steps: int = 0                 # linear warm-up from lr/warmup_steps, then the schedule
    weight_decay: float = 0.0
    batch_size: int = 6                   # per process; effective batch = batch_size x processes
    max_steps: int = 400_000
    val_every: int = 3000
    early_stop: int = 20                  # validations without improvement in maxF or MAE (0 = never stop)
    save_every: int = 0                   # checkpoint every N steps (0 = every val_every steps)
    # losses
    bce_weight: float = 20.0
    iou_weight: float = 0.5
    feature_loss: bool = True             # intermediate supervision by the frozen GT encoder
    feature_weight: float = 1.0
    ortho_weight: float = 1e-8            # parameter orthogonalisation, 1e-8 * sum |W W^T - I| (0 = off)
    # phase 1: the GT encoder
    gt_encoder: bool = True               # train it first (needed by feature_loss)
    gt_encoder_lr: float = 1e-4
    gt_encoder_target_maxf: float = 0.99
    gt_encoder_max_steps: int = 20_000
    gt_encoder_val_every: int = 0         # 0 = val_every
    # data
    flips: bool = True
    enrich: bool = True                   # GT enrichment (each big component its own sample)
    jitter: int = 0                       # jittered boxes per sample in the SAM cache (cache-sam --jitter K)
    jitter_fraction: float = 0.1
    min_fraction: float = 0.004
    val_fraction: float = 0.0             # held out of the training pairs when there is no DIS-VD / --val
    val_limit: int = 0                    # score at most this many validation images (0 = all)
    mask_choice: str = "first"
    workers: int = field(default_factory=default_workers)  # DataLoader processes per GPU process
    # runtime
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"               # auto = bf16 on CUDA, fp32 on CPU
    channels_last: str = "auto"           # auto = on CUDA
    compile: bool = False
    nan_policy: str = "stop"              # stop | skip (skip the batch, keep going)
    log_every: int = 50
    keep_checkpoints: int = 2
    # data sources (filled from the command line; saved so --resume needs nothing else)
    data: Optional[str] = None
    val: Optional[str] = None
    coarse_dir: Optional[str] = None
    sam_checkpoint: Optional[str] = None
    sam_type: Optional[str] = None
    cache: Optional[str] = None
    # Inputs resized to input_size, stored as uint8 so later epochs skip decoding and resizing (the
    # reference's cache_size): auto = DATA/.input-cache when writable, off, or a directory.
    data_cache: str = "auto"
    skip_bad: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


PRESETS: dict[str, dict[str, Any]] = {
    # The DIS-SAM reference recipe is the default.
    "dis-sam": {},
    # The original IS-Net (3 channels, Adam lr 1e-3, batch 8, BCE only, no GT encoder).
    "isnet": {"model": "isnet", "optimizer": "adam", "lr": 1e-3, "batch_size": 8, "bce_weight": 1.0,
              "iou_weight": 0.0, "feature_loss": False, "gt_encoder": False, "ortho_weight": 0.0,
              "enrich": False},
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any) -> Any:
    f = _FIELDS[key]
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = None
    if isinstance(value, str):
        if key == "betas":
            value = value.strip("()[] ").split(",")
        else:
            value = yaml.safe_load(value) if value.strip() else value
    if key == "betas":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise IS5NetError(f"betas: expected two numbers, got {value!r}")
        return (_finite(key, value[0]), _finite(key, value[1]))
    if value is None:
        if default is None:  # optional settings (width, data, val, ...)
            return None
        raise IS5NetError(f"{key}: a value is needed (default {default!r})")
    numeric = (isinstance(default, (int, float)) and not isinstance(default, bool)) or key == "width"
    if numeric and isinstance(value, str):
        # PyYAML reads "1e-4" (no dot: YAML 1.1) as a string, on the command line and in config files alike.
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise IS5NetError(f"{key}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise IS5NetError(f"{key}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float) or key == "width":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise IS5NetError(f"{key}: expected a number, got {value!r}")
        return _finite(key, value)
    if isinstance(value, bool):  # YAML reads true/false/on/off/yes/no as booleans
        return "true" if value else "false"
    return str(value)


def _finite(key: str, value: Any) -> float:
    """``float(value)``, refusing nan and inf (which ``float`` and YAML's ``.inf`` would let through)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise IS5NetError(f"{key}: expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise IS5NetError(f"{key}: expected a finite number, got {value!r}")
    return out


def apply(config: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    for key, value in values.items():
        key = key.replace("-", "_")
        if key == "preset":
            continue
        if key not in _FIELDS:
            raise IS5NetError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(_FIELDS))})")
        setattr(config, key, _coerce(key, value))
    return config


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise IS5NetError(f"override {item!r}: expected key=value (e.g. lr=1e-4)")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None,
                base: Optional[dict[str, Any]] = None) -> TrainConfig:
    """Defaults <- preset <- ``base`` (e.g. a saved config) <- YAML file <- ``key=value`` overrides."""
    layers: list[tuple[dict[str, Any], str]] = []
    if base:
        layers.append((base, "saved config"))
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise IS5NetError(f"{p}: no such config file")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise IS5NetError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise IS5NetError(f"{p}: expected a mapping of settings")
        layers.append((data, str(p)))
    over = parse_overrides(overrides or [])
    if over:
        layers.append((over, "command line"))
    preset = None
    for values, _ in layers:
        preset = values.get("preset", preset)
    config = TrainConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise IS5NetError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        apply(config, PRESETS[preset], f"preset {preset}")
    for values, source in layers:
        apply(config, values, source)
    validate(config)
    return config


def validate(c: TrainConfig) -> None:
    from ..modeling import MODEL_REGISTRY

    if c.model not in MODEL_REGISTRY or c.model.startswith("gt_encoder"):
        raise IS5NetError(f"model {c.model!r}: choose a refiner of the registry "
                          f"({', '.join(k for k in MODEL_REGISTRY if not k.startswith('gt_'))})")
    checks = [
        (c.input_size >= 32 and c.input_size % 32 == 0, "input_size must be a multiple of 32 (>= 32)"),
        (c.batch_size >= 1, "batch_size must be >= 1"),
        (c.lr > 0, "lr must be > 0"),
        (c.max_steps >= 1, "max_steps must be >= 1"),
        (c.val_every >= 1, "val_every must be >= 1"),
        (c.optimizer in ("adamw", "adam"), "optimizer must be adamw or adam"),
        (c.lr_schedule in ("constant", "cosine"), "lr_schedule must be constant or cosine"),
        (c.warmup_steps >= 0, "warmup_steps must be >= 0"),
        (c.nan_policy in ("stop", "skip"), "nan_policy must be stop or skip"),
        (c.precision in ("auto", "fp32", "bf16", "fp16"), "precision must be auto, fp32, bf16 or fp16"),
        (c.mask_choice in ("first", "best"), "mask_choice must be first or best"),
        (c.channels_last in ("auto", "true", "false"), "channels_last must be auto, true or false"),
        (c.save_every >= 0 and c.keep_checkpoints >= 1, "save_every must be >= 0 and keep_checkpoints >= 1"),
        (0.0 <= c.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
        (c.jitter >= 0 and c.workers >= 0, "jitter and workers must be >= 0"),
    ]
    for ok, msg in checks:
        if not ok:
            raise IS5NetError(msg)
    if c.feature_loss and not c.gt_encoder:
        raise IS5NetError("feature_loss needs the GT encoder (gt_encoder=true), or set feature_loss=false")


def save_config(config: TrainConfig, path: Path) -> None:
    from ..io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
