"""Inputs that are not what they seem: files whose voxel data end early, and label maps given
as scans (issue 22, items 1 and 2). Truncated copies are made of a phantom written here, never
of the real data."""

import os
import re
import shutil
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import images
from FemurSegLib.cli import main
from FemurSegLib.errors import InputError
from conftest import real_data_dir


@pytest.fixture(scope="module")
def phantom():
    from FemurSegLib.phantom import make_phantom

    return make_phantom(1, size=(96, 96, 20), spacing=(3.644, 3.644, 10.4))


def _cut(path, fraction=2 / 3):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# (file name, compress, the file that holds the voxel data, the reason read_image gives)
CUT_CASES = [
    ("ph.nii.gz", True, "ph.nii.gz",
     "Compressed file ended before the end-of-stream marker was reached"),
    ("ph.nii", False, "ph.nii",
     r"its header describes 368992 bytes \(header and voxel data\) and it holds 245994 \(66.7%\)"),
    ("ph.nrrd", False, "ph.nrrd",
     r"\[nrrd\] _nrrdEncodingRaw_read: fread got only \d+ 2-sized things, not 184320 .*"),
    ("ph.nrrd", True, "ph.nrrd",
     r"\[nrrd\] _nrrdEncodingGzip_read: expected 368640 bytes but received \d+"),
    ("ph.nhdr", False, "ph.raw",
     r"\[nrrd\] _nrrdEncodingRaw_read: fread got only 122880 2-sized things, not 184320 .*"),
    ("ph.mha", False, "ph.mha",
     r"its header describes 368640 bytes of voxel data and it holds \d+ \(66.\d%\)"),
    ("ph.mha", True, "ph.mha",
     r"its compressed data end before the end of the stream \(it is cut short\)"),
    ("ph.mhd", False, "ph.raw",
     r"its header describes 368640 bytes of voxel data and its data file ph.raw holds 245760 "
     r"\(66.7%\)"),
    ("ph.mhd", True, "ph.zraw",
     r"its compressed data end before the end of the stream \(its data file ph.zraw is cut "
     r"short\)"),
]


@pytest.mark.parametrize("name,compress,data_file,reason", CUT_CASES,
                         ids=[f"{c[0]}-{'gz' if c[1] else 'raw'}" for c in CUT_CASES])
def test_truncated_file_is_refused_with_its_reason(tmp_path, phantom, name, compress,
                                                   data_file, reason):
    path = tmp_path / name
    sitk.WriteImage(phantom.image, str(path), compress)
    assert (tmp_path / data_file).is_file()
    whole = images.read_image(path)  # the complete file reads, voxel for voxel
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(whole),
                                  sitk.GetArrayViewFromImage(phantom.image))
    _cut(tmp_path / data_file)
    with pytest.raises(InputError) as err:
        images.read_image(path, what="input image")
    assert re.fullmatch(f"input image {re.escape(str(path))} is truncated or corrupt: {reason}",
                        str(err.value)), str(err.value)


@pytest.mark.parametrize("name,compress,data_file", [
    ("ph.nhdr", False, "ph.raw"), ("ph.nhdr", True, "ph.raw.gz"),
    ("ph.mhd", False, "ph.raw"), ("ph.mhd", True, "ph.zraw")])
def test_missing_detached_data_file_is_named(tmp_path, phantom, name, compress, data_file):
    path = tmp_path / name
    sitk.WriteImage(phantom.image, str(path), compress)
    (tmp_path / data_file).unlink()
    with pytest.raises(InputError) as err:
        images.read_image(path, what="input image")
    assert str(err.value) == (f"input image {path} is truncated or corrupt: its data file "
                              f"{data_file} is missing (expected beside {name})")


def test_nifti_with_extra_bytes_and_big_endian_header_read(tmp_path, phantom):
    """The check reads the header's own offset and byte order: a NIfTI file with trailing
    bytes, and one written big-endian by hand, are complete."""
    path = tmp_path / "ph.nii"
    sitk.WriteImage(phantom.image, str(path))
    with open(path, "ab") as f:
        f.write(b"\0" * 100)
    images.read_image(path)
    header = bytearray(352)
    struct.pack_into(">i", header, 0, 348)
    struct.pack_into(">8h", header, 40, 3, 5, 4, 3, 1, 1, 1, 1)
    struct.pack_into(">hh", header, 70, 4, 16)  # int16
    struct.pack_into(">8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into(">f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    data = np.arange(60, dtype=">i2").tobytes()
    big = tmp_path / "big.nii"
    big.write_bytes(bytes(header) + data)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(images.read_image(big)),
                                  np.arange(60).reshape(3, 4, 5))
    big.write_bytes(bytes(header) + data[:-10])
    with pytest.raises(InputError, match=r"is truncated or corrupt: its header describes 472 "
                                         r"bytes \(header and voxel data\) and it holds 462"):
        images.read_image(big)


def test_gzip_with_a_bad_checksum_is_corrupt(tmp_path, phantom):
    path = tmp_path / "ph.nii.gz"
    sitk.WriteImage(phantom.image, str(path), True)
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"ph.nii.gz is truncated or corrupt: CRC check failed"):
        images.read_image(path)


def test_segment_refuses_truncated_input_before_writing(tmp_path, capsys, phantom,
                                                        tiny_model_dir):
    """The command line (and so the Slicer module's background process and every batch) stops
    with one line and exit code 2; nothing is written."""
    scans = tmp_path / "scans"
    scans.mkdir()
    good = scans / "hip01_0000.nii.gz"
    sitk.WriteImage(phantom.image, str(good), True)
    cut = tmp_path / "trunc.nii.gz"
    cut.write_bytes(good.read_bytes()[:60000])  # as `head -c 60000 hip01_0000.nii.gz`
    out = tmp_path / "x.seg.nrrd"
    code, _, err = run(capsys, "segment", cut, "-o", out, "--model", tiny_model_dir, "--quiet")
    assert code == 2
    assert err == (f"error: input image {cut} is truncated or corrupt: Compressed file ended "
                   "before the end-of-stream marker was reached\n")
    assert not out.exists()
    shutil.copy(cut, scans / "hip02_0000.nii.gz")
    code, _, err = run(capsys, "segment", scans, cut, "-o", f"{tmp_path / 'batch'}{os.sep}",
                       "--model", tiny_model_dir, "--quiet")
    assert code == 2
    assert err.splitlines()[-1] == (f"error: input image {scans / 'hip02_0000.nii.gz'} is "
                                    "truncated or corrupt: Compressed file ended before the "
                                    "end-of-stream marker was reached")


# ----------------------------------------------------------------------------------------------
# label maps given as scans


def test_label_map_values_on_literal_arrays(phantom):
    arr = np.zeros((4, 5, 6), np.uint8)
    arr[1:3, 1:4, 2:5] = 1
    arr[0, 0, 0] = 4
    mask = sitk.GetImageFromArray(arr)
    assert images.label_map_values(mask).tolist() == [0, 1, 4]
    as_float = sitk.GetImageFromArray(arr.astype(np.float32))
    assert images.label_map_values(as_float).tolist() == [0, 1, 4]
    assert images.label_map_values(sitk.GetImageFromArray(arr * 0.5)) is None  # 0.5: not labels
    many = sitk.GetImageFromArray(np.arange(17, dtype=np.int16).reshape(1, 1, 17))
    assert images.label_map_values(many) is None
    assert images.label_map_values(phantom.image) is None  # a scan
    assert images.label_map_values(phantom.labels).tolist() == [0, 1, 2, 3, 4]


def test_segment_refuses_label_map_with_the_image_as_hint(tmp_path, capsys, monkeypatch,
                                                          phantom, tiny_model_dir):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    sitk.WriteImage(phantom.image, str(tmp_path / "imagesTr" / "hip01_0000.nii.gz"), True)
    sitk.WriteImage(phantom.labels, str(tmp_path / "labelsTr" / "hip01.nii.gz"), True)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "segment", "labelsTr/hip01.nii.gz", "-o", "x.seg.nrrd",
                       "--model", tiny_model_dir, "--quiet")
    assert code == 2
    assert err == ("error: input image labelsTr/hip01.nii.gz looks like a label map (5 values, "
                   "0-4); pass the image, e.g. imagesTr/hip01_0000.nii.gz\n")
    assert not (tmp_path / "x.seg.nrrd").exists()
    mask = sitk.Cast(phantom.labels == 1, sitk.sitkUInt8)
    sitk.WriteImage(mask, str(tmp_path / "femur_mask.nrrd"))
    code, _, err = run(capsys, "segment", "femur_mask.nrrd", "-o", "y.nii.gz",
                       "--model", tiny_model_dir, "--quiet")
    assert code == 2
    assert err == ("error: input image femur_mask.nrrd looks like a label map (values 0 and 1); "
                   "pass the MR image, not a segmentation\n")


@pytest.mark.realdata
def test_real_label_map_is_refused(tmp_path, capsys, tiny_model_dir):
    data = real_data_dir()
    label = data / "labelsTr" / "hip01.nii.gz"
    code, _, err = run(capsys, "segment", label, "-o", tmp_path / "x.seg.nrrd",
                       "--model", tiny_model_dir, "--quiet")
    assert code == 2
    assert err == (f"error: input image {label} looks like a label map (5 values, 0-4); pass "
                   f"the image, e.g. {data / 'imagesTr' / 'hip01_0000.nii.gz'}\n")


# ----------------------------------------------------------------------------------------------
# a folder with images in its subfolders only (an nnU-Net dataset's root)


def test_dataset_root_names_its_image_folder(tmp_path, capsys, phantom, tiny_model_dir):
    root = tmp_path / "Dataset001"
    for sub, name, image in (("imagesTr", "hip01_0000.nii.gz", phantom.image),
                             ("labelsTr", "hip01.nii.gz", phantom.labels)):
        (root / sub).mkdir(parents=True)
        sitk.WriteImage(image, str(root / sub / name), True)
    (root / "dataset.json").write_text("{}")
    message = f"no images in {root}; did you mean {root / 'imagesTr'}{os.sep}?"
    with pytest.raises(InputError) as err:
        images.read_image(root)
    assert str(err.value) == message
    code, _, err = run(capsys, "segment", root, "-o", f"{tmp_path / 'out'}{os.sep}", "--model",
                       tiny_model_dir, "--quiet")
    assert code == 2 and err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()
