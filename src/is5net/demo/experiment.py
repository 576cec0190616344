"""The one experiment runner of the demo: what the main run, the ablation and the high-resolution run share.

A run is a short script over an :class:`Experiment`: make the synthetic data (:meth:`~Experiment.make_data`),
train each row with the real ``is5net train`` code (:meth:`~Experiment.train`), score the rows with the real
``is5net eval`` code (:meth:`~Experiment.score`) and the thin-structure recall of ``is5net.eval.thin``
(:meth:`~Experiment.thin_recall`), then write its own results, tables and figures.

What a run trains is data, not code: a :class:`Schedule` holds the data's sizes and, per model, the
``TrainConfig`` settings it changes (``is5net.train.config``). A new training option is tried by naming it in
a schedule; nothing here lists the options.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

#: What every demo training shares, whatever its schedule: AdamW, no early stop (a fixed schedule, so the
#: same seed gives the same table), no loader processes, no GT enrichment, and no input cache (the images
#: are already about the input size: nothing to save).
RUN_SETTINGS: dict[str, Any] = {
    "optimizer": "adamw",
    "early_stop": 0,
    "workers": 0,
    "log_every": 20,
    "enrich": False,
    "data_cache": "off",
}


@dataclass(frozen=True)
class Schedule:
    """A run's data sizes and its models' training settings (``TrainConfig`` overrides), as data.

    ``train`` holds what every model of the run gets, ``models`` what each one changes on top. The refiner's
    ``input_size`` is the image size unless the settings say otherwise.
    """

    size: int  # the synthetic photos' side in pixels
    n_train: int
    n_val: int
    n_test: int
    train: Mapping[str, Any]
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def settings(self, model: str) -> dict[str, Any]:
        """The ``TrainConfig`` settings the schedule gives ``model``."""
        return {**self.train, **self.models.get(model, {})}


@dataclass(frozen=True)
class Row:
    """One training: its run folder, its settings (``load_config``'s ``base``) and, for a model that is not in
    the registry, a module-level function that registers it in the process that trains (a spawned process
    starts with the registry as shipped)."""

    run_dir: Path
    config: Mapping[str, Any]
    setup: Optional[Callable[[], Any]] = None


def train_row(row: Row, progress: bool) -> Path:
    """Train one row from scratch (its folder emptied first) with ``is5net train``'s own code; one thread, so the
    float sums, hence the table, are the same on any machine, and a busy machine cannot make OpenMP threads
    wait on each other (which slows small convolutions down tenfold)."""
    import torch

    from ..train import load_config, train

    torch.set_num_threads(1)
    if row.setup is not None:
        row.setup()
    config = load_config(None, None, base=dict(row.config))
    clear(row.run_dir)
    return train(config, row.run_dir, progress=progress)


def clear(path: Path) -> Path:
    """``path`` with nothing in it (an earlier run's files removed); not created."""
    if path.exists():
        shutil.rmtree(path)
    return path


@dataclass
class Experiment:
    """One demo run under ``out``: its data in ``out/data``, its rows scored on ``split``."""

    out: Path
    schedule: Schedule
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    split: str = "DIS-TE1"
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        import torch

        self.out = Path(self.out)
        torch.set_num_threads(1)  # this process trains a row too, on one core (see train_row)

    @property
    def data(self) -> Path:
        return self.out / "data"

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 1)

    def make_data(self, coarse: bool = True, coarse_options: Optional[dict] = None) -> None:
        """The synthetic DIS5K-like data at the schedule's sizes; ``coarse``: with simulated-SAM coarse masks
        (``coarse_options``: ``simulate_coarse_mask``'s keywords other than its defaults)."""
        from .synthetic import make_synthetic_dataset

        s = self.schedule
        make_synthetic_dataset(
            self.data,
            seed=self.seed,
            n_train=s.n_train,
            n_val=s.n_val,
            n_test=s.n_test,
            size=s.size,
            coarse=coarse,
            coarse_options=coarse_options,
        )

    def row(self, entry: str, run_dir: str, setup: Optional[Callable[[], Any]] = None, **more: Any) -> Row:
        """The training of the schedule's model ``entry`` into ``out/run_dir``: :data:`RUN_SETTINGS`, this run's
        data, seed and device, then the schedule's settings of ``entry``, then ``more``."""
        base = {"data": str(self.data), "seed": self.seed, "device": self.device, "input_size": self.schedule.size}
        return Row(self.out / run_dir, {**RUN_SETTINGS, **base, **self.schedule.settings(entry), **more}, setup)

    def train(
        self,
        rows: Mapping[str, Row],
        here: Optional[str] = None,
        processes: int = 1,
        desc: Optional[str] = None,
        on_here_done: Optional[Callable[[], Any]] = None,
    ) -> dict[str, Path]:
        """Train ``rows``: ``here`` in this process with its progress bars, the others meanwhile in ``processes``
        spawned processes (one thread each, so two cores run two trainings without oversubscription; with
        ``desc``, a bar counts them in). Returns each row's ``refiner.safetensors``, in ``rows``' order."""
        import multiprocessing as mp

        from tqdm import tqdm

        done = {}
        with mp.get_context("spawn").Pool(processes) as pool:
            jobs = {name: pool.apply_async(train_row, (row, False)) for name, row in rows.items() if name != here}
            if here is not None:
                done[here] = train_row(rows[here], self.progress)
                if on_here_done is not None:
                    on_here_done()
            for name, job in tqdm(jobs.items(), desc=desc, unit="model", disable=not self.progress or desc is None):
                done[name] = job.get()
        return {name: done[name] for name in rows}

    def coarse_view(self, view: Path, folder: str = "coarse") -> Path:
        """``view/<split>/<stem>.png``: the dataset's coarse masks where ``eval --coarse-dir`` looks for them."""
        target = view / self.split
        if not target.exists():
            target.mkdir(parents=True)
            for p in sorted((self.data / self.split / folder).glob("*.png")):
                (target / p.name).write_bytes(p.read_bytes())
        return view

    def score(
        self,
        eval_dir: Path,
        runs: Mapping[str, Mapping[str, Any]],
        data: Optional[Path] = None,
        split: Optional[str] = None,
    ) -> dict[str, dict]:
        """Score each run on the split with ``is5net eval``'s own code, every metric: ``runs`` maps its folder
        under ``eval_dir`` to ``evaluate_dataset``'s keywords (``method``, ``checkpoint``, ``coarse_dir``,
        ``region``, ``box_jitter``, ...). A folder may already hold the coarse masks it is given. ``data`` and
        ``split``: another DIS5K root or split folder than the run's own (e.g. a second held-out set)."""
        from ..eval.dis5k import evaluate_dataset

        data, split = data or self.data, split or self.split
        results = {}
        for name, kw in runs.items():
            rows = evaluate_dataset(
                data,
                [split],
                out_dir=eval_dir / name,
                device=self.device,
                metrics="all",
                progress=self.progress,
                **kw,
            )
            results[name] = dict(rows[split])
        return results

    def thin_recall(
        self, eval_dir: Path, names: Iterable[str], data: Optional[Path] = None, split: Optional[str] = None
    ) -> dict[str, dict]:
        """The thin-structure recall (``is5net.eval.thin``) of each scored run's predictions (``data``, ``split``:
        as in :meth:`score`)."""
        from ..eval.thin import thin_recall_of_folders

        data, split = data or self.data, split or self.split
        folders = {name: eval_dir / name / "predictions" / split for name in names}
        return thin_recall_of_folders(data / split / "gt", folders)
