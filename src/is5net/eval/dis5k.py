"""Dataset mode of ``is5net eval``: run a method over DIS5K subsets and write the paper's Table I.

::

    is5net eval --data DIS5K --subsets DIS-VD,DIS-TE1,DIS-TE2,DIS-TE3,DIS-TE4 \\
        --method is5net --checkpoint dis-sam --sam-checkpoint vit_l --out runs/dis-sam
    torchrun --standalone --nproc_per_node 8 -m is5net.cli eval --data DIS5K ... --out runs/dis-sam

Methods (the rows of Table I this package can reproduce):

- ``is5net`` (default): the box is the tight box of the GT (pixels ``> 127``, XYXY, exclusive end), the
  stage-1 mask is SAM's ``masks[0]`` for that box (``--sam-checkpoint``) or a given coarse mask
  (``--coarse-dir``), and a 5-channel refiner (``--checkpoint``) refines it;
- ``sam``: the stage-1 mask alone: SAM's ``masks[0]`` for the GT box saved as 0/255, or the masks of
  ``--coarse-dir`` scored as they are (which is how the demo scores simulated coarse masks);
- ``isnet``: a 3-channel IS-Net (``--checkpoint``), no prompt at all.

``--coarse-dir DIR`` holds one mask per GT stem: ``DIR/<subset>/<stem>.png`` or ``DIR/<stem>.png`` (the
first wins; any image extension). SAM resizes the image as ``SamPredictor.set_image`` does (Pillow, on the
CPU) whatever the device, so masks match the reference and the SAM-mask cache.

Output layout (``RUN_DIR`` = ``--out``)::

    RUN_DIR/predictions/<subset>/<stem>.png   soft map x 255 (uint8, GT size), each written atomically
    RUN_DIR/results.json                      {subset: {metric: value, ..., "n": images}}
    RUN_DIR/table.csv                         one row per subset, full precision
    RUN_DIR/per_image.csv                     subset, stem, prediction, GT and that image's own numbers
    RUN_DIR/table.md                          provenance as an HTML comment, then the Markdown table
    RUN_DIR/provenance.json                   what produced the numbers (hashes, versions, device, date)

The rows are the chosen subsets (in the order given) plus ``DIS-TE``, the unweighted mean of whichever of
DIS-TE1..4 were evaluated (as the paper reports it; only when at least one was). The columns are the
paper's six metrics unless ``metrics`` says otherwise.

``--resume`` keeps the predictions already saved (a PNG that opens and has the GT's size) and computes
the rest; it refuses a run directory made by a different method, checkpoint, SAM or coarse folder.
Without ``--resume`` a non-empty ``RUN_DIR/predictions`` is an error: runs are never mixed.

Under ``torchrun`` (``WORLD_SIZE > 1``), the process group is initialised here (gloo on the CPU, NCCL on
CUDA with ``cuda:LOCAL_RANK``), each rank predicts ``pairs[rank::world_size]`` of every subset, and after a
barrier rank 0 alone scores and writes the tables; every rank returns the same rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..contract import FG_THRESHOLD, check_mask_size, tight_box
from ..data.pairs import Pair, find_pairs, parse_subsets, subset_names, unpaired_stems
from ..distributed import ProcessGroup
from ..errors import IS5NetError
from ..io import atomic_write_text, load_image, load_mask, mask_to_uint8, save_png, stored_and_displayed_size
from . import metrics as M
from .report import check_output_dir, check_output_files, mean_row, per_image_csv, table_csv, table_markdown
from .scoring import score_pairs

log = logging.getLogger("is5net")

PathLike = Union[str, os.PathLike]

METHODS = ("is5net", "sam", "isnet")
#: The test subsets whose unweighted mean is the overall row.
TE_SUBSETS = ("DIS-TE1", "DIS-TE2", "DIS-TE3", "DIS-TE4")
#: Name of the overall row (mean of the DIS-TE1..4 rows present).
OVERALL = "DIS-TE"
PREDICTIONS = "predictions"
#: Provenance fields that must agree for ``--resume`` to reuse a run's predictions.
_RUN_IDENTITY = (
    "method",
    "checkpoint_sha256",
    "sam_type",
    "sam_checkpoint_sha256",
    "sam_state_hash",
    "coarse_dir",
    "mask_choice",
    "precision",
)
_LIST_MAX = 5


# ------------------------------------------------------------------------------------------- public
@dataclass
class DatasetEval:
    """One run of :func:`evaluate_dataset`: what runs, on which data, where it writes, and how.

    Fields:
        root: a DIS5K root (``DIS-VD/{im,gt}``, ``DIS-TE1/{im,gt}``, ...) or one folder with ``im/`` + ``gt/``.
        subsets: names (list or ``"A,B"``); None = those of DIS-TE1..4 present (else every subset but DIS-TR).
            ``DIS-TE`` alone stands for DIS-TE1..4 (it is the mean row, always added when a TE subset is run).
        method: ``"is5net"``, ``"sam"`` or ``"isnet"`` (module docstring).
        checkpoint: the refiner (path or a name under ``IS5NET_HOME``): 5 channels for ``is5net``, 3 for
            ``isnet``; not used by ``sam``.
        out_dir: the run directory (module docstring for its layout).
        sam_checkpoint / sam_type: SAM for the stage-1 mask (``sam_type`` read off the checkpoint if None;
            ``sam_type="tiny"`` with no checkpoint is the seeded random test SAM).
        stage1: the stage-1 name whose model ``sam_checkpoint`` holds (``sam``, ``hq-sam``, ``sam2:tiny``...:
            docs/stage1.md).
        coarse_dir: stage-1 masks from files instead of SAM (``DIR/<subset>/<stem>.png`` or ``DIR/<stem>.png``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (CUDA when present); under torchrun CUDA means
            ``cuda:LOCAL_RANK``.
        resume: reuse the predictions already in ``out_dir`` (same method and weights only).
        workers: scoring processes (0 = one per CPU core).
        metrics: the columns (``"paper"``, ``"all"``, ``"maxF,MAE"``, ...); None = the paper's six.
        progress: tqdm bars (shown on a terminal only; rank 0 only under torchrun).
        precision: ``fp32`` (the reference), ``bf16`` or ``fp16`` (CUDA) autocast for both stages.
        mask_choice: SAM mask kept, ``first`` (``masks[0]``, the reference) or ``best``.
        region / margin: what the refiner sees (``image``, ``box``, ``tiles``; default: the checkpoint's) and
            the crop's margin (docs/input-contract.md, "Regions").
        box_jitter / jitter_seed: move each edge of the GT's tight box by up to ``box_jitter`` of the box's
            side (:func:`is5net.data.samples.jitter_box`, seeded per image by ``jitter_seed``), as a loose,
            hand-drawn or detected box would be; 0 = the tight box (the paper's protocol).
        backend: the refiner's runtime (``torch``, ``onnxruntime``, ``openvino``, ``auto``: is5net.inference.backends).
        calibration: ``precision="int8"``'s calibration set (is5net.demo.calibration.calibration_set).
    """

    root: PathLike
    subsets: Union[None, str, Sequence[str]]
    method: str
    checkpoint: Optional[PathLike]
    out_dir: PathLike
    sam_checkpoint: Optional[PathLike] = None
    sam_type: Optional[str] = None
    coarse_dir: Optional[PathLike] = None
    device: Any = None
    stage1: str = "sam"
    resume: bool = False
    workers: int = 1
    metrics: M.MetricsArg = None
    progress: bool = True
    precision: str = "fp32"
    mask_choice: str = "first"
    region: Optional[str] = None
    margin: float = 0.1
    box_jitter: float = 0.0
    jitter_seed: int = 0
    backend: str = "torch"
    calibration: Any = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "DatasetEval":
        """What ``is5net eval --data ...`` asks for (its runtime by default ``auto``, as predict's)."""
        return cls(
            args.data,
            parse_subsets(args.subsets),
            args.method or "is5net",
            args.checkpoint,
            args.out,
            sam_checkpoint=args.sam_checkpoint,
            sam_type=getattr(args, "sam_type", None),
            stage1=getattr(args, "stage1", None) or "sam",
            coarse_dir=args.coarse_dir,
            device=args.device,
            resume=args.resume,
            workers=args.workers,
            metrics=args.metrics,
            progress=not getattr(args, "quiet", False),
            region=getattr(args, "region", None),
            margin=getattr(args, "margin", 0.1),
            box_jitter=getattr(args, "box_jitter", 0.0),
            jitter_seed=getattr(args, "jitter_seed", 0),
            backend=getattr(args, "backend", None) or "auto",
            precision=getattr(args, "precision", None) or "fp32",
            calibration=getattr(args, "calibration", None),
        )

    def run(self) -> dict[str, dict]:
        """Check everything, predict (each rank its share), score and write Table I on rank 0; return its rows."""
        method, keys, device = self._checked()
        root = Path(self.root)
        if not root.is_dir():
            raise IS5NetError(f"--data {root}: no such directory")
        names = choose_subsets(root, self.subsets)
        pairs_by_subset = {name: _subset_pairs(root, name) for name in names}
        setup = self._setup(method, pairs_by_subset)
        out_dir = Path(self.out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise IS5NetError(f"--out {out_dir}: exists and is not a directory")
        precision = _recorded_precision(self.precision, self.backend, device)
        provenance = setup.provenance(root, names, keys, precision, self.mask_choice)
        _check_run_dir(out_dir, out_dir / PREDICTIONS, provenance, self.resume)
        group = ProcessGroup(device)
        try:
            _start_run_dir(group, out_dir, provenance)
            counts = self._predict(group, setup, pairs_by_subset, out_dir / PREDICTIONS)
            return self._score_and_write(group, pairs_by_subset, out_dir, keys, provenance, counts)
        finally:
            group.close()

    def _checked(self):
        """``(method, metric keys, device)``, each option checked before any file is read."""
        from ..inference.stage1 import MASK_CHOICES, SAM_TYPES
        from ..runtime import check_precision, resolve_device

        method = (self.method or "is5net").lower()
        if method not in METHODS:
            raise IS5NetError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        keys = M.resolve_metrics("paper" if self.metrics is None else self.metrics)
        if self.sam_type is not None and self.sam_type not in SAM_TYPES:
            raise IS5NetError(f"unknown SAM type {self.sam_type!r}; choose one of {', '.join(SAM_TYPES)}")
        if self.mask_choice not in MASK_CHOICES:
            raise IS5NetError(f"mask choice {self.mask_choice!r}: choose one of {', '.join(MASK_CHOICES)}")
        device = resolve_device(self.device)
        check_precision(self.precision, device)
        return method, keys, device

    def _setup(self, method: str, pairs_by_subset: dict[str, list[Pair]]) -> "_Setup":
        if not 0.0 <= float(self.box_jitter) <= 1.0:
            raise IS5NetError(f"--box-jitter {self.box_jitter}: expected a fraction from 0 to 1")
        setup = _Setup.build(
            method, self.checkpoint, self.sam_checkpoint, self.sam_type, self.coarse_dir, pairs_by_subset, self.stage1
        )
        setup.region, setup.margin = self.region, float(self.margin)
        setup.box_jitter, setup.jitter_seed = float(self.box_jitter), int(self.jitter_seed)
        setup.backend = self.backend
        setup.calibration = self.calibration
        return setup

    def _predict(
        self, group: ProcessGroup, setup: "_Setup", pairs_by_subset: dict[str, list[Pair]], pred_root: Path
    ) -> list[int]:
        """This rank's share of every subset predicted: ``[computed, reused]`` summed over the ranks."""
        counts = [0, 0]
        error: Optional[BaseException] = None
        try:
            predict_one = setup.make_predictor(group.device, self.precision, self.mask_choice)
            for name, pairs in pairs_by_subset.items():
                mine = pairs[group.rank :: group.world_size]
                show = self.progress and group.rank == 0
                done, reused = _predict_subset(
                    name, mine, pred_root / name, predict_one, self.resume, show, setup.method
                )
                counts[0] += done
                counts[1] += reused
        except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
            error = exc
        if not group.all_ok(error is None):
            if error is not None:
                raise error
            raise IS5NetError("another process of this torchrun job failed (see its error above)")
        return group.sum(counts)

    def _score_and_write(
        self, group: ProcessGroup, pairs_by_subset: dict, out_dir: Path, keys, provenance: dict, counts: list[int]
    ) -> dict[str, dict]:
        """Rank 0 scores and writes the tables; every rank returns the rows, or raises rank 0's error."""
        payload: tuple = ("ok", None)
        error: Optional[BaseException] = None
        if group.rank == 0:
            try:
                names = list(pairs_by_subset)
                rows, per_image = _score(
                    names, pairs_by_subset, out_dir / PREDICTIONS, keys, self.workers, self.progress
                )
                date = datetime.now(timezone.utc).isoformat(timespec="seconds")
                provenance.update(computed=counts[0], reused=counts[1], date=date)
                _write_tables(out_dir, rows, keys, provenance, per_image)
                payload = ("ok", rows)
            except IS5NetError as exc:
                error = exc
                payload = ("error", str(exc))
            except Exception as exc:  # noqa: BLE001 - re-raised below, after telling the other ranks
                error = exc
                payload = ("error", f"{exc.__class__.__name__}: {exc}")
        payload = group.broadcast(payload)
        if error is not None:
            raise error
        if payload[0] != "ok":
            raise IS5NetError(f"rank 0 failed while scoring: {payload[1]}")
        return payload[1]


def evaluate_dataset(
    root: PathLike,
    subsets: Union[None, str, Sequence[str]],
    method: str,
    checkpoint: Optional[PathLike],
    out_dir: PathLike,
    **options,
) -> dict[str, dict]:
    """Run ``method`` over the subsets of a DIS5K root, score it, write Table I; return its rows.

    The arguments are the fields of :class:`DatasetEval`, ``options`` the optional ones by name (same defaults).

    Returns ``{row name: {metric: value, ..., "n": images}}``: the subsets in order, then ``DIS-TE``.
    Raises :class:`IS5NetError` for a missing root, an unknown subset, a checkpoint of the wrong kind, a
    missing coarse mask, an existing run without ``resume``, or an unreadable / mismatched file.
    """
    return DatasetEval(root, subsets, method, checkpoint, out_dir, **options).run()


def run_dataset(args: argparse.Namespace) -> int:
    """``is5net eval --data ...``: :func:`evaluate_dataset` from parsed arguments; prints the table."""
    if getattr(args, "out", None) is None:
        raise IS5NetError("dataset mode needs --out RUN_DIR (where predictions and tables are written)")
    if getattr(args, "per_image", None):
        raise IS5NetError("--per-image only applies to folder mode: dataset mode always writes RUN_DIR/per_image.csv")
    if getattr(args, "allow_missing", None):
        raise IS5NetError("--allow-missing only applies to folder mode (--pred/--gt)")
    # Every output location is checked before minutes of predicting and scoring.
    check_output_dir(Path(args.out), "--out")
    check_output_files({"--json": getattr(args, "json", None), "--csv": getattr(args, "csv", None)})
    evaluation = DatasetEval.from_args(args)
    rows = evaluation.run()
    if int(os.environ.get("RANK", "0")) == 0:
        keys = M.resolve_metrics("paper" if args.metrics is None else args.metrics)
        print(table_markdown(rows, metrics=keys, index_name=evaluation.method, show_n=True), end="")
        if getattr(args, "json", None):
            atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
        if getattr(args, "csv", None):
            atomic_write_text(args.csv, table_csv(rows, metrics=keys, index_name="subset"))
        log.info("predictions and tables in %s", args.out)
    return 0


def _recorded_precision(precision: str, backend: str, device) -> str:
    """``auto`` as what it is here (``auto: bf16`` on a CPU with native bf16), so that a run is not resumed
    on a machine where the same options compute in another precision."""
    if precision != "auto":
        return precision
    from ..inference.backends import resolve_backend, resolve_precision

    return f"auto: {resolve_precision('auto', resolve_backend(backend, device))}"


def choose_subsets(root: PathLike, subsets: Union[None, str, Sequence[str]]) -> list[str]:
    """The subsets to run, in order (see :func:`evaluate_dataset`); unknown names are an error."""
    available = subset_names(root)
    if isinstance(subsets, str):
        subsets = parse_subsets(subsets)
    if not subsets:
        te = [s for s in TE_SUBSETS if s in available]
        return te or [s for s in available if s != "DIS-TR"] or available
    chosen = list(dict.fromkeys(subsets))
    if OVERALL in chosen and OVERALL not in available:
        chosen.remove(OVERALL)
        if not any(s in TE_SUBSETS for s in chosen):
            te = [s for s in TE_SUBSETS if s in available]
            if not te:
                raise IS5NetError(
                    f"{root}: {OVERALL} is the mean of DIS-TE1..4, and none of them is there "
                    f"(found: {', '.join(available)})"
                )
            chosen += te
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise IS5NetError(f"{root}: no subset {', '.join(unknown)} (found: {', '.join(available)})")
    return chosen


def table_rows(subset_rows: dict[str, dict], metrics: M.MetricsArg = None) -> dict[str, dict]:
    """``subset_rows`` plus the ``DIS-TE`` row (unweighted mean of the DIS-TE1..4 rows present, if any)."""
    rows = dict(subset_rows)
    te = [r for name, r in subset_rows.items() if name in TE_SUBSETS]
    if te and OVERALL not in rows:
        rows[OVERALL] = mean_row(te, metrics)
    return rows


def _subset_pairs(root: Path, name: str) -> list[Pair]:
    """The pairs of subset ``name``; files left unpaired are named in a warning."""
    pairs = find_pairs(root, [name])
    if not pairs:
        raise IS5NetError(f"{root}: subset {name} has no image/GT pair (im/ and gt/ share no file stem)")
    no_gt, no_image = unpaired_stems(root, name)
    if no_gt or no_image:
        # A table over fewer images than the subset holds must not pass unnoticed.
        log.warning(
            "%s: %d image(s) without GT and %d GT(s) without image left out (e.g. %s); is5net check-data lists them",
            name,
            len(no_gt),
            len(no_image),
            (no_gt + no_image)[0],
        )
    return pairs


# -------------------------------------------------------------------------------------------- setup
class _Setup:
    """The models and stage-1 source of a run, checked before anything is computed."""

    def __init__(self, method: str):
        self.method = method
        self.refiner = None
        self.checkpoint: Optional[Path] = None
        self.sam_checkpoint: Optional[Path] = None
        self.sam_type: Optional[str] = None
        self.coarse_dir: Optional[Path] = None
        self.coarse: dict[tuple[str, str], Path] = {}
        self.use_sam = False
        self.sam_source = None
        self.region: Optional[str] = None
        self.margin = 0.1
        self.box_jitter = 0.0
        self.jitter_seed = 0
        self.backend = "torch"
        self.calibration = None

    @classmethod
    def build(
        cls, method, checkpoint, sam_checkpoint, sam_type, coarse_dir, pairs_by_subset, stage1: str = "sam"
    ) -> "_Setup":
        from ..checkpoint import load_refiner
        from ..weights import resolve_weights

        s = cls(method)
        if method in ("is5net", "isnet"):
            if checkpoint is None:
                what = "a 5-channel IS5Net refiner" if method == "is5net" else "a 3-channel IS-Net (isnet.pth)"
                raise IS5NetError(f"--method {method} needs --checkpoint: {what}")
            s.checkpoint = resolve_weights(checkpoint)
            s.refiner = load_refiner(s.checkpoint)
            in_ch = int(s.refiner.config.in_ch)
            if method == "is5net" and in_ch != 5:
                raise IS5NetError(
                    f"{s.checkpoint}: a {in_ch}-channel IS-Net checkpoint, but --method is5net needs a "
                    "5-channel IS5Net refiner (score IS-Net with --method isnet)"
                )
            if method == "isnet" and in_ch != 3:
                raise IS5NetError(
                    f"{s.checkpoint}: a {in_ch}-channel checkpoint, but --method isnet needs a 3-channel "
                    "IS-Net such as isnet.pth (score IS5Net with --method is5net)"
                )
        elif checkpoint is not None:
            log.warning("--checkpoint is not used by --method sam (it scores the stage-1 mask alone)")

        if method == "isnet":
            if sam_checkpoint is not None or coarse_dir is not None or sam_type is not None:
                log.warning("--method isnet uses no prompt: --sam-checkpoint / --sam-type / --coarse-dir are not used")
            return s
        from ..inference.stage1 import FAMILIES, choose_stage1

        source = choose_stage1(stage1, sam_checkpoint, sam_type, coarse_dir, "--coarse-dir", True, tuple(FAMILIES))
        if source.method == "given":
            s.coarse_dir = Path(coarse_dir)
            s.coarse = _coarse_index(s.coarse_dir, pairs_by_subset)
            return s
        s.use_sam = True
        s.sam_source = source
        # SAM's type as before; another family's name in full (hq-sam:vit_b), so a resumed run checks it too.
        s.sam_type = source.sam_type if source.method == "sam" else source.name
        s.sam_checkpoint = source.checkpoint
        return s

    def provenance(self, root: Path, names: list[str], keys: Sequence[str], precision: str, mask_choice: str) -> dict:
        import torch

        from .. import __version__
        from ..data.sam_cache import file_sha256

        prov: dict = {
            "method": self.method,
            "data": str(root.resolve()),
            "subsets": list(names),
            "box": self.box_caption() if self.method != "isnet" else None,
            "region": (self.region or self.refiner.config.region)
            if self.refiner is not None and self.method == "is5net"
            else None,
            "margin": self.margin if (self.region or "image") != "image" else None,
            "backend": self.backend if self.refiner is not None else None,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "checkpoint_sha256": file_sha256(self.checkpoint) if self.checkpoint else None,
            "refiner": None,
            "sam_type": self.sam_type if self.use_sam else None,
            "sam_checkpoint": str(self.sam_checkpoint) if self.sam_checkpoint else None,
            "sam_checkpoint_sha256": file_sha256(self.sam_checkpoint) if self.sam_checkpoint else None,
            "sam_state_hash": None,
            "coarse_dir": str(self.coarse_dir.resolve()) if self.coarse_dir else None,
            "mask_choice": mask_choice if self.use_sam else None,
            "precision": precision if self.method != "sam" or self.use_sam else None,
            "metrics": list(keys),
            "is5net_version": __version__,
            "torch_version": torch.__version__,
        }
        if precision == "int8":  # which images set the int8 scales (only then: other runs' provenance is unchanged)
            prov["calibration"] = getattr(self.calibration, "name", None)
        if self.refiner is not None:
            cfg = self.refiner.config
            prov["refiner"] = {"model": cfg.model, "in_ch": cfg.in_ch, "input_size": cfg.input_size}
        if self.use_sam and self.sam_checkpoint is None:
            from ..data.sam_cache import state_dict_hash

            prov["sam_state_hash"] = state_dict_hash(self.sam_source.load_sam().state_dict())
            prov["sam_checkpoint"] = self.sam_source.describe()
        return prov

    def make_predictor(self, device, precision: str, mask_choice: str) -> Callable[[Pair], np.ndarray]:
        """A function ``pair -> HxW uint8`` prediction (GT size) for this run's method."""
        if self.method == "sam":
            if not self.use_sam:
                return lambda pair: self._coarse_mask(pair, load_mask(pair.gt).shape)
            from ..runtime import autocast

            stage = self.sam_source.build(device, mask_choice, resize="pil")

            def predict_sam(pair: Pair) -> np.ndarray:
                rgb, box = self._image_and_box(pair)
                stage.set_image(rgb)
                with autocast(device, precision):
                    masks, _ = stage.predict(np.asarray([box], dtype=np.float32))
                return masks[0].cpu().numpy().astype(np.uint8) * 255

            return predict_sam

        from ..inference.predictor import PredictorOptions, build_predictor

        options = PredictorOptions(
            device,
            precision,
            self.backend,
            mask_choice,
            batch_size=1,
            region=self.region,
            margin=self.margin,
            calibration=self.calibration,
        )
        predictor = build_predictor(self.refiner, self.sam_source if self.use_sam else None, options)
        if self.method == "isnet":

            def predict_isnet(pair: Pair) -> np.ndarray:
                gt = load_mask(pair.gt)
                rgb = load_image(pair.image, gt.shape)
                _check_same_size(pair, rgb.shape[:2], gt.shape)
                predictor.set_image(rgb)
                return mask_to_uint8(predictor.predict().mask)

            return predict_isnet

        def predict_is5net(pair: Pair) -> np.ndarray:
            rgb, box = self._image_and_box(pair)
            coarse = self._coarse_mask(pair, rgb.shape[:2]) if self.coarse_dir is not None else None
            predictor.set_image(rgb)
            return mask_to_uint8(predictor.predict(box=list(box), coarse_mask=coarse).mask)

        return predict_is5net

    def box_caption(self) -> str:
        tight = "tight box of the GT (pixels > 127), XYXY, exclusive end"
        if self.box_jitter <= 0:
            return tight
        return (
            f"{tight}, each edge moved by up to {self.box_jitter:g} of the box's side "
            f"(--box-jitter {self.box_jitter:g} --jitter-seed {self.jitter_seed})"
        )

    def _image_and_box(self, pair: Pair) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        gt = load_mask(pair.gt)
        rgb = load_image(pair.image, gt.shape)
        _check_same_size(pair, rgb.shape[:2], gt.shape)
        box = tight_box(gt)
        if box is None:
            raise IS5NetError(
                f"{pair.gt}: empty GT (no pixel > {FG_THRESHOLD}), so no box to prompt with (see is5net check-data)"
            )
        if self.box_jitter > 0:
            from ..data.samples import jitter_box

            # The same seeded jitter as training's (one draw, k = 1), per image: reproducible anywhere.
            box = jitter_box(
                box,
                1,
                gt.shape,
                max_fraction=self.box_jitter,
                seed=self.jitter_seed,
                identity=f"{pair.subset}/{pair.stem}",
            )
        return rgb, box

    def _coarse_mask(self, pair: Pair, shape: tuple[int, int]) -> np.ndarray:
        path = self.coarse[(pair.subset, pair.stem)]
        m = load_mask(path)
        check_mask_size(m.shape, shape, f"{path}: the coarse mask", of=pair.gt.name)
        return m


def _check_same_size(pair: Pair, image_hw: tuple[int, int], gt_hw: tuple[int, int]) -> None:
    if tuple(image_hw) != tuple(gt_hw):
        raise IS5NetError(
            f"{pair.image}: the image is {image_hw[1]}x{image_hw[0]} but its GT {pair.gt.name} is "
            f"{gt_hw[1]}x{gt_hw[0]} (WxH; see is5net check-data)"
        )


def _coarse_index(coarse_dir: Path, pairs_by_subset: dict[str, list[Pair]]) -> dict[tuple[str, str], Path]:
    """``(subset, stem) -> mask file`` from ``DIR/<subset>/<stem>.*`` or else ``DIR/<stem>.*``; all must exist."""
    if not coarse_dir.is_dir():
        raise IS5NetError(f"--coarse-dir {coarse_dir}: no such directory")
    from ..data.coarse import CoarseMaskFolder

    folder = CoarseMaskFolder(coarse_dir)
    found: dict[tuple[str, str], Path] = {}
    missing: list[str] = []
    for subset, pairs in pairs_by_subset.items():
        for p in pairs:
            path = folder.find(p.stem, subset=subset)
            if path is None:
                missing.append(f"{subset}/{p.stem}")
            else:
                found[(subset, p.stem)] = path
    if missing:
        more = len(missing) - _LIST_MAX
        shown = ", ".join(missing[:_LIST_MAX]) + (f", ... and {more} more" if more > 0 else "")
        raise IS5NetError(
            f"--coarse-dir {coarse_dir}: no coarse mask for {len(missing)} image(s): {shown} "
            "(expected DIR/<subset>/<stem>.png or DIR/<stem>.png)"
        )
    return found


# ---------------------------------------------------------------------------------------- run dir
def _check_run_dir(out_dir: Path, pred_root: Path, provenance: dict, resume: bool) -> None:
    has_predictions = pred_root.is_dir() and any(pred_root.iterdir())
    if not resume:
        if has_predictions:
            raise IS5NetError(
                f"{pred_root}: already holds predictions; pass --resume to reuse them, or choose "
                "another --out (runs are never mixed)"
            )
        return
    prov_path = out_dir / "provenance.json"
    if not prov_path.is_file():
        if has_predictions:
            raise IS5NetError(
                f"--resume: {out_dir} holds predictions but no provenance.json, so nothing says which "
                "run made them; choose another --out"
            )
        return
    try:
        previous = json.loads(prov_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IS5NetError(f"--resume: {prov_path} is unreadable ({exc}); choose another --out") from None
    differ = [k for k in _RUN_IDENTITY if previous.get(k) != provenance.get(k)]
    if differ:
        detail = "; ".join(f"{k}: {previous.get(k)!r} there, {provenance.get(k)!r} now" for k in differ)
        raise IS5NetError(f"--resume: {out_dir} was made by another run ({detail}); choose another --out")


def _start_run_dir(group: ProcessGroup, out_dir: Path, provenance: dict) -> None:
    """Once every rank has checked the run directory, rank 0 makes it and writes what the run is."""
    provenance["device"] = str(group.device)
    provenance["world_size"] = group.world_size
    group.barrier()  # every rank has checked the run directory before anyone writes into it
    if group.rank == 0:
        (out_dir / PREDICTIONS).mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "provenance.json", json.dumps(provenance, indent=2) + "\n")


def _reusable(pred: Path, gt: Path) -> bool:
    """A saved prediction that opens and has the GT's size (writes are atomic, so this means complete)."""
    if not pred.is_file():
        return False
    try:
        with Image.open(pred) as img:
            size = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        log.warning("%s: unreadable (%s); predicting it again", pred, exc)
        return False
    try:
        gt_size = stored_and_displayed_size(gt)[1]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False  # predicting it again reports the unreadable GT
    if size != gt_size:
        log.warning("%s: %dx%d, but its GT is %dx%d; predicting it again", pred, *size, *gt_size)
        return False
    return True


def _predict_subset(
    name: str, pairs: list[Pair], pred_dir: Path, predict_one, resume: bool, progress: bool, method: str
) -> tuple[int, int]:
    """Predict ``pairs`` into ``pred_dir`` (skipping reusable ones under ``resume``): ``(computed, reused)``."""
    from tqdm import tqdm

    pred_dir.mkdir(parents=True, exist_ok=True)
    done = reused = 0
    for pair in tqdm(
        pairs, desc=f"{method} {name}", unit="img", disable=None if progress else True, dynamic_ncols=True, leave=False
    ):
        dst = pred_dir / f"{pair.stem}.png"
        if resume and _reusable(dst, pair.gt):
            reused += 1
            continue
        save_png(dst, predict_one(pair))
        done += 1
    if reused:
        log.info("%s: reused %d saved prediction(s), computed %d", name, reused, done)
    return done, reused


# ------------------------------------------------------------------------------------- score, write
def _score(
    names, pairs_by_subset, pred_root: Path, keys, workers: int, progress: bool
) -> tuple[dict[str, dict], list[dict]]:
    """``(table rows, per-image rows)``: each subset's metrics, and every image's own numbers."""
    rows: dict[str, dict] = {}
    per_image: list[dict] = []
    for name in names:
        tasks = [(p.stem, pred_root / name / f"{p.stem}.png", p.gt) for p in pairs_by_subset[name]]
        stats = score_pairs(tasks, keys, workers=workers, progress=progress, desc=f"score {name}")
        rows[name] = M.aggregate(stats, keys)
        for (stem, pred, gt), s in zip(tasks, stats):
            per_image.append(
                {"subset": name, "stem": stem, "pred": str(pred), "gt": str(gt), **M.image_summary(s, keys)}
            )
    return table_rows(rows, keys), per_image


def _write_tables(out_dir: Path, rows: dict[str, dict], keys, provenance: dict, per_image: list[dict]) -> None:
    atomic_write_text(out_dir / "results.json", json.dumps(rows, indent=2) + "\n")
    atomic_write_text(
        out_dir / "per_image.csv", per_image_csv(per_image, metrics=keys, index=("subset", "stem", "pred", "gt"))
    )
    atomic_write_text(out_dir / "table.csv", table_csv(rows, metrics=keys, index_name="subset"))
    comment = "\n".join(f"{k}: {v}" for k, v in provenance.items() if v is not None)
    table = table_markdown(rows, metrics=keys, index_name=provenance["method"], show_n=True)
    caption = f"Boxes: {provenance['box']}." if provenance.get("box") else ""
    if provenance.get("region"):
        caption += f" Region: {provenance['region']}."
    atomic_write_text(
        out_dir / "table.md", f"<!-- is5net eval provenance\n{comment}\n-->\n\n{caption.strip()}\n\n{table}"
    )
    atomic_write_text(out_dir / "provenance.json", json.dumps(provenance, indent=2) + "\n")
