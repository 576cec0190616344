"""Evaluation with the six DIS metrics: one job per module, imports in one direction.

- :mod:`~is5net.eval.metrics`: the metrics (``pysodmetrics`` + the official HCE), per image and aggregated;
- :mod:`~is5net.eval.thin`: thin-structure recall (GT pixels in structures at most 3 px wide);
- :mod:`~is5net.eval.folders`: pairing prediction and GT folders by file stem;
- :mod:`~is5net.eval.scoring`: scoring pairs in worker processes, folder evaluation;
- :mod:`~is5net.eval.report`: the Markdown / CSV tables and the checks of their output paths;
- :mod:`~is5net.eval.folder_mode`: ``is5net eval --pred --gt``: score two folders and write the tables;
- :mod:`~is5net.eval.dis5k`: running a method over DIS5K subsets (Table I), under torchrun too;
- :mod:`~is5net.commands.eval`: the ``is5net eval`` command.

``metrics, thin <- folders, report <- scoring <- folder_mode, dis5k <- commands.eval``: nothing imports upwards.
"""

from .folders import pair_folders
from .report import format_value, mean_row, per_image_csv, table_csv, table_markdown
from .scoring import evaluate_folders, score_pairs

__all__ = [
    "pair_folders",
    "evaluate_folders",
    "score_pairs",
    "format_value",
    "mean_row",
    "per_image_csv",
    "table_csv",
    "table_markdown",
    "evaluate_dataset",
]


def __getattr__(name: str):
    # Dataset mode loads the predictor (torch, SAM): only when asked for.
    if name == "evaluate_dataset":
        from .dis5k import evaluate_dataset

        return evaluate_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
