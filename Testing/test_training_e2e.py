"""End to end on phantoms: cross-validation -> evaluate -> export -> femurseg segment."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import require_torch

torch = require_torch()

from FemurSegLib.cli import main as femurseg
from FemurSegLib.metrics import dice
from FemurSegTraining.cli import main

from training_helpers import TINY_3D, make_dataset, write_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow  # trains, evaluates and exports a run (and one subprocess)



@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, one_thread):
    """A 2-fold, 2-epoch run of a tiny 3D U-Net on 4 phantoms, evaluated."""
    base = tmp_path_factory.mktemp("e2e")
    data = make_dataset(base / "ds", 4)
    cfg = write_config(base / "tiny.json", TINY_3D, paper_row="3D tiny")
    run = base / "run"
    assert main(["cv", str(cfg), "--data", str(data), "--run-dir", str(run), "--quiet"]) == 0
    assert main(["evaluate", str(run), "--quiet"]) == 0
    return base, data, run


def test_cv_writes_folds_history_and_run_record(evaluated_run):
    _, data, run = evaluated_run
    rec = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert rec["config"]["name"] == "tiny" and rec["dataset"]["cases"] == 4
    assert sorted(rec["folds"]) == ["0", "1"] and rec["hardware"] and rec["code_version"]
    assert rec["commands"] == [f"femurseg-train cv {run.parent / 'tiny.json'} --data {data} "
                               f"--run-dir {run} --quiet"]
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    assert sorted(sum((s["val"] for s in splits), [])) == ["case00", "case01", "case02", "case03"]
    for k in (0, 1):
        assert rec["folds"][str(k)]["epochs"] == 2
        assert (run / f"fold_{k}" / "best.pt").is_file()
        with open(run / f"fold_{k}" / "history.csv") as f:
            assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]


def test_one_log_line_per_epoch(tmp_path, caplog, one_thread):
    data = make_dataset(tmp_path / "ds", 2)
    cfg = write_config(tmp_path / "tiny.json", folds=2, max_epochs=2)
    with caplog.at_level(logging.INFO, logger="femurseg.train"):
        assert main(["fit", str(cfg), "--fold", "1", "--data", str(data), "--run-dir",
                     str(tmp_path / "run"), "--quiet"]) == 0
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert len(lines) == 2
    assert all("loss" in m and "val DSC" in m and m.rstrip().split()[-1] in ("s", "(best)")
               for m in lines)
    assert not (tmp_path / "run" / "fold_0").exists()  # only the fold asked for


def test_evaluation_files(evaluated_run):
    _, _, run = evaluated_run
    ev = run / "evaluation"
    summary = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
    t = summary["pr_optimal"]["threshold"]
    assert 0.0 < t < 1.0 and summary["subjects"] == 4 and summary["folds"] == [0, 1]
    assert set(summary["variants"]) == {"0.5", "0.5+PP", "pr", "pr+PP"}
    assert summary["variants"]["pr"]["threshold"] == t
    assert set(summary["variants"]["pr+PP"]["per_fold"]) == {"0", "1"}
    with open(ev / "per_subject.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16  # 4 subjects x (0.5, PR-optimal) x (without, with PP)
    assert {"dsc", "precision", "recall", "specificity", "hd95_mm", "assd_mm", "roc_auc",
            "average_precision"} <= set(rows[0])
    dsc = [float(r["dsc"]) for r in rows if r["variant"] == "pr+PP"]
    assert summary["variants"]["pr+PP"]["metrics"]["dsc"]["mean"] == pytest.approx(
        np.mean(dsc), abs=1e-5)
    table = (ev / "table.md").read_text(encoding="utf-8")
    assert "| 3D tiny + PP | " in table and "(PR-optimal)" in table
    # per fold and per case, for what the exported model does (PR-optimal threshold + PP)
    pr_pp = sorted((r for r in rows if r["variant"] == "pr+PP"), key=lambda r: r["subject"])
    assert "| Fold | Validation cases | DSC |" in table and "| all | 4 | " in table
    for r in pr_pp:
        assert f"| {r['subject']} | {r['fold']} | {float(r['dsc']):.3f} |" in table
    head = (ev / "table.csv").read_text(encoding="utf-8").splitlines()[0]
    assert head.startswith("configuration,threshold,threshold_kind,subjects,dsc_mean,dsc_sd")
    for png in ("roc_pr.png", "boxplots.png"):
        assert (ev / png).read_bytes()[:8] == PNG_MAGIC


def test_evaluation_uses_the_original_grid(evaluated_run):
    # the 0.5 row of a subject equals DSC of the fold model's probability map, computed
    # independently on the label file's own grid
    from FemurSegTraining.evaluate import fold_segmenter

    _, data, run = evaluated_run
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    name = splits[1]["val"][0]
    cfg = json.loads((run / "run.json").read_text(encoding="utf-8"))["config"]
    image = sitk.ReadImage(str(data / "imagesTr" / f"{name}_0000.nii.gz"))
    prob = fold_segmenter(cfg, run / "fold_1").segment(image).probability
    assert prob.GetSize() == image.GetSize() and prob.GetSpacing() == image.GetSpacing()
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "labelsTr" / f"{name}.nii.gz"))) == 1
    with open(run / "evaluation" / "per_subject.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["subject"] == name and r["variant"] == "0.5")
    assert float(row["dsc"]) == pytest.approx(dice(sitk.GetArrayFromImage(prob) >= 0.5, ref),
                                              abs=1e-5)


def test_export_then_segment(evaluated_run, capsys):
    base, data, run = evaluated_run
    model = base / "model"
    assert main(["export", str(run), str(model), "--name", "tiny-femur", "--version", "0.1.0"]) == 0
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    summary = json.loads((run / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert card["name"] == "tiny-femur" and card["version"] == "0.1.0"
    assert [f["fold"] for f in card["folds"]] == [0, 1]
    assert all((model / f["onnx"]).is_file() and (model / f["weights"]).is_file()
               for f in card["folds"])
    assert card["inference"]["threshold"] == summary["pr_optimal"]["threshold"]
    assert card["metrics"]["dsc_mean"] == pytest.approx(
        summary["variants"]["pr+PP"]["metrics"]["dsc"]["mean"])
    assert card["metrics"]["subjects"] == 4 and "dsc_sd" in card["metrics"]
    tr = card["training"]
    assert tr["config"]["name"] == "tiny" and tr["data"]["cases"] == 4
    assert tr["hardware"] and tr["code_version"] and tr["wall_time_hours"] >= 0
    assert any(c.startswith("femurseg-train export") for c in tr["commands"])
    assert card["license"] and card["intended_use"]
    assert card["export_checks"]["phantom_onnx_vs_torch_max_abs_diff"] <= 1e-4
    # the plausibility section comes from the run's 4 training phantoms: per-femur volumes
    # (counted here on each half of the LIP grid: low i = the patient's right) ...
    section = card["plausibility"]
    assert section["cases"] == 4 and section["source"].startswith("4 training cases of ds")
    volumes = []
    for n in range(4):
        label = sitk.ReadImage(str(data / "labelsTr" / f"case{n:02d}.nii.gz"))
        femur = sitk.GetArrayFromImage(label) == 1
        half = femur.shape[2] // 2
        ml = np.prod(label.GetSpacing()) / 1000
        volumes += [femur[..., :half].sum() * ml, femur[..., half:].sum() * ml]
    assert section["femur_volume_ml"]["training"] == pytest.approx(
        [min(volumes), max(volumes)], abs=0.05)
    assert section["femur_volume_ml"]["accepted"] == pytest.approx(
        [0.5 * min(volumes), 1.5 * max(volumes)], abs=0.1)
    # ... and the fingerprint of each training image, as the network saw it, lies in its range
    from FemurSegLib.plausibility import intensity_fingerprint
    from FemurSegLib.preprocessing import InputSpec, prepare

    stats = section["fingerprint"]["stats"]
    for n in range(4):
        image = sitk.ReadImage(str(data / "imagesTr" / f"case{n:02d}_0000.nii.gz"))
        fp = intensity_fingerprint(prepare(image, InputSpec.from_dict(card["input"])).array)
        for name, value in fp.items():
            lo, hi = stats[name]["training"]
            assert lo - 1e-4 <= value <= hi + 1e-4, (name, value, lo, hi)
    # refuses to overwrite
    assert main(["export", str(run), str(model)]) == 2
    assert "output exists" in capsys.readouterr().err

    # the exported ensemble segments with the core CLI; fold 1 alone reproduces the evaluation
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    name = splits[1]["val"][0]
    out = base / f"{name}_seg.nii.gz"
    capsys.readouterr()
    code = femurseg(["segment", str(data / "imagesTr" / f"{name}_0000.nii.gz"), "-o", str(out),
                     "--model", str(model), "--folds", "1", "--no-split", "--quiet"])
    # a 2-epoch model's mask may be implausible against the card's training volumes: then the
    # run still finishes, with exit code 3 and one warning line naming the input
    err = capsys.readouterr().err
    assert code == (3 if err else 0), err
    assert all(line.startswith(f"warning: {name}_0000.nii.gz: ") for line in err.splitlines())
    seg = sitk.ReadImage(str(out))
    ref_img = sitk.ReadImage(str(data / "labelsTr" / f"{name}.nii.gz"))
    assert seg.GetSize() == ref_img.GetSize() and seg.GetOrigin() == ref_img.GetOrigin()
    with open(run / "evaluation" / "per_subject.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["subject"] == name and r["variant"] == "pr+PP")
    got = dice(sitk.GetArrayFromImage(seg) > 0, sitk.GetArrayFromImage(ref_img) == 1)
    assert got == pytest.approx(float(row["dsc"]), abs=1e-4)


def test_table_combines_runs(evaluated_run):
    base, _, run = evaluated_run
    out = base / "table2"
    assert main(["table", str(run), str(run), "-o", str(out), "--pp", "both"]) == 0
    lines = [ln for ln in (out / "table.md").read_text(encoding="utf-8").splitlines() if ln.startswith("| 3D")]
    assert len(lines) == 4 and lines[1].startswith("| 3D tiny + PP |")
    text = (out / "table.md").read_text(encoding="utf-8")
    assert "| Fold | 3D tiny | 3D tiny + PP | 3D tiny | 3D tiny + PP |" in text
    assert sum(ln.startswith("| case") for ln in text.splitlines()) == 4
    assert (out / "roc_pr.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "boxplots.png").read_bytes()[:8] == PNG_MAGIC


def test_export_half_precision(evaluated_run):
    base, _, run = evaluated_run
    model = base / "model_half"
    assert main(["export", str(run), str(model), "--half"]) == 0
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    assert card["export_checks"]["weights_dtype"] == "float16"
    assert card["export_checks"]["phantom_onnx_vs_torch_max_abs_diff"] <= 1e-4
    state = torch.load(model / "fold_0.pt", weights_only=True)
    assert {t.dtype for t in state.values()} == {torch.float16}


def test_export_refused_when_onnx_and_torch_disagree(evaluated_run, monkeypatch, capsys):
    import FemurSegTraining.export as export

    base, _, run = evaluated_run
    monkeypatch.setattr(export, "onnx_torch_phantom_difference", lambda model_dir: 0.5)
    before = sorted(p.name for p in base.iterdir())
    assert main(["export", str(run), str(base / "model_bad")]) == 2
    err = capsys.readouterr().err
    assert "ONNX Runtime and PyTorch differ by 5.00e-01 on the phantom (> 1e-04)" in err
    assert sorted(p.name for p in base.iterdir()) == before  # nothing left behind


def test_export_over_a_model_keeps_it_when_the_rename_fails(evaluated_run, monkeypatch):
    """export --overwrite moves the old model folder aside and puts it back when the new one
    cannot be renamed in (before, it deleted the old folder first: a crash lost both)."""
    import os

    from FemurSegTraining.export import export_run

    base, _, run = evaluated_run
    model = base / "model_kept"
    export_run(run, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == model and not Path(src).name.endswith(".old"):
            raise OSError(28, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    names = sorted(p.name for p in base.iterdir())
    with pytest.raises(OSError, match="No space left on device"):
        export_run(run, model, overwrite=True, version="2.0.0")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert sorted(p.name for p in base.iterdir()) == names  # no staging or backup left


def test_export_card_extra_adds_notes(evaluated_run):
    from FemurSegLib.modelfolder import load_model

    base, _, run = evaluated_run
    extra = base / "extra.json"
    extra.write_text(json.dumps({"notes": ["trained on phantoms"],
                                 "intended_use": "Tests only."}), encoding="utf-8")
    model = base / "model_extra"
    assert main(["export", str(run), str(model), "--card-extra", str(extra)]) == 0
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    assert card["notes"] == ["trained on phantoms"]
    assert card["intended_use"] == "Tests only."
    summary = json.loads((run / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert card["inference"]["threshold"] == summary["pr_optimal"]["threshold"]  # kept
    assert any("--card-extra" in c for c in card["training"]["commands"])
    assert load_model(model).card["notes"] == ["trained on phantoms"]  # checksums still valid


@pytest.mark.parametrize("extra, message", [
    ({"colour": 1}, "card extra: unknown keys colour"),
    ({"notes": "one string"}, "card extra: notes must be a list of strings"),
    ({"inference": {"threshold": 0.9}}, "card extra: unknown keys inference (allowed: "
     "description, intended_use, notes) (inference settings go into the config's inference "
     "section, so that evaluation uses them too)"),
    ({"description": " "}, "card extra: description must be a non-empty string"),
])
def test_export_card_extra_is_validated(evaluated_run, capsys, extra, message):
    base, _, run = evaluated_run
    path = base / "bad_extra.json"
    path.write_text(json.dumps(extra), encoding="utf-8")
    out = base / "model_bad_extra"
    assert main(["export", str(run), str(out), "--card-extra", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_export_card_extra_unreadable(evaluated_run, capsys):
    base, _, run = evaluated_run
    path = base / "broken_extra.json"
    path.write_text("{notes", encoding="utf-8")
    assert main(["export", str(run), str(base / "m"), "--card-extra", str(path)]) == 2
    assert f"card extra {path} is not valid JSON" in capsys.readouterr().err
    assert main(["export", str(run), str(base / "m"), "--card-extra", str(base / "nope.json")]) == 2
    assert "cannot read card extra" in capsys.readouterr().err


def test_robustness_scores_contrast_copies_of_each_fold(evaluated_run, capsys):
    _, _, run = evaluated_run
    assert main(["robustness", str(run), "--contrasts", "gamma,inverted", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| unchanged | 4 |" in out and "| gamma | 4 |" in out and "| inverted | 4 |" in out
    result = json.loads((run / "evaluation" / "robustness.json").read_text(encoding="utf-8"))
    assert [r["contrast"] for r in result["rows"]] == ["gamma", "inverted"] * 4
    summary = json.loads((run / "evaluation" / "summary.json").read_text(encoding="utf-8"))
    assert result["threshold"] == summary["pr_optimal"]["threshold"]
    assert (run / "evaluation" / "robustness.png").stat().st_size > 10000
    assert main(["robustness", str(run), "--contrasts", "sepia"]) == 2
    assert "unknown contrast sepia" in capsys.readouterr().err


def test_budget_script_trains_evaluates_and_exports(tmp_path):
    """scripts/train_on_budget.sh on a tiny budget: the GPU recipe, proved on the CPU."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    data = make_dataset(tmp_path / "ds", 4)
    cfg = write_config(tmp_path / "tiny.json", TINY_3D, max_epochs=50)
    env = {**os.environ, "PY": sys.executable, "DATA": str(data), "CONFIG": str(cfg),
           "MINUTES": "0.02", "RUN": str(tmp_path / "run"), "OUT": str(tmp_path / "model"),
           "DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    # bytes decoded as UTF-8 explicitly: an earlier test may leave the process locale at C
    res = subprocess.run(["bash", str(root / "scripts" / "train_on_budget.sh")], env=env,
                         capture_output=True, encoding="utf-8", errors="replace", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "model folder:" in res.stdout
    run = json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))
    assert "--time-budget 0.015" in run["commands"][0]
    for k in ("0", "1"):  # a tiny budget: each fold planned fewer epochs than the config's 50
        assert 1 <= run["folds"][k]["epochs"] < 50
    card = json.loads((tmp_path / "model" / "model.json").read_text(encoding="utf-8"))
    assert card["inference"]["threshold"] is not None and len(card["folds"]) == 2
