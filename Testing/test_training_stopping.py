"""FemurSegTraining.train.EarlyStopping: when a fold stops, and its state across a resume."""

from __future__ import annotations

import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegTraining.train import EarlyStopping


# ----------------------------------------------------------------------------------------------
# Early stopping: (min_delta, patience, min_epochs), metric per epoch -> epoch after which it stops


def _stop_epoch(params, sequence):
    es = EarlyStopping(*params)
    for epoch, m in enumerate(sequence):
        if es.update(m):
            return epoch, es.best_epoch
    return None, es.best_epoch


@pytest.mark.parametrize("params,sequence,expected", [
    # steady gains of 0.01: never stops
    ((1e-4, 3, 5), [0.01 * i for i in range(12)], (None, 11)),
    # flat from the start: runs the minimum of 5 epochs, then stops (4 - 0 >= 3)
    ((1e-4, 3, 5), [0.5] * 12, (4, 0)),
    # improvement at epoch 2, then flat: stops 3 epochs later
    ((1e-4, 3, 5), [0.1, 0.2, 0.3] + [0.3] * 9, (5, 2)),
    # patience would be exhausted at epoch 1, but the first 5 epochs always run
    ((1e-4, 1, 5), [0.5] + [0.4] * 11, (4, 0)),
    # a gain of exactly min_delta does not count ...
    ((0.25, 3, 1), [0.0, 0.25, 0.25, 0.25, 0.25], (3, 0)),
    # ... gains smaller than min_delta add up: +0.3 over the best epoch at epoch 3 counts
    ((0.25, 3, 1), [0.0, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3], (6, 3)),
    # a later best resets the count
    ((1e-4, 2, 1), [0.5, 0.4, 0.6, 0.5, 0.5, 0.5], (4, 2)),
    # the paper: 1e-4, 10 epochs, first 30 always run
    ((1e-4, 10, 30), [0.9] * 40, (29, 0)),
    ((1e-4, 10, 30), [0.5] * 25 + [0.6] + [0.6] * 20, (35, 25)),
])
def test_early_stopping_decisions(params, sequence, expected):
    assert _stop_epoch(params, sequence) == expected


def test_early_stopping_state_round_trip():
    a = EarlyStopping(1e-4, 3, 1)
    for m in (0.1, 0.3, 0.2):
        a.update(m)
    b = EarlyStopping(1e-4, 3, 1)
    b.load_state_dict(a.state_dict())
    assert [a.update(0.2), a.update(0.2)] == [b.update(0.2), b.update(0.2)] == [False, True]
    assert b.best == 0.3 and b.best_epoch == 1
