"""is5net: box-prompted, highly accurate dichotomous image segmentation (SAM + 5-channel IS-Net)."""

__version__ = "0.1.0"
