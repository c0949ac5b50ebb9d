"""--time-budget plans from the measured epoch, validation included (issue 22, item 4)."""

from __future__ import annotations

import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegTraining.config import load_config
from FemurSegTraining.train import fit, plan_epochs

from training_helpers import TINY_25D, blob_cases, write_config

# one torch thread for every test here (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")



def test_plan_epochs_known_answers():
    # the run: 4 minutes for one fold, epochs of 73 s -> 3 epochs (219 s), not 4
    assert plan_epochs(240, 73, 100) == 3
    # a budget shorter than the epoch already run: that epoch is the plan (less than one over)
    assert plan_epochs(60, 73, 100) == 1
    assert plan_epochs(0, 73, 100) == 1
    assert plan_epochs(1e6, 73, 30) == 30  # never more than the config's max_epochs
    assert plan_epochs(240, 73, 100, done=5) == 5  # a resumed fold keeps the epochs it ran
    assert plan_epochs(240, 0.0, 7) == 7


def test_tiny_budget_counts_the_validation_time(tmp_path):
    """Validation of whole cases costs many times the one training batch of an epoch here: the
    plan uses the whole measured epoch, so the planned epochs fit into the budget (the old
    estimate, a tenth on top of the training time, planned every max_epochs epoch)."""
    cfg = load_config(str(write_config(tmp_path / "c.json", TINY_25D, patches_per_epoch=1,
                                       max_epochs=40)))
    train, val = blob_cases(2), blob_cases(2, shape=(8, 64, 64), seed=1)
    one = fit({**cfg, "max_epochs": 1}, 0, train, val, tmp_path / "calibrate", progress=False)
    budget = 3.5 * one.history[0]["seconds"]
    result = fit(cfg, 0, train, val, tmp_path / "run", progress=False, time_budget=budget)
    first = result.history[0]["seconds"]
    state = torch.load(tmp_path / "run" / "fold_0" / "checkpoint.pt", weights_only=True)
    planned = state["planned_epochs"]
    assert planned == plan_epochs(budget, first, 40) == result.epochs
    assert planned * first <= budget < (planned + 1) * first
    assert planned < 40
    # (how long the planned epochs then really take is the machine's business: on two busy
    # cores a later epoch of this tiny run took twice its first, so wall time is not asserted)


def test_plan_is_in_the_first_checkpoint(tmp_path):
    """Planned after the first epoch and saved with it: a run killed right after its first
    epoch resumes with the same plan, also without --time-budget."""
    cfg = load_config(str(write_config(tmp_path / "c.json", TINY_25D, patches_per_epoch=1,
                                       max_epochs=5)))
    train, val = blob_cases(2), blob_cases(1, seed=1)

    class Killed(Exception):
        pass

    def kill(row):
        raise Killed()

    with pytest.raises(Killed):
        fit(cfg, 0, train, val, tmp_path / "run", progress=False, time_budget=1e6,
            on_epoch=kill)
    state = torch.load(tmp_path / "run" / "fold_0" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and state["planned_epochs"] == 5
    result = fit(cfg, 0, train, val, tmp_path / "run", resume=True, progress=False)
    assert result.epochs == 5


def test_cv_shares_out_what_is_left_of_the_budget(tmp_path, monkeypatch):
    """Each fold gets an equal share of what is left when it starts: a fold that ran past its
    share (here fold 0, 0.8 s of a 1 s budget for two folds) shortens the next one. The run's
    clock is a stand-in, so the shares are exact however busy the machine is (the data
    preparation takes no time on it)."""
    import types

    from FemurSegTraining import cv, train
    from training_helpers import TINY_3D, make_dataset

    clock = [100.0]
    monkeypatch.setattr(cv, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    budgets = []

    def fake_fit(cfg, fold, train_cases, val_cases, run_dir, *, time_budget=None, **kwargs):
        budgets.append(time_budget)
        clock[0] += 0.8 if fold == 0 else 0.0
        return train.FitResult(run_dir / f"fold_{fold}", 1, 0, 0.5, False, 0.8, [])

    monkeypatch.setattr(train, "fit", fake_fit)
    data = make_dataset(tmp_path / "data", n=4)
    cfg = load_config(str(write_config(tmp_path / "c.json", TINY_3D)))
    cv.run_cv(cfg, tmp_path / "run", data_dir=str(data), progress=False, time_budget=1.0)
    assert budgets == [pytest.approx(0.5), pytest.approx(0.2)]  # half, then what fold 0 left
