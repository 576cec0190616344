"""The demo's Markdown tables: the paper's six metrics and the thin-structure recall, one row per model."""

from __future__ import annotations

from typing import Mapping

from ..eval.report import format_value

#: (key of the results, column title), in the paper's order, then the thin-structure recall.
PAPER_COLUMNS = [
    ("maxF", "maxFβ ↑"),
    ("wF", "Fβw ↑"),
    ("MAE", "M ↓"),
    ("Sm", "Sα ↑"),
    ("meanEm", "Eφm ↑"),
    ("HCE", "HCEγ ↓"),
    ("thin_recall", "thin recall ↑"),
]


def metric_table(rows: Mapping[str, Mapping]) -> str:
    """One row per ``{label: results}`` entry: the six metrics as ``is5net eval`` prints them (HCE as an
    integer, as the paper) and the thin recall."""
    lines = ["|  | " + " | ".join(t for _, t in PAPER_COLUMNS) + " |", "|:---|" + "---:|" * len(PAPER_COLUMNS)]
    for name, r in rows.items():
        cells = [f"{r[k]:.3f}" if k == "thin_recall" else format_value(k, r[k]) for k, _ in PAPER_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def simple_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """One row per ``{label: {column: value}}`` entry, every value with three decimals."""
    cols = list(next(iter(rows.values())).keys())
    lines = ["| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{vals[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)
