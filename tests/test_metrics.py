"""DIS metrics: equal to pysodmetrics called directly; HCE as the official relax_HCE counts it."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import py_sod_metrics as sod
import pytest
from scipy import ndimage as ndi
from skimage import data, draw, filters, morphology

from is5net.errors import IS5NetError
from is5net.eval import metrics as M

# ----------------------------------------------------------------------------------------- fixtures


def horse_gt() -> np.ndarray:
    """skimage's horse silhouette (328x400), horse = foreground, as uint8 0/255."""
    return (~data.horse()).astype(np.uint8) * 255


def shapes_gt() -> np.ndarray:
    """A drawn 160x160 GT: a disk, a rectangle, a thin curve and a one-pixel line."""
    gt = np.zeros((160, 160), np.uint8)
    rr, cc = draw.disk((50, 50), 28)
    gt[rr, cc] = 255
    gt[95:140, 20:70] = 255
    rr, cc = draw.bezier_curve(90, 150, 20, 100, 150, 120, 2, shape=gt.shape)
    gt[rr, cc] = 255
    gt = np.maximum(gt, morphology.dilation(gt, morphology.disk(1)) * (gt == 0))  # thicken the curve a bit
    rr, cc = draw.line(5, 5, 5, 150)
    gt[rr, cc] = 255
    return gt


def perturbations(gt: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    fg = gt > 128
    return {
        "perfect": gt.copy(),
        "blurred": np.round(filters.gaussian(gt / 255.0, sigma=3) * 255).astype(np.uint8),
        "eroded": morphology.binary_erosion(fg, morphology.disk(3)).astype(np.uint8) * 255,
        "dilated": morphology.binary_dilation(fg, morphology.disk(4)).astype(np.uint8) * 255,
        "noisy": np.clip(gt.astype(int) + rng.integers(-100, 100, gt.shape), 0, 255).astype(np.uint8),
        "dimmed": (gt * 0.4).astype(np.uint8),  # max 102: empty once binarised at > 128
        "shifted": np.roll(gt, (6, -9), axis=(0, 1)),
        "all_zero": np.zeros_like(gt),
        "all_one": np.full_like(gt, 255),
    }


def pysod_direct(pairs) -> dict[str, float]:
    """The six + extras computed with pysodmetrics' classic meters, fed uint8 0..255 as documented."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure announces its future removal
        fm = sod.Fmeasure(beta=0.3)
    em, wfm, mae, sm = sod.Emeasure(), sod.WeightedFmeasure(), sod.MAE(), sod.Smeasure(alpha=0.5)
    for p, g in pairs:
        for meter in (fm, em, wfm, mae, sm):
            meter.step(p, g)
    f_curve = fm.get_results()["fm"]["curve"]
    e_curve = em.get_results()["em"]["curve"]
    return {
        "maxF": float(f_curve.max()),
        "meanF": float(f_curve.mean()),
        "wF": float(wfm.get_results()["wfm"]),
        "MAE": float(mae.get_results()["mae"]),
        "Sm": float(sm.get_results()["sm"]),
        "meanEm": float(e_curve.mean()),
        "maxEm": float(e_curve.max()),
    }


# ----------------------------------------------------------------------- equality with pysodmetrics


@pytest.fixture(scope="module")
def pairs():
    out = []
    for gt in (horse_gt(), shapes_gt()):
        for pred in perturbations(gt).values():
            out.append((pred, gt))
    return out


@pytest.fixture(scope="module")
def ours(pairs):
    m = M.DISMetrics()
    for p, g in pairs:
        m.step(p, g)
    return m


def test_aggregates_equal_pysodmetrics_direct(pairs, ours):
    res = ours.results()
    ref = pysod_direct(pairs)
    assert res["n"] == len(pairs) == 18
    for k, v in ref.items():
        assert res[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert set(res) == set(M.ALL_METRICS) | {"n"}


def test_maxf_is_max_of_mean_curve_not_mean_of_maxima(pairs, ours):
    per_image_max = [M.image_summary(s)["maxF"] for s in ours.per_image]
    # the data set makes the two definitions differ, so this would catch the wrong aggregation
    assert abs(np.mean(per_image_max) - ours.results()["maxF"]) > 1e-3
    assert ours.results()["maxF"] == pytest.approx(pysod_direct(pairs)["maxF"], rel=1e-12)


def test_single_images_match_pysod(pairs):
    for p, g in pairs[:9]:
        row = M.DISMetrics().step(p, g)
        ref = pysod_direct([(p, g)])
        for k, v in ref.items():
            assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_known_values_on_simple_cases():
    gt = shapes_gt()
    perfect = M.DISMetrics().step(gt, gt)
    assert perfect["MAE"] == 0.0 and perfect["HCE"] == 0 and perfect["mIoU"] == 1.0
    assert perfect["maxF"] == pytest.approx(1.0) and perfect["Sm"] == pytest.approx(1.0)
    assert perfect["wF"] == pytest.approx(1.0, abs=1e-9)
    inverted = M.DISMetrics().step(255 - gt, gt)
    assert inverted["MAE"] == 1.0 and inverted["mIoU"] == 0.0 and inverted["wF"] == pytest.approx(0.0, abs=1e-9)
    zero = M.DISMetrics().step(np.zeros_like(gt), gt)
    assert zero["MAE"] == pytest.approx(np.mean(gt > 128)) and zero["wF"] == 0.0


def test_boolean_and_float_inputs_are_converted():
    gt = horse_gt()
    pred = perturbations(gt)["blurred"]
    ref = M.DISMetrics()
    ref.step(pred, gt)
    via_bool = M.DISMetrics()
    via_bool.step(pred, gt > 128)  # a boolean GT: pysodmetrics alone would binarise it at > 128 -> empty
    assert via_bool.results() == ref.results()
    via_float = M.DISMetrics()
    via_float.step(pred / 255.0, (gt > 128).astype(np.float32))
    assert via_float.results() == ref.results()
    # what the guard protects against: pysodmetrics fed a boolean GT silently scores maxF 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = sod.Fmeasure()
    naive.step(pred, gt > 128)
    assert naive.get_results()["fm"]["curve"].max() == 0.0
    assert ref.results()["maxF"] > 0.9


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(IS5NetError, match="GT"):
        M.compute_image_metrics(np.zeros((10, 12), np.uint8), np.zeros((12, 10), np.uint8))


def test_step_and_add_paths_agree(pairs, ours):
    m = M.DISMetrics()
    for p, g in pairs:
        m.add(M.compute_image_metrics(p, g))
    assert m.results() == ours.results()


# ------------------------------------------------------------------------------------ metric subsets


def test_resolve_metrics():
    assert M.resolve_metrics(None) == M.ALL_METRICS
    assert M.resolve_metrics("paper") == ("maxF", "wF", "MAE", "Sm", "meanEm", "HCE")
    assert M.resolve_metrics("mae, MAXF") == ("maxF", "MAE")  # case-insensitive, canonical order
    assert M.resolve_metrics(["HCE", "maxEm"]) == ("HCE", "maxEm")
    with pytest.raises(IS5NetError, match="unknown metric.*'Fmax'"):
        M.resolve_metrics("maxF,Fmax")
    with pytest.raises(IS5NetError):
        M.resolve_metrics("")


def test_subset_computes_only_what_is_asked(pairs, ours):
    stats = M.compute_image_metrics(*pairs[1], metrics="MAE,meanF")
    assert set(stats) == {"MAE", "fm_curve"}
    m = M.DISMetrics(["MAE", "meanF"])
    for p, g in pairs:
        m.step(p, g)
    res = m.results()
    assert set(res) == {"MAE", "meanF", "n"}
    assert res["MAE"] == ours.results()["MAE"] and res["meanF"] == ours.results()["meanF"]


# ------------------------------------------------------------------------------------------------ IoU


def test_iou_thresholds():
    gt = np.zeros((4, 4), np.uint8)
    gt[:2] = 255  # 8 foreground pixels
    gt[0, 0] = 128  # not foreground: GT is > 128
    pred = np.zeros((4, 4), np.uint8)
    pred[:2] = 128  # counts: prediction is >= 128
    pred[1, 3] = 127  # does not count
    # pred fg = 7 pixels (row 0 and row 1 minus [1,3]); gt fg = 7 pixels (rows 0-1 minus [0,0])
    # intersection = 6, union = 8
    assert M.iou(pred, gt) == pytest.approx(6 / 8)
    assert M.iou(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8)) == 1.0
    assert M.iou(np.full((3, 3), 255, np.uint8), np.zeros((3, 3), np.uint8)) == 0.0


# ------------------------------------------------------------------------------------------------ HCE

_CROSS = ndi.generate_binary_structure(2, 1)  # == skimage disk(1), the official structuring element


def _rdp_points(run: list, eps: float) -> int:
    # The official definition counts the vertices cv2.approxPolyDP keeps (open curve); use the same primitive.
    return len(cv2.approxPolyDP(np.array(run, np.int32).reshape(-1, 1, 2), eps, False))


def _effort(region: np.ndarray, touching: np.ndarray, eps: float) -> int:
    """Control points of the boundary runs of ``region`` that touch ``touching`` + untouched components."""
    near = ndi.binary_dilation(touching, _CROSS)
    labels, n_regions = ndi.label(region, structure=np.ones((3, 3)))
    edited = set()
    used = np.zeros(region.shape, bool)
    points = 0
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    for contour in contours:
        runs = [[]]
        for x, y in contour[:, 0, :]:
            if near[y, x] and not used[y, x]:
                runs[-1].append((int(x), int(y)))
                used[y, x] = True
                edited.add(labels[y, x])
            elif runs[-1]:
                runs.append([])
        runs = [r for r in runs if r]
        if len(runs) > 1:
            (x0, y0), (x1, y1) = runs[0][0], runs[-1][-1]
            if max(abs(x0 - x1), abs(y0 - y1)) == 1:  # the last run continues into the first one
                runs[-1] = runs[-1] + runs[0][::-1]
                runs.pop(0)
        points += sum(_rdp_points(r, eps) for r in runs)
    return points + (n_regions - len(edited))


def reference_hce(pred_u8: np.ndarray, gt_u8: np.ndarray, relax: int = 5, eps: float = 2.0) -> int:
    """A direct reading of the DIS paper's relax_HCE, written with scipy.ndimage instead of OpenCV morphology."""
    g = gt_u8 > 128
    p = pred_u8 > 128
    tp, fp, fn = g & p, p & ~g, g & ~p
    skeleton = morphology.skeletonize(g)
    # OpenCV erodes with the outside counted as foreground: border_value=1
    core = ndi.binary_erosion(g | p, _CROSS, iterations=relax, border_value=1)
    fp_keep = fp & core
    for _ in range(relax):
        fp_keep = ndi.binary_dilation(fp_keep, _CROSS) & ~g
    fp_keep &= fp
    fn_keep = fn & core
    for _ in range(relax):
        fn_keep = ndi.binary_dilation(fn_keep, _CROSS) & ~p
    fn_keep = (fn_keep & fn) | (skeleton & ~tp)
    return _effort(fp_keep, tp | fn_keep, eps) + _effort(fn_keep, ~(tp | fp_keep | fn_keep), eps)


def random_blob_pair(seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = filters.gaussian(rng.random((size, size)), sigma=rng.uniform(2, 6))
    gt = (noise > np.quantile(noise, rng.uniform(0.4, 0.8))).astype(np.uint8) * 255
    pred_soft = filters.gaussian(gt / 255.0 + rng.normal(0, 0.6, gt.shape), sigma=rng.uniform(0.5, 2))
    pred = np.round(np.clip(pred_soft, 0, 1) * 255).astype(np.uint8)
    return pred, gt


def test_hce_of_perfect_prediction_is_zero():
    for gt in (horse_gt(), shapes_gt()):
        assert M.hce(gt, gt) == 0
        assert M.hce(np.where(gt > 128, 200, 40).astype(np.uint8), gt) == 0  # any map with the same > 128 set


def _blobs_and_lines():
    """GT: four isolated disk(2) blobs (skeleton: one pixel each), three straight 1-px lines, one thick square."""
    gt = np.zeros((160, 160), np.uint8)
    blobs = [(20, 20), (20, 60), (20, 100), (20, 140)]
    for r, c in blobs:
        gt[r - 2 : r + 3, c - 2 : c + 3][morphology.disk(2) > 0] = 255
    lines = [(60, 10, 60, 50), (60, 70, 60, 120), (90, 10, 130, 10)]
    for line in lines:
        gt[draw.line(*line)] = 255
    gt[100:140, 40:80] = 255
    return gt, blobs, lines


def test_hce_counts_of_hand_made_cases():
    gt, blobs, lines = _blobs_and_lines()
    assert morphology.skeletonize(morphology.disk(2) > 0).sum() == 1  # premise of the counts below
    # A missing isolated blob: the relaxed FN erodes away, its 1-pixel skeleton stays -> one control point.
    for m in range(len(blobs) + 1):
        pred = gt.copy()
        for r, c in blobs[:m]:
            pred[r - 2 : r + 3, c - 2 : c + 3] = 0
        assert M.hce(pred, gt) == m
    # A missing straight 1-px line: its skeleton is the line -> a polyline of two control points.
    for k in range(len(lines) + 1):
        pred = gt.copy()
        for line in lines[:k]:
            pred[draw.line(*line)] = 0
        assert M.hce(pred, gt) == 2 * k
    # False positives thinner than the relaxation vanish; a big isolated one is one independent region.
    pred = gt.copy()
    pred[140:150, 100:110] = 255
    pred[100:108, 150:158] = 255
    assert M.hce(pred, gt) == 0
    pred[95:135, 100:140] = 255
    assert M.hce(pred, gt) == 1
    # All together: 2 blobs (2) + 1 line (2) + the big FP region (1)
    for r, c in blobs[:2]:
        pred[r - 2 : r + 3, c - 2 : c + 3] = 0
    pred[draw.line(*lines[0])] = 0
    assert M.hce(pred, gt) == 5
    assert reference_hce(pred, gt) == 5


def test_hce_boundary_errors_within_relax_are_free():
    gt = np.zeros((160, 160), np.uint8)
    gt[draw.disk((80, 80), 30)] = 255
    for r in (1, 2, 3, 4):
        assert M.hce(morphology.dilation(gt, morphology.disk(r)), gt) == 0
        assert M.hce(morphology.erosion(gt, morphology.disk(r)), gt) == 0
    assert M.hce(morphology.dilation(gt, morphology.disk(6)), gt) > 0
    assert M.hce(morphology.erosion(gt, morphology.disk(6)), gt) > 0


def test_hce_agrees_with_independent_reimplementation():
    cases = []
    for gt in (horse_gt(), shapes_gt(), _blobs_and_lines()[0]):
        cases += [(p, gt) for p in perturbations(gt, seed=1).values()]
    cases += [random_blob_pair(s) for s in range(12)]
    values = []
    for pred, gt in cases:
        ours = M.hce(pred, gt)
        assert ours == reference_hce(pred, gt)
        values.append(ours)
    assert len(set(values)) > 10  # the cases exercise many different counts, not just 0


def test_hce_uses_raw_threshold_not_pysod_default():
    gt = horse_gt()
    dimmed = perturbations(gt)["dimmed"]  # max 102 -> empty at > 128
    ours = M.hce(dimmed, gt)
    assert ours == M.hce(np.zeros_like(gt), gt) == reference_hce(dimmed, gt) > 0
    default = sod.HumanCorrectionEffortMeasure()  # min-max normalises first: the dimmed map becomes perfect
    default.step(dimmed, gt)
    assert default.get_results()["hce"] == 0
    # a map at 129 inside and 128 outside is perfect for the official definition (> 128 of the raw map)
    assert M.hce(np.where(gt > 128, 129, 128).astype(np.uint8), gt) == 0
    # one at 127 inside and 87 outside is an empty prediction for it, yet perfect once min-max normalised
    low = np.where(gt > 128, 127, 87).astype(np.uint8)
    assert M.hce(low, gt) == M.hce(np.zeros_like(gt), gt)
    default = sod.HumanCorrectionEffortMeasure()
    default.step(low, gt)
    assert default.get_results()["hce"] == 0


def test_hce_mean_over_images():
    gt, blobs, _ = _blobs_and_lines()
    one_missing = gt.copy()
    one_missing[18:23, 18:23] = 0
    m = M.DISMetrics("HCE")
    assert m.step(gt, gt) == {"HCE": 0}
    assert m.step(one_missing, gt) == {"HCE": 1}
    assert m.results() == {"HCE": 0.5, "n": 2}
