"""Find weights by name under ``IS5NET_HOME`` (default ``~/.is5net``); nothing is ever downloaded.

``--checkpoint dis-sam`` or ``--sam-checkpoint vit_l`` look for the official file names there; any
other value is taken as a path. README.md says where each official file is published.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import IS5NetError

# name -> (file name patterns under IS5NET_HOME, where it is published)
KNOWN_WEIGHTS: dict[str, tuple[tuple[str, ...], str]] = {
    "dis-sam": (("dis-sam.pth", "dis_sam.pth", "gpu_itr_*maxF1*.pth", "dis-sam*.safetensors"),
                "the DIS-SAM repository's README (Highly Accurate Dichotomous Image Segmentation with SAM)"),
    "isnet": (("isnet.pth",), "the DIS repository's README (xuebinqin/DIS)"),
    "isnet-general-use": (("isnet-general-use.pth",), "the DIS repository's README (xuebinqin/DIS)"),
    "vit_b": (("sam_vit_b_01ec64.pth", "sam_vit_b*.pth"), "the segment-anything README (facebookresearch)"),
    "vit_l": (("sam_vit_l_0b3195.pth", "sam_vit_l*.pth"), "the segment-anything README (facebookresearch)"),
    "vit_h": (("sam_vit_h_4b8939.pth", "sam_vit_h*.pth"), "the segment-anything README (facebookresearch)"),
}

_ALIASES = {"dis_sam": "dis-sam", "dissam": "dis-sam", "isnet_general_use": "isnet-general-use",
            "vit-b": "vit_b", "vit-l": "vit_l", "vit-h": "vit_h"}


def weights_home() -> Path:
    return Path(os.environ.get("IS5NET_HOME", Path.home() / ".is5net")).expanduser()


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    """A path as given if it exists; else a known name looked up under ``IS5NET_HOME``; else an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    key = _ALIASES.get(str(name_or_path).lower(), str(name_or_path).lower())
    if key in KNOWN_WEIGHTS:
        home = weights_home()
        patterns, source = KNOWN_WEIGHTS[key]
        for pattern in patterns:
            found = sorted(home.glob(pattern))
            if found:
                return found[0]
        raise IS5NetError(
            f"{name_or_path!r}: no {patterns[0]} under {home} (set IS5NET_HOME or give a path); "
            f"it is published in {source}"
        )
    raise IS5NetError(f"{name_or_path}: no such file (and not a known weights name: {', '.join(KNOWN_WEIGHTS)})")
