"""Outputs of `femurseg segment`: checked before the model runs, named by clear rules, written
all or nothing per input; an OSError while writing is `error: cannot write PATH: reason`."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import outputplan, writers
from FemurSegLib.cli import main
from FemurSegLib.errors import OutputError, OutputExistsError
from FemurSegLib.images import case_name

from geometry_helpers import blob, oblique_image

SUFFIXES = ".seg.nrrd, .nii.gz, .nii, .nrrd, .mha, .dcm"


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    shape = (8, 32, 28)
    noise = np.random.default_rng(0).normal(0, 10, shape)  # grey values, not a label map
    arr = blob(shape, centre=[4, 16, 8], radius=(2, 8, 5)).astype(float) * 800 + 100 + noise
    img = oblique_image(arr.astype(np.int16), spacing=(1.8, 1.8, 5.2))
    path = tmp_path_factory.mktemp("scan") / "hip01_0000.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if a model is loaded: these errors must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr("FemurSegLib.inference.Segmenter.from_folder", refuse)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files_in(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ----------------------------------------------------------------------------------------------
# Naming


@pytest.mark.parametrize("name, case", [
    ("hip01_0000.nii.gz", "hip01"), ("hip01.nii.gz", "hip01"), ("hip01.seg.nrrd", "hip01"),
    ("a/b/case_12_0001.nrrd", "case_12"), ("scan_000.mha", "scan_000"), ("_0000.nii", "_0000"),
])
def test_case_name(name, case):
    assert case_name(name) == case


@pytest.mark.parametrize("text, n, expected", [
    ("out.seg.nrrd", 1, ("file", "out.seg.nrrd")),
    ("out.NII.GZ", 1, ("file", "out.NII.GZ")),
    ("out/", 1, ("folder", "out")),
    ("out/", 3, ("folder", "out")),
    ("out", 3, ("folder", "out")),
])
def test_resolve(text, n, expected):
    kind, path = outputplan.resolve(text, list(outputplan.MAIN_WRITERS), n, "output")
    assert (kind, path) == (expected[0], Path(expected[1]))


@pytest.mark.parametrize("text, n, message", [
    ("x.seg.nrr", 1, f"output x.seg.nrr: not a known file type ({SUFFIXES}) and not an existing "
                     f"folder (end a new folder's name with {os.sep})"),
    ("x.txt", 1, f"output x.txt: not a known file type ({SUFFIXES}) and not an existing folder "
                 f"(end a new folder's name with {os.sep})"),
    ("x", 1, f"output x: not a known file type ({SUFFIXES}) and not an existing folder "
             f"(end a new folder's name with {os.sep})"),
    ("x.seg.nrrd", 2, "2 inputs need a output folder, not the file x.seg.nrrd"),
])
def test_resolve_refuses(text, n, message):
    with pytest.raises(OutputError) as err:
        outputplan.resolve(text, list(outputplan.MAIN_WRITERS), n, "output")
    assert str(err.value) == message


@pytest.mark.parametrize("output", ["x.seg.nrr", "x.txt"])
def test_one_input_with_an_unknown_output_suffix_is_refused(tmp_path, capsys, scan, no_model,
                                                            output):
    """It used to make a folder of that name with the result inside."""
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / output)
    assert code == 2
    assert err == (f"error: output {tmp_path / output}: not a known file type ({SUFFIXES}) and "
                   f"not an existing folder (end a new folder's name with {os.sep})\n")
    assert files_in(tmp_path) == []


def test_output_folder_by_trailing_separator_or_existing_folder(tmp_path, capsys, scan,
                                                                tiny_model_dir):
    code, _, _ = run(capsys, "segment", scan, "-o", f"{tmp_path / 'new'}{os.sep}", "--model",
                     tiny_model_dir, "--quiet", "--no-tta")
    assert code == 3  # the tiny random model's result covers the image: finished, with a warning
    (tmp_path / "there").mkdir()
    code, _, _ = run(capsys, "segment", scan, "-o", tmp_path / "there", "--model", tiny_model_dir,
                     "--quiet", "--no-tta", "--format", ".nii.gz", "--probabilities",
                     f"{tmp_path / 'p'}{os.sep}")
    assert code == 3
    # named by case: the nnU-Net channel suffix _0000 is dropped, to pair with labelsTr/hip01.*
    assert files_in(tmp_path) == ["new", "new/hip01.seg.nrrd", "p", "p/hip01_probability.nrrd",
                                  "there", "there/hip01.nii.gz"]


@pytest.mark.slow
def test_batch_names_drop_the_channel_suffix(tmp_path, capsys, scan, tiny_model_dir):
    second = tmp_path / "in" / "hip02_0000.nrrd"
    second.parent.mkdir()
    shutil.copy(scan, tmp_path / "in" / "hip01_0000.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(scan)), str(second))
    code, _, _ = run(capsys, "segment", tmp_path / "in", "-o", tmp_path / "out", "--model",
                     tiny_model_dir, "--quiet", "--no-tta", "--stl", tmp_path / "stl",
                     "--report", tmp_path / "report")
    assert code == 3
    assert files_in(tmp_path / "out") == ["hip01.seg.nrrd", "hip02.seg.nrrd"]
    assert [p.name for p in sorted((tmp_path / "stl").iterdir())] == ["hip01", "hip02"]
    assert files_in(tmp_path / "report") == ["hip01", "hip01/report.png", "hip01/volumes.json",
                                             "hip02", "hip02/report.png", "hip02/volumes.json"]


def test_two_inputs_of_one_case_are_refused(tmp_path, capsys, scan, no_model):
    shutil.copy(scan, tmp_path / "hip01.nrrd")
    code, _, err = run(capsys, "segment", scan, tmp_path / "hip01.nrrd", "-o", tmp_path / "out")
    assert code == 2
    assert err == ("error: two inputs have the same case name (hip01); segment them into "
                   "different folders\n")


@pytest.mark.parametrize("extra, message", [
    (["--probabilities", "{tmp}/p.txt"],
     "probability map {tmp}/p.txt: not a known file type (.nrrd, .nii.gz, .nii, .mha, .dcm) and not "
     "an existing folder (end a new folder's name with /)"),
    (["--probabilities", "{tmp}/o.nii.gz"], "two outputs are the same file: {tmp}/o.nii.gz"),
    (["--stl", "{tmp}/file"], "--stl {tmp}/file: a file, not a folder"),
    (["--format", ".nrrd"], "--format .nrrd does not match the output file o.nii.gz"),
    (["--reference", "{tmp}/file"], "--reference is drawn in the QC report: add --report DIR"),
    (["--reference", "{tmp}/nope.nii.gz", "--report", "{tmp}/r"],
     "reference not found: {tmp}/nope.nii.gz"),
])
def test_other_outputs_are_checked_too(tmp_path, capsys, scan, no_model, extra, message):
    (tmp_path / "file").write_text("x")
    extra = [e.format(tmp=tmp_path) for e in extra]
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "o.nii.gz", *extra)
    assert code == 2
    assert err == f"error: {message.format(tmp=tmp_path)}\n"
    assert files_in(tmp_path) == ["file"]


def test_output_that_is_the_input_is_refused(tmp_path, capsys, no_model):
    scan = tmp_path / "hip.nrrd"
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkInt16) + 1, str(scan))
    code, _, err = run(capsys, "segment", scan, "-o", scan, "--overwrite")
    assert code == 2 and err == f"error: output {scan} is an input\n"


# ----------------------------------------------------------------------------------------------
# Unwritable places are refused before the model runs


def test_stl_under_a_regular_file_is_refused_before_inference(tmp_path, capsys, scan, no_model):
    """It used to fail after inference as 'internal error (OSError ...)', exit 1, with the
    .seg.nrrd left behind (so a rerun stopped with 'output exists')."""
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "o.seg.nrrd", "--stl",
                       tmp_path / "notes.txt" / "stl")
    assert code == 2
    assert err == (f"error: cannot write {tmp_path / 'notes.txt' / 'stl' / 'Right_femur.stl'}: "
                   f"{tmp_path / 'notes.txt'} is a file, not a folder\n")
    assert files_in(tmp_path) == ["notes.txt"]


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder in which files cannot be created, for whoever runs the tests."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root may write anywhere on a normal file system; sysfs refuses new files even to root
    folder = Path("/sys")
    if folder.is_dir() and outputplan._can_create_in(folder):
        return folder
    pytest.skip("running as root without a folder that refuses new files")


def test_read_only_folder_is_refused_before_inference(tmp_path, capsys, scan, no_model):
    folder = _read_only_folder(tmp_path)
    target = folder / "femurseg-test" / "o.seg.nrrd"
    try:
        code, _, err = run(capsys, "segment", scan, "-o", target)
    finally:
        if folder.parent == tmp_path:
            folder.chmod(0o755)
    assert code == 2
    assert err.startswith(f"error: cannot write {target}: ") and err.count("\n") == 1
    assert err.endswith(f" ({folder})\n") and "Permission denied" in err
    assert not (folder / "femurseg-test").exists()


def test_existing_output_is_refused_before_inference(tmp_path, capsys, scan, no_model):
    (tmp_path / "stl").mkdir()
    (tmp_path / "stl" / "Left_femur.stl").write_bytes(b"old")
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "o.seg.nrrd", "--stl",
                       tmp_path / "stl")
    assert code == 2
    assert err == (f"error: output exists: {tmp_path / 'stl' / 'Left_femur.stl'} (use "
                   "--overwrite to replace it)\n")
    assert files_in(tmp_path) == ["stl", "stl/Left_femur.stl"]


# ----------------------------------------------------------------------------------------------
# All or nothing per input; an OSError while writing is "cannot write PATH: reason"


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_error_leaves_none_of_the_outputs(tmp_path, capsys, scan, tiny_model_dir,
                                                monkeypatch):
    monkeypatch.setattr(writers, "write_stl", _disk_full)
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "out" / "o.seg.nrrd",
                       "--probabilities", tmp_path / "p.nrrd", "--stl", tmp_path / "stl",
                       "--model", tiny_model_dir, "--quiet", "--no-tta")
    assert code == 2
    assert err == f"error: cannot write {tmp_path / 'stl'}: No space left on device\n"
    # neither the .seg.nrrd written before the failure nor any temporary file or new folder
    assert files_in(tmp_path) == []


def test_write_error_never_touches_existing_files(tmp_path, capsys, scan, tiny_model_dir,
                                                  monkeypatch):
    (tmp_path / "o.seg.nrrd").write_bytes(b"old segmentation")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "volumes.json").write_text("{}")
    import FemurSegLib.montage as montage

    monkeypatch.setattr(montage, "write_report", _disk_full)
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "o.seg.nrrd", "--report",
                       tmp_path / "report", "--overwrite", "--model", tiny_model_dir, "--quiet",
                       "--no-tta")
    assert code == 2
    assert err == f"error: cannot write {tmp_path / 'report'}: No space left on device\n"
    assert (tmp_path / "o.seg.nrrd").read_bytes() == b"old segmentation"
    assert files_in(tmp_path) == ["o.seg.nrrd", "report", "report/volumes.json"]


def test_staging_commits_all_or_restores_everything(tmp_path, monkeypatch):
    (tmp_path / "b.txt").write_text("old b")
    real_replace = os.replace
    calls = []

    def third_rename_fails(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "c.txt":
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    with pytest.raises(OutputError, match=r"^cannot write .*c\.txt: Input/output error$"):
        with outputplan.Staging(overwrite=True) as staging:
            for name in ("a.txt", "b.txt", "c.txt"):
                staging.write(tmp_path / name, lambda tmp, n=name: tmp.write_text(f"new {n}"))
            monkeypatch.setattr(outputplan.os, "replace", third_rename_fails)
            staging.commit()
    monkeypatch.setattr(outputplan.os, "replace", real_replace)
    assert files_in(tmp_path) == ["b.txt"]
    assert (tmp_path / "b.txt").read_text() == "old b"


def test_staging_refuses_a_file_that_appeared_meanwhile(tmp_path):
    with pytest.raises(OutputExistsError):
        with outputplan.Staging() as staging:
            staging.write(tmp_path / "sub" / "a.txt", lambda tmp: tmp.write_text("new"))
            (tmp_path / "sub" / "a.txt").write_text("someone else's")
            staging.commit()
    assert (tmp_path / "sub" / "a.txt").read_text() == "someone else's"
    assert files_in(tmp_path) == ["sub", "sub/a.txt"]


def test_staging_success_leaves_only_the_targets(tmp_path):
    with outputplan.Staging() as staging:
        staging.write(tmp_path / "x" / "a.txt", lambda tmp: tmp.write_text("a"))
        staging.write_folder(tmp_path / "y", lambda d: [(d / n).write_text(n) for n in "bc"])
        staging.write_folder(tmp_path / "z", lambda d: None)  # nothing to write
        done = staging.commit()
    assert done == [tmp_path / "x" / "a.txt", tmp_path / "y" / "b", tmp_path / "y" / "c"]
    assert files_in(tmp_path) == ["x", "x/a.txt", "y", "y/b", "y/c"]


# ----------------------------------------------------------------------------------------------
# --reference: a reference outline in the QC report


@pytest.mark.slow
def test_report_with_reference_outline(tmp_path, capsys, scan, tiny_model_dir):
    from matplotlib import image as mpimg

    from FemurSegLib.montage import REFERENCE_COLOR

    image = sitk.ReadImage(str(scan))
    ref = sitk.GetArrayFromImage(image) > 500  # the bright blob, as label 1
    label = sitk.GetImageFromArray(ref.astype(np.uint8))
    label.CopyInformation(image)
    sitk.WriteImage(label, str(tmp_path / "hip01.nii.gz"))
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "o.seg.nrrd", "--report",
                       tmp_path / "report", "--reference", tmp_path / "hip01.nii.gz",
                       "--model", tiny_model_dir, "--quiet", "--no-tta")
    assert code == 3, err  # the tiny random model's result: a warning, the outputs written
    rgb = mpimg.imread(str(tmp_path / "report" / "report.png"))[..., :3]
    assert np.all(np.abs(rgb - np.asarray(REFERENCE_COLOR)) < 0.15, axis=-1).sum() > 50
    # a reference of another grid is refused with the input's name
    small = sitk.Image([4, 4, 4], sitk.sitkUInt8)
    sitk.WriteImage(small + 1, str(tmp_path / "other.nii.gz"))
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "p.seg.nrrd", "--reference",
                       tmp_path / "other.nii.gz", "--report", tmp_path / "r2", "--model",
                       tiny_model_dir, "--quiet")
    assert code == 2
    assert err.startswith("error: reference other.nii.gz is not on the image grid: size ")
    assert not (tmp_path / "p.seg.nrrd").exists() and not (tmp_path / "r2").exists()


def test_reference_folder_pairs_by_case_name_before_the_model_runs(tmp_path, capsys, scan,
                                                                   no_model):
    (tmp_path / "in").mkdir()
    (tmp_path / "refs").mkdir()
    shutil.copy(scan, tmp_path / "in" / "hip01_0000.nii.gz")
    shutil.copy(scan, tmp_path / "in" / "hip02_0000.nii.gz")
    shutil.copy(scan, tmp_path / "refs" / "hip01.nii.gz")
    code, _, err = run(capsys, "segment", tmp_path / "in", "-o", tmp_path / "out", "--report",
                       tmp_path / "report", "--reference", tmp_path / "refs")
    assert code == 2
    assert err == (f"error: no reference label map for hip02 in {tmp_path / 'refs'} (expected "
                   "hip02.nii.gz or another image ending)\n")
