"""Where int8 calibration pairs come from: a folder the user names, or by default the demo's own data.

:mod:`is5net.inference.quantize` turns the pairs into refiner inputs and quantises; this module only finds
the pairs (``im/`` + ``gt/`` by :func:`is5net.data.pairs.find_pairs`, the rule train and eval use, plus an
optional ``coarse/`` of stage-1 masks) or writes the demo's (its synthetic generator, deterministic: the
first N images of ``is5net demo``'s training split, with their simulated-SAM coarse masks; nothing is
downloaded). docs/deployment.md, "Precision", says which to choose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Optional

from ..data.pairs import find_pairs
from ..defaults import CALIBRATION_COUNT
from ..errors import IS5NetError
from ..inference.quantize import Calibration, CalibrationFiles, Int8Settings
from ..io import PathLike, list_images

#: The demo's seed (``is5net demo --seed 0``) and the side of its photos next to a 128 px refiner input: the
#: demo trains at twice its photos' side, so the default set is drawn at half the refiner's input side, within
#: these bounds (a 1024 px refiner is calibrated on 256 px photos: drawing 512 px ones costs 3x as long).
DEMO_SEED = 0
DEMO_SIDES = (64, 256)


class FolderCalibration(Calibration):
    """The first ``count`` pairs of a folder (sorted by subset and stem)."""

    def __init__(self, root: Path, pairs: list[CalibrationFiles], settings: Int8Settings, progress: bool):
        self.name, self.pairs, self.settings, self.progress = str(root), pairs, settings, progress

    def files(self, input_size: int) -> list[CalibrationFiles]:
        return self.pairs


class DemoCalibration(Calibration):
    """The demo's training images at the side that suits the refiner, written once under IS5NET_HOME."""

    def __init__(self, settings: Int8Settings, progress: bool, seed: int = DEMO_SEED):
        self.settings, self.progress, self.seed = settings, progress, int(seed)
        self.name = f"the demo's data (seed {self.seed}, {settings.count} images)"

    def files(self, input_size: int) -> list[CalibrationFiles]:
        side = min(max(int(input_size) // 2, DEMO_SIDES[0]), DEMO_SIDES[1])
        return folder_pairs(demo_folder(self.seed, self.settings.count, side, self.progress))


def demo_folder(seed: int, count: int, side: int, progress: bool = False) -> Path:
    """``$IS5NET_HOME/cache/calibration/demo-s<seed>-n<count>-<side>/DIS-TR``: written whole or not at all."""
    from ..export import cache_dir
    from .synthetic import make_synthetic_dataset

    root = cache_dir("calibration") / f"demo-s{seed}-n{count}-{side}"
    if not root.is_dir():
        tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
        try:
            make_synthetic_dataset(tmp, seed=seed, n_train=count, n_val=0, n_test=0, size=side, progress=progress)
            with contextlib.suppress(OSError):  # another process may have written it meanwhile: same bytes
                os.replace(tmp, root)
        except OSError as exc:
            raise IS5NetError(
                f"cannot write the calibration images to {root.parent} ({exc}); set IS5NET_HOME"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root / "DIS-TR"


def folder_pairs(root: PathLike, count: Optional[int] = None) -> list[CalibrationFiles]:
    """The pairs of ``root`` (``im/`` + ``gt/``, or a DIS5K root), each with ``coarse/<stem>.*`` when there is one."""
    pairs = find_pairs(root)
    coarse = {}
    for folder in {p.image.parent.parent for p in pairs}:
        coarse[folder] = list_images(folder / "coarse") if (folder / "coarse").is_dir() else {}
    out = [CalibrationFiles(p.image, p.gt, coarse[p.image.parent.parent].get(p.stem)) for p in pairs]
    return out if count is None else out[:count]


def calibration_set(
    folder: Optional[PathLike] = None, count: int = CALIBRATION_COUNT, progress: bool = False, **settings
) -> Calibration:
    """The int8 calibration set: ``folder``'s pairs (checked now: one clear line when it is missing or holds no
    pair), or None for the demo's data. ``settings``: :class:`Int8Settings`' other fields (preset, keep_head)."""
    checked = Int8Settings(count=count, **settings)
    if folder is None:
        return DemoCalibration(checked, progress)
    root = Path(folder)
    if not root.is_dir():
        raise IS5NetError(f"--calibration {root}: no such directory")
    try:
        pairs = folder_pairs(root, checked.count)
    except IS5NetError as exc:
        raise IS5NetError(f"--calibration {exc}") from None
    if not pairs:
        raise IS5NetError(
            f"--calibration {root}: no image/mask pairs (expected im/ and gt/ with matching file names, "
            "optionally coarse/, or a DIS5K root)"
        )
    return FolderCalibration(root, pairs, checked, progress)
