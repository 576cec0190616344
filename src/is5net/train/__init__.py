"""Training: the paper's two phases (GT encoder, then the refiner with intermediate supervision)."""

from .config import PRESETS, TrainConfig, load_config
from .loop import train

__all__ = ["TrainConfig", "PRESETS", "load_config", "train"]
