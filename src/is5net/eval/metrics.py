"""The DIS metrics (the paper's Table I), computed per image and aggregated like ``pysodmetrics``.

Six metrics, the paper's columns, each under a fixed key:

========  =====================================================================================
key       metric
========  =====================================================================================
``maxF``  max F-measure, β² = 0.3: the max over the 256 thresholds of the F curve averaged over
          images (``pysodmetrics`` ``Fmeasure(beta=0.3)`` / ``FmeasureHandler(beta=0.3)``) — not
          the mean of per-image maxima.
``wF``    weighted F-measure (``WeightedFmeasure``, its default β = 1, as the literature).
``MAE``   mean absolute error (``MAE``).
``Sm``    S-measure, α = 0.5 (``Smeasure``).
``meanEm`` mean E-measure: the mean over thresholds of the E curve averaged over images
          (``Emeasure``).
``HCE``   human correction effort HCEγ, the official DIS definition (``relax_HCE`` in the DIS
          repository's ``hce_metric_main.py``): relax = 5, RDP epsilon = 2.0, GT *and* prediction
          binarised at ``> 128`` of the raw 8-bit maps, GT skeleton from
          ``skimage.morphology.skeletonize(gt > 128)``. Mean over images of the per-image count.
========  =====================================================================================

Extras (cheap, off the same statistics): ``meanF`` (mean over thresholds of the mean F curve, the
literature's "meanF"), ``maxEm`` (max over thresholds of the mean E curve) and ``mIoU`` (mean over
images of the IoU of ``pred >= 128`` — i.e. ``> 0.5`` of 255 on the *raw* map, no min-max
normalisation — against ``gt > 128``; an image where both are empty has IoU 1).

Input convention: ``pred`` and ``gt`` are ``HxW`` maps given as uint8 0..255 (used as is), bool (→ 0/255),
float in [0, 1] (→ ``(x * 255).astype(uint8)``, truncated as the DIS code saves maps), or integer 0/1 label maps (→ 0/255); see
:func:`is5net.io.mask_to_uint8`. Everything is then fed to ``pysodmetrics`` as uint8 0..255 for both
prediction and GT: given a *boolean* GT, ``pysodmetrics`` would binarise it at ``> 128`` and silently score
against an empty GT (maxF 0), which this conversion rules out.

``pysodmetrics`` (with its default ``normalize=True``) min-max normalises each prediction to [0, 1] before the
first five metrics (MATLAB ``mapminmax``), as the SOD/DIS evaluation toolboxes do; a constant prediction is
left as is. Its ``HumanCorrectionEffortMeasure`` does the same by default and then thresholds the
*normalised* map at 0.5, which disagrees with the official HCE (e.g. a prediction whose maximum is 100 is
empty for ``relax_HCE`` but not after normalisation). Here it is stepped with ``pred = (raw > 128)`` as a
float array and ``normalize=False`` (it then refuses uint8), which follows ``relax_HCE`` step for step.

Per-image work and aggregation are split so a folder can be scored in worker processes:
:func:`compute_image_metrics` returns the per-image statistics ``pysodmetrics`` accumulates (the 256-point F
and E curves, the scalars), :func:`aggregate` averages them over images exactly as ``pysodmetrics``'
``get_results`` does, and :class:`DISMetrics` wraps both behind a ``step`` / ``results`` interface.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence, Union

import numpy as np
import py_sod_metrics as sod

from ..defaults import ALL_METRICS, EXTRA_METRICS, PAPER_METRICS  # noqa: F401  (owned here, written there)
from ..errors import IS5NetError
from ..io import mask_to_uint8

#: Which metrics are better when lower (the rest are better when higher).
LOWER_IS_BETTER = frozenset({"MAE", "HCE"})

#: HCE parameters of the official DIS evaluation.
HCE_RELAX = 5
HCE_EPSILON = 2.0
#: Binarisation of the raw 8-bit maps: GT (all metrics) and prediction (HCE) are ``> 128``.
GT_THRESHOLD = 128
HCE_PRED_THRESHOLD = 128
#: mIoU binarises the raw prediction at ``>= 128`` (``> 0.5`` of 255).
IOU_PRED_THRESHOLD = 128

# statistic -> the metrics that need it
_NEEDS = {
    "fm_curve": ("maxF", "meanF"),
    "em_curve": ("meanEm", "maxEm"),
    "wF": ("wF",),
    "MAE": ("MAE",),
    "Sm": ("Sm",),
    "HCE": ("HCE",),
    "IoU": ("mIoU",),
}

MetricsArg = Union[None, str, Iterable[str]]


def resolve_metrics(metrics: MetricsArg = None) -> tuple[str, ...]:
    """Normalise a metric selection to a tuple of keys in :data:`ALL_METRICS` order.

    ``None`` or ``"all"`` → every metric; ``"paper"`` → the six of Table I; otherwise a comma-separated string
    or an iterable of keys (case-insensitive, e.g. ``"maxf,mae"``). Unknown names raise :class:`IS5NetError`.
    """
    if metrics is None:
        return ALL_METRICS
    if isinstance(metrics, str):
        names = [m.strip() for m in metrics.split(",") if m.strip()]
    else:
        names = [str(m).strip() for m in metrics]
    lower = {k.lower(): k for k in ALL_METRICS}
    chosen: set[str] = set()
    unknown = []
    for name in names:
        key = name.lower()
        if key == "all":
            chosen.update(ALL_METRICS)
        elif key == "paper":
            chosen.update(PAPER_METRICS)
        elif key in lower:
            chosen.add(lower[key])
        else:
            unknown.append(name)
    if unknown:
        raise IS5NetError(
            f"unknown metric(s) {', '.join(repr(u) for u in unknown)}; "
            f"choose from {', '.join(ALL_METRICS)} (or 'all', 'paper')"
        )
    if not chosen:
        raise IS5NetError(f"no metric selected; choose from {', '.join(ALL_METRICS)}")
    return tuple(k for k in ALL_METRICS if k in chosen)


def _needed_stats(metrics: Sequence[str]) -> list[str]:
    return [stat for stat, users in _NEEDS.items() if any(m in metrics for m in users)]


def as_uint8_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Both maps as ``HxW`` uint8 0..255 (see the module docstring), with equal shapes."""
    pred_u8 = mask_to_uint8(pred)
    gt_u8 = mask_to_uint8(gt)
    if pred_u8.shape != gt_u8.shape:
        raise IS5NetError(
            f"prediction is {pred_u8.shape[1]}x{pred_u8.shape[0]} (WxH) but the GT is {gt_u8.shape[1]}x{gt_u8.shape[0]}"
        )
    return pred_u8, gt_u8


def hce(pred, gt, relax: int = HCE_RELAX, epsilon: float = HCE_EPSILON) -> int:
    """Human correction effort of one image, as the official DIS ``relax_HCE`` counts it.

    ``pred`` and ``gt`` are ``HxW`` (uint8 0..255, bool, float [0, 1]; converted as in the module docstring).
    Both are binarised at ``> 128``; returns FP + FN polygon control points + independent regions (an int).
    """
    pred_u8, gt_u8 = as_uint8_pair(pred, gt)
    return _hce_uint8(pred_u8, gt_u8, relax, epsilon)


def _hce_uint8(pred_u8: np.ndarray, gt_u8: np.ndarray, relax: int = HCE_RELAX, epsilon: float = HCE_EPSILON) -> int:
    meter = sod.HumanCorrectionEffortMeasure(relax=relax, epsilon=epsilon)
    # normalize=False: no min-max normalisation; pysodmetrics then thresholds at 0.5, so a 0/1 float map
    # reproduces relax_HCE's ``raw > 128``. The GT must be boolean in that mode.
    meter.step((pred_u8 > HCE_PRED_THRESHOLD).astype(np.float64), gt_u8 > GT_THRESHOLD, normalize=False)
    return int(round(float(meter.get_results()["hce"])))


def iou(pred, gt) -> float:
    """IoU of ``pred >= 128`` (raw 8-bit map) against ``gt > 128``; 1.0 when both are empty."""
    pred_u8, gt_u8 = as_uint8_pair(pred, gt)
    return _iou_uint8(pred_u8, gt_u8)


def _iou_uint8(pred_u8: np.ndarray, gt_u8: np.ndarray) -> float:
    p = pred_u8 >= IOU_PRED_THRESHOLD
    g = gt_u8 > GT_THRESHOLD
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & g) / union)


def compute_image_metrics(pred, gt, metrics: MetricsArg = None) -> dict:
    """Per-image statistics for the selected metrics (what ``pysodmetrics`` accumulates per ``step``).

    Args:
        pred: ``HxW`` prediction: uint8 0..255 (as written by ``is5net predict``), bool, or float in [0, 1].
        gt: ``HxW`` ground truth, same conventions, same shape; binarised at ``> 128``.
        metrics: selection as for :func:`resolve_metrics`.

    Returns:
        A dict with some of: ``fm_curve`` / ``em_curve`` (float64 arrays of 256, thresholds 255 → 0, as
        ``pysodmetrics``' dynamic curves), ``wF``, ``MAE``, ``Sm``, ``IoU`` (floats), ``HCE`` (int).
        Picklable; feed a list of them to :func:`aggregate`, or use :func:`image_summary` for per-image numbers.
    """
    keys = resolve_metrics(metrics)
    pred_u8, gt_u8 = as_uint8_pair(pred, gt)
    need = _needed_stats(keys)
    out: dict = {}
    if "fm_curve" in need:
        fm = sod.FmeasureV2({"fm": sod.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3)})
        fm.step(pred_u8, gt_u8)
        out["fm_curve"] = np.asarray(fm.get_results()["fm"]["dynamic"], dtype=np.float64)
    if "em_curve" in need:
        em = sod.Emeasure()
        em.step(pred_u8, gt_u8)
        out["em_curve"] = np.asarray(em.get_results()["em"]["curve"], dtype=np.float64)
    if "wF" in need:
        wfm = sod.WeightedFmeasure()
        wfm.step(pred_u8, gt_u8)
        out["wF"] = float(wfm.get_results()["wfm"])
    if "MAE" in need:
        mae = sod.MAE()
        mae.step(pred_u8, gt_u8)
        out["MAE"] = float(mae.get_results()["mae"])
    if "Sm" in need:
        sm = sod.Smeasure(alpha=0.5)
        sm.step(pred_u8, gt_u8)
        out["Sm"] = float(sm.get_results()["sm"])
    if "HCE" in need:
        out["HCE"] = _hce_uint8(pred_u8, gt_u8)
    if "IoU" in need:
        out["IoU"] = _iou_uint8(pred_u8, gt_u8)
    return out


def image_summary(stats: Mapping, metrics: MetricsArg = None) -> dict[str, float]:
    """One image's own numbers (for a per-image CSV): its curves reduced by max / mean.

    ``maxF`` here is the image's own maximum over thresholds; the dataset ``maxF`` from :func:`aggregate` is
    the maximum of the *averaged* curve, so the mean of this column is not the dataset number.
    """
    keys = resolve_metrics(metrics)
    row: dict[str, float] = {}
    for k in keys:
        if k == "maxF":
            row[k] = float(np.max(stats["fm_curve"]))
        elif k == "meanF":
            row[k] = float(np.mean(stats["fm_curve"]))
        elif k == "meanEm":
            row[k] = float(np.mean(stats["em_curve"]))
        elif k == "maxEm":
            row[k] = float(np.max(stats["em_curve"]))
        elif k == "mIoU":
            row[k] = float(stats["IoU"])
        elif k == "HCE":
            row[k] = int(stats["HCE"])
        else:
            row[k] = float(stats[k])
    return row


def aggregate(per_image: Sequence[Mapping], metrics: MetricsArg = None) -> dict[str, float]:
    """Dataset numbers from per-image statistics, averaged over images as ``pysodmetrics`` does.

    Curves are averaged over images first (float64, in the given order), then reduced: ``maxF`` / ``maxEm``
    the max, ``meanF`` / ``meanEm`` the mean over the 256 thresholds. Scalars are plain means. Returns floats
    keyed by metric, plus ``n`` (the number of images). Raises :class:`IS5NetError` on an empty list.
    """
    keys = resolve_metrics(metrics)
    if len(per_image) == 0:
        raise IS5NetError("no images to score")
    out: dict[str, float] = {}

    def mean_curve(name: str) -> np.ndarray:
        return np.mean(np.array([s[name] for s in per_image], dtype=np.float64), axis=0)

    def mean_scalar(name: str) -> float:
        return float(np.mean(np.array([s[name] for s in per_image], dtype=np.float64)))

    fm = mean_curve("fm_curve") if any(k in keys for k in _NEEDS["fm_curve"]) else None
    em = mean_curve("em_curve") if any(k in keys for k in _NEEDS["em_curve"]) else None
    for k in keys:
        if k == "maxF":
            out[k] = float(np.max(fm))
        elif k == "meanF":
            out[k] = float(np.mean(fm))
        elif k == "meanEm":
            out[k] = float(np.mean(em))
        elif k == "maxEm":
            out[k] = float(np.max(em))
        elif k == "mIoU":
            out[k] = mean_scalar("IoU")
        else:
            out[k] = mean_scalar(k)
    out["n"] = len(per_image)
    return out


class DISMetrics:
    """Accumulate the DIS metrics over images, like a ``pysodmetrics`` meter.

    >>> m = DISMetrics()                 # or DISMetrics(["maxF", "MAE"]) / DISMetrics("paper")
    >>> for pred, gt in pairs:           # HxW uint8 0..255 (bool / float [0, 1] converted)
    ...     m.step(pred, gt)
    >>> m.results()                      # {"maxF": ..., "wF": ..., ..., "n": len(pairs)}

    ``add(stats)`` takes statistics already computed by :func:`compute_image_metrics` (e.g. in a worker).
    """

    def __init__(self, metrics: MetricsArg = None):
        self.metrics = resolve_metrics(metrics)
        self.per_image: list[dict] = []

    def step(self, pred, gt) -> dict[str, float]:
        """Score one image; returns its own numbers (see :func:`image_summary`)."""
        stats = compute_image_metrics(pred, gt, self.metrics)
        self.add(stats)
        return image_summary(stats, self.metrics)

    def add(self, stats: Mapping) -> None:
        self.per_image.append(dict(stats))

    def __len__(self) -> int:
        return len(self.per_image)

    def results(self) -> dict[str, float]:
        """Dataset numbers keyed by metric, plus ``n``; see :func:`aggregate`."""
        return aggregate(self.per_image, self.metrics)
