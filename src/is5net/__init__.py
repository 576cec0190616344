"""is5net: box-prompted, highly accurate dichotomous image segmentation (SAM + 5-channel IS-Net).

    import is5net
    refiner = is5net.load_refiner("dis_sam.pth")            # official .pth or our .safetensors
    sam = is5net.load_sam("vit_l", "sam_vit_l_0b3195.pth")  # frozen SAM from a local checkpoint
    p = is5net.IS5NetPredictor(sam, refiner, device="cuda")
    p.set_image(rgb_uint8_hwc)
    out = p.predict(box=[x0, y0, x1, y1])                   # out.mask: HxW float32 in [0, 1]
"""

__version__ = "0.1.0"

from .checkpoint import (  # noqa: E402
    RefinerConfig,
    convert_isnet_to_is5net,
    isnet_to_is5net_state_dict,
    load_gt_encoder,
    load_refiner,
    save_refiner,
)
from .errors import BoxError, CheckpointError, IS5NetError  # noqa: E402
from .io import load_image, load_mask  # noqa: E402
from .modeling import MODEL_REGISTRY, GTEncoder, ISNet, build_model  # noqa: E402
from .predictor import IS5NetPredictor, Prediction  # noqa: E402
from .prompts import SamStage, load_sam, validate_box  # noqa: E402

__all__ = [
    "__version__", "IS5NetPredictor", "Prediction", "load_refiner", "load_gt_encoder", "save_refiner",
    "load_sam", "SamStage", "validate_box", "RefinerConfig", "convert_isnet_to_is5net",
    "isnet_to_is5net_state_dict", "ISNet", "GTEncoder", "build_model", "MODEL_REGISTRY",
    "load_image", "load_mask", "IS5NetError", "CheckpointError", "BoxError",
]
