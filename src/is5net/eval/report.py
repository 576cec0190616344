"""Reports: the Markdown and CSV tables of ``is5net eval`` (the paper's Table I layout), and their outputs."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

from ..errors import IS5NetError
from . import metrics as M

#: Column headings of the Markdown table (the paper's symbols) with the better direction.
LABELS: dict[str, str] = {
    "maxF": "maxFβ ↑",
    "wF": "Fβw ↑",
    "MAE": "M ↓",
    "Sm": "Sα ↑",
    "meanEm": "Eφm ↑",
    "HCE": "HCEγ ↓",
    "meanF": "meanFβ ↑",
    "mIoU": "mIoU ↑",
    "maxEm": "maxEφ ↑",
}


def _columns(rows: Mapping[str, Mapping], metrics: M.MetricsArg) -> list[str]:
    if metrics is not None:
        return list(M.resolve_metrics(metrics))
    present = set()
    for r in rows.values():
        present.update(k for k in r if k in M.ALL_METRICS)
    return [k for k in M.ALL_METRICS if k in present]


def format_value(key: str, value) -> str:
    """Table cell: HCE as an integer, the rest with three decimals; missing values as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.0f}" if key == "HCE" else f"{float(value):.3f}"


def table_markdown(
    rows: Mapping[str, Mapping], metrics: M.MetricsArg = None, index_name: str = "", show_n: bool = False
) -> str:
    """A Markdown table, one row per ``{row_name: metrics_dict}`` entry, columns in Table I order.

    ``metrics`` picks the columns (default: the metric keys present in any row). ``show_n`` adds the image count.
    E.g. Table I: ``table_markdown({"DIS-TE1": r1, ..., "DIS-TE4": r4, "DIS-TE": mean_row([r1, r2, r3, r4])},
    metrics="paper")``.
    """
    cols = _columns(rows, metrics)
    header = [index_name] + [LABELS[c] for c in cols] + (["n"] if show_n else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name, r in rows.items():
        cells = [str(name)] + [format_value(c, r.get(c)) for c in cols]
        if show_n:
            cells.append(str(r.get("n", "-")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(rows: Mapping[str, Mapping], metrics: M.MetricsArg = None, index_name: str = "name") -> str:
    """The same table as CSV: ``name``, the metric keys (full precision) and ``n`` when the rows have it."""
    cols = _columns(rows, metrics)
    with_n = any("n" in r for r in rows.values())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([index_name] + cols + (["n"] if with_n else []))
    for name, r in rows.items():
        w.writerow([name] + [_csv_value(r.get(c)) for c in cols] + ([r.get("n", "")] if with_n else []))
    return buf.getvalue()


def per_image_csv(
    rows: Sequence[Mapping], metrics: M.MetricsArg = None, index: Sequence[str] = ("stem", "pred", "gt")
) -> str:
    """Per-image rows (from :func:`evaluate_folders`) as CSV: the ``index`` columns, then the metric keys."""
    cols = list(M.resolve_metrics(metrics))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(index) + cols)
    for r in rows:
        w.writerow([r[k] for k in index] + [_csv_value(r.get(c)) for c in cols])
    return buf.getvalue()


def _csv_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return str(v)
    return repr(float(v))


def mean_row(rows: Iterable[Mapping], metrics: M.MetricsArg = None) -> dict:
    """Unweighted mean of several result dicts (e.g. ``DIS-TE`` = mean of DIS-TE1..4, as the paper reports).

    Each metric is the plain mean of the rows' values (not re-weighted by image count); ``n`` is the sum.
    """
    rows = list(rows)
    if not rows:
        raise IS5NetError("no rows to average")
    cols = _columns({str(i): r for i, r in enumerate(rows)}, metrics)
    out: dict = {}
    for c in cols:
        vals = [float(r[c]) for r in rows if r.get(c) is not None]
        if len(vals) != len(rows):
            raise IS5NetError(f"cannot average {c}: missing in some rows")
        out[c] = sum(vals) / len(vals)
    if all("n" in r for r in rows):
        out["n"] = sum(int(r["n"]) for r in rows)
    return out


def check_output_files(outputs: Mapping[str, Optional[str]]) -> None:
    """Fail before the (long) scoring if an output file cannot be written: ``{option: path or None}``.

    Each path must not be a directory, not be given for two outputs, and lie in a folder that exists or
    can be made (no file in the way) and that this user may write to.
    """
    seen: dict[str, str] = {}
    for option, p in outputs.items():
        if not p:
            continue
        path = Path(p)
        if path.is_dir():
            raise IS5NetError(f"{option} {path}: is a directory, expected an output file name")
        key = os.path.abspath(path)
        if key in seen:
            raise IS5NetError(f"{option} {path}: also given as {seen[key]}; each output needs its own file")
        seen[key] = option
        check_output_dir(path.parent, option, for_file=path)


def check_output_dir(folder: Path, option: str, for_file: Optional[Path] = None) -> None:
    """Fail now if ``folder`` can be neither used nor created: a file in its path, or no write permission."""
    what = f"{option} {for_file if for_file is not None else folder}"
    folder = Path(os.path.abspath(folder))
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise IS5NetError(f"{what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise IS5NetError(f"{what}: no permission to write in {existing}")
    if for_file is not None and for_file.exists() and not os.access(for_file, os.W_OK):
        raise IS5NetError(f"{what}: the file exists and is not writable")
