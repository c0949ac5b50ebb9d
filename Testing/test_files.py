"""FemurSegLib.files, the one atomic-write module: atomic_path, Staging and replace_folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import files, images, outputplan
from FemurSegLib.errors import OutputError, OutputExistsError


def folder_with(path: Path, **contents: str) -> Path:
    path.mkdir(parents=True)
    for name, text in contents.items():
        (path / name).write_text(text, encoding="utf-8")
    return path


def contents(path: Path) -> dict:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(path.iterdir())}


def fail_renaming_into(monkeypatch, target: Path, source_parent: Path):
    """Make ``os.replace`` fail when it moves a new folder from ``source_parent`` to ``target``
    (a crash between moving the old folder aside and moving the new one in); putting the old
    folder back (``.NAME.TOKEN.old``) still works."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if (Path(dst) == target and Path(src).parent == source_parent
                and not Path(src).name.endswith(".old")):
            raise OSError(28, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_staging_is_the_atomic_write_modules():
    assert outputplan.Staging is files.Staging  # one implementation, re-exported


def test_replace_folder_moves_a_new_folder_in(tmp_path):
    staged = folder_with(tmp_path / "stage" / "model", **{"a.txt": "new"})
    out = files.replace_folder(staged, tmp_path / "models" / "model")
    assert out == tmp_path / "models" / "model"
    assert contents(out) == {"a.txt": "new"} and not staged.exists()


def test_replace_folder_refuses_an_existing_folder_without_overwrite(tmp_path):
    staged = folder_with(tmp_path / "stage" / "model", **{"a.txt": "new"})
    old = folder_with(tmp_path / "model", **{"a.txt": "old"})
    with pytest.raises(OutputExistsError,
                       match=rf"^output exists: {old} \(use --overwrite to replace it\)$"):
        files.replace_folder(staged, old)
    assert contents(old) == {"a.txt": "old"} and contents(staged) == {"a.txt": "new"}


def test_replace_folder_replaces_and_leaves_no_backup(tmp_path):
    staged = folder_with(tmp_path / "stage" / "model", **{"a.txt": "new"})
    old = folder_with(tmp_path / "model", **{"a.txt": "old", "b.txt": "only in the old one"})
    files.replace_folder(staged, old, overwrite=True)
    assert contents(old) == {"a.txt": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "stage"]


def test_replace_folder_puts_the_old_folder_back_when_the_rename_fails(tmp_path, monkeypatch):
    staged = folder_with(tmp_path / "stage" / "model", **{"a.txt": "new"})
    old = folder_with(tmp_path / "model", **{"a.txt": "old"})
    fail_renaming_into(monkeypatch, old, staged.parent)
    with pytest.raises(OSError, match="No space left on device"):
        files.replace_folder(staged, old, overwrite=True)
    assert contents(old) == {"a.txt": "old"}  # not lost
    assert contents(staged) == {"a.txt": "new"}  # the caller's to remove
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "stage"]  # no .old left


def test_write_model_folder_keeps_the_old_model_when_the_rename_fails(tmp_path, monkeypatch,
                                                                      tiny_model_dir):
    """modelwriter stages the folder beside the target and replaces it with replace_folder:
    before, it deleted the old folder first, and a failed rename lost both."""
    torch = pytest.importorskip("torch")
    from FemurSegLib.modelfolder import read_card
    from FemurSegLib.networks import build_network
    from FemurSegTraining.modelwriter import write_model_folder

    card = read_card(tiny_model_dir)
    out = tmp_path / "model"
    nets = {0: build_network(card["architecture"])}
    write_model_folder(out, card, nets, check_shape=(8, 16, 16))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    torch.manual_seed(1)
    fail_renaming_into(monkeypatch, out, tmp_path)
    with pytest.raises(OSError, match="No space left on device"):
        write_model_folder(out, card, {0: build_network(card["architecture"])}, overwrite=True,
                           check_shape=(8, 16, 16))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # staging removed


def test_mhd_header_and_data_are_written_together(tmp_path, monkeypatch):
    """_write_mhd goes through Staging: an existing data file is refused before anything is
    replaced, and a failed rename of the header puts back the data file it had replaced."""
    image = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    path = tmp_path / "a.mhd"
    images.write_image(image, path, compress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mhd", "a.raw"]
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "b.raw").write_bytes(b"someone else's")
    with pytest.raises(OutputExistsError, match=r"^output exists: .*b\.raw \(use --overwrite"):
        images.write_image(image, tmp_path / "b.mhd", compress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mhd", "a.raw", "b.raw"]
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == path and not Path(src).name.endswith(".old"):  # the new header
            raise OSError(28, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match=r"^cannot write .*a\.mhd: No space left on device$"):
        images.write_image(image * 2, path, overwrite=True, compress=False)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "b.raw"} == old
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))),
                                  sitk.GetArrayFromImage(image))


def test_one_writable_output_check(tmp_path):
    """segment's planning (outputplan.check_target) and every writer (check_writable) refuse
    the same things with the same words; check_output itself creates nothing."""
    assert outputplan.check_target is files.check_output
    (tmp_path / "folder.nii.gz").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "old.nii.gz").write_text("x")
    cases = [(tmp_path / "folder.nii.gz", OutputError,
              f"cannot write {tmp_path / 'folder.nii.gz'}: it is a folder"),
             (tmp_path / "old.nii.gz", OutputExistsError, f"output exists: "
                                                          f"{tmp_path / 'old.nii.gz'} (use "
                                                          f"--overwrite to replace it)"),
             (tmp_path / "notes.txt" / "a.nii.gz", OutputError,
              f"cannot write {tmp_path / 'notes.txt' / 'a.nii.gz'}: {tmp_path / 'notes.txt'} is "
              f"a file, not a folder")]
    for path, error, message in cases:
        for check in (files.check_output, files.check_writable):
            with pytest.raises(error) as caught:
                check(path, False)
            assert str(caught.value) == message
        with pytest.raises(error):  # an image writer goes through the same check
            images.write_image(sitk.Image(2, 2, 2, sitk.sitkUInt8), path)
    assert files.check_output(tmp_path / "new" / "a.nii.gz", False) == tmp_path / "new" / "a.nii.gz"
    assert not (tmp_path / "new").exists()
    files.check_writable(tmp_path / "new" / "a.nii.gz", False)
    assert (tmp_path / "new").is_dir()


def test_write_json_is_strict_json(tmp_path):
    """A training record with no validation score (one network on all cases: NaN) is written as
    null, so that every JSON reader (a browser, jq, Slicer's) reads the model card."""
    import json

    path = files.write_json({"best_val_dsc": float("nan"), "seconds": [1.5, float("inf")],
                             "epochs": np.int64(240)}, tmp_path / "run.json")
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == {
        "best_val_dsc": None, "seconds": [1.5, None], "epochs": 240}
