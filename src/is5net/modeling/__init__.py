"""Models: IS-Net / IS5Net and the GT encoder, with official parameter names."""

from .build import MODEL_REGISTRY, build_model, gt_encoder_for
from .isnet import GTEncoder, ISNet
from .rsu import REBNCONV, RSU

__all__ = ["ISNet", "GTEncoder", "RSU", "REBNCONV", "MODEL_REGISTRY", "build_model", "gt_encoder_for"]
