"""What ``is5net serve`` loads once at start: the refiner (or none), the stage-1 maker, and their labels.

The labels are what ``/api/health`` and the page show, so a user sees which weights answer, and is told
when a refiner has only ever seen the synthetic images of ``is5net demo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml
from torch import nn

from ..checkpoint import load_refiner
from ..errors import IS5NetError
from ..inference.predictor import PredictorOptions
from ..inference.stage1 import Stage1, choose_stage1
from ..runtime import check_precision, resolve_device
from ..weights import resolve_weights
from .engine import Models

SYNTHETIC_NOTE = (
    "this refiner has only seen synthetic images (is5net demo): on photos expect rough masks; "
    "load the DIS-SAM weights for real use"
)


def load_models(
    checkpoint: Optional[str],
    refiner: Optional[str],
    stage1: str,
    sam_checkpoint: Optional[str],
    sam_type: Optional[str],
    options: PredictorOptions,
) -> Models:
    """The refiner (``checkpoint``, or ``refiner="none"``) and the stage-1 maker, loaded once (errors are one line).

    ``options`` gives the device, precision, runtime, SAM mask choice and default region of every request.
    """
    device = resolve_device(options.device)
    check_precision(options.precision, device)
    model, refiner_info = load_serving_refiner(checkpoint, refiner)
    source = choose_stage1(stage1, sam_checkpoint, sam_type, coarse_option=None, check_type=True)
    make_stage = source.factory(device, options.mask_choice, "pil", options.backend, options.precision)
    regions = {
        "region": options.region,
        "margin": options.margin,
        "max_side": options.max_side,
        "tile_scale": options.tile_scale,
    }
    return Models(
        model,
        make_stage,
        device,
        options.precision,
        options.backend,
        regions,
        stage1_label(source),
        refiner_info,
        calibration=options.calibration,
    )


def load_serving_refiner(checkpoint: Optional[str], refiner: Optional[str]) -> tuple[Optional[nn.Module], dict]:
    """The IS5Net refiner a server runs and its label; ``(None, label)`` for ``refiner="none"``."""
    if refiner == "none":
        if checkpoint is not None:
            raise IS5NetError("give either --checkpoint (a refiner) or --refiner none, not both")
        return None, {
            "name": "none",
            "detail": "none: the stage-1 mask is served as it is",
            "synthetic_only": False,
            "note": None,
        }
    if checkpoint is None:
        raise IS5NetError(
            "give --checkpoint PATH|NAME (the refiner; e.g. dis-sam, or is5net demo's "
            "refiner.safetensors) or --refiner none to serve the stage-1 mask alone"
        )
    path = resolve_weights(checkpoint)
    model = load_refiner(path)
    if model.in_ch != 5:
        raise IS5NetError(f"{path.name} is a 3-channel IS-Net: it takes no box; serve an IS5Net checkpoint")
    synthetic = trained_on_synthetic(path)
    return model, {
        "name": getattr(model, "model_name", "is5net"),
        "detail": f"{path.name} (input {model.config.input_size}²)",
        "synthetic_only": synthetic,
        "note": SYNTHETIC_NOTE if synthetic else None,
    }


def stage1_label(source: Stage1) -> dict:
    """Stage 1 as ``/api/health`` and the page name it."""
    if source.method == "grabcut":
        return {"name": "grabcut", "detail": source.describe()}
    if source.checkpoint is None:
        return {"name": "sam", "detail": "random tiny SAM (tests only: meaningless masks)"}
    from ..inference.stage1 import FAMILIES

    title = FAMILIES[source.method].title
    return {"name": source.method, "detail": f"{title} {source.sam_type} ({source.checkpoint.name})"}


def trained_on_synthetic(checkpoint: Path) -> bool:
    """Whether a refiner was trained by ``is5net train`` on the synthetic data of ``is5net demo``.

    ``train`` writes ``config.yaml`` in its run folder (the checkpoint's folder or the one above it); its
    ``data`` holds ``synthetic.json`` in each split when ``make_synthetic_dataset`` made it.
    """
    for run_dir in (checkpoint.parent, checkpoint.parent.parent):
        config = run_dir / "config.yaml"
        if not config.is_file():
            continue
        try:
            data = (yaml.safe_load(config.read_text()) or {}).get("data")
        except (yaml.YAMLError, OSError, AttributeError):
            return False
        if not data:
            return False
        root = Path(str(data))
        if not root.is_absolute():
            root = run_dir / root
        return (root / "synthetic.json").is_file() or any(root.glob("*/synthetic.json"))
    return False
