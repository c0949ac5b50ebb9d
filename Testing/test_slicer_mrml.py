"""The Slicer module's MRML layer (the package ``FemurSeg/FemurSegMRMLLib``) on real MRML scenes.

Runs against Kitware's Qt-free ``slicer-core`` wheel: volume nodes, segmentation nodes, the
segmentation storage node (Slicer's own .seg.nrrd reader), closed-surface conversion and STL export
are the real Slicer classes. The Qt widget (``FemurSeg.py``) cannot be imported outside Slicer; it
is compiled, and its references to the .ui file and parameter node are checked statically. The
end-to-end tests run the CLI in a subprocess exactly as the module does.
"""

from __future__ import annotations

import ast
import os
import py_compile
import re
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "FemurSeg"

try:
    import slicer
    import vtk
    HAVE_SLICER = hasattr(slicer, "vtkMRMLScene")
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_SLICER = False

pytestmark = [pytest.mark.slicer,
              pytest.mark.skipif(not HAVE_SLICER, reason="needs the slicer-core wheel "
                                 "(pip install slicer-core==5.11.0.6 vtk==9.6.0): 'import slicer' failed")]

if HAVE_SLICER:
    sys.path.insert(0, str(MODULE_DIR))
    from FemurSegMRMLLib import install, process, stl, volumes  # noqa: E402
    from FemurSegMRMLLib import job as jobs  # noqa: E402
    from FemurSegMRMLLib import models as model_list  # noqa: E402
    from FemurSegMRMLLib import scene as scene_nodes  # noqa: E402

from FemurSegLib import segments, writers  # noqa: E402
from FemurSegLib.errors import Cancelled, FemurSegError, InputError, OutputExistsError  # noqa: E402

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def rotation(ax: float, az: float) -> np.ndarray:
    """An oblique direction matrix: rotation about x by ``ax`` then about z by ``az`` (radians)."""
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx


DIRECTION = rotation(0.3, 0.35)
SPACING = (0.9, 0.8, 3.0)
ORIGIN_LPS = (-20.5, 10.25, 33.0)
SIZE = (48, 40, 14)  # i, j, k


def make_image(array: np.ndarray, spacing=SPACING, origin=ORIGIN_LPS, direction=DIRECTION
               ) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return image


def ellipsoids(size=SIZE) -> np.ndarray:
    """Label array ``[k, j, i]``: 1 = an ellipsoid at low i, 2 = one at high i."""
    k, j, i = np.indices(size[::-1])
    a = ((i - 13) / 8.5) ** 2 + ((j - 20) / 11.0) ** 2 + ((k - 7) / 4.6) ** 2 <= 1
    b = ((i - 35) / 8.5) ** 2 + ((j - 20) / 11.0) ** 2 + ((k - 7) / 4.6) ** 2 <= 1
    return (a * 1 + b * 2).astype(np.uint8)


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def volume(scene):
    """An MR-like oblique, anisotropic volume node with two bright 'femurs'."""
    labels = ellipsoids()
    rng = np.random.default_rng(0)
    array = (120 + 700 * (labels > 0) + rng.integers(0, 60, labels.shape)).astype(np.int16)
    return volumes.image_to_volume_node(make_image(array), scene, "hip")


@pytest.fixture(scope="module")
def phantom():
    """The project's synthetic hip MR phantom at half the real in-plane resolution (1.8 mm) and
    the real 5.2 mm slices: LIP, slightly oblique, both femurs (about 2 s to build)."""
    from FemurSegLib.phantom import make_phantom
    return make_phantom(seed=0, size=(192, 192, 20), spacing=(1.822, 1.822, 5.2))


def node_array(node) -> np.ndarray:
    """Voxels of a volume node as ``[k, j, i]``."""
    image_data = node.GetImageData()
    dims = image_data.GetDimensions()
    from vtk.util import numpy_support
    return numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars()).reshape(dims[::-1])


def export_labelmap(scene, seg_node, reference):
    """All segments as one label map node on ``reference``'s grid (Slicer's exporter)."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        seg_node, scene_nodes.segment_ids(seg_node), labelmap, reference)
    assert ok
    return labelmap


# ----------------------------------------------------------------------------------------------
# Volume node <-> SimpleITK image


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_image_volume_node_round_trip_is_exact(scene, dtype):
    rng = np.random.default_rng(1)
    array = (rng.random(SIZE[::-1]) * 200).astype(dtype)
    image = make_image(array)
    node = volumes.image_to_volume_node(image, scene, "vol")

    # Known answer: RAS = diag(-1, -1, 1) @ LPS, for the axes and the origin.
    expected = np.eye(4)
    expected[:3, :3] = LPS_FROM_RAS @ DIRECTION @ np.diag(SPACING)
    expected[:3, 3] = LPS_FROM_RAS @ np.array(ORIGIN_LPS)
    np.testing.assert_allclose(volumes.ijk_to_ras(node), expected, rtol=0, atol=1e-12)
    assert np.array_equal(node_array(node), array)

    back = volumes.volume_node_to_image(node)
    assert np.array_equal(sitk.GetArrayFromImage(back), array)
    assert sitk.GetArrayFromImage(back).dtype == array.dtype
    assert back.GetSpacing() == image.GetSpacing()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetDirection() == image.GetDirection()


def test_volume_node_to_image_maps_voxels_to_the_same_points(scene):
    """A node made by Slicer's own setters: every voxel lands on the same physical point."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "made-in-slicer")
    matrix = vtk.vtkMatrix4x4()
    ras = np.eye(4)
    ras[:3, :3] = rotation(-0.5, 1.1) @ np.diag([0.7, 1.3, 4.2])
    ras[:3, 3] = [12.5, -40.0, 7.25]
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, ras[r, c])
    node.SetIJKToRASMatrix(matrix)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(5, 6, 7)
    image_data.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image_data)

    image = volumes.volume_node_to_image(node)
    assert image.GetSize() == (5, 6, 7)
    for ijk in [(0, 0, 0), (4, 0, 0), (0, 5, 0), (0, 0, 6), (4, 5, 6), (2, 3, 1)]:
        expected_lps = LPS_FROM_RAS @ (ras @ np.array([*ijk, 1.0]))[:3]
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(ijk), expected_lps,
                                   rtol=0, atol=1e-9)


def test_volume_node_to_image_with_image_data_not_starting_at_zero(scene):
    node = volumes.image_to_volume_node(make_image(np.zeros((3, 4, 5), np.int16)), scene, "v")
    image_data = vtk.vtkImageData()
    image_data.SetExtent(2, 6, 1, 4, 3, 5)  # i from 2, j from 1, k from 3
    image_data.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(image_data)
    image = volumes.volume_node_to_image(node)
    # Index (0,0,0) of the image is voxel (2,1,3) of the node's grid.
    expected = np.array(ORIGIN_LPS) + DIRECTION @ (np.array(SPACING) * [2, 1, 3])
    np.testing.assert_allclose(image.GetOrigin(), expected, rtol=0, atol=1e-9)


def test_volume_node_to_image_rejects_empty_and_vector_volumes(scene):
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match=r"^volume 'empty' has no image data$"):
        volumes.volume_node_to_image(empty)
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(4, 4, 4)
    image_data.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    rgb.SetAndObserveImageData(image_data)
    with pytest.raises(InputError, match=r"^volume 'rgb' has 3 components per voxel; a scalar "
                                         r"\(grey-value\) volume is required$"):
        volumes.volume_node_to_image(rgb)


def test_write_volume_node_keeps_geometry_in_nrrd(scene, volume, tmp_path):
    path = volumes.write_volume_node(volume, tmp_path / "hip.nrrd")
    read = sitk.ReadImage(str(path))
    original = volumes.volume_node_to_image(volume)
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(original))
    np.testing.assert_allclose(read.GetSpacing(), SPACING, rtol=0, atol=1e-9)
    np.testing.assert_allclose(read.GetOrigin(), ORIGIN_LPS, rtol=0, atol=1e-9)
    np.testing.assert_allclose(read.GetDirection(), DIRECTION.ravel(), rtol=0, atol=1e-9)
    with pytest.raises(OutputExistsError, match="output exists"):
        volumes.write_volume_node(volume, path)


# ----------------------------------------------------------------------------------------------
# The command line, its progress and its errors


@pytest.mark.parametrize("kwargs, tail", [
    ({}, ["--device", "auto", "--overwrite", "--progress", "lines"]),
    ({"model": "/m/tiny", "device": "cpu", "probabilities": "/t/p.nrrd", "tta": False,
      "split": False, "overwrite": False},
     ["--model", "/m/tiny", "--device", "cpu", "--probabilities", "/t/p.nrrd", "--no-tta",
      "--no-split", "--progress", "lines"]),
    ({"model": "femur-t1-coronal", "device": "auto"},
     ["--model", "femur-t1-coronal", "--device", "auto", "--overwrite", "--progress", "lines"]),
    ({"tta": True}, ["--device", "auto", "--tta", "--overwrite", "--progress", "lines"]),
])
def test_build_command(kwargs, tail):
    cmd = jobs.build_command("/bin/PythonSlicer", "/t/in.nrrd", "/t/out.seg.nrrd", **kwargs)
    assert cmd == ["/bin/PythonSlicer", "-m", "FemurSegLib.cli", "segment", "/t/in.nrrd",
                   "-o", "/t/out.seg.nrrd"] + tail


@pytest.mark.parametrize("device, platform, expected", [
    ("auto", "linux", "auto"), ("cpu", "win32", "cpu"), ("gpu", "linux", "cuda"),
    ("gpu", "win32", "cuda"), ("gpu", "darwin", "mps"), ("GPU", "linux", "cuda"),
    ("cuda", "linux", "cuda"), ("mps", "darwin", "mps"), ("", "linux", "auto"),
])
def test_cli_device(device, platform, expected):
    assert jobs.cli_device(device, platform) == expected


def test_cli_device_rejects_unknown():
    with pytest.raises(InputError, match=r"^unknown device 'tpu' \(choose auto, cpu or gpu\)$"):
        jobs.cli_device("tpu")


def test_cli_environment_puts_module_dir_first():
    env = jobs.cli_environment("/mod", {"PYTHONPATH": f"/a{os_sep()}/mod{os_sep()}/b", "X": "1"})
    assert env["PYTHONPATH"] == os_sep().join(["/mod", "/a", "/b"])
    assert env["X"] == "1" and env["PYTHONUNBUFFERED"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    assert jobs.cli_environment("/mod", {})["PYTHONPATH"] == "/mod"


def os_sep() -> str:
    import os
    return os.pathsep


@pytest.mark.parametrize("line, expected", [
    ("PROGRESS 42 hip: fold 1/2", (42.0, "hip: fold 1/2")),
    ("PROGRESS 0 hip: preprocessing", (0.0, "hip: preprocessing")),
    ("PROGRESS 100", (100.0, "")),
    ("  PROGRESS 7.5   a  b \n", (7.5, "a  b")),
    ("PROGRESS 150 over", (100.0, "over")),
    ("PROGRESS -3 under", (0.0, "under")),
    ("progress 5 lower case", None),
    ("PROGRESS abc", None),
    ("PROGRESSIVE 5", None),
    ("error: input is blank", None),
    ("", None),
])
def test_parse_progress_line(line, expected):
    assert process.parse_progress_line(line) == expected


@pytest.mark.parametrize("lines, code, expected", [
    (["PROGRESS 0 x", "error: input image hip.nrrd is blank: every voxel has the value 0"], 2,
     "input image hip.nrrd is blank: every voxel has the value 0"),
    (["error: first", "PROGRESS 5 y", "Error: second one"], 2, "second one"),
    (["PROGRESS 10 x", "Traceback (most recent call last):", '  File "x.py", line 1',
      "ValueError: boom", "PROGRESS 11 late"], 1,
     "segmentation process failed with exit code 1: ValueError: boom"),
    (["PROGRESS 10 x"], 1, "segmentation process failed with exit code 1"),
    ([], -9, "segmentation process was terminated by signal 9"),
    (["PROGRESS 40 x", "Segmentation fault"], None,
     "segmentation process crashed: Segmentation fault"),
    (["error:"], 2, "segmentation process failed with exit code 2: error:"),
])
def test_error_message(lines, code, expected):
    assert process.error_message(lines, code) == expected


def _script(tmp_path: Path, body: str) -> list:
    path = tmp_path / "fake_cli.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_run_command_reports_progress_and_output(tmp_path):
    cmd = _script(tmp_path, """
        import sys
        print("hello on stdout", flush=True)
        for p in (0, 50, 100):
            sys.stderr.write(f"PROGRESS {p} step {p}\\n"); sys.stderr.flush()
    """)
    seen = []
    out = process.run_command(cmd, on_progress=lambda p, m: seen.append((p, m)))
    assert seen == [(0.0, "step 0"), (50.0, "step 50"), (100.0, "step 100")]
    assert out[0] == "hello on stdout" and len(out) == 4


def test_run_command_raises_the_one_line_error(tmp_path):
    cmd = _script(tmp_path, """
        import sys
        sys.stderr.write("PROGRESS 3 reading\\nerror: model folder not found: /nope\\n")
        sys.exit(2)
    """)
    with pytest.raises(FemurSegError) as caught:
        process.run_command(cmd)
    assert str(caught.value) == "model folder not found: /nope"


@pytest.mark.parametrize("lines, expected", [
    (["PROGRESS 90 x", "warning: hip.nrrd: no femur found", "hip.nrrd: Right femur 0.0 ml"],
     ["hip.nrrd: no femur found"]),
    (["Warning: a: x; likely cause: y", "warning:", "warning: b: z"], ["a: x; likely cause: y",
                                                                      "b: z"]),
    (["error: nope", "PROGRESS 1 warning: not one"], []),
])
def test_warning_lines(lines, expected):
    assert process.warning_lines(lines) == expected


def test_run_command_accepts_a_finished_run_with_warnings_only_when_asked(tmp_path):
    """Exit code 3: the CLI finished but a result is implausible; the segmentation passes it as
    success and gets the output, anything else (pip) still fails on it."""
    cmd = _script(tmp_path, """
        import sys
        sys.stderr.write("PROGRESS 100 done\\nwarning: hip.nrrd: no femur found\\n")
        sys.exit(3)
    """)
    output = process.run_command(cmd, ok_codes=(0, process.WARNING_EXIT_CODE))
    assert process.warning_lines(output) == ["hip.nrrd: no femur found"]
    with pytest.raises(FemurSegError, match="^segmentation process failed with exit code 3: "
                                            "warning: hip.nrrd: no femur found$"):
        process.run_command(cmd)


def test_run_command_cancel_kills_the_process(tmp_path):
    cmd = _script(tmp_path, """
        import sys, time
        sys.stderr.write("PROGRESS 1 started\\n"); sys.stderr.flush()
        time.sleep(60)
    """)
    seen = []
    t0 = time.monotonic()
    with pytest.raises(Cancelled, match="^segmentation cancelled$"):
        process.run_command(cmd, on_progress=lambda p, m: seen.append(p), is_cancelled=lambda: bool(seen))
    assert time.monotonic() - t0 < 20
    assert seen == [1.0]


def test_run_command_cannot_start(tmp_path):
    with pytest.raises(FemurSegError, match=r"^cannot start .*no-such-python"):
        process.run_command([str(tmp_path / "no-such-python"), "-V"])


# ----------------------------------------------------------------------------------------------
# Segmentation node from the core's .seg.nrrd


def write_seg(path: Path, labels: np.ndarray, split: bool, reference: sitk.Image) -> list:
    specs = segments.femur_segments(split)
    if not split:
        labels = (labels > 0).astype(np.uint8)
    writers.write_seg_nrrd(make_image(labels, reference.GetSpacing(), reference.GetOrigin(),
                                      np.reshape(reference.GetDirection(), (3, 3))),
                           specs, path)
    return specs


@pytest.mark.parametrize("split", [True, False])
def test_load_segmentation_names_colours_terminology_and_grid(scene, volume, tmp_path, split):
    labels = ellipsoids()
    specs = write_seg(tmp_path / "out.seg.nrrd", labels, split, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "out.seg.nrrd", scene, volume)

    assert seg_node.GetName() == "hip femur segmentation"
    segmentation = seg_node.GetSegmentation()
    assert scene_nodes.segment_ids(seg_node) == [s.segment_id for s in specs]
    terminology_logic = slicer.vtkSlicerTerminologiesModuleLogic()
    expected_modifiers = {"Right femur": ("24028007", "Right"), "Left femur": ("7771000", "Left"),
                          "Femur": ("", "")}
    for spec in specs:
        segment = segmentation.GetSegment(spec.segment_id)
        assert segment.GetName() == spec.name
        assert segment.GetLabelValue() == spec.value
        np.testing.assert_allclose(segment.GetColor(), spec.color, atol=1e-3)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert terminology_logic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetCategoryObject().GetCodeValue() == "123037004"
        assert entry.GetCategoryObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == "71341001"
        assert entry.GetTypeObject().GetCodeMeaning() == "Femur"
        modifier = entry.GetTypeModifierObject()
        assert (modifier.GetCodeValue() or "", modifier.GetCodeMeaning() or "") \
            == expected_modifiers[spec.name]

    # Reference geometry is the input volume's; the voxels come back exactly on its grid.
    assert seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole()) is volume
    labelmap = export_labelmap(scene, seg_node, volume)
    np.testing.assert_allclose(volumes.ijk_to_ras(labelmap), volumes.ijk_to_ras(volume), rtol=0, atol=1e-9)
    exported = node_array(labelmap)
    assert exported.shape == labels.shape
    expected = labels if split else (labels > 0).astype(np.uint8)
    assert np.array_equal(exported > 0, expected > 0)
    for spec in specs:  # the exporter numbers segments 1, 2 in order, as the file does
        assert np.array_equal(exported == spec.value, expected == spec.value)

    # Shown in 3D: display node and closed surface, volume close to the voxels.
    assert seg_node.GetDisplayNode() is not None
    assert segmentation.ContainsRepresentation("Closed surface")
    voxel_mm3 = float(np.prod(SPACING))
    for spec in specs:
        assert scene_nodes.segment_voxel_volume_mm3(seg_node, spec.segment_id) == pytest.approx(
            np.count_nonzero(expected == spec.value) * voxel_mm3, rel=1e-9)


def test_load_segmentation_keeps_parent_transform_and_unique_names(scene, volume, tmp_path):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    write_seg(tmp_path / "a.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    first = scene_nodes.load_segmentation(tmp_path / "a.seg.nrrd", scene, volume)
    second = scene_nodes.load_segmentation(tmp_path / "a.seg.nrrd", scene, volume)
    assert first.GetTransformNodeID() == transform.GetID() == second.GetTransformNodeID()
    assert first.GetName() == "hip femur segmentation"
    assert second.GetName() != first.GetName() and second.GetName().startswith(first.GetName())


def test_load_segmentation_refuses_another_grid(scene, volume, tmp_path):
    shifted = make_image(np.zeros(SIZE[::-1], np.int16), origin=(0.0, 0.0, 0.0))
    write_seg(tmp_path / "off.seg.nrrd", ellipsoids(), True, shifted)
    n_before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(InputError, match=r"^segmentation file off\.seg\.nrrd is not on the input "
                                         r"volume's grid \(IJK-to-RAS differs\)$"):
        scene_nodes.load_segmentation(tmp_path / "off.seg.nrrd", scene, volume)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == n_before  # no leftover


def test_load_segmentation_with_an_empty_segment(scene, volume, tmp_path):
    labels = ellipsoids()
    labels[labels == 2] = 0  # "Left femur" written without voxels
    write_seg(tmp_path / "one.seg.nrrd", labels, True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "one.seg.nrrd", scene, volume)
    assert scene_nodes.segment_voxel_volume_mm3(seg_node, "Left_femur") == 0.0
    assert scene_nodes.segment_voxel_volume_mm3(seg_node, "Right_femur") > 0
    files = stl.export_stl(seg_node, tmp_path / "stl")
    assert [f.name for f in files] == ["hip_femur_segmentation_Right_femur.stl"]


def test_load_segmentation_missing_file(scene, volume, tmp_path):
    with pytest.raises(InputError, match=r"^segmentation file not found: .*nothing\.seg\.nrrd$"):
        scene_nodes.load_segmentation(tmp_path / "nothing.seg.nrrd", scene, volume)


def test_converter_rules_are_registered_once():
    scene_nodes.register_segmentation_converter_rules()
    scene_nodes.register_segmentation_converter_rules()
    names = [r.GetClassName() for r in
             slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules()]
    for rule in ("vtkBinaryLabelmapToClosedSurfaceConversionRule",
                 "vtkClosedSurfaceToBinaryLabelmapConversionRule"):
        assert names.count(rule) == 1


# ----------------------------------------------------------------------------------------------
# Probability map


def test_load_probability_map(scene, volume, tmp_path):
    reference = volumes.volume_node_to_image(volume)
    prob = (np.arange(np.prod(SIZE)).reshape(SIZE[::-1]) / np.prod(SIZE)).astype(np.float32)
    image = make_image(prob)
    writers.write_probability(image, tmp_path / "p.nrrd")
    node = scene_nodes.load_probability_map(tmp_path / "p.nrrd", scene, volume)
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetName() == "hip femur probability"
    assert np.array_equal(node_array(node), prob)
    assert node_array(node).dtype == np.float32
    np.testing.assert_allclose(volumes.ijk_to_ras(node), volumes.ijk_to_ras(volume), rtol=0, atol=1e-12)
    display = node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    assert sitk.GetArrayFromImage(reference).shape == prob.shape


def test_load_probability_map_refuses_another_grid(scene, volume, tmp_path):
    image = make_image(np.zeros((SIZE[2], SIZE[1], SIZE[0] + 1), np.float32))
    writers.write_probability(image, tmp_path / "p.nrrd")
    with pytest.raises(InputError, match=r"^probability map is not on the input volume's grid: "
                                         r"size \(49, 40, 14\) != \(48, 40, 14\)$"):
        scene_nodes.load_probability_map(tmp_path / "p.nrrd", scene, volume)


# ----------------------------------------------------------------------------------------------
# STL export


@pytest.mark.parametrize("sigma_voxels", [0.0, 0.5])
def test_export_stl_encloses_the_labelmap_volume(scene, volume, tmp_path, sigma_voxels):
    labels = ellipsoids()
    reference = volumes.volume_node_to_image(volume)
    write_seg(tmp_path / "s.seg.nrrd", labels, True, reference)
    seg_node = scene_nodes.load_segmentation(tmp_path / "s.seg.nrrd", scene, volume)
    files = stl.export_stl(seg_node, tmp_path / "stl", sigma_voxels=sigma_voxels)
    assert [f.name for f in files] == ["hip_femur_segmentation_Right_femur.stl",
                                       "hip_femur_segmentation_Left_femur.stl"]
    # The STL mesher's smoothing is not Slicer's display smoothing factor: that one is untouched.
    assert seg_node.GetSegmentation().GetConversionParameter("Smoothing factor") == "0.5"
    voxel_mm3 = float(np.prod(SPACING))
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = DIRECTION @ np.diag(SPACING)
    ijk_to_lps[:3, 3] = ORIGIN_LPS
    for path, value in zip(files, (1, 2)):
        poly = stl.read_stl(path)
        label_mm3 = np.count_nonzero(labels == value) * voxel_mm3
        surface_mm3 = stl.surface_volume_mm3(poly)
        assert abs(surface_mm3 - label_mm3) / label_mm3 < 0.02, (surface_mm3, label_mm3)
        # In LPS millimetres: the surface's centre is the voxels' centre.
        k, j, i = np.nonzero(labels == value)
        centre_lps = (ijk_to_lps @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[:3]
        from vtk.util import numpy_support
        points = numpy_support.vtk_to_numpy(poly.GetPoints().GetData())
        np.testing.assert_allclose(points.mean(axis=0), centre_lps, atol=0.5)


@pytest.mark.parametrize("sigma_voxels", [0.0, 0.5])
@pytest.mark.slow
def test_export_stl_of_the_phantom_femurs_within_2_percent(scene, phantom, tmp_path, sigma_voxels):
    """Real femur shapes (neck, trochanters) on 5.2 mm slices: surface volume within 2%."""
    volume = volumes.image_to_volume_node(phantom.image, scene, "phantom")
    split = sitk.GetArrayFromImage(phantom.femur).astype(np.uint8)
    half = split.shape[2] // 2  # one femur on each side of the middle column
    split[:, :, half:][split[:, :, half:] > 0] = 2
    assert np.count_nonzero(split == 1) > 1000 and np.count_nonzero(split == 2) > 1000
    write_seg(tmp_path / "p.seg.nrrd", split, True, phantom.image)
    seg_node = scene_nodes.load_segmentation(tmp_path / "p.seg.nrrd", scene, volume)
    files = stl.export_stl(seg_node, tmp_path / "stl", sigma_voxels=sigma_voxels)
    assert len(files) == 2
    voxel_mm3 = float(np.prod(phantom.image.GetSpacing()))
    for path, value in zip(files, (1, 2)):
        label_mm3 = np.count_nonzero(split == value) * voxel_mm3
        surface_mm3 = stl.surface_volume_mm3(stl.read_stl(path))
        assert abs(surface_mm3 - label_mm3) / label_mm3 < 0.02, (path.name, surface_mm3, label_mm3)


def test_export_stl_refuses_to_overwrite(scene, volume, tmp_path):
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), False, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "s.seg.nrrd", scene, volume)
    (first,) = stl.export_stl(seg_node, tmp_path / "stl")
    stamp = first.stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match=r"^output exists: .*hip_femur_segmentation_Femur"
                                                r"\.stl \(use --overwrite to replace it\)$"):
        stl.export_stl(seg_node, tmp_path / "stl", sigma_voxels=0.2)
    assert first.stat().st_mtime_ns == stamp
    (again,) = stl.export_stl(seg_node, tmp_path / "stl", sigma_voxels=0.2, overwrite=True)
    assert again == first
    assert sorted(p.name for p in (tmp_path / "stl").iterdir()) == [first.name]  # no staging left


def test_the_two_smoothings_are_checked_on_their_own_scales(scene, volume, tmp_path):
    """Slicer's display smoothing factor is 0..1; the STL mesher's sigma is voxels >= 0."""
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), False, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "s.seg.nrrd", scene, volume)
    with pytest.raises(InputError, match=r"^smoothing factor must be between 0 and 1, not 1\.5$"):
        scene_nodes.update_closed_surface(seg_node, 1.5)
    with pytest.raises(InputError, match=r"^STL smoothing must be a finite number >= 0, not -1\.0$"):
        stl.export_stl(seg_node, tmp_path / "stl", sigma_voxels=-1.0)
    assert not (tmp_path / "stl").exists()
    # A sigma above 1 voxel is valid for the mesher (it would not be as a display factor).
    (path,) = stl.export_stl(seg_node, tmp_path / "stl", sigma_voxels=1.5)
    assert path.is_file()
    options = jobs.JobOptions()
    assert (options.surface_smoothing, options.stl_sigma_voxels) == (0.5, 0.5)


# ----------------------------------------------------------------------------------------------
# Dependencies and model choices (pure helpers used by the module)


@pytest.mark.parametrize("installed, missing", [
    ({"onnxruntime": "1.20.1", "slicerio": "1.4.0", "scipy": "1.13.0"}, []),
    ({"slicerio": "1.4.0", "scipy": "1.13.0"}, ["onnxruntime>=1.16"]),
    ({"onnxruntime": "1.15.0", "slicerio": "0.9", "scipy": "1.13.0"},
     ["onnxruntime>=1.16", "slicerio>=1.0"]),
    ({}, ["onnxruntime>=1.16", "slicerio>=1.0", "scipy>=1.9"]),
])
def test_missing_requirements(installed, missing):
    assert install.missing_requirements(install.INFERENCE_REQUIREMENTS, installed.get) == missing
    assert not any(install.requirement_name(r) in ("torch", "SimpleITK", "numpy")
                   for r in install.INFERENCE_REQUIREMENTS)


def test_pin_constraints_hold_installed_packages():
    versions = {"numpy": "1.26.4", "SimpleITK": "2.4.0"}
    assert install.pin_constraints(("numpy", "SimpleITK", "torch"), versions.get) \
        == "numpy==1.26.4\nSimpleITK==2.4.0\n"


def test_model_choices_come_from_the_cards():
    card = {"name": "femur-t1-coronal", "version": "1.0.0", "description": "3D U-Net, 4 folds.",
            "architecture": {"type": "UNet3D", "features": 16, "levels": 4},
            "folds": [{}, {}, {}, {}], "metrics": {"dsc_mean": 0.9312, "dsc_sd": 0.0204},
            "intended_use": "research, not a medical device"}
    models = [SimpleNamespace(name="femur-t1-coronal", path=Path("/models/femur-t1-coronal"),
                              card=card),
              SimpleNamespace(name="small", path=Path("/m/small"),
                              card={"name": "small", "description": "2D U-Net.",
                                    "architecture": {"type": "UNet2D", "features": 64, "levels": 3},
                                    "folds": [{}]})]
    assert model_list.model_choices(models) == [
        ("femur-t1-coronal 1.0.0", str(Path("/models/femur-t1-coronal")),
         "3D U-Net, 4 folds.\narchitecture: UNet3D F16 L4, 4 fold(s)\n"
         "cross-validated DSC: 0.931 +- 0.020\nintended use: research, not a medical device"),
        ("small", str(Path("/m/small")), "2D U-Net.\narchitecture: UNet2D F64 L3, 1 fold(s)"),
    ]


# ----------------------------------------------------------------------------------------------
# The whole path: volume node -> CLI subprocess -> segmentation node


@pytest.mark.slow
def test_segment_volume_end_to_end(scene, phantom, tiny_model_dir, tmp_path):
    """Phantom volume node -> NRRD -> CLI subprocess (tiny random model) -> segmentation node."""
    volume = volumes.image_to_volume_node(phantom.image, scene, "phantom")
    stl_dir = tmp_path / "stl"
    stl_dir.mkdir()
    options = jobs.JobOptions(model=str(tiny_model_dir), device="cpu", probabilities=True,
                           tta=True, split=True, stl_folder=str(stl_dir))
    job = jobs.prepare_job(volume, python=sys.executable, module_dir=MODULE_DIR, options=options,
                        temp_root=tmp_path)
    assert job.input_path.name == "phantom.nrrd"
    assert job.command[:4] == [sys.executable, "-m", "FemurSegLib.cli", "segment"]
    assert job.cwd == MODULE_DIR and str(MODULE_DIR) == job.env["PYTHONPATH"].split(os_sep())[0]
    progress = []
    try:
        output = process.run_command(job.command, env=job.env, cwd=job.cwd,
                                     on_progress=lambda p, m: progress.append(p),
                                     ok_codes=(0, process.WARNING_EXIT_CODE))
        import slicerio
        written = slicerio.read_segmentation(str(job.output_path))
        result = jobs.finish_job(job, scene, process.warning_lines(output))
    finally:
        job.cleanup()
    assert not job.work_dir.exists()
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] == 100.0

    seg_node = result.segmentation_node
    assert seg_node.GetName() == "phantom femur segmentation"
    names = [seg_node.GetSegmentation().GetSegment(s).GetName() for s in scene_nodes.segment_ids(seg_node)]
    assert names == [s["name"] for s in written["segments"]]
    assert names == ["Right femur", "Left femur"]
    # the tiny random model's mask covers much of the phantom: exit code 3, its warning kept
    (warning,) = result.warnings
    assert re.fullmatch(r"phantom\.nrrd: the segmentation fills \d+% of the image", warning)
    for sid in scene_nodes.segment_ids(seg_node):
        assert "SCT^71341001^Femur" in seg_node.GetSegmentation().GetSegment(sid).GetTerminology()
    # The node holds exactly the voxels the CLI wrote, on the input grid.
    labelmap = export_labelmap(scene, seg_node, volume)
    np.testing.assert_allclose(volumes.ijk_to_ras(labelmap), volumes.ijk_to_ras(volume), rtol=0, atol=1e-9)
    cli_voxels = np.asarray(written["voxels"]).transpose(2, 1, 0)  # [i,j,k] -> [k,j,i]
    assert np.array_equal(node_array(labelmap), cli_voxels)

    prob = result.probability_node
    assert prob.GetName() == "phantom femur probability"
    np.testing.assert_allclose(volumes.ijk_to_ras(prob), volumes.ijk_to_ras(volume), rtol=0, atol=1e-9)
    values = node_array(prob)
    assert values.shape == cli_voxels.shape and values.dtype == np.float32
    assert values.min() >= 0.0 and values.max() <= 1.0
    non_empty = [s for s in scene_nodes.segment_ids(seg_node) if scene_nodes.segment_voxel_volume_mm3(seg_node, s) > 0]
    assert [p.name for p in result.stl_files] == [
        f"phantom_femur_segmentation_{sid}.stl" for sid in non_empty]


@pytest.mark.slow
def test_segment_volume_loads_an_implausible_result_with_its_warning(scene, phantom, tmp_path):
    """No femur found: the run finishes with exit code 3; the (empty) segmentation is loaded and
    the CLI's warning line comes with the result for the status line."""
    from conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny-none", threshold=1.0)  # its softmax stays near 0.5
    volume = volumes.image_to_volume_node(phantom.image, scene, "phantom")
    stl_dir = tmp_path / "stl"
    stl_dir.mkdir()
    result = jobs.segment_volume(volume, scene, python=sys.executable, module_dir=MODULE_DIR,
                                 options=jobs.JobOptions(model=str(model), device="cpu",
                                                         stl_folder=str(stl_dir)),
                                 temp_root=tmp_path)
    assert result.warnings == ["phantom.nrrd: no femur found"]
    seg_node = result.segmentation_node
    ids = scene_nodes.segment_ids(seg_node)
    assert [seg_node.GetSegmentation().GetSegment(s).GetName() for s in ids] == [
        "Right femur", "Left femur"]
    assert all(scene_nodes.segment_voxel_volume_mm3(seg_node, s) == 0 for s in ids)
    assert result.stl_files == [] and list(stl_dir.iterdir()) == []
    assert not list(tmp_path.glob("FemurSeg-*"))  # temporary files removed


@pytest.mark.parametrize("case, message", [
    ("blank", r"^input image hip-blank\.nrrd is blank: every voxel has the value 0$"),
    ("no-model", r"^model folder not found: .*no-such-model$"),
])
@pytest.mark.slow
def test_segment_volume_errors_are_one_line(scene, volume, tiny_model_dir, tmp_path, case,
                                            message):
    if case == "blank":
        node = volumes.image_to_volume_node(make_image(np.zeros(SIZE[::-1], np.int16)), scene,
                                      "hip-blank")
        model = str(tiny_model_dir)
    else:
        node, model = volume, str(tmp_path / "no-such-model")
    n_segs = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(FemurSegError, match=message) as caught:
        jobs.segment_volume(node, scene, python=sys.executable, module_dir=MODULE_DIR,
                         options=jobs.JobOptions(model=model), temp_root=tmp_path)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == n_segs
    assert not list(tmp_path.glob("FemurSeg-*"))  # temporary files removed


@pytest.mark.slow
def test_cli_segment_path_needs_only_the_installed_requirements(volume, tiny_model_dir, tmp_path):
    """What the module installs in Slicer is enough: the CLI segments with torch, scikit-image,
    matplotlib and tqdm made unimportable."""
    volumes.write_volume_node(volume, tmp_path / "hip.nrrd")
    runner = tmp_path / "blocked.py"
    runner.write_text(textwrap.dedent("""
        import runpy, sys
        BLOCKED = {"torch", "skimage", "matplotlib", "tqdm"}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
        sys.argv = ["femurseg"] + sys.argv[1:]
        runpy.run_module("FemurSegLib.cli", run_name="__main__")
    """))
    cmd = [sys.executable, str(runner), "segment", str(tmp_path / "hip.nrrd"), "-o",
           str(tmp_path / "out.seg.nrrd"), "--model", str(tiny_model_dir), "--probabilities",
           str(tmp_path / "p.nrrd"), "--progress", "lines"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=jobs.cli_environment(MODULE_DIR))
    # 3: finished; the tiny random model's mask covers most of the image (a warning line)
    assert proc.returncode == 3, proc.stderr[-2000:]
    (warning,) = process.warning_lines(proc.stderr.splitlines())
    assert re.fullmatch(r"hip\.nrrd: the segmentation fills \d+% of the image", warning)
    assert (tmp_path / "out.seg.nrrd").is_file() and (tmp_path / "p.nrrd").is_file()


# ----------------------------------------------------------------------------------------------
# Extension files: CMake lists, the widget and its .ui file


def cmake_list(text: str, name: str) -> list:
    match = re.search(rf"set\({name}\b(.*?)\)", text, re.S)
    assert match, f"set({name} ...) not found"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def test_cmake_lists_every_python_file_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = [s.replace("${MODULE_NAME}", "FemurSeg") for s in cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", "FemurSeg")
                 for s in cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    models = cmake_list(text, "MODULE_BUNDLED_MODEL_FILES")

    def files(root: Path, pattern: str) -> list:
        return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern)
                      if p.is_file() and "__pycache__" not in p.parts
                      and not p.name.startswith("."))

    on_disk_scripts = (["FemurSeg.py"] + files(MODULE_DIR, "FemurSegLib/**/*.py")
                       + files(MODULE_DIR, "FemurSegMRMLLib/**/*.py"))
    assert sorted(scripts) == sorted(on_disk_scripts), (
        "FemurSeg/CMakeLists.txt MODULE_PYTHON_SCRIPTS must list exactly the module's Python "
        f"files: add {sorted(set(on_disk_scripts) - set(scripts))}, "
        f"remove {sorted(set(scripts) - set(on_disk_scripts))}")
    on_disk_resources = files(MODULE_DIR, "Resources/**/*")
    assert sorted(resources) == on_disk_resources, (
        "FemurSeg/CMakeLists.txt MODULE_PYTHON_RESOURCES must list exactly FemurSeg/Resources: "
        f"add {sorted(set(on_disk_resources) - set(resources))}, "
        f"remove {sorted(set(resources) - set(on_disk_resources))}")
    on_disk_models = files(REPO / "Resources" / "Models", "**/*")
    assert sorted(models) == on_disk_models, (
        "FemurSeg/CMakeLists.txt MODULE_BUNDLED_MODEL_FILES must list every file under "
        f"Resources/Models: add {sorted(set(on_disk_models) - set(models))}, "
        f"remove {sorted(set(models) - set(on_disk_models))}")
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_metadata():
    root = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', root)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', root)
    assert re.search(r'set\(EXTENSION_SCREENSHOTURLS "https://\S+\.png"\)', root)
    assert "add_subdirectory(FemurSeg)" in root
    import json
    index_entry = json.loads((REPO / "FemurSeg.json").read_text(encoding="utf-8"))
    assert index_entry["build_dependencies"] == ["PyTorch"]
    assert index_entry["category"] == "Segmentation"
    from PIL import Image
    for icon in (MODULE_DIR / "Resources/Icons/FemurSeg.png", REPO / "Resources/Icons/FemurSeg.png"):
        with Image.open(icon) as im:
            assert im.size == (128, 128)


def test_module_compiles_and_matches_its_ui(tmp_path):
    source = MODULE_DIR / "FemurSeg.py"
    py_compile.compile(str(source), cfile=str(tmp_path / "FemurSeg.pyc"), doraise=True)
    for path in sorted((MODULE_DIR / "FemurSegMRMLLib").glob("*.py")):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{path.stem}.pyc"), doraise=True)
    code = source.read_text(encoding="utf-8")
    ui = ET.parse(MODULE_DIR / "Resources/UI/FemurSeg.ui")
    widgets = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"\bui\.(\w+)", code))
    assert used and used <= widgets, f"widgets used but missing in the .ui: {used - widgets}"

    # Every SlicerParameterName of the .ui is a field of the parameter node, with a matching type.
    tree = ast.parse(code)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FemurSegParameterNode"]
    fields = {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}
    bound = {}
    for w in ui.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = w.get("class")
    assert set(bound) <= set(fields), f"unknown parameters in the .ui: {set(bound) - set(fields)}"
    widget_for_type = {"vtkMRMLScalarVolumeNode": "qMRMLNodeComboBox", "bool": "QCheckBox",
                       "pathlib.Path": "ctkDirectoryButton"}
    for name, widget_class in bound.items():
        annotation = fields[name]
        if annotation.startswith("Annotated[str, Choice"):
            assert widget_class == "QComboBox", name
        elif annotation.startswith("Annotated[float, WithinRange"):
            assert widget_class == "ctkSliderWidget", name
        else:
            assert widget_for_type[annotation] == widget_class, name
    # The pip code lives in FemurSegMRMLLib.install, and runs only when called (never at import).
    assert "pip_" not in code
    install_code = (MODULE_DIR / "FemurSegMRMLLib" / "install.py").read_text(encoding="utf-8")
    assert "pip_ensure(" in install_code
    module_level = [n for n in ast.parse(install_code).body
                    if not isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    calls = [ast.unparse(c.func) for n in module_level for c in ast.walk(n)
             if isinstance(c, ast.Call)]
    assert not [c for c in calls if "pip" in c or "install" in c], calls


def test_logic_process_runs_the_adapters_segment_volume():
    """FemurSegLogic.process calls job.segment_volume instead of repeating its steps."""
    tree = ast.parse((MODULE_DIR / "FemurSeg.py").read_text(encoding="utf-8"))
    (logic,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FemurSegLogic"]
    (method,) = [n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "process"]
    called = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr
              for n in ast.walk(method) if isinstance(n, ast.Call)
              and isinstance(n.func, (ast.Name, ast.Attribute))}
    assert "segment_volume" in called
    assert not called & {"run_command", "prepare_job", "finish_job", "prepareJob", "finishJob"}


@pytest.mark.slow
def test_importing_the_adapter_changes_nothing_in_slicer(tmp_path):
    """No import-time side effects: the converter rules are registered on first use."""
    script = tmp_path / "fresh.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(MODULE_DIR)!r})
        import slicer
        factory = slicer.vtkSegmentationConverterFactory.GetInstance()
        import FemurSegMRMLLib
        from FemurSegMRMLLib import install, job, models, process, scene, stl, volumes
        print("after import:", len(factory.GetConverterRules()))
        scene.register_segmentation_converter_rules()
        print("after first use:", len(factory.GetConverterRules()))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["after import: 0", "after first use: 4"]


# ----------------------------------------------------------------------------------------------
# Issue 12: what a check against Slicer 5.8 and 5.10's sources found


@pytest.mark.slow
def test_adapter_needs_only_what_slicer_ships_and_the_declared_requirements(volume, tmp_path):
    """STL export (and the rest of the adapter) with scikit-image, torch, matplotlib and tqdm
    unimportable, as in Slicer 5.8/5.10 after the first Apply; every third-party module the
    adapter's code imports is one Slicer ships or one the module installs."""
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    volumes.write_volume_node(volume, tmp_path / "hip.nrrd")
    prob = np.linspace(0, 1, int(np.prod(SIZE)), dtype=np.float32).reshape(SIZE[::-1])
    writers.write_probability(make_image(prob), tmp_path / "p.nrrd")
    script = tmp_path / "adapter_in_slicer.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        MODULE_DIR = {str(MODULE_DIR)!r}
        BLOCKED = {{"torch", "skimage", "matplotlib", "tqdm"}}
        imported = set()

        class Watch:
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                frame = sys._getframe(1)
                while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
                    frame = frame.f_back
                if frame is not None and frame.f_code.co_filename.startswith(MODULE_DIR):
                    imported.add(top)
                if top in BLOCKED:
                    raise ImportError(f"{{name}} is not in Slicer")
                return None

        sys.meta_path.insert(0, Watch())
        sys.path.insert(0, MODULE_DIR)
        import SimpleITK as sitk
        import slicer
        from FemurSegLib import modelfolder
        from FemurSegMRMLLib import install, models, scene, stl, volumes
        mrml = slicer.vtkMRMLScene()
        vol = volumes.image_to_volume_node(sitk.ReadImage({str(tmp_path / "hip.nrrd")!r}), mrml,
                                           "hip")
        seg = scene.load_segmentation({str(tmp_path / "s.seg.nrrd")!r}, mrml, vol)
        scene.load_probability_map({str(tmp_path / "p.nrrd")!r}, mrml, vol)
        written = stl.export_stl(seg, {str(tmp_path / "stl")!r})
        models.model_choices(modelfolder.list_models())
        install.missing_requirements(install.INFERENCE_REQUIREMENTS)
        print(json.dumps({{"stl": [str(p) for p in written], "imported": sorted(imported)}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.splitlines()[-1])
    assert [Path(p).name for p in out["stl"]] == ["hip_femur_segmentation_Right_femur.stl",
                                                  "hip_femur_segmentation_Left_femur.stl"]
    third_party = {name for name in out["imported"]
                   if name not in sys.stdlib_module_names and not name.startswith("FemurSeg")}
    declared = {install.requirement_name(r) for r in install.INFERENCE_REQUIREMENTS}
    assert third_party and third_party <= set(install.SLICER_PYTHON_PACKAGES) | declared, (
        third_party - set(install.SLICER_PYTHON_PACKAGES) - declared)
    assert "skimage" not in install.SLICER_PYTHON_PACKAGES


@pytest.mark.slow
def test_vtk_contour_keeps_the_volume_of_the_core_mesher(phantom):
    """The adapter meshes with VTK (Slicer has it) where the CLI uses scikit-image: the same
    volume-preserving surface builder, the same enclosed volume on a femur with 5.2 mm slices."""
    from FemurSegLib import images, surface

    mask = sitk.GetArrayFromImage(phantom.femur) > 0
    m = images.ijk_to_lps(phantom.image)
    target = float(np.count_nonzero(mask)) * float(np.prod(phantom.image.GetSpacing()))
    core = surface.surface_mesh(mask, m, 0.5)
    with_vtk = surface.surface_mesh(mask, m, 0.5, contour=stl.vtk_contour)
    v_core, v_vtk = surface.mesh_volume(*core), surface.mesh_volume(*with_vtk)
    assert v_vtk > 0 and abs(v_vtk - target) / target < 0.02, (v_vtk, target)
    assert abs(v_vtk - v_core) / v_core < 0.005, (v_vtk, v_core)
    # The same surface: bounding boxes agree to 0.1 mm and centres to 0.05 mm.
    np.testing.assert_allclose(with_vtk[0].mean(axis=0), core[0].mean(axis=0), atol=0.05)
    np.testing.assert_allclose(with_vtk[0].min(axis=0), core[0].min(axis=0), atol=0.1)
    np.testing.assert_allclose(with_vtk[0].max(axis=0), core[0].max(axis=0), atol=0.1)


def transform_matrix(rotation_matrix: np.ndarray, translation) -> "vtk.vtkMatrix4x4":
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, rotation_matrix[r, c])
        m.SetElement(r, 3, float(translation[r]))
    return m


def test_segmentation_under_a_transformed_volume_keeps_the_exact_geometry(scene, volume,
                                                                           tmp_path):
    """A registered volume (non-identity parent transform): the segmentation's reference
    geometry is the volume's own IJK-to-RAS, not one with the transform baked in."""
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    transform.SetMatrixTransformToParent(transform_matrix(rotation(0.2, -0.4), (100, -20, 35)))
    volume.SetAndObserveTransformNodeID(transform.GetID())
    labels = ellipsoids()
    write_seg(tmp_path / "t.seg.nrrd", labels, True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "t.seg.nrrd", scene, volume)
    assert seg_node.GetTransformNodeID() == transform.GetID()
    own = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(own)
    expected = slicer.vtkSegmentationConverter.SerializeImageGeometry(own, volume.GetImageData())
    assert seg_node.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()) == expected
    # Segment Editor works on the reference geometry: it holds the volume's voxels exactly.
    geometry = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(expected, geometry, False)
    np.testing.assert_allclose(volumes.image_to_world(geometry), volumes.ijk_to_ras(volume),
                               rtol=0, atol=1e-9)
    labelmap = export_labelmap(scene, seg_node, volume)
    np.testing.assert_array_equal(node_array(labelmap), labels)


DICOM_MASTER_CONTEXT = "Segmentation category and type - DICOM master list"


def test_segments_name_the_terminology_context_that_holds_femur(scene, volume, tmp_path):
    """SNOMED CT 71341001 "Femur" is in Slicer's DICOM master list (not in the General Anatomy
    list): every segment's terminology entry names that context."""
    assert segments.TERMINOLOGY_CONTEXT == DICOM_MASTER_CONTEXT
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "s.seg.nrrd", scene, volume)
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    for sid in scene_nodes.segment_ids(seg_node):
        entry = slicer.vtkSlicerTerminologyEntry()
        text = scene_nodes.segment_terminology(seg_node.GetSegmentation().GetSegment(sid))
        assert logic.DeserializeTerminologyEntry(text, entry)
        assert entry.GetTerminologyContextName() == DICOM_MASTER_CONTEXT
        assert entry.GetTypeObject().GetCodeValue() == "71341001"


SLICER_GIT_DIR = os.environ.get("FEMURSEG_SLICER_GIT_DIR", "")


@pytest.mark.parametrize("tag", ["v5.8.0", "v5.10.0"])
def test_femur_terminology_resolves_in_slicers_own_context_file(tmp_path, tag):
    import json

    """Against Slicer's own terminology file of each supported release (read from a Slicer git
    repository named by $FEMURSEG_SLICER_GIT_DIR): the context is the one that holds Femur in
    category Anatomical Structure, with Right and Left as its modifiers."""
    if not SLICER_GIT_DIR:
        pytest.skip("set FEMURSEG_SLICER_GIT_DIR to a Slicer git repository (with release tags)")
    path = ("Modules/Loadable/Terminologies/Resources/"
            "SegmentationCategoryTypeModifier-DICOM-Master.json")
    shown = subprocess.run(["git", f"--git-dir={SLICER_GIT_DIR}", "show", f"{tag}:{path}"],
                           capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr.decode()[-500:]
    (tmp_path / "context.json").write_bytes(shown.stdout)
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    name = logic.LoadTerminologyFromFile(str(tmp_path / "context.json"))
    assert name == segments.TERMINOLOGY_CONTEXT
    loaded = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(loaded)
    assert [loaded.GetValue(i) for i in range(loaded.GetNumberOfValues())] == [name]
    from slicerio.segmentation import terminology_entry_to_string
    for spec in segments.femur_segments(True) + segments.femur_segments(False):
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(terminology_entry_to_string(spec.terminology),
                                                 entry)
        assert logic.UpdateEntryFromLoadedTerminologies(entry, [name], []), spec.name
    # The same, read from the file itself: the codes and the modifiers of the segments.
    context = json.loads(shown.stdout)
    femurs = [(category, kind) for category in context["SegmentationCodes"]["Category"]
              for kind in category.get("Type", []) if kind["CodeValue"] == "71341001"]
    assert len(femurs) == 1
    category, femur = femurs[0]
    code = lambda c: [c["CodingSchemeDesignator"], c["CodeValue"], c["CodeMeaning"]]  # noqa: E731
    assert code(category) == segments.CATEGORY_ANATOMICAL_STRUCTURE
    assert code(femur) == segments.TYPE_FEMUR
    modifiers = [code(m) for m in femur["Modifier"]]
    assert segments.MODIFIER_RIGHT in modifiers and segments.MODIFIER_LEFT in modifiers


class Slicer58Segment:
    """A segment as Slicer 5.8 has it: no GetTerminology/SetTerminology (added in 5.10)."""

    def __init__(self, segment):
        self._segment = segment

    def __getattr__(self, name):
        if name in ("GetTerminology", "SetTerminology", "HasTerminology"):
            raise AttributeError(f"vtkSegment has no attribute {name!r} in Slicer 5.8")
        return getattr(self._segment, name)


def test_segment_terminology_uses_the_tag_that_slicer_5_8_has(scene, volume, tmp_path):
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    seg_node = scene_nodes.load_segmentation(tmp_path / "s.seg.nrrd", scene, volume)
    segment = seg_node.GetSegmentation().GetSegment("Right_femur")
    text = scene_nodes.segment_terminology(Slicer58Segment(segment))
    assert text == (f"{DICOM_MASTER_CONTEXT}~SCT^123037004^Anatomical Structure"
                    "~SCT^71341001^Femur~SCT^24028007^Right~~^^~^^")
    assert text == segment.GetTerminology()  # the same as 5.10's convenience method
    segment.RemoveTag(segment.GetTerminologyEntryTagName())
    assert scene_nodes.segment_terminology(Slicer58Segment(segment)) == ""


#: Slicer APIs the module must not call because Slicer 5.8 lacks them (from Slicer's sources:
#: vtkSegment::GetTerminology/SetTerminology/HasTerminology are new in 5.10; slicer.packaging is
#: new in 5.12 and may only be used behind a check).
NOT_IN_SLICER_5_8 = {"GetTerminology", "SetTerminology", "HasTerminology"}


def test_module_and_self_test_call_no_api_missing_in_slicer_5_8():
    sources = [MODULE_DIR / "FemurSeg.py"] + sorted((MODULE_DIR / "FemurSegMRMLLib").glob("*.py"))
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        called = {n.func.attr for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not called & NOT_IN_SLICER_5_8, (path.name, called & NOT_IN_SLICER_5_8)
        text = path.read_text(encoding="utf-8")
        assert "import slicer.packaging" not in text and "from slicer.packaging" not in text, \
            path.name  # only importlib behind a check, see install.py


def test_non_ascii_error_survives_a_console_that_is_not_utf8(tmp_path):
    """PYTHONIOENCODING: a Windows console code page (here: the C locale with UTF-8 coercion
    off) must not garble the CLI's one-line error."""
    cmd = _script(tmp_path, """
        import sys
        sys.stderr.write("error: Eingabe H\\u00fcfte_\\u00df.nrrd ist leer\\n")
        sys.exit(2)
    """)
    base = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C",
            "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    env = jobs.cli_environment(MODULE_DIR, base)
    assert env["PYTHONIOENCODING"] == "utf-8"
    with pytest.raises(FemurSegError) as caught:
        process.run_command(cmd, env=env)
    assert str(caught.value) == "Eingabe Hüfte_ß.nrrd ist leer"
