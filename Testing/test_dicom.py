"""DICOM in, DICOM Segmentation out: series discovery, choice and reading; the Segmentation's
voxels, references, geometry and terminology, checked with highdicom, dciodvfy and dcmqi; the CLI.

Synthetic series are written by the tests (pydicom); the real series of hip01 and hip02 are used
when ../shared/data/hip-mri-t1-dicom is present. Nothing DICOM is kept in the repository.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REAL_DATA, real_data_dir
from FemurSegLib import dicom, images
from FemurSegLib.cli import main
from FemurSegLib.errors import FemurSegError, InputError
from FemurSegLib.segments import femur_segments

DICOM_MISSING = "needs the dicom extra (pip install femurseg[dicom]): highdicom and pydicom"
pydicom = pytest.importorskip("pydicom", reason=DICOM_MISSING)
hd = pytest.importorskip("highdicom", reason=DICOM_MISSING)

from FemurSegLib import dicomseg
from dicom_helpers import FRAME_OF_REFERENCE_UID, STUDY_UID, write_mr_series, write_sr

REAL_DICOM = REAL_DATA.parent / "hip-mri-t1-dicom"
MAIN_UID, SHORT_UID, LOCALIZER_UID = ("1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.11",
                                      "1.2.826.0.1.3680043.8.498.12")
CREATOR = dicomseg.Creator("tiny-model", "1.2.3")


def _phantom_image() -> sitk.Image:
    from FemurSegLib.phantom import make_phantom

    return make_phantom(1, size=(96, 96, 14), spacing=(3.644, 3.644, 5.2), oblique_deg=6.0).image


def _label_map(reference: sitk.Image) -> sitk.Image:
    """A literal label map: right femur (1) and left femur (2) boxes, most slices empty."""
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    array[2, 10:20, 30:40] = 1
    array[5, 50:60, 60:70] = 2
    array[13, 0:3, 0:3] = 1
    return images.array_to_image(array, reference)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """An archive export: series in subfolders (one nested deeper, one split over two folders),
    a localizer with an image of another orientation, a structured report, an existing
    Segmentation and a text file."""
    root = tmp_path_factory.mktemp("dicom") / "export"
    image = _phantom_image()
    main_uids = write_mr_series(image, root / "study" / "S3", series_uid=MAIN_UID, number=3,
                                description="t1 cor")
    write_mr_series(image, root / "study" / "S4" / "deeper", series_uid=SHORT_UID, number=4,
                    description="t1 cor short", slices=range(5))
    axial = sitk.Image([32, 32, 2], sitk.sitkInt16) + 100
    write_mr_series(axial, root / "study" / "LOC" / "ax", series_uid=LOCALIZER_UID, number=1,
                    description="localizer")
    sagittal = sitk.Image([32, 32, 1], sitk.sitkInt16) + 100
    sagittal.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))  # i -> P, j -> I, k -> R
    write_mr_series(sagittal, root / "study" / "LOC" / "sag", series_uid=LOCALIZER_UID, number=1,
                    description="localizer")
    write_sr(root / "study" / "SR" / "report.dcm")
    (root / "README.txt").write_text("exported by an archive\n")
    scan = dicom.find_series(root / "study" / "S3")
    dicomseg.write_dicom_seg(_label_map(image), femur_segments(True), scan.series[0],
                             root / "study" / "SEG" / "seg.dcm", creator=CREATOR)
    return {"root": root, "image": image, "main_uids": main_uids}


# ----------------------------------------------------------------------------------------------
# Finding, choosing, listing and reading series


def test_series_found_in_the_tree_largest_first_with_notes(tree):
    scan = dicom.find_series(tree["root"])
    assert [(s.uid, s.number, s.description, s.size) for s in scan.series] == [
        (MAIN_UID, 3, "t1 cor", (96, 96, 14)),
        (SHORT_UID, 4, "t1 cor short", (96, 96, 5)),
        (LOCALIZER_UID, 1, "localizer", (32, 32, 2)),
    ]
    assert scan.notes == (
        "skipped 2 files that SimpleITK does not read as a DICOM image (structured reports, "
        "DICOMDIR, other files: README.txt, study/SR/report.dcm)",
        'skipped 1 Segmentation object (not an image series: "FemurSeg tiny-model 1.2.3 femur")',
        'skipped 1 image of another orientation in series 1 "localizer" (localizers)',
    )


def test_slices_are_in_order_along_the_normal_whatever_the_file_names(tree):
    series = dicom.find_series(tree["root"]).series[0]
    assert list(series.sop_instance_uids) == tree["main_uids"]  # slice k = instance k + 1
    gdcm = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tree["root"] / "study" / "S3"))
    assert [str(p) for p in series.files] == list(gdcm)
    assert [p.name for p in series.files][:2] == ["IM0014.dcm", "IM0013.dcm"]


def test_series_reads_with_the_geometry_and_voxels_it_was_written_with(tree):
    image = dicom.read_series(dicom.find_series(tree["root"]).series[0])
    assert images.grid_mismatch(image, tree["image"], tol=1e-5) == ""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(tree["image"]))
    # the same through the one image reader every command uses
    assert images.grid_mismatch(images.read_image(tree["root"]), tree["image"], tol=1e-5) == ""


@pytest.mark.parametrize("selector,uid", [(None, MAIN_UID), ("4", SHORT_UID), (SHORT_UID, SHORT_UID),
                                          (" 1 ", LOCALIZER_UID)])
def test_series_chosen_by_number_uid_or_size(tree, selector, uid):
    assert dicom.choose_series(dicom.find_series(tree["root"]), selector).uid == uid


def test_several_series_warning_names_number_and_description(tree, caplog):
    with caplog.at_level(logging.WARNING):
        dicom.choose_series(dicom.find_series(tree["root"]))
    assert (f'{tree["root"]} holds 3 image series; using the largest, series 3 "t1 cor" (14 images); '
            "choose another with --series NUMBER|UID (femurseg dicom-series lists them)") in caplog.text


def test_unknown_and_ambiguous_series_are_refused(tree, tmp_path):
    scan = dicom.find_series(tree["root"])
    with pytest.raises(InputError) as err:
        dicom.choose_series(scan, "7")
    assert str(err.value) == (f'no image series 7 in {tree["root"]} (it has series 3 "t1 cor", '
                              'series 4 "t1 cor short", series 1 "localizer")')
    twin = tmp_path / "twin"
    write_mr_series(tree["image"], twin / "a", series_uid="1.2.826.0.1.3680043.8.498.20", number=5,
                    description="first", slices=range(3))
    write_mr_series(tree["image"], twin / "b", series_uid="1.2.826.0.1.3680043.8.498.21", number=5,
                    description="second", slices=range(2))
    listed = dicom.series_table(dicom.find_series(twin)).splitlines()
    assert [line.split()[-3:] for line in listed[2:4]] == [
        ["2026-01-01", "a/", "1.2.826.0.1.3680043.8.498.20"],
        ["2026-01-01", "b/", "1.2.826.0.1.3680043.8.498.21"]]
    with pytest.raises(InputError) as err:
        dicom.choose_series(dicom.find_series(twin), "5")
    assert str(err.value) == (f'series number 5 is ambiguous in {twin}: series 5 "first" (UID '
                              '1.2.826.0.1.3680043.8.498.20); series 5 "second" (UID '
                              '1.2.826.0.1.3680043.8.498.21); give the Series Instance UID')


@pytest.mark.parametrize("slices,positions,message", [
    ([0, 1, 3], None, 'series 9 "gap" has unevenly spaced slices (5.20 to 10.40 mm apart): '
                      "slices are missing or it is not one volume"),
    ([0, 1], "same", 'series 9 "gap" has several images at the same position (echoes, phases or '
                     "repeated slices), not one volume; choose another series"),
])
def test_series_that_are_not_one_volume_are_refused(tree, tmp_path, slices, positions, message):
    image = tree["image"]
    if positions == "same":
        positions = [image.TransformIndexToPhysicalPoint((0, 0, 0))] * 2
    write_mr_series(image, tmp_path / "s", series_uid="1.2.826.0.1.3680043.8.498.30", number=9,
                    description="gap", slices=slices, positions=positions)
    with pytest.raises(InputError) as err:
        dicom.read_series(dicom.find_series(tmp_path / "s").series[0])
    assert str(err.value) == message


def test_folder_without_image_series_is_refused(tmp_path):
    write_sr(tmp_path / "r" / "report.dcm")
    with pytest.raises(InputError) as err:
        images.read_image(tmp_path / "r")
    assert str(err.value).startswith(f"no DICOM image series found in folder {tmp_path / 'r'} "
                                     "(skipped 1 file that SimpleITK does not read")


def test_dicom_series_command_lists_number_description_size_orientation(tree, capsys):
    assert main(["dicom-series", str(tree["root"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tree['root']}: 3 image series"
    assert lines[1].split() == ["number", "size", "(i", "x", "j", "x", "k)", "orientation",
                                "modality", "description", "patient", "study", "date", "folder",
                                "series", "UID"]
    assert lines[2].split()[:7] == ["3", "96", "x", "96", "x", "14", "coronal"]
    # patient, study date and folder tell apart series that share a number (issue 22)
    assert lines[2].split()[-9:] == ["MR", "t1", "cor", "PH01", "(Phantom", "Hip)",
                                     "2026-01-01", "study/S3/", MAIN_UID]
    assert "deg oblique" in lines[2]
    assert lines[4].split()[:8] == ["1", "32", "x", "32", "x", "2", "axial", "LPS"]
    assert [ln.split(":")[0] for ln in lines[5:]] == ["  note"] * 3


# ----------------------------------------------------------------------------------------------
# The DICOM Segmentation


def _decode(path: Path, uids, segment_numbers, **kwargs) -> np.ndarray:
    return hd.seg.segread(str(path)).get_pixels_by_source_instance(
        source_sop_instance_uids=list(uids), segment_numbers=segment_numbers, **kwargs)


@pytest.fixture(scope="module")
def written(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    series = dicom.choose_series(dicom.find_series(tree["root"] / "study" / "S3"))
    labelmap = _label_map(tree["image"])
    seg_path = dicomseg.write_dicom_seg(labelmap, femur_segments(True), series, out / "seg.dcm",
                                        creator=CREATOR)
    return {"series": series, "labelmap": labelmap, "path": seg_path, "out": out}


def test_seg_decodes_to_exactly_the_label_map(written):
    decoded = _decode(written["path"], written["series"].sop_instance_uids, [1, 2],
                      combine_segments=True, relabel=True)
    np.testing.assert_array_equal(decoded, sitk.GetArrayFromImage(written["labelmap"]))


def test_seg_references_every_source_instance_in_source_order_and_geometry(written):
    series, seg = written["series"], pydicom.dcmread(str(written["path"]))
    referenced = [item.ReferencedSOPInstanceUID
                  for ref in seg.ReferencedSeriesSequence for item in ref.ReferencedInstanceSequence]
    assert sorted(referenced) == sorted(series.sop_instance_uids)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == MAIN_UID
    frames = seg.PerFrameFunctionalGroupsSequence
    assert len(frames) == 2 * len(series.files)  # every slice, empty or not, for both segments
    for f, frame in enumerate(frames):
        k = f % len(series.files)
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == series.sop_instance_uids[k]
        np.testing.assert_allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                                   series.positions[k], atol=1e-4)
        assert frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 1 + f // len(series.files)
        assert frame.FrameContentSequence[0].DimensionIndexValues == [1 + f // len(series.files), k + 1]
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               series.orientation, atol=1e-6)


def test_seg_keeps_patient_study_and_frame_of_reference_in_a_new_series(written):
    seg = pydicom.dcmread(str(written["path"]))
    source = pydicom.dcmread(str(written["series"].files[0]), stop_before_pixels=True)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.Modality == "SEG"
    assert (seg.PatientName, seg.PatientID, seg.StudyInstanceUID, seg.FrameOfReferenceUID) == (
        source.PatientName, source.PatientID, STUDY_UID, FRAME_OF_REFERENCE_UID)
    assert seg.SeriesInstanceUID not in (MAIN_UID, SHORT_UID) and seg.SOPInstanceUID != source.SOPInstanceUID
    assert (seg.SeriesNumber, seg.SeriesDescription) == (1003, "FemurSeg tiny-model 1.2.3 femur")
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.SegmentationType) == (
        "FemurSeg", "tiny-model", "BINARY")
    for segment in seg.SegmentSequence:
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion, algorithm.AlgorithmSource) == (
            "tiny-model", "1.2.3", "FemurSeg")
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"


def test_seg_segments_have_the_names_codes_laterality_and_colours_of_the_seg_nrrd(written):
    import slicerio

    from FemurSegLib.writers import write_seg_nrrd

    nrrd = write_seg_nrrd(written["labelmap"], femur_segments(True), written["out"] / "x.seg.nrrd")
    slicer_segments = slicerio.read_segmentation(str(nrrd))["segments"]
    seg = pydicom.dcmread(str(written["path"]))
    assert len(seg.SegmentSequence) == len(slicer_segments) == 2

    def code(item):
        return [item.CodingSchemeDesignator, item.CodeValue, item.CodeMeaning]

    for segment, expected in zip(seg.SegmentSequence, slicer_segments):
        term = expected["terminology"]
        prop = segment.SegmentedPropertyTypeCodeSequence[0]
        assert segment.SegmentLabel == expected["name"]
        assert code(segment.SegmentedPropertyCategoryCodeSequence[0]) == term["category"]
        assert code(prop) == term["type"] == ["SCT", "71341001", "Femur"]
        assert code(prop.SegmentedPropertyTypeModifierCodeSequence[0]) == term["typeModifier"]
        rgb = hd.color.CIELabColor.from_dicom_value(segment.RecommendedDisplayCIELabValue).to_rgb()
        np.testing.assert_allclose(rgb, np.round(255 * np.asarray(expected["color"])), atol=1)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Right femur", "Left femur"]


def test_probability_seg_is_fractional_and_decodes_to_the_probability(written):
    series = written["series"]
    shape = sitk.GetArrayViewFromImage(written["labelmap"]).shape
    probability = np.linspace(0.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    image = images.array_to_image(probability, written["labelmap"])
    path = dicomseg.write_dicom_probability(image, femur_segments(False)[0], series,
                                            written["out"] / "p.dcm", creator=CREATOR)
    seg = pydicom.dcmread(str(path))
    assert (seg.SegmentationType, seg.SegmentationFractionalType, seg.MaximumFractionalValue) == (
        "FRACTIONAL", "PROBABILITY", 255)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Femur"]
    femur_type = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert "SegmentedPropertyTypeModifierCodeSequence" not in femur_type  # no laterality
    assert (seg.SeriesNumber, seg.SeriesDescription) == (2003, "FemurSeg tiny-model 1.2.3 femur probability")
    decoded = _decode(path, series.sop_instance_uids, [1])[..., 0]
    assert np.abs(decoded - probability).max() <= 0.5 / 255 + 1e-6  # 8-bit fractions


def test_label_map_off_the_series_grid_is_refused(written, tmp_path):
    moved = sitk.Image(written["labelmap"])
    moved.SetOrigin(tuple(np.asarray(moved.GetOrigin()) + [0.0, 0.0, 2.0]))
    message = r'^image slices lie up to 2\.000 mm from those of series 3 "t1 cor"$'
    with pytest.raises(InputError, match=message):
        dicomseg.write_dicom_seg(moved, femur_segments(True), written["series"], tmp_path / "m.dcm",
                                 creator=CREATOR)
    assert not (tmp_path / "m.dcm").exists()


def test_existing_seg_is_not_overwritten(written):
    before = written["path"].read_bytes()
    with pytest.raises(FemurSegError, match="output exists"):
        dicomseg.write_dicom_seg(written["labelmap"], femur_segments(True), written["series"],
                                 written["path"], creator=CREATOR)
    assert written["path"].read_bytes() == before


def _dciodvfy_errors(path: Path) -> list:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]


@pytest.mark.slow
def test_dciodvfy_finds_no_error(written):
    assert _dciodvfy_errors(written["path"]) == []


def _dcmqi_segments(path: Path, out: Path) -> dict:
    tool = shutil.which("segimage2itkimage") or str(Path(sys.executable).parent / "segimage2itkimage")
    if not Path(tool).exists():
        pytest.skip("dcmqi's segimage2itkimage not installed (pip install dcmqi; in [test])")
    out.mkdir()
    run = subprocess.run([tool, "--inputDICOM", str(path), "--outputDirectory", str(out),
                          "--outputType", "nrrd"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return {int(p.name.split(".")[0]): sitk.ReadImage(str(p)) for p in out.glob("*.nrrd")}


@pytest.mark.slow
def test_dcmqi_reads_it_back_onto_the_same_grid_with_the_same_voxels(written):
    per_segment = _dcmqi_segments(written["path"], written["out"] / "dcmqi")
    expected = sitk.GetArrayFromImage(written["labelmap"])
    assert sorted(per_segment) == [1, 2]
    for number, image in per_segment.items():
        assert images.grid_mismatch(image, written["labelmap"], tol=1e-4) == ""
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image) > 0, expected == number)


# ----------------------------------------------------------------------------------------------
# The command line (the bundled model, ONNX Runtime: about 2 s per run on this phantom)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err.strip()


@pytest.fixture(scope="module")
def cli_run(tree, tmp_path_factory, shared_segmenters):
    """The bundled model on the DICOM tree; it stays loaded for the module's other CLI runs."""
    out = tmp_path_factory.mktemp("cli")
    code = main(["segment", str(tree["root"]), "-o", str(out / "lab.nii.gz"), "--dicom-seg",
                 str(out / "seg.dcm"), "--probabilities", str(out / "prob.dcm"), "--quiet"])
    return {"code": code, "out": out}


@pytest.mark.slow
def test_cli_dicom_seg_decodes_to_the_label_map_written_for_the_same_input(tree, cli_run):
    assert cli_run["code"] == 0
    out = cli_run["out"]
    labels = sitk.GetArrayFromImage(images.read_image(out / "lab.nii.gz", allow_constant=True))
    assert set(np.unique(labels)) == {0, 1, 2}  # the bundled model finds both femurs
    decoded = _decode(out / "seg.dcm", tree["main_uids"], [1, 2], combine_segments=True, relabel=True)
    np.testing.assert_array_equal(decoded, labels)
    seg = pydicom.dcmread(str(out / "seg.dcm"))
    from FemurSegLib.modelfolder import find_model, read_card

    version = read_card(find_model())["version"]
    assert seg.SeriesDescription == f"FemurSeg femur-t1-coronal {version} femur"
    probability = _decode(out / "prob.dcm", tree["main_uids"], [1])[..., 0]
    assert probability[labels > 0].mean() > 0.5 > probability[labels == 0].mean()


@pytest.mark.slow
def test_cli_main_output_dcm_of_a_chosen_series(tree, cli_run, tmp_path, capsys):
    code = main(["segment", str(tree["root"]), "-o", str(tmp_path / "out.dcm"), "--series", "3"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "note: export: skipped 1 Segmentation object" in stdout
    decoded = _decode(tmp_path / "out.dcm", tree["main_uids"], [1, 2], combine_segments=True,
                      relabel=True)
    np.testing.assert_array_equal(decoded, sitk.GetArrayFromImage(
        images.read_image(cli_run["out"] / "lab.nii.gz", allow_constant=True)))


@pytest.mark.parametrize("args,message", [
    (["-o", "{tmp}/x.dcm"], "x.dcm: a DICOM Segmentation needs a DICOM series as input, and "
                            "in.nii.gz is not a DICOM folder"),
    (["-o", "{tmp}/x.nii.gz", "--dicom-seg", "{tmp}/s.dcm"],
     "s.dcm: a DICOM Segmentation needs a DICOM series as input, and in.nii.gz is not a DICOM folder"),
    (["-o", "{tmp}/x.nii.gz", "--probabilities", "{tmp}/p.dcm"],
     "p.dcm: a DICOM Segmentation needs a DICOM series as input, and in.nii.gz is not a DICOM folder"),
    (["-o", "{tmp}/x.nii.gz", "--series", "3"],
     "--series chooses a DICOM series, but no input is a DICOM folder"),
])
def test_cli_refuses_dicom_outputs_of_other_inputs_before_loading_the_model(tree, tmp_path, capsys,
                                                                           args, message):
    images.write_image(tree["image"], tmp_path / "in.nii.gz")
    argv = ["segment", str(tmp_path / "in.nii.gz"), *[a.format(tmp=tmp_path) for a in args],
            "--model", str(tmp_path / "no-such-model")]  # checked before the model is looked up
    assert main(argv) == 2
    assert _one_line_error(capsys) == f"error: {message}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


@pytest.mark.parametrize("args,message", [
    (["-o", "{tmp}/x.dcm", "--series", "8"],
     'no image series 8 in {root} (it has series 3 "t1 cor", series 4 "t1 cor short", '
     'series 1 "localizer")'),
    (["-o", "{tmp}/x.nii.gz", "--dicom-seg", "{tmp}/s.nii"],
     "--dicom-seg writes a DICOM file ending in .dcm, not {tmp}/s.nii"),
    (["-o", "{tmp}/x.dcm", "--dicom-seg", "{tmp}/x.dcm"],
     "two DICOM outputs are the same file: {tmp}/x.dcm"),
])
def test_cli_dicom_usage_errors(tree, tmp_path, capsys, args, message):
    argv = ["segment", str(tree["root"]), *[a.format(tmp=tmp_path) for a in args],
            "--model", str(tmp_path / "no-such-model")]
    assert main(argv) == 2
    assert _one_line_error(capsys) == "error: " + message.format(tmp=tmp_path, root=tree["root"])
    assert list(tmp_path.iterdir()) == []


def test_cli_names_the_missing_extra_before_loading_the_model(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "highdicom", None)  # as if femurseg[dicom] were not installed
    argv = ["segment", str(tree["root"]), "-o", str(tmp_path / "x.dcm"), "--model",
            str(tmp_path / "no-such-model")]
    assert main(argv) == 2
    assert _one_line_error(capsys) == (
        "error: writing a DICOM Segmentation needs the optional packages highdicom and pydicom "
        "(Python >= 3.10): pip install femurseg[dicom]")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# The real series of hip01 and hip02 (skipped when ../shared/data/hip-mri-t1-dicom is absent)


def _real_dicom() -> Path:
    if not REAL_DICOM.is_dir():
        pytest.skip(f"real DICOM series not present at {REAL_DICOM} (only on the development machine)")
    return REAL_DICOM


@pytest.mark.realdata
@pytest.mark.parametrize("case,slices", [("hip01", 47), ("hip02", 39)])
@pytest.mark.slow
def test_real_series_read_like_their_nifti(case, slices):
    folder = _real_dicom() / case
    scan = dicom.find_series(folder)
    (series,) = scan.series
    assert series.size == (384, 384, slices) and series.modality == "MR"
    assert [str(p) for p in series.files] == list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    image = dicom.read_series(series)
    nifti = images.read_image(real_data_dir() / "imagesTr" / f"{case}_0000.nii.gz")
    assert images.grid_mismatch(image, nifti) == ""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(nifti))


@pytest.mark.realdata
@pytest.mark.slow
def test_real_series_segmented_to_a_valid_dicom_seg(tmp_path):
    folder = _real_dicom() / "hip01"
    mask_path = real_data_dir() / "labelsTr" / "hip01.nii.gz"
    assert main(["segment", str(folder), "-o", str(tmp_path / "hip01.nii.gz"), "--dicom-seg",
                 str(tmp_path / "hip01.dcm"), "--quiet"]) == 0
    series = dicom.find_series(folder).series[0]
    labels = sitk.GetArrayFromImage(images.read_image(tmp_path / "hip01.nii.gz", allow_constant=True))
    decoded = _decode(tmp_path / "hip01.dcm", series.sop_instance_uids, [1, 2],
                      combine_segments=True, relabel=True)
    np.testing.assert_array_equal(decoded, labels)
    seg = pydicom.dcmread(str(tmp_path / "hip01.dcm"))
    source = pydicom.dcmread(str(series.files[0]), stop_before_pixels=True)
    referenced = {item.ReferencedSOPInstanceUID for ref in seg.ReferencedSeriesSequence
                  for item in ref.ReferencedInstanceSequence}
    assert referenced == set(series.sop_instance_uids) and len(referenced) == 47
    assert (seg.StudyInstanceUID, seg.FrameOfReferenceUID, seg.PatientID) == (
        source.StudyInstanceUID, source.FrameOfReferenceUID, source.PatientID)
    assert _dciodvfy_errors(tmp_path / "hip01.dcm") == []
    per_segment = _dcmqi_segments(tmp_path / "hip01.dcm", tmp_path / "dcmqi")
    mask = images.read_label(mask_path)
    for number, image in per_segment.items():
        assert images.grid_mismatch(image, mask) == ""
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image) > 0, labels == number)
    # the frames land on the right voxels: the expert's femur mask agrees with the decoded SEG
    from FemurSegLib.metrics import dice

    assert dice(decoded > 0, sitk.GetArrayFromImage(mask) == 1) > 0.85


@pytest.mark.parametrize("name, patient_id, shown", [
    ("Phantom^Hip", "PH01", "PH01 (Phantom Hip)"), ("C3N-00858", "C3N-00858", "C3N-00858"),
    ("", "PH01", "PH01"), ("Doe^Jane", "", "(Doe Jane)"), ("", "", "")])
def test_patient_column_of_the_series_list(name, patient_id, shown):
    assert dicom._patient({"patient_name": name, "patient_id": patient_id}) == shown
