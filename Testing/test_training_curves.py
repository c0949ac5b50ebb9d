"""FemurSegTraining.curves: the PR-optimal threshold and the pooled, quantised curve."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib import metrics
from FemurSegLib.errors import FemurSegError
from FemurSegTraining.curves import LEVELS, PooledCurve, quantise


# ----------------------------------------------------------------------------------------------
# Threshold selection and the pooled curve


def test_pr_optimal_threshold_on_known_curve():
    # scores 7/8 .. 2/8 with labels 1 1 0 1 0 0; (precision, recall) per threshold:
    # 7/8 (1, 1/3)  6/8 (1, 2/3)  5/8 (2/3, 2/3)  4/8 (3/4, 1)  3/8 (3/5, 1)  2/8 (1/2, 1)
    # squared distances to (1, 1): 4/9, 1/9, 2/9, 1/16, 4/25, 1/4 -> threshold 1/2
    scores = np.array([7, 6, 5, 4, 3, 2]) / 8.0
    labels = np.array([1, 1, 0, 1, 0, 0], bool)
    curve = PooledCurve()
    curve.add(quantise(scores), labels)
    assert curve.pr_optimal() == (0.5, 0.75, 1.0)
    assert metrics.pr_optimal_threshold(scores, labels) == (0.5, 0.75, 1.0)
    # AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4; AUC: 8 of the 9 positive/negative pairs are ordered
    assert curve.average_precision() == pytest.approx(11 / 12)
    assert curve.roc_auc() == pytest.approx(8 / 9)


def test_pr_optimal_ties_take_the_highest_threshold():
    # 3/4: (1, 1/2); 1/2: (1/2, 1) -> both at squared distance 1/4
    curve = PooledCurve()
    curve.add(quantise(np.array([0.75, 0.5, 0.5, 0.5])), np.array([1, 1, 0, 0], bool))
    assert curve.pr_optimal() == (0.75, 1.0, 0.5)


def test_pooled_curve_equals_core_metrics_on_quantised_scores():
    rng = np.random.default_rng(5)
    qs, refs = [], []
    curve = PooledCurve()
    for n in (500, 700):  # two subjects, pooled
        ref = rng.random(n) < 0.2
        prob = np.clip(ref * 0.4 + rng.random(n) * 0.6, 0, 1)
        q = quantise(prob)
        curve.add(q, ref)
        qs.append(q / LEVELS)
        refs.append(ref)
    assert curve.pr_optimal() == pytest.approx(metrics.pr_optimal_threshold(qs, refs), abs=1e-12)
    assert curve.roc_auc() == pytest.approx(metrics.roc_auc(qs, refs), abs=1e-12)
    assert curve.average_precision() == pytest.approx(metrics.average_precision(qs, refs),
                                                      abs=1e-12)


def test_quantised_threshold_is_exact():
    p = np.array([0.0, 1e-9, 0.5 - 1e-9, 0.5, 0.5 + 1e-9, 0.99999, 1.0])
    q = quantise(p)
    assert q.dtype == np.uint16
    for b in (0, 1, LEVELS // 2, LEVELS - 1):
        assert np.array_equal(q >= b, p >= b / LEVELS)


def test_no_foreground_no_threshold():
    curve = PooledCurve()
    curve.add(quantise(np.array([0.2, 0.9])), np.array([False, False]))
    with pytest.raises(FemurSegError, match="no foreground"):
        curve.pr_optimal()
