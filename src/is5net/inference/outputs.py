"""What a prediction becomes as a file: the 8-bit mask, the RGBA cutout (optionally with the foreground's
colours estimated at soft edges, or composited over a background), several boxes' union or label map, and
the COCO RLE of a mask.

``is5net predict`` and ``is5net serve`` both call these, so the server's mask for an image and a box is the
file ``predict`` writes for them, byte for byte (docs/input-contract.md, step 4: the soft map x255, truncated,
unless a threshold is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..contract import FG_THRESHOLD, binarize
from ..errors import IS5NetError
from ..io import encode_png, mask_to_uint8

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


def cutout_rgba(rgb: np.ndarray, mask: np.ndarray, estimate_foreground: bool = False) -> np.ndarray:
    """``HxWx4`` uint8: the image with the uint8 mask as its alpha channel.

    ``estimate_foreground``: at semi-transparent pixels (0 < alpha < 255) put the object's own colour, as
    :func:`foreground_colours` estimates it, instead of the photo's (which mixes in the old background: a
    green fringe on hair photographed against grass). Off by default: ``is5net serve`` answers the plain
    cut-out, and the estimate costs about a second per megapixel of soft edge.
    """
    if estimate_foreground:
        rgb = foreground_colours(rgb, mask)
    return np.dstack([rgb, mask])


def foreground_colours(rgb: np.ndarray, alpha: np.ndarray, pad: int = 16) -> np.ndarray:
    """``HxWx3`` uint8: ``rgb`` with its semi-transparent pixels replaced by the estimated foreground colour.

    The photo is ``I = a*F + (1-a)*B``; pymatting's ``estimate_foreground_ml`` (the multilevel method of
    Germer et al., what rembg uses) solves for a smooth ``F``. It runs only on the box around the pixels with
    ``0 < alpha < 255`` (plus ``pad``); fully opaque and fully transparent pixels keep the photo's colour.
    ``alpha``: ``HxW`` uint8, the saved mask.
    """
    partial = (alpha > 0) & (alpha < 255)
    if not partial.any():
        return rgb
    from pymatting import estimate_foreground_ml

    ys, xs = np.nonzero(partial)
    h, w = alpha.shape
    y0, y1 = max(0, int(ys.min()) - pad), min(h, int(ys.max()) + 1 + pad)
    x0, x1 = max(0, int(xs.min()) - pad), min(w, int(xs.max()) + 1 + pad)
    image = rgb[y0:y1, x0:x1].astype(np.float64) / 255.0
    fg = estimate_foreground_ml(image, alpha[y0:y1, x0:x1].astype(np.float64) / 255.0)
    fg_u8 = np.clip(np.rint(np.asarray(fg) * 255.0), 0, 255).astype(np.uint8)
    out = np.array(rgb, dtype=np.uint8, copy=True)
    window = out[y0:y1, x0:x1]
    window[partial[y0:y1, x0:x1]] = fg_u8[partial[y0:y1, x0:x1]]
    return out


def parse_background(text: Optional[str], option: str = "--background"):
    """``--background``: None, an ``(r, g, b)`` colour (a name Pillow knows, ``#rrggbb``, or ``r,g,b``), or
    the :class:`pathlib.Path` of an existing image file. Anything else is an :class:`IS5NetError`."""
    from pathlib import Path

    from PIL import ImageColor

    if text is None:
        return None
    text = str(text).strip()
    parts = text.split(",")
    if len(parts) == 3:
        try:
            rgb = tuple(int(p) for p in parts)
        except ValueError:
            rgb = None
        if rgb is not None and all(0 <= v <= 255 for v in rgb):
            return rgb
        raise IS5NetError(f"{option} {text!r}: r,g,b needs three whole numbers in 0..255")
    try:
        return tuple(ImageColor.getrgb(text)[:3])
    except ValueError:
        pass
    if Path(text).is_file():
        return Path(text)
    raise IS5NetError(f"{option} {text!r}: not a colour (a name, #rrggbb or r,g,b) nor an image file")


def composite(foreground: np.ndarray, alpha: np.ndarray, background) -> np.ndarray:
    """``HxWx3`` uint8: ``foreground * a + background * (1 - a)``; ``background`` an ``(r, g, b)`` or an
    ``H'xW'x3`` uint8 image (resized to the foreground's size when it differs)."""
    h, w = alpha.shape
    if isinstance(background, tuple):
        bg = np.empty((h, w, 3), np.float32)
        bg[:] = np.asarray(background, np.float32)
    else:
        bg = np.asarray(background)
        if bg.shape[:2] != (h, w):
            from PIL import Image

            bg = np.asarray(Image.fromarray(bg).resize((w, h), Image.Resampling.BILINEAR))
        bg = bg.astype(np.float32)
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = foreground.astype(np.float32) * a + bg * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def label_map(foreground: Sequence[np.ndarray], confidence: Sequence[np.ndarray]) -> np.ndarray:
    """One ``HxW`` label image for several boxes: 0 background, ``k + 1`` where box ``k`` (counted from 0, as
    in the output names and the index) holds the pixel. Where several boxes' foregrounds overlap the pixel
    goes to the box whose ``confidence`` (its soft map) is highest there; on a tie, to the earlier box.

    ``foreground``: ``HxW`` bool per box; ``confidence``: ``HxW`` float per box. uint8 for up to 255 boxes,
    uint16 beyond (a 16-bit PNG).
    """
    if not foreground:
        raise IS5NetError("no mask to combine")
    fg = np.stack([np.asarray(f, bool) for f in foreground])
    conf = np.where(fg, np.stack([np.asarray(c, np.float32) for c in confidence]), -np.inf)
    best = np.argmax(conf, axis=0)
    labels = np.where(fg.any(axis=0), best + 1, 0)
    return labels.astype(np.uint8 if len(foreground) <= 255 else np.uint16)


def rle_encode(foreground: np.ndarray) -> dict:
    """COCO run-length encoding of an ``HxW`` bool mask (pycocotools), JSON-ready:
    ``{"size": [H, W], "counts": str}``; ``pycocotools.mask.decode`` gives the mask back."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(np.asarray(foreground, np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


# ------------------------------------------------------------------------------- an image's output files
@dataclass(frozen=True)
class OutputOptions:
    """What an image's predictions become on disk (``is5net predict``'s --save, --combine, --threshold, ...).

    ``background``: None (RGBA cut-outs), an RGB colour or an ``HxWx3`` image (cut-outs composited over it).
    ``estimate_foreground``: cut-out colours at soft edges by pymatting's estimation, not the photo's pixels.
    """

    save: str = "mask"
    combine: str = "separate"
    threshold: Threshold = None
    estimate_foreground: bool = False
    background: Any = None

    def names(self, stem, n_boxes: int) -> list[dict[str, str]]:
        """Per output of an image whose outputs are ``stem`` (its path under OUTDIR, no suffix): kind
        (``mask``, ``cutout``) -> path, for the kinds ``save`` asks for. One output per box, or one in all."""
        n_outputs = max(1, n_boxes) if self.combine == "separate" else 1
        stems = [str(stem)] if n_outputs == 1 else [f"{stem}_{k}" for k in range(n_outputs)]
        if self.save == "both":
            return [{"mask": f"{s}.png", "cutout": f"{s}_cutout.png"} for s in stems]
        return [{self.save: f"{s}.png"} for s in stems]

    def render(self, rgb: np.ndarray, soft_masks: Sequence[np.ndarray], names: list[dict[str, str]]):
        """The files (name, PNG bytes) for one image's soft masks, and each box's foreground (for the RLE).

        The masks are the same bytes as ``is5net serve`` answers (:func:`mask_uint8`).
        """
        masks = [mask_uint8(m, self.threshold) for m in soft_masks]
        foreground = [m > FG_THRESHOLD for m in masks]
        if self.combine == "separate":
            alphas, saved = masks, masks
        else:
            union = union_uint8(masks)
            alphas = [union]
            saved = [union if self.combine == "union" else label_map(foreground, list(soft_masks))]
        files = []
        for file_names, alpha, mask in zip(names, alphas, saved, strict=True):
            for kind, name in file_names.items():
                files.append((name, encode_png(mask if kind == "mask" else self.cutout(rgb, alpha))))
        return files, foreground

    def cutout(self, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        fg = foreground_colours(rgb, alpha) if self.estimate_foreground else rgb
        return composite(fg, alpha, self.background) if self.background is not None else cutout_rgba(fg, alpha)
