"""Bad training data is reported with the case name before any training, exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegTraining.cli import main
from FemurSegTraining.data import DatasetError, load_dataset

from conftest import require_torch
from training_helpers import make_dataset, write_config


def _missing_label(root):
    (root / "labelsTr" / "case01.nii.gz").unlink()


def _grid_mismatch(root):
    path = root / "labelsTr" / "case01.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetSpacing((12.0, 11.0, 26.0))
    sitk.WriteImage(label, str(path))


def _label_absent(root):
    path = root / "labelsTr" / "case01.nii.gz"
    label = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(label)
    arr[arr == 1] = 2  # femur relabelled ilium
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(label)
    sitk.WriteImage(out, str(path))


def _unreadable(root):
    (root / "imagesTr" / "case01_0000.nii.gz").write_bytes(b"not an image at all" * 10)


@pytest.mark.parametrize("damage,message", [
    (_missing_label, "case01: label file missing (case01.nii.gz)"),
    (_grid_mismatch, "case01: label map case01.nii.gz is not on the image grid: spacing"),
    (_label_absent, "case01: foreground label 1 absent from the label map"),
    (_unreadable, "case01: cannot read image"),
])
def test_bad_case_reported_with_its_name_before_training(tmp_path, capsys, damage, message):
    require_torch()  # `cv` imports torch before it checks the data
    root = make_dataset(tmp_path / "ds", 3)
    damage(root)
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    assert str(err.value).startswith("1 case(s) unusable: ")
    assert message in str(err.value)
    cfg = write_config(tmp_path / "tiny.json")
    code = main(["cv", str(cfg), "--data", str(root), "--run-dir", str(tmp_path / "run"),
                 "--quiet"])
    err_text = capsys.readouterr().err
    assert code == 2
    assert err_text.startswith("error: 1 case(s) unusable: ") and message in err_text
    assert err_text.count("\n") == 1
    assert not (tmp_path / "run" / "fold_0").exists()  # nothing was trained


def test_all_problems_listed_at_once(tmp_path):
    root = make_dataset(tmp_path / "ds", 3)
    _missing_label(root)
    (root / "imagesTr" / "case02_0000.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"^2 case\(s\) unusable: case01: label file missing "
                                           r"\(case01.nii.gz\); case02: image file is empty"):
        load_dataset(root)


def test_foreground_by_name_or_value(tmp_path):
    root = make_dataset(tmp_path / "ds", 2)
    assert load_dataset(root).foreground_label == 1
    assert load_dataset(root, "ilium").foreground_label == 2
    assert load_dataset(root, "4").foreground_label == 4
    with pytest.raises(DatasetError, match="no label named 'bone'"):
        load_dataset(root, "bone")


@pytest.mark.parametrize("argv,message", [
    (["evaluate", "{tmp}"], "is not a run folder (no run.json)"),
    (["export", "{tmp}", "{tmp}/model"], "is not a run folder (no run.json)"),
    (["plan", "{tmp}", "-o", "{tmp}/plan.json"], "no dataset.json"),
    (["cv", "no_such_config"], "unknown config 'no_such_config'"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    if argv[0] == "export":
        require_torch()  # export imports torch before it looks at the run folder
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_plan_command_writes_an_editable_plan(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", 2)
    assert main(["plan", str(root), "-o", str(tmp_path / "plan.json")]) == 0
    doc = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))
    fp, plan = doc["fingerprint"], doc["plan"]
    assert fp["cases"] == 2 and fp["spacing_ijk_mm"]["median"] == pytest.approx([11, 11, 26])
    assert fp["size_kji"]["median"] == [8, 32, 32]
    assert fp["foreground_volume_ml"]["min"] > 0
    assert set(fp["intensity_percentiles_median"]) == {"p0.5", "p1", "p50", "p99", "p99.5"}
    assert plan["spacing"] == pytest.approx([11, 11, 26]) and plan["orientation"] == "LIP"
    # 26 mm slices vs 11 mm pixels: in-plane pooling first, slices once pixels are 22 mm
    assert plan["pooling"][:2] == [[1, 2, 2], [2, 2, 2]]
    assert np.prod(plan["patch_size"]) <= 16 * 160 * 160
    # refuses to overwrite
    assert main(["plan", str(root), "-o", str(tmp_path / "plan.json")]) == 2
    assert "output exists" in capsys.readouterr().err


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"),
                                                 (False, False, "cpu"), (True, False, "cuda")])
@pytest.mark.parametrize("command", ["cv", "fit", "evaluate"])
def test_device_auto_picks_what_torch_can_use(tmp_path, monkeypatch, capsys, command, cuda, mps,
                                              expected):
    """The README's training example runs as written on a CPU machine: --device auto takes CUDA
    when torch sees a GPU, else Apple's MPS, else the CPU."""
    torch = require_torch()

    import FemurSegTraining.cv as cv
    import FemurSegTraining.evaluate as evaluate
    from FemurSegLib.errors import FemurSegError

    seen = {}

    def record(*args, **kwargs):  # stands in for the training and the evaluation
        seen.update(kwargs)
        raise FemurSegError("recorded")

    monkeypatch.setattr(cv, "run_cv", record)
    monkeypatch.setattr(evaluate, "evaluate_run", record)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    elif mps:
        pytest.skip("this torch build has no torch.backends.mps")
    argv = {"cv": ["cv", "default_3d_f8l4_half"],
            "fit": ["fit", "default_3d_f8l4_half", "--fold", "0"],
            "evaluate": ["evaluate", str(tmp_path)]}[command]
    assert main(argv + ["--device", "auto"]) == 2
    assert capsys.readouterr().err == "error: recorded\n"
    assert seen["device"] == expected
