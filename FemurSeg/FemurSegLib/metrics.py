"""Segmentation metrics: overlap, surface distances, volume, ROC / precision-recall.

numpy and scipy only. Masks are arrays of equal shape; any non-zero value is foreground. Spacing
is given per array axis, in array axis order: for an array taken from a SimpleITK image
(indexed ``[k, j, i]``) that is ``image.GetSpacing()[::-1]`` (see :func:`array_spacing`).

Conventions for undefined values (all tested):

==================  ===============================================================
dice                both masks empty -> 1.0; exactly one empty -> 0.0
precision           prediction empty -> NaN (TP / (TP + FP) has no denominator)
recall              reference empty -> NaN
specificity         reference all foreground (no negatives) -> NaN
hd95, assd          both masks empty -> 0.0; exactly one empty -> inf
roc_auc             scores of only one class -> NaN
average_precision   no positive label -> NaN
==================  ===============================================================

Surface distances: a mask's surface is its foreground minus its erosion with the face-connected
structuring element (array edges count as background, as in MONAI and medpy). For every surface
voxel of one mask the distance (mm) to the nearest surface voxel of the other is measured with
:func:`scipy.ndimage.distance_transform_edt` and ``sampling=spacing``. ``hd95`` is the larger of
the two *directed* 95th percentiles (MONAI's ``compute_hausdorff_distance(percentile=95)``;
medpy's ``hd95`` instead pools both sets); ``assd`` is the mean of the *pooled* distances
(MONAI's symmetric average surface distance; medpy instead averages the two directed means).
Percentiles use numpy's default linear interpolation.

Probabilistic metrics treat a voxel as predicted positive when ``score >= threshold``. Curves are
computed with one sort and cumulative sums; equal scores form one threshold (ties are never split),
so the ROC AUC counts a tied positive/negative pair as one half. Scores and labels may be single
arrays or lists of arrays (one per subject), which are pooled.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .errors import InputError

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]

__all__ = [
    "array_spacing", "confusion", "dice", "precision", "recall", "specificity",
    "surface_distances", "hd95", "assd", "volume_ml",
    "roc_curve", "roc_auc", "precision_recall_curve", "average_precision", "pr_optimal_threshold",
    "evaluate_masks", "evaluate_probabilities",
]


# ----------------------------------------------------------------------------------------------
# Input checks


def array_spacing(image: sitk.Image) -> Tuple[float, ...]:
    """Voxel spacing of ``image`` in the axis order of its numpy array (``[k, j, i]``)."""
    return tuple(float(s) for s in reversed(image.GetSpacing()))


def _mask_pair(pred, ref) -> Tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise InputError(f"prediction shape {pred.shape} does not match reference shape {ref.shape}")
    if pred.size == 0:
        raise InputError("masks are empty arrays (size 0)")
    return _as_bool(pred), _as_bool(ref)


def _as_bool(a: np.ndarray) -> np.ndarray:
    return a if a.dtype == bool else a != 0


def _spacing(spacing, ndim: int) -> np.ndarray:
    sp = np.asarray(spacing, dtype=float).ravel()
    shown = tuple(float(v) for v in sp)
    if sp.size != ndim:
        raise InputError(f"spacing {shown} has {sp.size} values; the masks have {ndim} axes")
    if not np.all(np.isfinite(sp) & (sp > 0)):
        raise InputError(f"spacing must be positive and finite, not {shown}")
    return sp


# ----------------------------------------------------------------------------------------------
# Overlap


def confusion(pred: np.ndarray, ref: np.ndarray) -> Tuple[int, int, int, int]:
    """Voxel counts ``(tp, fp, fn, tn)`` of ``pred`` against ``ref``."""
    pred, ref = _mask_pair(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def _ratio(num: int, den: int) -> float:
    return float(num) / den if den else math.nan


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient 2TP / (2TP + FP + FN); 1.0 when both masks are empty."""
    tp, fp, fn, _ = confusion(pred, ref)
    return 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn)


def slice_axis(spacing: Sequence[float]) -> int:
    """The array axis across the acquisition slices: the one with the largest voxel spacing
    (the first on ties, i.e. k of a ``[k, j, i]`` array with isotropic voxels)."""
    return int(np.argmax(np.asarray(spacing, dtype=float)))


def labelled_slices(ref: np.ndarray, axis: int) -> np.ndarray:
    """Indices of the slices along ``axis`` that hold reference foreground."""
    ref = _as_bool(np.asarray(ref))
    other = tuple(a for a in range(ref.ndim) if a != axis)
    return np.flatnonzero(ref.any(axis=other))


def dice_labelled_slices(pred: np.ndarray, ref: np.ndarray, axis: int) -> float:
    """DSC over the slices (along ``axis``) that carry a reference label only.

    Annotators sometimes leave the last slices of a structure unlabelled; a correct prediction
    there counts as a false positive in :func:`dice`. This variant ignores slices without any
    reference foreground (1.0 when the reference is empty and so is the prediction, 0.0 when
    only the prediction has voxels: then no slice is labelled and nothing can be compared).
    """
    pred, ref = _mask_pair(pred, ref)
    keep = labelled_slices(ref, axis)
    if keep.size == 0:
        return 1.0 if not pred.any() else 0.0
    return dice(np.take(pred, keep, axis=axis), np.take(ref, keep, axis=axis))


def precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """TP / (TP + FP); NaN when the prediction is empty."""
    tp, fp, _, _ = confusion(pred, ref)
    return _ratio(tp, tp + fp)


def recall(pred: np.ndarray, ref: np.ndarray) -> float:
    """Recall (sensitivity) TP / (TP + FN); NaN when the reference is empty."""
    tp, _, fn, _ = confusion(pred, ref)
    return _ratio(tp, tp + fn)


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TN / (TN + FP); NaN when the reference has no background voxel."""
    _, fp, _, tn = confusion(pred, ref)
    return _ratio(tn, tn + fp)


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Foreground volume in millilitres (spacing in mm, any axis order)."""
    mask = np.asarray(mask)
    sp = _spacing(spacing, mask.ndim)
    return float(np.count_nonzero(mask)) * float(np.prod(sp)) / 1000.0


# ----------------------------------------------------------------------------------------------
# Surface distances


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndi.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndi.binary_erosion(mask, structure=structure, border_value=0)


def _crop_box(mask: np.ndarray) -> Tuple[slice, ...]:
    """Bounding box of the foreground (which must not be empty)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other) if other else mask)
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``pred`` to ``ref``'s surface, and the reverse.

    Both arrays are empty when a mask is empty (no surface). The work is done on the bounding box
    of both masks, which is exact: no foreground voxel has a foreground neighbour outside the box
    (so erosion with background beyond the box edge changes nothing) and every surface voxel
    lies inside it (so the nearest one is found).
    """
    pred, ref = _mask_pair(pred, ref)
    sp = _spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        return np.zeros(0), np.zeros(0)
    box = _crop_box(pred | ref)
    surf_pred, surf_ref = _surface(pred[box]), _surface(ref[box])
    to_ref = ndi.distance_transform_edt(~surf_ref, sampling=sp)[surf_pred]
    to_pred = ndi.distance_transform_edt(~surf_pred, sampling=sp)[surf_ref]
    return to_ref, to_pred


def _distance_summary(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
                      ) -> Tuple[float, float]:
    """``(hd95, assd)`` in mm, with the empty-mask conventions of the module."""
    has_pred, has_ref = bool(np.any(pred)), bool(np.any(ref))
    to_ref, to_pred = surface_distances(pred, ref, spacing)
    if not (has_pred and has_ref):
        value = 0.0 if has_pred == has_ref else math.inf
        return value, value
    hd = float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))
    return hd, float((to_ref.sum() + to_pred.sum()) / (to_ref.size + to_pred.size))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance (mm): max of the two directed 95th percentiles.

    0.0 when both masks are empty, inf when exactly one is.
    """
    return _distance_summary(pred, ref, spacing)[0]


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance (mm): mean of both directed distance sets pooled.

    0.0 when both masks are empty, inf when exactly one is.
    """
    return _distance_summary(pred, ref, spacing)[1]


# ----------------------------------------------------------------------------------------------
# ROC and precision-recall


def _pool(scores: ArrayOrList, labels: ArrayOrList) -> Tuple[np.ndarray, np.ndarray]:
    if isinstance(scores, (list, tuple)) or isinstance(labels, (list, tuple)):
        if not isinstance(scores, (list, tuple)) or not isinstance(labels, (list, tuple)):
            raise InputError("scores and labels must both be arrays or both be lists of arrays")
        if len(scores) != len(labels):
            raise InputError(f"{len(scores)} score arrays but {len(labels)} label arrays")
        if not scores:
            raise InputError("no scores given")
        pairs = [_pool(s, y) for s, y in zip(scores, labels)]
        return (np.concatenate([s for s, _ in pairs]), np.concatenate([y for _, y in pairs]))
    s, y = np.asarray(scores), np.asarray(labels)
    if s.shape != y.shape:
        raise InputError(f"scores shape {s.shape} does not match labels shape {y.shape}")
    if s.dtype.kind not in "biuf":
        raise InputError(f"scores must be numbers, not {s.dtype}")
    s = s.ravel()
    if s.dtype.kind == "f" and not np.all(np.isfinite(s)):
        raise InputError(f"scores contain {int(np.count_nonzero(~np.isfinite(s)))} "
                         "non-finite values (NaN or inf)")
    return s, _as_bool(y.ravel())


def _counts(scores: ArrayOrList, labels: ArrayOrList):
    """Distinct thresholds (decreasing) and the TP and FP counts of ``score >= threshold``."""
    s, y = _pool(scores, labels)
    if s.size == 0:
        raise InputError("no scores given (size 0)")
    order = np.argsort(s)[::-1]  # one sort; the order within ties does not matter
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[last_of_group]
    fps = last_of_group.astype(np.int64) + 1 - tps
    return s[last_of_group].astype(float), tps, fps


def rates(counts: np.ndarray) -> np.ndarray:
    """Cumulative counts / total (the last count), NaN everywhere when the total is 0."""
    return counts / counts[-1] if counts[-1] else np.full(counts.shape, math.nan)


def auc_from_counts(tps: np.ndarray, fps: np.ndarray) -> float:
    """Trapezoidal ROC AUC from cumulative TP and FP counts at decreasing thresholds; NaN when
    a class is absent. (The curve helpers here take counts so that pooled histograms, as in
    :class:`FemurSegTraining.curves.PooledCurve`, share them.)"""
    if not tps[-1] or not fps[-1]:
        return math.nan
    tpr, fpr = rates(np.r_[0, tps]), rates(np.r_[0, fps])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def ap_from_curve(prec: np.ndarray, rec: np.ndarray) -> float:
    """Step-wise average precision of a PR curve at decreasing thresholds."""
    return math.nan if np.isnan(rec[-1]) else float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def nearest_to_one_one(prec: np.ndarray, rec: np.ndarray) -> int:
    """Index of the PR point nearest to (1, 1)."""
    return int(np.argmin((1.0 - prec) ** 2 + (1.0 - rec) ** 2))  # first (highest threshold) on ties


def roc_curve(scores: ArrayOrList, labels: ArrayOrList
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` with thresholds decreasing, every distinct score kept.

    The first point is (0, 0) at threshold +inf. A rate whose class is absent is NaN.
    """
    thresholds, tps, fps = _counts(scores, labels)
    return rates(np.r_[0, fps]), rates(np.r_[0, tps]), np.r_[math.inf, thresholds]


def roc_auc(scores: ArrayOrList, labels: ArrayOrList) -> float:
    """Area under the ROC curve (trapezoidal, so tied pairs count one half); NaN for one class."""
    _, tps, fps = _counts(scores, labels)
    return auc_from_counts(tps, fps)


def precision_recall_curve(scores: ArrayOrList, labels: ArrayOrList
                           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` at every distinct score, thresholds decreasing.

    Unlike scikit-learn, no extra (precision 1, recall 0) point is appended and the order is by
    decreasing threshold; the three arrays have equal length. Recall is NaN without positives.
    """
    thresholds, tps, fps = _counts(scores, labels)
    return tps / (tps + fps), rates(tps), thresholds  # tps + fps >= 1 at every threshold


def average_precision(scores: ArrayOrList, labels: ArrayOrList) -> float:
    """Step-wise AP = sum_n (R_n - R_{n-1}) P_n with R_0 = 0 (as scikit-learn); NaN without positives."""
    prec, rec, _ = precision_recall_curve(scores, labels)
    return ap_from_curve(prec, rec)


def pr_optimal_threshold(scores: ArrayOrList, labels: ArrayOrList
                         ) -> Tuple[float, float, float]:
    """``(threshold, precision, recall)`` of the PR point nearest to (1, 1) (Euclidean).

    Predict foreground where ``score >= threshold``. Among equally near points the highest
    threshold wins. Raises :class:`InputError` when there is no positive label.
    """
    prec, rec, thresholds = precision_recall_curve(scores, labels)
    if np.isnan(rec[-1]):
        raise InputError("cannot choose a threshold: the labels contain no foreground voxel")
    best = nearest_to_one_one(prec, rec)
    return float(thresholds[best]), float(prec[best]), float(rec[best])


# ----------------------------------------------------------------------------------------------
# Summaries over cases


def mean_sd(values: Sequence[Optional[float]]) -> Tuple[float, float, int]:
    """Mean and sample standard deviation (``ddof=1``) of the finite values, and how many there
    were; None, NaN and infinity are left out. The one rule of the project: no value gives
    ``(nan, nan, 0)``, one value ``(value, nan, 1)`` (the sample sd of one value is undefined;
    tables print it as n/a, JSON as null)."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan, int(a.size)


# ----------------------------------------------------------------------------------------------
# Reports


def evaluate_masks(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> Dict[str, float]:
    """All mask metrics as plain floats (NaN / inf per the module conventions).

    Keys: dsc, dsc_labelled_slices (:func:`dice_labelled_slices` across the thickest voxel
    axis), precision, recall, specificity, hd95_mm, assd_mm, volume_pred_ml, volume_ref_ml.
    ``json.dumps`` writes NaN and inf as ``NaN`` / ``Infinity``; map them to null for strict JSON.
    """
    pred, ref = _mask_pair(pred, ref)
    tp, fp, fn, tn = confusion(pred, ref)
    hd, mean = _distance_summary(pred, ref, spacing)
    return {
        "dsc": 1.0 if tp + fp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn),
        "dsc_labelled_slices": dice_labelled_slices(pred, ref, slice_axis(spacing)),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "hd95_mm": hd,
        "assd_mm": mean,
        "volume_pred_ml": volume_ml(pred, spacing),
        "volume_ref_ml": volume_ml(ref, spacing),
    }


def evaluate_probabilities(prob: ArrayOrList, ref: ArrayOrList) -> Dict[str, float]:
    """ROC AUC, AP and the PR-optimal threshold of a probability map (or a list, pooled).

    Keys: roc_auc, average_precision, pr_optimal_threshold, pr_optimal_precision,
    pr_optimal_recall (the last four NaN when ``ref`` has no foreground; roc_auc also NaN when
    ``ref`` has no background). One sort serves all of them.
    """
    thresholds, tps, fps = _counts(prob, ref)
    prec, rec = tps / (tps + fps), rates(tps)
    out = {"roc_auc": auc_from_counts(tps, fps), "average_precision": ap_from_curve(prec, rec),
           "pr_optimal_threshold": math.nan, "pr_optimal_precision": math.nan,
           "pr_optimal_recall": math.nan}
    if tps[-1]:
        best = nearest_to_one_one(prec, rec)
        out.update(pr_optimal_threshold=float(thresholds[best]),
                   pr_optimal_precision=float(prec[best]), pr_optimal_recall=float(rec[best]))
    return out
