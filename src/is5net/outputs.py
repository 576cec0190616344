"""What a prediction becomes as a file: the 8-bit mask and the RGBA cutout.

``is5net predict`` and ``is5net serve`` both call these, so the server's mask for an image and a box is the
file ``predict`` writes for them, byte for byte (docs/input-contract.md, step 4: the soft map x255, truncated,
unless a threshold is given).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from .contract import binarize
from .errors import IS5NetError
from .io import mask_to_uint8

Threshold = Union[float, str, None]


def parse_threshold(text: Optional[str], option: str = "--threshold") -> Threshold:
    """``"0.5"`` -> 0.5, ``"otsu"`` -> ``"otsu"``, None -> None (keep the soft map).

    Anything else (not a number, outside [0, 1]) is an :class:`IS5NetError` naming ``option``.
    """
    if text is None:
        return None
    text = str(text).strip()
    if text.lower() == "otsu":
        return "otsu"
    try:
        t = float(text)
    except ValueError:
        raise IS5NetError(f"{option} {text!r}: expected a number in [0, 1] or 'otsu'") from None
    if not 0.0 <= t <= 1.0:  # also refuses nan
        raise IS5NetError(f"{option} {text!r}: expected a number in [0, 1] or 'otsu'")
    return t


def mask_uint8(soft: np.ndarray, threshold: Threshold = None) -> np.ndarray:
    """A predicted soft map (``HxW`` float32 in [0, 1]) as the ``HxW`` uint8 mask that is saved.

    No threshold: the soft map x255, truncated (as the DIS code saves maps). A threshold (a number in [0, 1]
    or ``"otsu"``): 0/255 by :func:`is5net.contract.binarize`.
    """
    mask = soft if threshold is None else binarize(soft, threshold).astype(np.float32)
    return mask_to_uint8(mask)


def union_uint8(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Several boxes' uint8 masks as one: the pixelwise maximum (for one mask, that mask itself)."""
    if not masks:
        raise IS5NetError("no mask to combine")
    return masks[0] if len(masks) == 1 else np.maximum.reduce(list(masks))


def cutout_rgba(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``HxWx4`` uint8: the image with the uint8 mask as its alpha channel."""
    return np.dstack([rgb, mask])
