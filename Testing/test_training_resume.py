"""Checkpoints and resume: an interrupted run ends with the weights of an uninterrupted one."""

from __future__ import annotations

import csv

import numpy as np

import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib.errors import FemurSegError
from FemurSegTraining.config import load_config
from FemurSegTraining.train import epoch_rng, fit

from training_helpers import TINY_2D, TINY_3D, TINY_25D, blob_cases as _cases, write_config

# one torch thread for every test here (conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")



class Killed(Exception):
    pass


def _kill_after(epoch: int):
    def on_epoch(row: dict) -> None:
        if row["epoch"] == epoch:
            raise Killed()
    return on_epoch


def _state(run_dir):
    return torch.load(run_dir / "fold_0" / "checkpoint.pt", weights_only=True)


@pytest.mark.parametrize("base", [TINY_3D, TINY_2D, TINY_25D], ids=["3d", "2d", "2.5d"])
@pytest.mark.slow  # three trainings, interrupted and resumed
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, base):
    cfg = load_config(str(write_config(tmp_path / "c.json", base, patches_per_epoch=3)))
    train, val = _cases(3), _cases(1, seed=1)
    fit(cfg, 0, train, val, tmp_path / "straight", max_epochs=2, progress=False)
    with pytest.raises(Killed):
        fit(cfg, 0, train, val, tmp_path / "killed", max_epochs=2, progress=False,
            on_epoch=_kill_after(0))
    assert _state(tmp_path / "killed")["epoch"] == 0
    result = fit(cfg, 0, train, val, tmp_path / "killed", resume=True, max_epochs=2,
                 progress=False)
    assert result.epochs == 2
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "killed")
    assert a["epoch"] == b["epoch"] == 1
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        for i, s in a["optimizer"]["state"].items():
            torch.testing.assert_close(b["optimizer"]["state"][i][key], s[key], rtol=0, atol=1e-6)
    assert [r["loss"] for r in a["history"]] == pytest.approx([r["loss"] for r in b["history"]])
    assert a["early_stopping"] == b["early_stopping"]
    best_a = torch.load(tmp_path / "straight" / "fold_0" / "best.pt", weights_only=True)
    best_b = torch.load(tmp_path / "killed" / "fold_0" / "best.pt", weights_only=True)
    for name, tensor in best_a.items():
        torch.testing.assert_close(best_b[name], tensor, rtol=0, atol=1e-6)


def test_history_and_refusing_to_overwrite(tmp_path):
    cfg = load_config(str(write_config(tmp_path / "c.json")))
    train, val = _cases(2), _cases(1, seed=1)
    fit(cfg, 0, train, val, tmp_path / "run", max_epochs=2, progress=False)
    with open(tmp_path / "run" / "fold_0" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert set(rows[0]) == {"epoch", "loss", "val_dsc", "seconds", "best_epoch"}
    assert 0.0 <= float(rows[1]["val_dsc"]) <= 1.0
    with pytest.raises(FemurSegError, match="exists: use --resume"):
        fit(cfg, 0, train, val, tmp_path / "run", max_epochs=2, progress=False)
    # resuming a run that reached its cap continues it; a finished (stopped) one returns at once
    state = _state(tmp_path / "run")
    state["finished"] = True
    torch.save(state, tmp_path / "run" / "fold_0" / "checkpoint.pt")
    done = fit(cfg, 0, train, val, tmp_path / "run", resume=True, max_epochs=5, progress=False)
    assert done.epochs == 2 and done.stopped_early


def test_single_process_draws_from_rank_zero_generator():
    # backward compatibility of checkpoints made before the rank argument existed: rank 0 draws
    # what the generator of those runs, default_rng([seed, fold, epoch]), drew
    a, b = epoch_rng(3, 1, 7), np.random.default_rng([3, 1, 7])
    assert a.integers(1 << 30, size=4).tolist() == b.integers(1 << 30, size=4).tolist()
    assert epoch_rng(3, 1, 7, 1).integers(1 << 30) != epoch_rng(3, 1, 7, 0).integers(1 << 30)


def test_lr_schedule_applied_per_epoch_and_resumed_exactly(tmp_path):
    """Each epoch trains with the schedule's rate; a run killed inside the decay resumes it."""
    import math

    cfg = load_config(str(write_config(tmp_path / "c.json", TINY_3D, patches_per_epoch=2,
                                       lr_schedule={"constant_epochs": 1, "decay_epochs": 2})))
    lr0 = float(cfg["optimizer"]["lr"])
    train, val = _cases(2), _cases(1, seed=1)
    fit(cfg, 0, train, val, tmp_path / "straight", max_epochs=3, progress=False)
    with pytest.raises(Killed):
        fit(cfg, 0, train, val, tmp_path / "killed", max_epochs=3, progress=False,
            on_epoch=_kill_after(1))
    assert _state(tmp_path / "killed")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        lr0 * (1 + math.cos(math.pi / 3)) / 2)
    fit(cfg, 0, train, val, tmp_path / "killed", resume=True, max_epochs=3, progress=False)
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "killed")
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        lr0 * (1 + math.cos(2 * math.pi / 3)) / 2)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=1e-6)


@pytest.mark.parametrize("budget, expected", [(1e-6, 1), (1e6, 4)])
def test_time_budget_plans_the_epochs_after_the_first(tmp_path, budget, expected):
    cfg = load_config(str(write_config(tmp_path / "c.json", TINY_25D, patches_per_epoch=2,
                                       max_epochs=4)))
    result = fit(cfg, 0, _cases(2), _cases(1, seed=1), tmp_path / "run", progress=False,
                 time_budget=budget)
    state = _state(tmp_path / "run")
    assert result.epochs == expected and state["planned_epochs"] == expected
    # the schedule ran over the planned epochs: the last epoch has the last poly step's rate
    lrs = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert lrs == [pytest.approx(1e-3 * (1 / expected) ** 0.9 if expected > 1 else 1e-3)]


def test_time_budget_plan_survives_resume(tmp_path):
    cfg = load_config(str(write_config(tmp_path / "c.json", TINY_25D, patches_per_epoch=2,
                                       max_epochs=6)))
    train, val = _cases(2), _cases(1, seed=1)
    with pytest.raises(Killed):
        fit(cfg, 0, train, val, tmp_path / "run", progress=False, time_budget=1e6,
            on_epoch=_kill_after(1))
    assert _state(tmp_path / "run")["planned_epochs"] == 6
    # resumed without a budget, the plan of the checkpoint still holds
    result = fit(cfg, 0, train, val, tmp_path / "run", resume=True, progress=False)
    assert result.epochs == 6 and _state(tmp_path / "run")["planned_epochs"] == 6


# ----------------------------------------------------------------------------------------------
# Resuming needs the run's own config


def test_config_differences_known_answer():
    from FemurSegTraining.config import config_differences

    stored = {"name": "a", "optimizer": {"name": "adam", "lr": 0.002}, "max_epochs": 240,
              "config_file": "/work/main/FemurSegTraining/configs/a.json"}
    given = {"name": "a", "optimizer": {"name": "adam", "lr": 0.001}, "max_epochs": 240,
             "patience": 10, "config_file": "/elsewhere/a.json", "plan_file": "/x/plan.json",
             "augment": {"flip_lr": True}}
    # where the file lies does not count; a key the stored config lacks counts as its default
    # (patience 10, augment), nested sections are compared key by key
    assert config_differences(stored, given) == ["optimizer.lr: 0.002 -> 0.001"]
    assert config_differences(given, {**given, "augment": {"flip_lr": False}, "seed": 1}) == [
        "augment.flip_lr: true -> false", "seed: 0 -> 1"]
    assert config_differences({"a": [1, 2]}, {"a": [1, 3], "b": None}) == [
        "a: [1, 2] -> [1, 3]", "b: (absent) -> null"]


def test_a_run_started_in_another_checkout_resumes():
    """The stored config of a run started from /work/main (the shape of a real run.json) is the
    named config read from this checkout: only config_file differs, and it does not count."""
    from FemurSegTraining.cv import check_same_config

    cfg = load_config("default_25d_f16l5_long")
    stored = {**cfg, "config_file": "/work/main/FemurSegTraining/configs/"
                                    "default_25d_f16l5_long.json"}
    check_same_config({"config": stored}, cfg, "RUN")  # no error
    assert cfg["num_workers"] == 0
    del stored["num_workers"]  # a run made before a setting existed: its default
    check_same_config({"config": stored}, cfg, "RUN")
    with pytest.raises(FemurSegError, match=r"^RUN holds a run of config 'default_25d_f16l5_long' "
                       r"that differs from the given config 'default_25d_f16l5_long' \(stored -> "
                       r"given\): num_workers: 0 -> 2\. Use the run's own config, or another "
                       r"run folder$"):
        check_same_config({"config": stored}, {**cfg, "num_workers": 2}, "RUN")


def test_resuming_with_another_config_is_refused_with_the_differences(tmp_path, capsys):
    """Before, only the config's name was compared and the stored config was overwritten."""
    import json

    from FemurSegTraining.cli import main

    cfg_path = write_config(tmp_path / "tiny.json", TINY_3D)
    cfg = load_config(str(cfg_path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stored = {**cfg, "optimizer": {**cfg["optimizer"], "lr": 0.5}, "max_epochs": 7}
    (run_dir / "run.json").write_text(json.dumps({"config": stored}), encoding="utf-8")
    before = (run_dir / "run.json").read_bytes()
    assert main(["fit", str(cfg_path), "--fold", "0", "--run-dir", str(run_dir), "--resume",
                 "--data", str(tmp_path / "no-data"), "--quiet"]) == 2
    lr = cfg["optimizer"]["lr"]
    assert capsys.readouterr().err == (
        f"error: {run_dir} holds a run of config 'tiny' that differs from the given config "
        f"'tiny' (stored -> given): max_epochs: 7 -> {cfg['max_epochs']}; optimizer.lr: 0.5 -> "
        f"{lr}. Use the run's own config, or another run folder\n")
    assert (run_dir / "run.json").read_bytes() == before  # not overwritten
