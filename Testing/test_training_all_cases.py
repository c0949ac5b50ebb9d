"""One network on every case (``femurseg-train fit --fold all``) and its export, described by
the cross-validation of its recipe (``export --cv-run``); export refuses evaluations of weights
that changed since."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib.cli import main as femurseg
from FemurSegLib.modelfolder import load_model
from FemurSegTraining.cli import main

from training_helpers import TINY_3D, make_dataset, write_config

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """An evaluated 2-fold CV of a tiny recipe (2 epochs per fold) and one network of the same
    recipe trained on all 4 cases for 3 epochs, with early stopping settings that would stop a
    validated run after its first epoch."""
    base = tmp_path_factory.mktemp("all")
    data = make_dataset(base / "ds", 4)
    cv_cfg = write_config(base / "tiny.json", TINY_3D)
    cv = base / "cv"
    assert main(["cv", str(cv_cfg), "--data", str(data), "--run-dir", str(cv), "--quiet"]) == 0
    assert main(["evaluate", str(cv), "--quiet"]) == 0
    long_cfg = write_config(base / "tiny_long.json", TINY_3D, max_epochs=3, min_epochs=1,
                            patience=0)
    final = base / "final"
    assert main(["fit", str(long_cfg), "--fold", "all", "--data", str(data), "--run-dir",
                 str(final), "--quiet"]) == 0
    return base, data, cv, final


def test_fit_all_trains_every_case_for_every_epoch(runs):
    _, _, _, final = runs
    rec = json.loads((final / "run.json").read_text(encoding="utf-8"))
    fold = rec["folds"]["all"]
    assert fold["train"] == ["case00", "case01", "case02", "case03"] and fold["val"] == []
    assert fold["epochs"] == 3 and fold["best_epoch"] == 2  # no early stop; the last is kept
    assert sorted(rec["folds"]) == ["all"]
    with open(final / "fold_all" / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    state = torch.load(final / "fold_all" / "checkpoint.pt", weights_only=True)
    best = torch.load(final / "fold_all" / "best.pt", weights_only=True)
    assert state["epoch"] == 2
    for name, tensor in state["model"].items():
        assert torch.equal(best[name], tensor), name


def test_fit_all_has_its_own_seeds(runs, tmp_path):
    # the all-cases network does not start from fold 0's initialisation
    _, data, _, final = runs
    cfg = write_config(tmp_path / "tiny_long.json", TINY_3D, max_epochs=1)
    assert main(["fit", str(cfg), "--fold", "0", "--data", str(data), "--run-dir",
                 str(tmp_path / "r"), "--quiet"]) == 0
    a = torch.load(tmp_path / "r" / "fold_0" / "best.pt", weights_only=True)
    b = torch.load(final / "fold_all" / "best.pt", weights_only=True)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_fit_fold_must_be_a_number_or_all(runs, capsys):
    base, data, _, _ = runs
    with pytest.raises(SystemExit) as exit_:
        main(["fit", str(base / "tiny.json"), "--fold", "every", "--data", str(data),
              "--run-dir", str(base / "x"), "--quiet"])
    assert exit_.value.code == 2
    assert ("error: argument --fold: a fold number or 'all', not 'every'"
            in capsys.readouterr().err)
    assert main(["fit", str(base / "tiny.json"), "--fold", "5", "--data", str(data),
                 "--run-dir", str(base / "x"), "--quiet"]) == 2
    assert "error: fold 5 does not exist (the run has 2 folds)" in capsys.readouterr().err


def test_export_all_cases_network_with_the_recipe_cross_validation(runs, capsys):
    base, data, cv, final = runs
    model = base / "model"
    assert main(["export", str(final), str(model), "--cv-run", str(cv), "--name", "tiny-all",
                 "--version", "0.4.0"]) == 0
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    summary = json.loads((cv / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert [f["fold"] for f in card["folds"]] == [0]  # one network
    assert card["inference"]["threshold"] == summary["pr_optimal"]["threshold"]
    assert card["metrics"]["dsc_mean"] == pytest.approx(
        summary["variants"]["pr+PP"]["metrics"]["dsc"]["mean"])
    ev = card["metrics"]["evaluation"]
    assert ev.startswith("the recipe's 2-fold cross-validation (config tiny, 2 epochs per fold)")
    assert ev.endswith("The shipped network (config tiny_long, 3 epochs) was trained on all 4 "
                       "cases, so it has no held-out evaluation of its own")
    assert card["description"].startswith("UNet3D one network trained on all cases with config "
                                           "tiny_long. The recipe's cross-validated DSC ")
    tr = card["training"]
    assert tr["config"]["name"] == "tiny_long" and list(tr["folds"]) == ["all"]
    assert tr["folds"]["all"]["epochs"] == 3 and tr["folds"]["all"]["val"] == []
    assert tr["cross_validation"]["config"]["name"] == "tiny"
    assert sorted(tr["cross_validation"]["folds"]) == ["0", "1"]
    # the exported network is the all-cases network's last epoch
    net = load_model(model, need="weights").folds[0]
    exported = torch.load(model / net.weights.name, weights_only=True)
    trained = torch.load(final / "fold_all" / "best.pt", weights_only=True)
    assert all(torch.equal(exported[n], trained[n]) for n in trained)
    out = base / "seg.nii.gz"
    code = femurseg(["segment", str(data / "imagesTr" / "case00_0000.nii.gz"), "-o", str(out),
                     "--model", str(model), "--quiet"])
    assert code in (0, 3) and out.is_file()  # 3: a 3-epoch model may warn; it still writes


def test_export_all_cases_needs_a_cross_validation_of_the_same_recipe(runs, tmp_path, capsys):
    base, data, cv, final = runs
    assert main(["export", str(final), str(tmp_path / "m")]) == 2
    assert "pass --cv-run CV_RUN" in capsys.readouterr().err
    # another network width is another recipe
    other = tmp_path / "other"
    shutil.copytree(cv, other)
    rec = json.loads((other / "run.json").read_text(encoding="utf-8"))
    rec["config"]["architecture"]["features"] = 8
    (other / "run.json").write_text(json.dumps(rec), encoding="utf-8")
    assert main(["export", str(final), str(tmp_path / "m"), "--cv-run", str(other)]) == 2
    assert ("error: the cross-validation run (config tiny) is not of the recipe of config "
            "tiny_long: architecture differ") in capsys.readouterr().err
    # the ROI cascade of an ensemble is not part of the recipe (one network never uses it),
    # the rest of the inference settings are
    rec["config"]["architecture"]["features"] = TINY_3D["architecture"]["features"]
    rec["config"]["inference"]["roi"] = {"threshold": 0.05, "margin": [2, 16, 16]}
    (other / "run.json").write_text(json.dumps(rec), encoding="utf-8")
    assert main(["export", str(final), str(tmp_path / "m"), "--cv-run", str(other)]) == 0
    rec["config"]["inference"]["tta_flip_axes"] = []
    (other / "run.json").write_text(json.dumps(rec), encoding="utf-8")
    assert main(["export", str(final), str(tmp_path / "m2"), "--cv-run", str(other)]) == 2
    assert "tiny_long: inference differ" in capsys.readouterr().err
    # --cv-run is only for a run trained on all cases
    assert main(["export", str(cv), str(tmp_path / "m3"), "--cv-run", str(cv)]) == 2
    assert "--cv-run is for a run trained on all cases" in capsys.readouterr().err
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()


def test_export_refuses_an_unfinished_all_cases_network(runs, tmp_path, capsys):
    # while fit --fold all runs, run.json does not list the network yet: its weights are an
    # epoch in the middle of the schedule, not the model
    _, _, cv, final = runs
    run = tmp_path / "final"
    shutil.copytree(final, run)
    rec = json.loads((run / "run.json").read_text(encoding="utf-8"))
    del rec["folds"]["all"]
    (run / "run.json").write_text(json.dumps(rec), encoding="utf-8")
    assert main(["export", str(run), str(tmp_path / "m"), "--cv-run", str(cv)]) == 2
    assert (f"error: the network trained on all cases in {run} has not finished (3 of 3 "
            f"epochs): continue it with femurseg-train fit tiny_long --fold all --run-dir {run} "
            "--resume, then export") in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_export_refuses_an_evaluation_of_other_weights(runs, tmp_path, capsys):
    # cv --resume after evaluate replaced fold 0's weights: the evaluation no longer
    # describes them
    _, _, cv, _ = runs
    run = tmp_path / "cv"
    shutil.copytree(cv, run)
    shutil.copyfile(run / "fold_1" / "best.pt", run / "fold_0" / "best.pt")
    assert main(["export", str(run), str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the evaluation in {run / 'evaluation'} is not of fold 0's "
                          "current weights")
    assert f"run femurseg-train evaluate {run} first" in err
    assert not (tmp_path / "m").exists()
    # an evaluation written before checksums were recorded: older than the weights is stale
    summary_path = run / "evaluation" / "summary.json"
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    del summary["weights_sha256"]
    summary_path.write_text(json.dumps(summary), encoding="utf-8")
    import os
    t = summary_path.stat().st_mtime
    os.utime(run / "fold_1" / "best.pt", (t + 10, t + 10))
    assert main(["export", str(run), str(tmp_path / "m")]) == 2
    assert "is not of fold 1's current weights" in capsys.readouterr().err


def test_unpack_an_exported_cross_validation_and_evaluate_it_again(runs, tmp_path, capsys):
    # the run folder of a cross-validation comes back from its exported ensemble: the same
    # splits, weights and config, and evaluating it again gives the same numbers
    base, _, cv, final = runs
    model = tmp_path / "cv-model"
    assert main(["export", str(cv), str(model)]) == 0
    run = tmp_path / "unpacked"
    assert main(["unpack", str(model), str(run)]) == 0
    assert (json.loads((run / "splits.json").read_text(encoding="utf-8"))
            == json.loads((cv / "splits.json").read_text(encoding="utf-8")))
    rec = json.loads((run / "run.json").read_text(encoding="utf-8"))
    old = json.loads((cv / "run.json").read_text(encoding="utf-8"))
    assert rec["config"] == old["config"] and rec["dataset"] == old["dataset"]
    assert rec["folds"] == old["folds"] and rec["unpacked_from"]["path"] == str(model.resolve())
    assert rec["commands"][-1] == f"femurseg-train unpack {model} {run}"
    for k in (0, 1):
        a = torch.load(run / f"fold_{k}" / "best.pt", weights_only=True)
        b = torch.load(cv / f"fold_{k}" / "best.pt", weights_only=True)
        assert all(torch.equal(a[n], b[n]) for n in b)
    assert main(["evaluate", str(run), "--quiet"]) == 0
    new_summary = json.loads((run / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    old_summary = json.loads((cv / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert new_summary["pr_optimal"] == old_summary["pr_optimal"]
    assert new_summary["variants"] == old_summary["variants"]
    # ... and can describe the all-cases network of the same recipe
    assert main(["export", str(final), str(tmp_path / "m"), "--cv-run", str(run)]) == 0
    capsys.readouterr()
    # never into an existing folder; never from a model that is not a cross-validation
    assert main(["unpack", str(model), str(run)]) == 2
    assert f"error: output exists: {run}" in capsys.readouterr().err
    assert main(["unpack", str(tmp_path / "m"), str(tmp_path / "u2")]) == 2
    assert "is not a cross-validation ensemble" in capsys.readouterr().err
    assert not (tmp_path / "u2").exists()


def test_train_default_model_script_runs_its_steps(runs, tmp_path):
    # scripts/train_default_model.sh on tiny configs: (1) the recipe's cross-validation, from an
    # exported ensemble (CV_FROM_MODEL) or trained, and its evaluation, (2) one network on
    # every case, (3) the export with the cross-validation's card metrics; a rerun resumes
    import os
    import subprocess
    import sys
    from pathlib import Path

    base, data, cv, _ = runs
    cv_model = tmp_path / "cv-model"
    assert main(["export", str(cv), str(cv_model)]) == 0
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({"notes": ["tiny"]}), encoding="utf-8")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_default_model.sh"
    summary = json.loads((cv / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    for how in ("unpacked", "trained"):
        runs_dir = tmp_path / how
        env = {**os.environ, "PY": sys.executable, "DATA": str(data), "RUNS": str(runs_dir),
               "CV_CONFIG": str(base / "tiny.json"), "CONFIG": str(base / "tiny_long.json"),
               "OUT": str(runs_dir / "model"), "CARD_EXTRA": str(extra), "THREADS": "1"}
        if how == "unpacked":
            env["CV_FROM_MODEL"] = str(cv_model)
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                              encoding="utf-8", timeout=600)
        assert done.returncode == 0, done.stderr
        assert f"model folder: {runs_dir / 'model'}" in done.stdout
        card = json.loads((runs_dir / "model" / "model.json").read_text(encoding="utf-8"))
        assert card["version"] == "0.4.0" and card["notes"] == ["tiny"]
        assert list(card["training"]["folds"]) == ["all"]
        assert card["training"]["cross_validation"]["config"]["name"] == "tiny"
        run_json = json.loads((runs_dir / "tiny" / "run.json").read_text(encoding="utf-8"))
        assert ("unpacked_from" in run_json) == (how == "unpacked")
        if how == "unpacked":  # the same folds evaluated again: the same threshold
            assert card["inference"]["threshold"] == summary["pr_optimal"]["threshold"]
    # the model folder exists now: a rerun resumes the finished network and refuses to
    # overwrite the model without OVERWRITE=1
    again = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                           encoding="utf-8", timeout=600)
    assert again.returncode == 2 and "output exists" in again.stderr
