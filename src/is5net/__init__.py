"""is5net: box-prompted, highly accurate dichotomous image segmentation (SAM + 5-channel IS-Net).

import is5net
refiner = is5net.load_refiner("dis_sam.pth")            # official .pth or our .safetensors
sam = is5net.load_sam("vit_l", "sam_vit_l_0b3195.pth")  # frozen SAM from a local checkpoint
p = is5net.IS5NetPredictor(sam, refiner, device="cuda")
p.set_image(rgb_uint8_hwc)
out = p.predict(box=[x0, y0, x1, y1])                   # out.mask: HxW float32 in [0, 1]
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> defining module. Imported on first use (PEP 562), so light modules (metrics, io) and the
# evaluation worker processes do not pay for importing torch and segment_anything.
_EXPORTS = {
    "IS5NetPredictor": "inference.predictor",
    "Prediction": "inference.predictor",
    "load_refiner": "checkpoint",
    "load_gt_encoder": "checkpoint",
    "save_refiner": "checkpoint",
    "RefinerConfig": "checkpoint",
    "convert_isnet_to_is5net": "checkpoint",
    "isnet_to_is5net_state_dict": "checkpoint",
    "load_sam": "inference.stage1",
    "SamStage": "inference.stage1",
    "validate_box": "inference.boxes",
    "ISNet": "modeling",
    "GTEncoder": "modeling",
    "build_model": "modeling",
    "MODEL_REGISTRY": "modeling",
    "load_image": "io",
    "load_mask": "io",
    "IS5NetError": "errors",
    "CheckpointError": "errors",
    "BoxError": "errors",
    "DISMetrics": "eval.metrics",
    "evaluate_folders": "eval",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'is5net' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
