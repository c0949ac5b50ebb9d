"""Image I/O: formats, geometry round trips, validation errors, atomic non-overwriting writes."""

import json
import locale

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import files, images
from FemurSegLib.errors import InputError, OutputExistsError
from geometry_helpers import blob, oblique_image


def _img():
    rng = np.random.default_rng(0)
    return oblique_image(rng.integers(0, 1000, (6, 10, 8)).astype(np.int16))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_roundtrip_keeps_geometry_and_voxels(tmp_path, suffix):
    img = _img()
    path = images.write_image(img, tmp_path / f"a{suffix}")
    back = images.read_image(path)
    assert images.grid_mismatch(back, img) == ""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(img))


def test_dicom_folder_reads_largest_series(tmp_path):
    """A flat folder written by SimpleITK's own DICOM writer (the path that needs no extra)."""
    # GDCM's writer leaves the process in the C locale (LC_ALL=C): later tests that decode a
    # subprocess's text output as the locale's encoding would then read UTF-8 as ASCII
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_two_series_with_gdcm(tmp_path)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)
    img = _two_series_image()
    back = images.read_image(tmp_path)
    assert back.GetSize() == (16, 16, 4)
    np.testing.assert_allclose(back.GetSpacing(), img.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(back.GetOrigin(), img.GetOrigin(), atol=1e-3)


def _two_series_image():
    return sitk.Cast(oblique_image(blob((4, 16, 16)) * 100, tilt=0.0), sitk.sitkInt16)


def _write_two_series_with_gdcm(tmp_path):
    img = _two_series_image()
    for sid, n in (("1.2.3.1", 4), ("1.2.3.2", 2)):
        for z in range(n):
            sl = img[:, :, z]
            sl.SetMetaData("0020|000e", sid)          # series instance UID
            sl.SetMetaData("0020|0013", str(z + 1))   # instance number
            sl.SetMetaData("0008|0060", "MR")
            sl.SetMetaData("0008|0018", f"{sid}.{z + 1}")  # SOP instance UID
            pos = img.TransformIndexToPhysicalPoint((0, 0, z))
            sl.SetMetaData("0020|0032", "\\".join(f"{p:.6f}" for p in pos))
            d = img.GetDirection()
            sl.SetMetaData("0020|0037", "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])))
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.SetFileName(str(tmp_path / f"{sid}_{z}.dcm"))
            writer.Execute(sl)


@pytest.mark.parametrize("name,content,message", [
    ("missing.nii.gz", None, "input image not found"),
    ("x.txt", b"hi", "unknown input image format: x.txt"),
    ("e.nii.gz", b"", "input image file is empty"),
    ("c.nii.gz", b"\x1f\x8b garbage", "cannot read input image"),
    ("t.nrrd", b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n12", "cannot read input image"),
])
def test_bad_files_give_one_line_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        images.read_image(path, what="input image")
    assert "\n" not in str(err.value)


def _write(tmp_path, img, name="bad.nrrd"):
    p = tmp_path / name
    sitk.WriteImage(img, str(p))
    return p


def test_2d_image_refused(tmp_path):
    p = _write(tmp_path, sitk.Image(8, 8, sitk.sitkFloat32) + 1)
    with pytest.raises(InputError, match="is 2D; a 3D volume is required"):
        images.read_image(p)


def test_vector_image_refused(tmp_path):
    p = _write(tmp_path, sitk.Image([4, 4, 4], sitk.sitkVectorFloat32, 3))
    with pytest.raises(InputError, match="3 components per voxel"):
        images.read_image(p)


def test_non_finite_refused(tmp_path):
    a = np.ones((3, 4, 4), np.float32)
    a[1, 2, 2] = np.nan
    a[0, 0, 0] = np.inf
    p = _write(tmp_path, sitk.GetImageFromArray(a))
    with pytest.raises(InputError, match="contains 2 non-finite voxel values"):
        images.read_image(p)


def test_blank_refused(tmp_path):
    p = _write(tmp_path, sitk.Image([4, 4, 4], sitk.sitkInt16))
    with pytest.raises(InputError, match="blank: every voxel has the value 0"):
        images.read_image(p)


def test_write_refuses_existing_and_leaves_no_temp(tmp_path):
    img = _img()
    out = tmp_path / "o.nii.gz"
    images.write_image(img, out)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="use --overwrite"):
        images.write_image(img * 2, out)
    assert out.read_bytes() == before
    images.write_image(img * 2, out, overwrite=True)
    assert out.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.nii.gz"]


def test_atomic_path_cleans_up_on_error(tmp_path):
    out = tmp_path / "r.json"
    with pytest.raises(RuntimeError):
        with files.atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_written_files_follow_umask(tmp_path):
    out = files.write_json({"a": 1}, tmp_path / "m.json")
    assert out.stat().st_mode & 0o044 == 0o044  # group/other readable under the usual umask 022


def test_read_label_requires_same_grid(tmp_path):
    img = _img()
    lab = sitk.GetImageFromArray(np.zeros((6, 10, 8), np.uint8))
    p = _write(tmp_path, lab, "lab.nrrd")
    with pytest.raises(InputError, match="not on the image grid: spacing"):
        images.read_label(p, img)


def test_ijk_to_lps_matches_itk():
    img = _img()
    m = images.ijk_to_lps(img)
    for idx in [(0, 0, 0), (3, 7, 5), (7, 9, 5)]:
        np.testing.assert_allclose(m @ [*idx, 1], [*img.TransformIndexToPhysicalPoint(idx), 1],
                                   atol=1e-9)


def test_strip_suffix():
    assert images.strip_image_suffix("a/hip01_0000.nii.gz") == "hip01_0000"
    assert images.strip_image_suffix("b.seg.nrrd") == "b"


def test_text_outputs_are_utf8_whatever_the_locale(tmp_path):
    """Slicer and VTK switch the process locale to C; text files must still be UTF-8."""
    import os
    import subprocess
    import sys

    code = ("import json, sys; from FemurSegLib import files; "
            "files.write_text('DSC 0.94 \\u00b1 0.05', sys.argv[1]); files.write_json({'s': '\\u00b1'}, sys.argv[2]); "
            "import locale; print(locale.getpreferredencoding(False))")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.md"), str(tmp_path / "j.json")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().lower() in ("ansi_x3.4-1968", "ascii", "us-ascii")  # really ASCII
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == "DSC 0.94 \u00b1 0.05"
    assert json.loads((tmp_path / "j.json").read_text(encoding="utf-8")) == {"s": "\u00b1"}
