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
from typing import Any, Callable, Optional

import yaml

from ..contract import DEFAULT_MARGIN, DEFAULT_MAX_SIDE, DEFAULT_TILE_SCALE, REGIONS
from ..defaults import JITTER_FRACTION, MIN_COMPONENT_FRACTION, TILE_SCALE_RANGE
from ..errors import IS5NetError


def default_workers() -> int:
    """Loader processes per training process: this machine's cores shared among the local processes, one left
    for the training process itself, at most 8 (with the input cache, ~6 feed 70 img/s at 1024²)."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(8, (os.cpu_count() or 2) // local - 1))


@dataclass(frozen=True)
class Range:
    """The values a setting accepts beyond its type; ``str()`` completes "KEY must be ...".

    Declared beside each field of :class:`TrainConfig` (``setting(default, Range(...))``), so the accepted
    values of every setting read as one table and :func:`validate` checks them all the same way.
    """

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False  # high itself excluded
    multiple_of: Optional[int] = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # None is accepted too (e.g. width: the model's own)

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.choices:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return self.multiple_of is None or value % self.multiple_of == 0

    def __str__(self) -> str:
        if self.choices:
            *rest, last = self.choices
            return f"{', '.join(rest)} or {last}" if rest else last
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = "a number"
        if self.multiple_of is not None:
            text = f"a multiple of {self.multiple_of} ({text})"
        return text + (" (or null)" if self.optional else "")


def one_of(*choices: str) -> Range:
    return Range(choices=choices)


def at_least(low: float) -> Range:
    return Range(low=low)


def above(low: float) -> Range:
    return Range(low=low, low_open=True)


def fraction(high_open: bool = False, low_open: bool = False) -> Range:
    return Range(0.0, 1.0, low_open=low_open, high_open=high_open)


ANY = None  # free text checked where it is used (paths, devices), or the model registry (model)


def setting(default: Any, accepts: Optional[Range], factory: Optional[Callable[[], Any]] = None) -> Any:
    """A :class:`TrainConfig` field with its range in the field's metadata (``accepts``)."""
    metadata = {"accepts": accepts}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


GT_ENCODER_MAX_STEPS = 20_000  # the reference's cap of phase 1 (which stops at maxF > 0.99 first on DIS5K)


@dataclass
class TrainConfig:
    """Every training setting: its type (the default's), default and accepted values, in one table."""

    # model and input
    model: str = setting("is5net", ANY)  # any refiner of the registry: is5net, isnet, is5net_tiny, ...
    width: Optional[float] = setting(None, Range(low=0, low_open=True, optional=True))  # channel multiplier
    input_size: int = setting(1024, Range(low=32, multiple_of=32))
    init: str = setting("scratch", ANY)  # scratch | path to IS-Net (.pth, converted 3->5) | DIS-SAM / ours
    # optimisation (phase 2: the refiner)
    optimizer: str = setting("adamw", one_of("adamw", "adam"))
    lr: float = setting(4e-5, above(0))
    betas: tuple[float, float] = setting((0.9, 0.999), fraction(high_open=True))  # each of the two
    lr_schedule: str = setting("constant", one_of("constant", "cosine"))  # cosine: to 0 at each phase's last step
    warmup_steps: int = setting(0, at_least(0))  # linear warm-up from lr/warmup_steps, then the schedule
    weight_decay: float = setting(0.0, at_least(0))
    batch_size: int = setting(6, at_least(1))  # per process; effective batch = batch_size x processes
    max_steps: int = setting(400_000, at_least(1))  # phase 2's cap (phase 1: gt_encoder_max_steps)
    val_every: int = setting(3000, at_least(1))
    early_stop: int = setting(20, at_least(0))  # validations without improvement in maxF or MAE, both phases
    save_every: int = setting(0, at_least(0))  # checkpoint every N steps (0 = every val_every steps)
    # losses
    bce_weight: float = setting(20.0, at_least(0))
    iou_weight: float = setting(0.5, at_least(0))
    # Per-pixel loss weights (docs/training.md, "Loss weights"); 0 = the reference's unweighted loss.
    detail_weight: float = setting(0.0, at_least(0))  # extra weight on GT edges and thin parts
    detail_outside_mask: float = setting(0.0, at_least(0))  # detail weight x (1 + this) where the coarse mask is 0
    detail_spread: int = setting(0, Range(low=0, high=32))  # px around detail that weigh what it weighs
    feature_loss: bool = setting(True, ANY)  # intermediate supervision by the frozen GT encoder
    feature_weight: float = setting(1.0, at_least(0))
    ortho_weight: float = setting(1e-8, at_least(0))  # parameter orthogonalisation, 1e-8 * sum |W W^T - I|
    # phase 1: the GT encoder
    gt_encoder: bool = setting(True, ANY)  # train it first (needed by feature_loss)
    gt_encoder_lr: float = setting(1e-4, above(0))
    gt_encoder_target_maxf: float = setting(0.99, fraction(low_open=True))  # stop once maxF exceeds it
    gt_encoder_max_steps: int = setting(0, at_least(0))  # phase 1's cap; 0 = min(20000, max_steps)
    gt_encoder_val_every: int = setting(0, at_least(0))  # 0 = val_every
    # data
    flips: bool = setting(True, ANY)
    coarse_cut: float = setting(0.0, fraction())  # chance a sample's coarse mask loses a part (docs/training.md)
    coarse_hole: float = setting(0.0, fraction())  # chance it has a round hole punched in it (docs/training.md)
    enrich: bool = setting(True, ANY)  # GT enrichment (each big component its own sample)
    jitter: int = setting(0, at_least(0))  # jittered boxes per sample in the SAM cache (cache-sam --jitter K)
    jitter_fraction: float = setting(JITTER_FRACTION, fraction())
    min_fraction: float = setting(MIN_COMPONENT_FRACTION, fraction())
    # What each sample shows the refiner (docs/input-contract.md, "Regions"); recorded in the checkpoint, so
    # `predict` refines the way the model was trained: image (the paper's), box (crop at random margin
    # scales around crop_margin), tiles (those crops and native-resolution tiles up to max_side).
    region: str = setting("image", one_of(*REGIONS))
    crop_margin: float = setting(DEFAULT_MARGIN, Range(low=0, high=10))
    max_side: int = setting(DEFAULT_MAX_SIDE, Range(low=64))
    # tiles: each tile is refined at this multiple of the crop's resolution (contract.work_scale); 2 puts
    # IS-Net's half-resolution finest output on the photo's own pixels. Recorded in the checkpoint.
    tile_scale: float = setting(DEFAULT_TILE_SCALE, Range(low=TILE_SCALE_RANGE[0], high=TILE_SCALE_RANGE[1]))
    val_fraction: float = setting(0.0, fraction(high_open=True))  # held out when there is no DIS-VD / --val
    val_limit: int = setting(0, at_least(0))  # score at most this many validation images (0 = all)
    mask_choice: str = setting("first", one_of("first", "best"))
    workers: int = setting(None, at_least(0), factory=default_workers)  # DataLoader processes per GPU process
    # runtime
    seed: int = setting(0, at_least(0))
    device: str = setting("auto", ANY)  # checked by runtime.resolve_device
    precision: str = setting("auto", one_of("auto", "fp32", "bf16", "fp16"))  # auto = bf16 on CUDA, fp32 on CPU
    channels_last: str = setting("auto", one_of("auto", "true", "false"))  # auto = on CUDA
    compile: bool = setting(False, ANY)
    nan_policy: str = setting("stop", one_of("stop", "skip"))  # skip: skip the batch, keep going
    log_every: int = setting(50, at_least(1))
    keep_checkpoints: int = setting(2, at_least(1))
    # data sources (filled from the command line; saved so --resume needs nothing else)
    data: Optional[str] = setting(None, ANY)
    val: Optional[str] = setting(None, ANY)
    coarse_dir: Optional[str] = setting(None, ANY)
    sam_checkpoint: Optional[str] = setting(None, ANY)
    sam_type: Optional[str] = setting(None, ANY)
    stage1: str = setting("sam", ANY)  # whose cached masks (docs/stage1.md); checked by choose_stage1
    cache: Optional[str] = setting(None, ANY)
    # Inputs resized to input_size, stored as uint8 so later epochs skip decoding and resizing (the
    # reference's cache_size): auto = DATA/.input-cache when writable, off, or a directory.
    data_cache: str = setting("auto", ANY)
    # Decoded photos kept in memory per loader process, least recently used dropped first: a crop region
    # (box, tiles) cuts a new view every epoch, so it decodes each photo again without them.
    cache_images: int = setting(0, at_least(0))
    skip_bad: bool = setting(False, ANY)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @property
    def gt_encoder_steps(self) -> int:
        """Phase 1's step cap: ``gt_encoder_max_steps``, or by default the reference's 20000, but never more
        than phase 2's ``max_steps`` (a short run is short in both phases)."""
        return self.gt_encoder_max_steps or min(GT_ENCODER_MAX_STEPS, self.max_steps)


PRESETS: dict[str, dict[str, Any]] = {
    # The DIS-SAM reference recipe is the default.
    "dis-sam": {},
    # The original IS-Net (3 channels, Adam lr 1e-3, batch 8, BCE only, no GT encoder).
    "isnet": {
        "model": "isnet",
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 8,
        "bce_weight": 1.0,
        "iou_weight": 0.0,
        "feature_loss": False,
        "gt_encoder": False,
        "ortho_weight": 0.0,
        "enrich": False,
    },
}

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any) -> Any:
    default = default_of(key)  # its type is the setting's type
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


def load_config(
    path: Optional[str | Path] = None, overrides: Optional[list[str]] = None, base: Optional[dict[str, Any]] = None
) -> TrainConfig:
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


def resumed_config(
    run_dir: Path,
    path: Optional[str | Path] = None,
    overrides: Optional[list[str]] = None,
    given: Optional[dict] = None,
) -> TrainConfig:
    """The config a resumed run goes on with: its saved ``config.yaml`` with ``given`` (settings named again,
    such as the data's folders) over it, then the YAML file at ``path`` and the overrides."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise IS5NetError(f"--resume {run_dir}: no config.yaml there (not a run directory)")
    base = yaml.safe_load(saved.read_text()) or {}
    base.update(given or {})
    return load_config(path, overrides, base=base)


def validate(c: TrainConfig) -> None:
    """Every setting within its declared range (one line naming the key and the range), then the rules that
    tie settings together."""
    from ..modeling import MODEL_REGISTRY

    for f in dataclasses.fields(c):
        accepts: Optional[Range] = f.metadata.get("accepts")
        value = getattr(c, f.name)
        values = value if f.name == "betas" else (value,)
        if accepts is not None and not all(accepts.accepts(v) for v in values):
            what = "each of the two betas" if f.name == "betas" else f.name
            raise IS5NetError(f"{what} must be {accepts}, got {value!r}")
    if c.model not in MODEL_REGISTRY or c.model.startswith("gt_encoder"):
        raise IS5NetError(
            f"model {c.model!r}: choose a refiner of the registry "
            f"({', '.join(k for k in MODEL_REGISTRY if not k.startswith('gt_'))})"
        )
    if c.feature_loss and not c.gt_encoder:
        raise IS5NetError("feature_loss needs the GT encoder (gt_encoder=true), or set feature_loss=false")


def default_of(key: str) -> Any:
    """The default of setting ``key`` (e.g. to leave an option out of a suggested command when it is unchanged)."""
    f = _FIELDS[key]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def save_config(config: TrainConfig, path: Path) -> None:
    from ..io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
