"""Dataset discovery: image/GT pairs in the DIS5K layout or in any ``im/`` + ``gt/`` folder pair.

Two layouts are recognised (``root`` is what the user passes):

- a **DIS5K root**: subfolders (``DIS-TR``, ``DIS-VD``, ``DIS-TE1`` ... any name not starting with a dot)
  each holding ``im/`` and ``gt/``; every such subfolder is a *subset*;
- a **pair root**: ``root/im`` and ``root/gt`` directly; its one subset is named after ``root``'s folder.

If ``root`` itself holds ``im/`` and ``gt/`` it is a pair root, whatever its subfolders.

Images and GTs are paired by file stem (``im/x.jpg`` with ``gt/x.png``), any extension of
:data:`is5net.io.IMAGE_EXTENSIONS` in any case. Everything is sorted by ``(subset, stem)``.

:func:`find_problems` decodes every file fully (a truncated file fails there, not mid-training) and
reports, per file: ``missing_gt`` (an image without GT), ``missing_image`` (a GT without image),
``duplicate_stem`` (two files of one folder share a stem: the pairing would be ambiguous), ``unreadable``
(corrupt, truncated, not an image), ``size_mismatch`` (image and GT width/height differ, the image taken after
EXIF orientation or, failing that, as stored: a GT drawn on the stored pixels of a photo with an EXIF
rotation still pairs) and ``empty_gt`` (no GT pixel ``> 127``: the foreground threshold used for boxes and
components everywhere in :mod:`is5net.data`, i.e. a pixel is foreground when it is 128..255).
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from ..contract import FG_THRESHOLD, binary_mask
from ..errors import IS5NetError
from ..io import IMAGE_EXTENSIONS, list_images, load_mask, open_image, stored_and_displayed_size

PathLike = Union[str, os.PathLike]


PROBLEM_KINDS = ("missing_gt", "missing_image", "duplicate_stem", "unreadable", "size_mismatch", "empty_gt")


@dataclass(frozen=True)
class Pair:
    """One image and its GT mask. ``subset``: the DIS5K subset (``DIS-TR`` ...) or the pair root's name."""

    stem: str
    image: Path
    gt: Path
    subset: str


@dataclass(frozen=True)
class Problem:
    """Something wrong with one file: ``kind`` is one of :data:`PROBLEM_KINDS`; ``detail`` says what."""

    path: Path
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


# ------------------------------------------------------------------------------------------ layout
def _has_pair_dirs(folder: Path) -> bool:
    return (folder / "im").is_dir() and (folder / "gt").is_dir()


def _check_root(root: PathLike) -> Path:
    root = Path(root)
    if not root.exists():
        raise IS5NetError(f"{root}: no such directory")
    if not root.is_dir():
        raise IS5NetError(f"{root}: not a directory (expected a DIS5K root or a folder with im/ and gt/)")
    return root


def _dis5k_subsets(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_pair_dirs(p))


def is_dis5k_root(root: PathLike) -> bool:
    """True when ``root`` has subfolders with ``im/`` and ``gt/`` (and no ``im/`` + ``gt/`` of its own)."""
    root = Path(root)
    if not root.is_dir() or _has_pair_dirs(root):
        return False
    return bool(_dis5k_subsets(root))


def subset_names(root: PathLike) -> list[str]:
    """The subsets found under ``root``, sorted: DIS5K subfolder names, or ``[root's folder name]``."""
    root = _check_root(root)
    if _has_pair_dirs(root):
        return [root.resolve().name]
    names = _dis5k_subsets(root)
    if not names:
        raise IS5NetError(
            f"{root}: found no dataset: expected im/ and gt/ in it, or subfolders (DIS-TR, DIS-VD, ...) that have them"
        )
    return names


def _subset_dirs(root: PathLike, subsets: Optional[Sequence[str]]) -> list[tuple[str, Path]]:
    """``[(subset name, folder holding im/ and gt/)]`` for the chosen subsets, in sorted order."""
    root = _check_root(root)
    available = subset_names(root)
    if subsets is None or len(subsets) == 0:
        chosen = available
    else:
        chosen = list(dict.fromkeys(subsets))
        unknown = [s for s in chosen if s not in available]
        if unknown:
            raise IS5NetError(f"{root}: no subset {', '.join(unknown)} (found: {', '.join(available)})")
        chosen = sorted(chosen)
    if _has_pair_dirs(root):
        return [(name, root) for name in chosen]
    return [(name, root / name) for name in chosen]


def parse_subsets(text: Optional[str]) -> Optional[list[str]]:
    """``"DIS-TR,DIS-VD"`` (commas or spaces) -> ``["DIS-TR", "DIS-VD"]``; None or empty -> None (all)."""
    if text is None:
        return None
    names = [s for s in text.replace(",", " ").split() if s]
    return names or None


# ------------------------------------------------------------------------------------------- pairs
def find_pairs(root: PathLike, subsets: Optional[Sequence[str]] = None) -> list[Pair]:
    """All image/GT pairs (stems present in both ``im/`` and ``gt/``), sorted by ``(subset, stem)``.

    ``subsets``: names such as ``["DIS-TR"]``; None = every subset found. Unpaired files are left out
    silently here (:func:`find_problems` reports them); two files sharing a stem in one folder are an error.
    Files are not opened: see :func:`split_good_pairs` for pairs that are known to decode.
    """
    out: list[Pair] = []
    for name, folder in _subset_dirs(root, subsets):
        images = list_images(folder / "im")
        gts = list_images(folder / "gt")
        for stem in sorted(images.keys() & gts.keys()):
            out.append(Pair(stem=stem, image=images[stem], gt=gts[stem], subset=name))
    out.sort(key=lambda p: (p.subset, p.stem))
    return out


def unpaired_stems(root: PathLike, subset: str) -> tuple[list[str], list[str]]:
    """``(stems of images without GT, stems of GTs without image)`` in one subset of ``root``."""
    ((_, folder),) = _subset_dirs(root, [subset])
    images, gts = list_images(folder / "im"), list_images(folder / "gt")
    return sorted(images.keys() - gts.keys()), sorted(gts.keys() - images.keys())


def _scan(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Like :func:`is5net.io.list_images`, but duplicate stems become problems instead of an error."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            groups.setdefault(p.stem, []).append(p)
    files: dict[str, Path] = {}
    problems: list[Problem] = []
    for stem, paths in groups.items():
        if len(paths) == 1:
            files[stem] = paths[0]
        else:
            names = ", ".join(p.name for p in paths)
            problems.extend(
                Problem(p, "duplicate_stem", f"{len(paths)} files share the stem {stem!r} ({names})") for p in paths
            )
    return files, problems


def _image_size(path: Path) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    """``((width, height), None)`` after full decode and EXIF orientation, or ``(None, reason)``."""
    try:
        img = open_image(path)
    except IS5NetError as exc:
        return None, _reason(exc, path)
    return img.size, None


def _stored_size_is(path: Path, size: tuple[int, int]) -> bool:
    """Whether the image's pixels as stored (EXIF orientation ignored) are ``size`` (WxH): a GT drawn on
    them pairs with the image, and the loaders then read it that way (:func:`is5net.io.load_image`)."""
    return stored_and_displayed_size(path)[0] == tuple(size)


def _gt_info(path: Path) -> tuple[Optional[tuple[int, int]], bool, Optional[str]]:
    """``((width, height), has_foreground, None)`` or ``(None, False, reason)``."""
    try:
        m = load_mask(path)
    except IS5NetError as exc:
        return None, False, _reason(exc, path)
    return (m.shape[1], m.shape[0]), bool(binary_mask(m).any()), None


def _reason(exc: Exception, path: Path) -> str:
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def _check_pair(pair: Pair) -> list[Problem]:
    problems: list[Problem] = []
    im_size, im_err = _image_size(pair.image)
    gt_size, has_fg, gt_err = _gt_info(pair.gt)
    if im_err is not None:
        problems.append(Problem(pair.image, "unreadable", im_err))
    if gt_err is not None:
        problems.append(Problem(pair.gt, "unreadable", gt_err))
    if im_size is not None and gt_size is not None and im_size != gt_size and not _stored_size_is(pair.image, gt_size):
        problems.append(
            Problem(
                pair.gt,
                "size_mismatch",
                f"GT is {gt_size[0]}x{gt_size[1]} but the image {pair.image.name} is {im_size[0]}x{im_size[1]} "
                "(WxH, as displayed and as stored)",
            )
        )
    if gt_size is not None and not has_fg:
        problems.append(Problem(pair.gt, "empty_gt", f"no foreground pixel (none > {FG_THRESHOLD})"))
    return problems


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def split_good_pairs(
    root: PathLike,
    subsets: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    progress: bool = False,
) -> tuple[list[Pair], list[Problem]]:
    """``(good_pairs, problems)``: every file decoded fully; a pair with any problem is not good.

    ``good_pairs`` sorted by ``(subset, stem)``; ``problems`` sorted by path then kind (see
    :data:`PROBLEM_KINDS`). ``workers`` threads decode in parallel (Pillow releases the GIL).
    """
    candidates: list[Pair] = []
    problems: list[Problem] = []
    for name, folder in _subset_dirs(root, subsets):
        images, p_im = _scan(folder / "im")
        gts, p_gt = _scan(folder / "gt")
        problems += p_im + p_gt
        for stem in sorted(images.keys() - gts.keys()):
            problems.append(Problem(images[stem], "missing_gt", f"no GT {stem}.* in {folder / 'gt'}"))
        for stem in sorted(gts.keys() - images.keys()):
            problems.append(Problem(gts[stem], "missing_image", f"no image {stem}.* in {folder / 'im'}"))
        for stem in sorted(images.keys() & gts.keys()):
            candidates.append(Pair(stem=stem, image=images[stem], gt=gts[stem], subset=name))

    good: list[Pair] = []
    with ThreadPoolExecutor(max_workers=workers or _default_workers()) as pool:
        results: Iterable[list[Problem]] = pool.map(_check_pair, candidates)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(candidates), desc="check", unit="pair", dynamic_ncols=True)
        for pair, found in zip(candidates, results):
            if found:
                problems += found
            else:
                good.append(pair)
    good.sort(key=lambda p: (p.subset, p.stem))
    problems.sort(key=lambda q: (str(q.path), PROBLEM_KINDS.index(q.kind)))
    return good, problems


def find_problems(
    root: PathLike, subsets: Optional[Sequence[str]] = None, workers: Optional[int] = None, progress: bool = False
) -> list[Problem]:
    """Every problem under ``root`` (see the module docstring for the kinds), sorted by path then kind."""
    return split_good_pairs(root, subsets, workers=workers, progress=progress)[1]


@dataclass
class DataCheck:
    """What ``is5net check-data`` found in the subsets it checked: the good pairs and every problem."""

    root: PathLike
    subsets: list[str]
    good: list[Pair]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """One line per problem, sorted by path, then a summary; or one ``OK`` line with the counts."""
        per_subset = Counter(p.subset for p in self.good)
        counts = ", ".join(f"{name} {per_subset.get(name, 0)}" for name in sorted(self.subsets))
        if not self.problems:
            return f"OK: {len(self.good)} pairs ({counts}), no problems"
        kinds = Counter(p.kind for p in self.problems)
        by_kind = ", ".join(f"{kinds[k]} {k}" for k in PROBLEM_KINDS if kinds[k])
        summary = f"{len(self.problems)} problem(s) in {self.root}: {by_kind}; {len(self.good)} good pairs ({counts})"
        return "\n".join([*(str(p) for p in self.problems), summary])


def check_data(
    root: PathLike, subsets: Optional[Sequence[str]] = None, workers: Optional[int] = None, progress: bool = False
) -> DataCheck:
    """Decode every file of ``subsets`` (default: all) under ``root`` and pair it: :class:`DataCheck`."""
    names = list(subsets) if subsets else subset_names(root)
    good, problems = split_good_pairs(root, subsets, workers=workers, progress=progress)
    return DataCheck(root, names, good, problems)
