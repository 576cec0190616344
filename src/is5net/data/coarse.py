"""Coarse (stage-1) masks from files: the one lookup rule for ``--coarse-mask``, ``--coarse-dir`` and training.

Any stage-1 method's masks (SAM's, HQ-SAM's, SAM 2's, the demo's simulation) are given as one image per
stem. A mask for ``<stem>`` is looked for, first match wins:

1. for box ``k`` of an image with several boxes: ``<stem>_<k>.*`` (one mask per box), then ``<stem>.*``;
2. in ``DIR/<subset>/`` before ``DIR/`` when the image belongs to a dataset subset (``DIS-TE1``, ...).

Any image extension is accepted (``is5net.io.IMAGE_EXTENSIONS``). Folder listings are read once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..io import list_images


class CoarseMaskFolder:
    """Finds coarse-mask files under ``root`` by the rule of this module."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._listings: dict[Path, dict[str, Path]] = {}

    def _listing(self, folder: Path) -> dict[str, Path]:
        if folder not in self._listings:
            self._listings[folder] = list_images(folder) if folder.is_dir() else {}
        return self._listings[folder]

    def find(self, stem: str, subset: Optional[str] = None, box_index: Optional[int] = None) -> Optional[Path]:
        """The mask file of ``stem`` (and of its box ``box_index``), or None when there is none."""
        stems = ([f"{stem}_{box_index}"] if box_index is not None else []) + [stem]
        folders = ([self.root / subset] if subset else []) + [self.root]
        for name in stems:
            for folder in folders:
                found = self._listing(folder).get(name)
                if found is not None:
                    return found
        return None
