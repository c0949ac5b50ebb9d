"""Known-answer and brute-force tests of FemurSegLib.metrics."""

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from FemurSegLib import metrics as M
from FemurSegLib.errors import InputError

nan = math.nan


def same(a: float, b: float) -> bool:
    """Equal, with NaN == NaN and inf == inf."""
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# Overlap: counts by eye


OVERLAP_CASES = [
    # pred, ref, (tp, fp, fn, tn), dice, precision, recall, specificity
    pytest.param([1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0], (2, 1, 1, 2), 2 / 3, 2 / 3, 2 / 3, 2 / 3,
                 id="1d"),
    pytest.param([[1, 1, 1], [1, 0, 0]], [[0, 1, 0], [0, 1, 0]], (1, 3, 1, 1), 1 / 3, 1 / 4, 1 / 2,
                 1 / 4, id="2d"),
    pytest.param(np.ones((2, 2, 2)), np.pad([[[1]]], ((0, 1), (0, 1), (0, 1))), (1, 7, 0, 0),
                 2 / 9, 1 / 8, 1.0, 0.0, id="3d-all-predicted"),
    # Empty-mask conventions
    pytest.param([0, 0, 0, 0], [0, 0, 0, 0], (0, 0, 0, 4), 1.0, nan, nan, 1.0, id="both-empty"),
    pytest.param([0, 0, 0, 0], [1, 0, 0, 0], (0, 0, 1, 3), 0.0, nan, 0.0, 1.0, id="pred-empty"),
    pytest.param([1, 0, 0, 0], [0, 0, 0, 0], (0, 1, 0, 3), 0.0, 0.0, nan, 3 / 4, id="ref-empty"),
    pytest.param([1, 1, 0, 0], [1, 1, 1, 1], (2, 0, 2, 0), 2 / 3, 1.0, 0.5, nan,
                 id="ref-all-foreground"),
]


@pytest.mark.parametrize("pred, ref, counts, dsc, prec, rec, spec", OVERLAP_CASES)
def test_overlap_known_answers(pred, ref, counts, dsc, prec, rec, spec):
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    assert M.confusion(pred, ref) == counts
    assert same(M.dice(pred, ref), dsc)
    assert same(M.precision(pred, ref), prec)
    assert same(M.recall(pred, ref), rec)
    assert same(M.specificity(pred, ref), spec)


def test_nonzero_integer_labels_are_foreground():
    assert M.confusion(np.array([0, 2, 1, 0]), np.array([3, 1, 0, 0], dtype=np.uint8)) == (1, 1, 1, 1)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(InputError, match=r"^prediction shape \(3,\) does not match reference "
                                         r"shape \(4,\)$"):
        M.dice(np.zeros(3, bool), np.zeros(4, bool))


def test_volume_ml():
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask[:2, :5, :5] = True  # 50 voxels of 2 x 2.5 x 4 = 20 mm3 -> 1000 mm3
    assert M.volume_ml(mask, (2.0, 2.5, 4.0)) == pytest.approx(1.0)
    assert M.volume_ml(np.zeros((2, 2, 2)), (1, 1, 1)) == 0.0


@pytest.mark.parametrize("spacing, message", [
    ((1.0, 1.0), r"^spacing \(1\.0, 1\.0\) has 2 values; the masks have 3 axes$"),
    ((1.0, 0.0, 1.0), r"^spacing must be positive and finite, not \(1\.0, 0\.0, 1\.0\)$"),
    ((1.0, nan, 1.0), r"^spacing must be positive and finite"),
])
def test_bad_spacing(spacing, message):
    cube = np.ones((2, 2, 2), bool)
    with pytest.raises(InputError, match=message):
        M.hd95(cube, cube, spacing)


def test_array_spacing_is_in_array_axis_order():
    image = sitk.Image(6, 5, 4, sitk.sitkUInt8)  # i, j, k sizes
    image.SetSpacing((0.5, 0.7, 3.0))
    assert M.array_spacing(image) == (3.0, 0.7, 0.5)
    # Two k-planes 2 slices apart are 6 mm apart.
    arr = np.zeros(sitk.GetArrayViewFromImage(image).shape, bool)
    pred, ref = arr.copy(), arr.copy()
    pred[0], ref[2] = True, True
    assert M.hd95(pred, ref, M.array_spacing(image)) == pytest.approx(6.0)


# ----------------------------------------------------------------------------------------------
# Surface distances: known answers


def _planes(shape, axis, a, b):
    pred, ref = np.zeros(shape, bool), np.zeros(shape, bool)
    np.moveaxis(pred, axis, 0)[a] = True
    np.moveaxis(ref, axis, 0)[b] = True
    return pred, ref


def _voxels(shape, *points):
    m = np.zeros(shape, bool)
    for p in points:
        m[p] = True
    return m


def _cube(shape, lo, hi):
    m = np.zeros(shape, bool)
    m[tuple(slice(lo[d], hi[d]) for d in range(len(shape)))] = True
    return m


def _center_voxel_and_cube():
    pred = _cube((5, 5, 5), (1, 1, 1), (4, 4, 4))  # 3x3x3: 26 surface voxels, 1 interior
    ref = _voxels((5, 5, 5), (2, 2, 2))
    return pred, ref


S2, S3 = math.sqrt(2), math.sqrt(3)

DISTANCE_CASES = [
    # name, pred, ref, spacing, hd95, assd
    pytest.param(*_planes((8, 5, 6), 0, 1, 4), (2.5, 0.7, 0.7), 7.5, 7.5, id="k-planes-3-apart"),
    pytest.param(*_planes((4, 5, 6), 2, 0, 2), (5.2, 0.911, 0.5), 1.0, 1.0, id="i-planes-2-apart"),
    pytest.param(_voxels((3, 4, 4), (0, 0, 0)), _voxels((3, 4, 4), (1, 2, 2)), (3.0, 1.0, 0.5),
                 math.sqrt(14), math.sqrt(14), id="voxels-oblique-offset"),
    # 2x2x2 cubes (all surface) 3 slices apart at 2 mm: distances 4 mm (x4) and 6 mm (x4) each way.
    pytest.param(_cube((7, 4, 4), (1, 1, 1), (3, 3, 3)), _cube((7, 4, 4), (4, 1, 1), (6, 3, 3)),
                 (2.0, 1.0, 1.0), 6.0, 5.0, id="cubes-offset"),
    # 3x3x3 cube against its centre voxel: the interior voxel is not surface, so cube -> centre
    # gives 6 x 1, 12 x sqrt2, 8 x sqrt3 and centre -> cube gives 1.
    pytest.param(*_center_voxel_and_cube(), (1.0, 1.0, 1.0), S3,
                 (6 + 12 * S2 + 8 * S3 + 1) / 27, id="cube-vs-centre"),
    # pred = voxels 0 and 3, ref = voxel 0: directed [0, 3] and [0]. Max of directed 95th
    # percentiles = 2.85 (pooled would be 2.7); pooled mean = 1.0 (mean of means would be 0.75).
    pytest.param(_voxels((1, 1, 5), (0, 0, 0), (0, 0, 3)), _voxels((1, 1, 5), (0, 0, 0)),
                 (1.0, 1.0, 1.0), 2.85, 1.0, id="definition-choice"),
    pytest.param(*_planes((4, 4, 4), 1, 2, 2), (1.0, 2.0, 3.0), 0.0, 0.0, id="identical"),
    # Empty-mask conventions
    pytest.param(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool), (1, 1, 1), 0.0, 0.0,
                 id="both-empty"),
    pytest.param(np.zeros((3, 3, 3), bool), np.ones((3, 3, 3), bool), (1, 1, 1), math.inf,
                 math.inf, id="pred-empty"),
    pytest.param(np.ones((3, 3, 3), bool), np.zeros((3, 3, 3), bool), (1, 1, 1), math.inf,
                 math.inf, id="ref-empty"),
]


@pytest.mark.parametrize("pred, ref, spacing, expected_hd95, expected_assd", DISTANCE_CASES)
def test_surface_distance_known_answers(pred, ref, spacing, expected_hd95, expected_assd):
    assert M.hd95(pred, ref, spacing) == pytest.approx(expected_hd95, rel=1e-12)
    assert M.assd(pred, ref, spacing) == pytest.approx(expected_assd, rel=1e-12)


def test_directed_distances_of_offset_cubes():
    pred = _cube((7, 4, 4), (1, 1, 1), (3, 3, 3))
    ref = _cube((7, 4, 4), (4, 1, 1), (6, 3, 3))
    to_ref, to_pred = M.surface_distances(pred, ref, (2.0, 1.0, 1.0))
    assert sorted(to_ref) == [4.0] * 4 + [6.0] * 4
    assert sorted(to_pred) == [4.0] * 4 + [6.0] * 4


def _brute_surface(mask):
    """Foreground voxels with a face neighbour outside the mask or outside the array."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=axis)[tuple(slice(1, -1) for _ in mask.shape)]
    return mask & ~inner


def _brute_distances(pred, ref, spacing):
    a = np.argwhere(_brute_surface(pred)) * spacing
    b = np.argwhere(_brute_surface(ref)) * spacing
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


def _random_blob(rng, shape):
    smooth = ndi.gaussian_filter(rng.random(shape), 1.0)
    return smooth > np.quantile(smooth, 0.6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    small = (6, 7, 8)
    pred, ref = _random_blob(rng, small), _random_blob(rng, small)
    spacing = np.round(rng.uniform(0.3, 5.0, size=3), 2)
    # Embed in a larger array at an offset: the bounding-box crop must not change anything.
    big_pred, big_ref = np.zeros((15, 16, 17), bool), np.zeros((15, 16, 17), bool)
    big_pred[4:10, 5:12, 3:11], big_ref[4:10, 5:12, 3:11] = pred, ref
    exp_to_ref, exp_to_pred = _brute_distances(pred, ref, spacing)
    for p, r in ((pred, ref), (big_pred, big_ref)):
        to_ref, to_pred = M.surface_distances(p, r, spacing)
        np.testing.assert_allclose(np.sort(to_ref), np.sort(exp_to_ref), rtol=1e-12)
        np.testing.assert_allclose(np.sort(to_pred), np.sort(exp_to_pred), rtol=1e-12)
        assert M.hd95(p, r, spacing) == pytest.approx(
            max(np.percentile(exp_to_ref, 95), np.percentile(exp_to_pred, 95)), rel=1e-12)
        assert M.assd(p, r, spacing) == pytest.approx(
            np.concatenate([exp_to_ref, exp_to_pred]).mean(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# evaluate_masks


def test_evaluate_masks_report():
    pred = _cube((7, 4, 4), (1, 1, 1), (3, 3, 3))
    ref = _cube((7, 4, 4), (2, 1, 1), (4, 3, 3))  # one slice (2 mm) deeper: half overlaps
    result = M.evaluate_masks(pred, ref, (2.0, 1.0, 1.0))
    assert list(result) == ["dsc", "dsc_labelled_slices", "precision", "recall", "specificity",
                            "hd95_mm", "assd_mm", "volume_pred_ml", "volume_ref_ml"]
    assert all(type(v) is float for v in result.values())
    # tp 4, fp 4, fn 4, tn 112 - 12 = 100; every surface voxel is 0 or 2 mm from the other mask.
    assert result["dsc"] == pytest.approx(0.5)
    # on the reference's slices 2 and 3 (the thick axis): tp 4, fp 0, fn 4
    assert result["dsc_labelled_slices"] == pytest.approx(8 / 12)
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.5)
    assert result["specificity"] == pytest.approx(100 / 104)
    assert result["hd95_mm"] == pytest.approx(2.0)
    assert result["assd_mm"] == pytest.approx(1.0)
    assert result["volume_pred_ml"] == pytest.approx(8 * 2.0 / 1000)
    assert result["volume_ref_ml"] == pytest.approx(8 * 2.0 / 1000)
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize("pred_slices, ref_slices, expected", [
    ([1, 2, 3], [1, 2, 3], 1.0),
    ([1, 2, 3, 4], [1, 2, 3], 1.0),           # an unlabelled end slice is not counted
    ([0, 1, 2, 3, 4], [1, 2, 3], 1.0),
    ([2], [1, 2, 3], 2 * 1 / (1 + 3)),          # missed labelled slices still count
    ([4], [1, 2, 3], 0.0),
    ([], [], 1.0),
    ([2], [], 0.0),
])
def test_dice_on_labelled_slices(pred_slices, ref_slices, expected):
    pred = np.zeros((6, 3, 3), bool)
    ref = np.zeros((6, 3, 3), bool)
    pred[pred_slices, 1, 1] = True
    ref[ref_slices, 1, 1] = True
    assert M.dice_labelled_slices(pred, ref, axis=0) == pytest.approx(expected)
    # the same along another axis
    assert M.dice_labelled_slices(pred.transpose(1, 0, 2), ref.transpose(1, 0, 2),
                                  axis=1) == pytest.approx(expected)


@pytest.mark.parametrize("spacing, axis", [((5.2, 0.9, 0.9), 0), ((0.9, 5.2, 0.9), 1),
                                            ((1.0, 1.0, 1.0), 0)])
def test_slice_axis_is_the_thickest(spacing, axis):
    assert M.slice_axis(spacing) == axis


def test_evaluate_masks_empty_prediction():
    ref = _cube((3, 3, 3), (0, 0, 0), (2, 2, 2))
    result = M.evaluate_masks(np.zeros_like(ref), ref, (1.0, 1.0, 1.0))
    assert result["dsc"] == 0.0 and result["recall"] == 0.0
    assert math.isnan(result["precision"])
    assert result["hd95_mm"] == math.inf and result["assd_mm"] == math.inf
    assert result["volume_pred_ml"] == 0.0


# ----------------------------------------------------------------------------------------------
# ROC and precision-recall: known answers

# Positives 0.9, 0.8, 0.6; negatives 0.8, 0.4, 0.4. Of the 9 positive/negative pairs 7 are won
# and 1 is tied -> AUC 7.5/9. PR points: (1, 1/3) at 0.9, (2/3, 2/3) at 0.8, (3/4, 1) at 0.6,
# (1/2, 1) at 0.4 -> AP = 1/3 + 2/9 + 1/4 = 29/36; nearest to (1, 1) is (3/4, 1) at 0.6.
SCORES_A = [0.9, 0.8, 0.8, 0.6, 0.4, 0.4]
LABELS_A = [1, 1, 0, 1, 0, 0]

# 25 positives, 17 negatives. 15 positives at 0.9; a tied group of 3 positives and 7 negatives
# at 0.7; 7 positives and 10 negatives at 0.2. PR points (1, 0.6) at distance 0.4 from (1, 1),
# (0.72, 0.72) at 0.396 and (25/42, 1) at 0.405: the rule picks 0.7 (max F1 would pick 0.9).
SCORES_B = [0.9] * 15 + [0.7] * 10 + [0.2] * 17
LABELS_B = [1] * 15 + [1] * 3 + [0] * 7 + [1] * 7 + [0] * 10

PROB_CASES = [
    # scores, labels, auc, ap, (threshold, precision, recall)
    pytest.param(SCORES_A, LABELS_A, 7.5 / 9, 29 / 36, (0.6, 0.75, 1.0), id="ties"),
    pytest.param(SCORES_B, LABELS_B, (15 * 17 + 3 * 13.5 + 7 * 5) / (25 * 17),
                 0.6 + 0.12 * 0.72 + 0.28 * 25 / 42, (0.7, 0.72, 0.72), id="nearest-not-max-f1"),
    pytest.param([0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1], 1.0, 1.0, (0.7, 1.0, 1.0), id="separable"),
    pytest.param([0.5] * 4, [1, 0, 1, 0], 0.5, 0.5, (0.5, 0.5, 1.0), id="all-tied"),
    pytest.param([0.9, 0.1], [0, 1], 0.0, 0.5, (0.1, 0.5, 1.0), id="inverted"),
    # Distances 0.5 at 0.9 and at 0.1: the higher threshold wins.
    pytest.param([0.9, 0.5, 0.5, 0.1], [1, 0, 0, 1], 0.5, 0.5 + 0.5 * 0.5, (0.9, 1.0, 0.5),
                 id="tie-in-distance"),
    # Integer scores: (P, R) = (1, 1/2) at 3, (2/3, 1) at 2, (1/2, 1) at 1.
    pytest.param([3, 1, 2, 2], [1, 0, 1, 0], 3.5 / 4, 0.5 * 1 + 0.5 * 2 / 3, (2.0, 2 / 3, 1.0),
                 id="integer-scores"),
]


@pytest.mark.parametrize("scores, labels, auc, ap, optimal", PROB_CASES)
def test_probabilistic_known_answers(scores, labels, auc, ap, optimal):
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    assert M.roc_auc(scores, labels) == pytest.approx(auc, rel=1e-12)
    assert M.average_precision(scores, labels) == pytest.approx(ap, rel=1e-12)
    assert M.pr_optimal_threshold(scores, labels) == pytest.approx(optimal, rel=1e-12)
    report = M.evaluate_probabilities(scores, labels)
    assert report == pytest.approx({
        "roc_auc": auc, "average_precision": ap, "pr_optimal_threshold": optimal[0],
        "pr_optimal_precision": optimal[1], "pr_optimal_recall": optimal[2]}, rel=1e-12)
    assert all(type(v) is float for v in report.values())


def test_curves_of_known_list():
    fpr, tpr, thr = M.roc_curve(SCORES_A, LABELS_A)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_array_equal(thr, [math.inf, 0.9, 0.8, 0.6, 0.4])
    prec, rec, thr = M.precision_recall_curve(SCORES_A, LABELS_A)
    np.testing.assert_allclose(prec, [1, 2 / 3, 3 / 4, 1 / 2])
    np.testing.assert_allclose(rec, [1 / 3, 2 / 3, 1, 1])
    np.testing.assert_array_equal(thr, [0.9, 0.8, 0.6, 0.4])


def test_threshold_is_applied_with_greater_or_equal():
    scores = np.array([0.9, 0.8, 0.8, 0.6, 0.4, 0.4], dtype=np.float32)
    threshold, p, r = M.pr_optimal_threshold(scores, np.array(LABELS_A))
    pred = scores >= threshold
    assert M.precision(pred, np.array(LABELS_A)) == p
    assert M.recall(pred, np.array(LABELS_A)) == r


def test_undefined_probabilistic_metrics():
    assert math.isnan(M.roc_auc([0.2, 0.7], [1, 1]))
    assert math.isnan(M.roc_auc([0.2, 0.7], [0, 0]))
    assert math.isnan(M.average_precision([0.2, 0.7], [0, 0]))
    assert M.average_precision([0.2, 0.7], [1, 1]) == 1.0
    report = M.evaluate_probabilities(np.array([0.2, 0.7]), np.array([0, 0]))
    assert all(math.isnan(v) for v in report.values())
    with pytest.raises(InputError, match="^cannot choose a threshold: the labels contain no "
                                         "foreground voxel$"):
        M.pr_optimal_threshold([0.2, 0.7], [0, 0])


@pytest.mark.parametrize("scores, labels, message", [
    (np.zeros(3), np.zeros(4), r"^scores shape \(3,\) does not match labels shape \(4,\)$"),
    (np.array([0.1, nan, 0.3]), np.zeros(3), r"^scores contain 1 non-finite values \(NaN or inf\)$"),
    ([np.zeros(2)], np.zeros(2), "^scores and labels must both be arrays or both be lists of arrays$"),
    ([np.zeros(2)], [np.zeros(2), np.zeros(2)], "^1 score arrays but 2 label arrays$"),
    (np.zeros(0), np.zeros(0), r"^no scores given \(size 0\)$"),
])
def test_probabilistic_input_errors(scores, labels, message):
    with pytest.raises(InputError, match=message):
        M.roc_auc(scores, labels)


def test_pooling_lists_equals_concatenation():
    rng = np.random.default_rng(7)
    probs = [np.round(rng.random((3, 4, 5)), 2) for _ in range(3)]
    refs = [rng.random((3, 4, 5)) < p for p in probs]
    pooled = M.evaluate_probabilities(probs, refs)
    flat = M.evaluate_probabilities(np.concatenate([p.ravel() for p in probs]),
                                    np.concatenate([r.ravel() for r in refs]))
    assert pooled == flat
    assert pooled["roc_auc"] != M.roc_auc(probs[0], refs[0])  # pooling really used every subject


def _brute_auc(s, y):
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (pos.size * neg.size)


def _brute_pr(s, y):
    thresholds = np.unique(s)[::-1]
    prec = np.array([(y & (s >= t)).sum() / (s >= t).sum() for t in thresholds])
    rec = np.array([(y & (s >= t)).sum() / y.sum() for t in thresholds])
    return prec, rec, thresholds


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probabilistic_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.3
    s = np.round(np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1), 1)  # many ties
    assert M.roc_auc(s, y) == pytest.approx(_brute_auc(s, y), rel=1e-12)
    prec, rec, thr = M.precision_recall_curve(s, y)
    bprec, brec, bthr = _brute_pr(s, y)
    np.testing.assert_array_equal(thr, bthr)
    np.testing.assert_allclose(prec, bprec, rtol=1e-12)
    np.testing.assert_allclose(rec, brec, rtol=1e-12)
    ap = sum((brec[n] - (brec[n - 1] if n else 0.0)) * bprec[n] for n in range(len(bthr)))
    assert M.average_precision(s, y) == pytest.approx(ap, rel=1e-12)
    best = np.argmin(np.hypot(1 - bprec, 1 - brec))
    assert M.pr_optimal_threshold(s, y) == pytest.approx((bthr[best], bprec[best], brec[best]))


# ----------------------------------------------------------------------------------------------
# The one mean/sd helper


@pytest.mark.parametrize("values, expected", [
    ([0.8, 0.6], (0.7, 0.141421, 2)),                            # sample sd (ddof=1)
    ([0.8, None, float("nan"), float("inf"), 0.6], (0.7, 0.141421, 2)),  # non-finite left out
    ([0.85], (0.85, math.nan, 1)),                               # sd of one value: undefined
    ([], (math.nan, math.nan, 0)),
    ([None, float("nan")], (math.nan, math.nan, 0)),
])
def test_mean_sd_known_answers(values, expected):
    mean, sd, n = M.mean_sd(values)
    assert n == expected[2]
    for got, want in ((mean, expected[0]), (sd, expected[1])):
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-6)


def test_every_summary_uses_the_one_mean_sd_rule(tmp_path):
    """Tables (report), evaluate --json summaries (cli) and the card's plausibility statistics
    follow one rule for one value (before: sd 0.0 in two of them, null in the third)."""
    from FemurSegLib import cli, plausibility
    from FemurSegTraining import report

    assert report.mean_sd is M.mean_sd
    assert plausibility.stat_summary([0.5]) == {"mean": 0.5, "sd": None, "training": [0.5, 0.5],
                                                "accepted": [0.5, 0.5]}
    assert cli._summary([{"case": "a", **{k: 0.9 for k in cli.METRIC_COLUMNS}}])["both"][
        "dsc"] == {"mean": 0.9, "sd": None}
    assert report.fold_table([{"subject": "a", "fold": 0, "dsc": 0.9}]).splitlines()[2].startswith(
        "| 0 | a | 0.900 ± n/a |")
