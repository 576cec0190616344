"""Folder pairing for ``is5net eval --pred DIR --gt DIR``: masks matched by file stem, sizes checked.

``a.png`` with ``a.jpg`` is a pair; a GT without a prediction, a prediction without a GT, or two masks of
different sizes is an error unless the caller allows missing files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from PIL import UnidentifiedImageError

from ..errors import IS5NetError
from ..io import list_images, stored_and_displayed_size

#: How many names an error message lists before "... and N more".
LIST_MAX = 10


def pair_folders(
    pred_dir, gt_dir, allow_missing: bool = False
) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair masks by stem: returns ``(pairs, gt_without_pred, pred_without_gt)``, pairs sorted by stem.

    Unpaired files raise :class:`IS5NetError` (listing them) unless ``allow_missing``.
    """
    preds = list_images(pred_dir)
    gts = list_images(gt_dir)
    no_pred = sorted(set(gts) - set(preds))
    no_gt = sorted(set(preds) - set(gts))
    if (no_pred or no_gt) and not allow_missing:
        parts = []
        if no_pred:
            parts.append(
                f"{len(no_pred)} GT mask(s) in {gt_dir} have no prediction in {pred_dir}: "
                + short_list(gts[s].name for s in no_pred)
            )
        if no_gt:
            parts.append(
                f"{len(no_gt)} prediction(s) in {pred_dir} have no GT in {gt_dir}: "
                + short_list(preds[s].name for s in no_gt)
            )
        raise IS5NetError("; ".join(parts) + " (pairs are matched by file stem; --allow-missing scores the rest)")
    pairs = [(stem, preds[stem], gts[stem]) for stem in sorted(set(preds) & set(gts))]
    if not pairs:
        raise IS5NetError(f"no prediction in {pred_dir} shares a file stem with a GT mask in {gt_dir}")
    return pairs, no_pred, no_gt


def short_list(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:LIST_MAX])
    return shown + (f", ... and {len(names) - LIST_MAX} more" if len(names) > LIST_MAX else "")


def _mask_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), from the header only."""
    try:
        return stored_and_displayed_size(path)[1]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise IS5NetError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None


def check_sizes(pairs: Sequence[tuple[str, Path, Path]]) -> None:
    bad = []
    for _, pred, gt in pairs:
        ps, gs = _mask_size(pred), _mask_size(gt)
        if ps != gs:
            bad.append(f"{pred.name} is {ps[0]}x{ps[1]} but {gt.name} is {gs[0]}x{gs[1]}")
    if bad:
        raise IS5NetError(f"{len(bad)} prediction(s) differ in size from their GT (WxH): " + short_list(bad))
