"""The rough edges a new user meets (issue 22, items 5-9 and 11): versions, options after the
command, help texts, one message style, the DICOM series listing, model names, training
output."""

import argparse
import csv
import json
import logging
import shutil
import subprocess
import sys

import pytest

from FemurSegLib import __version__, modelfolder
from FemurSegLib.cli import build_parser, main
from FemurSegLib.commandline import LowerCaseLevels
from FemurSegLib.errors import ModelError
from FemurSegTraining.cli import build_parser as build_train_parser
from FemurSegTraining.cli import main as train_main


def _commands(parser):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_version_names_the_default_model(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    folder = modelfolder.find_model()
    card = modelfolder.read_card(folder)
    assert capsys.readouterr().out == (f"femurseg {__version__}\ndefault model: {card['name']} "
                                       f"{card['version']} ({folder})\n")


def test_version_without_a_default_model(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(modelfolder, "bundled_models_dir", lambda: tmp_path / "none")
    monkeypatch.setenv("FEMURSEG_MODELS", str(tmp_path / "none"))
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == (f"femurseg {__version__}\ndefault model: "
                                       "femur-t1-coronal (not installed)\n")


def test_train_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"femurseg-train {__version__}\n"
    # export's own --version (the model's) still works after the command
    args = build_train_parser().parse_args(["export", "run", "model", "--version", "2.0.0"])
    assert args.version == "2.0.0"


@pytest.mark.parametrize("argv,verbose,debug", [
    (["segment", "x.nii.gz", "-o", "y.nii.gz", "--verbose"], True, False),
    (["--verbose", "segment", "x.nii.gz", "-o", "y.nii.gz"], True, False),
    (["segment", "x.nii.gz", "--debug", "-o", "y.nii.gz"], False, True),
    (["--debug", "models", "--verbose"], True, True),
    (["segment", "x.nii.gz", "-o", "y.nii.gz"], False, False),
])
def test_global_options_before_or_after_the_command(argv, verbose, debug):
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.debug) == (verbose, debug)


def test_train_debug_after_the_command():
    assert build_train_parser().parse_args(["cv", "c", "--debug"]).debug is True
    assert build_train_parser().parse_args(["--debug", "cv", "c"]).debug is True
    assert build_train_parser().parse_args(["cv", "c"]).debug is False


@pytest.mark.parametrize("make", [build_parser, build_train_parser], ids=["femurseg",
                                                                          "femurseg-train"])
def test_every_argument_of_every_command_is_explained(make):
    missing = [f"{name} {action.option_strings or action.dest}"
               for name, command in _commands(make()).items()
               for action in command._actions if not action.help]
    assert missing == []


def test_messages_are_lower_case():
    def record(level):
        return logging.LogRecord("femurseg", level, __file__, 1, "a %s", ("b",), None)

    assert LowerCaseLevels().format(record(logging.WARNING)) == "warning: a b"
    assert LowerCaseLevels().format(record(logging.INFO)) == "info: a b"
    line = LowerCaseLevels(clock=True).format(record(logging.WARNING))
    assert line[8:] == " warning: a b" and line[2] == line[5] == ":"
    assert LowerCaseLevels(clock=True).format(record(logging.INFO))[8:] == " a b"


@pytest.mark.slow
def test_command_line_logs_in_lower_case():
    code = ("import logging; from FemurSegLib.cli import main; main(['--verbose', 'models']); "
            "logging.getLogger('FemurSegLib.dicom').info('found'); "
            "logging.getLogger('FemurSegLib.dicom').warning('two series')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "info: found\nwarning: two series\n"


# ----------------------------------------------------------------------------------------------
# model names


@pytest.fixture
def two_installed(tmp_path, tiny_model_dir, monkeypatch):
    """Two exported folders of the same config (card name tiny-3d), as two exports without
    --name give."""
    root = tmp_path / "models"
    for folder in ("a-run", "b-run"):
        shutil.copytree(tiny_model_dir, root / folder)
    monkeypatch.setenv("FEMURSEG_MODELS", str(root))
    return root


def test_model_found_by_card_name_or_folder_name(two_installed):
    assert modelfolder.find_model("tiny-3d") == two_installed / "a-run"  # the first installed
    assert modelfolder.find_model("a-run") == two_installed / "a-run"
    assert modelfolder.find_model("b-run") == two_installed / "b-run"
    assert modelfolder.find_model(str(two_installed / "b-run")) == two_installed / "b-run"


def test_unknown_model_lists_what_model_accepts(two_installed):
    with pytest.raises(ModelError) as err:
        modelfolder.find_model("nope")
    bundled = "; ".join(f"{info.name} (bundled)" for info in modelfolder._model_folders()
                        if info.source == "bundled" and info.path.name == info.name)
    assert str(err.value) == ("unknown model 'nope': --model takes a model's name or its "
                              "folder's name (tiny-3d or a-run (installed); tiny-3d or b-run "
                              f"(installed){'; ' + bundled if bundled else ''}), or the path of "
                              "a model folder")


def test_models_command_says_what_to_pass(two_installed, capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "  use: --model tiny-3d or --model a-run\n" in out
    assert "[installed] " + str(two_installed / "a-run") in out


# ----------------------------------------------------------------------------------------------
# training output


@pytest.mark.slow  # a cross-validation fold of three epochs
def test_training_history_and_run_record_agree_and_no_bar_in_a_log(tmp_path, capfd):
    """With "select": "last" best.pt holds the last epoch: history.csv says so as run.json does
    (min_delta 1: early stopping's best stays epoch 0). stderr is not a terminal here: no
    progress bar, only the log."""
    torch = pytest.importorskip("torch", reason="needs PyTorch")
    from FemurSegTraining.config import load_config
    from FemurSegTraining.cv import run_cv
    from training_helpers import TINY_25D, make_dataset, write_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_dataset(tmp_path / "data", n=4)
        cfg = load_config(str(write_config(tmp_path / "c.json", TINY_25D, max_epochs=3,
                                           min_delta=1.0, patches_per_epoch=2)))
        run = run_cv(cfg, tmp_path / "run", data_dir=str(data), folds=[0], progress=True)
    finally:
        torch.set_num_threads(threads)
    with open(tmp_path / "run" / "fold_0" / "history.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["best_epoch"]) for r in rows] == [0, 1, 2]
    assert run["folds"]["0"]["best_epoch"] == 2
    assert json.loads((tmp_path / "run" / "run.json").read_text())["folds"]["0"][
        "best_epoch"] == 2
    err = capfd.readouterr().err
    assert "it/s" not in err and "fold 0 epoch 0:" not in err


# ----------------------------------------------------------------------------------------------
# QC report window


@pytest.mark.parametrize("view, window", [("femurs", [63, 137, 83, 217]),
                                          ("full", [0, 200, 0, 300])])
def test_report_tiles_crop_to_the_femurs_or_show_the_field_of_view(tmp_path, view, window):
    """A 270 x 180 mm coronal field of view with two 'femurs' in the middle: by default every
    tile shows their bounding box plus 15 mm (17 voxels of 0.9 mm), --report-view full the
    whole field of view."""
    import numpy as np
    import SimpleITK as sitk

    from FemurSegLib import images, montage
    from FemurSegLib.segments import femur_segments

    array = np.zeros((10, 200, 300), np.uint8)  # [k, j, i] of a LIP grid: rows S-I, columns R-L
    array[3:7, 80:120, 100:130] = 1
    array[3:7, 80:120, 170:200] = 2
    labels = sitk.GetImageFromArray(array)
    labels.SetSpacing((0.9, 0.9, 5.2))
    labels.SetDirection((1, 0, 0, 0, 0, -1, 0, 1, 0))  # i -> L, j -> I, k -> P
    grey = images.array_to_image((200 + 400 * (array > 0)).astype(np.int16), labels)
    report = montage.write_report(grey, labels, femur_segments(True), tmp_path / view,
                                  view=view)
    assert report["montage"]["view"] == view
    assert report["montage"]["window_rows_columns"] == window
    rows, cols = window[1] - window[0], window[3] - window[2]
    tile_w, tile_h = report["montage"]["tile_pixels"]
    assert tile_w / tile_h == pytest.approx(cols / rows, rel=0.02)
    # on the command line
    args = build_parser().parse_args(["segment", "x.nii.gz", "-o", "y.nii.gz", "--report", "r",
                                      "--report-view", view])
    assert args.report_view == view
    assert build_parser().parse_args(["segment", "x.nii.gz", "-o", "y.nii.gz"]).report_view \
        == "femurs"
