"""Tests of the result writers (FemurSegLib.writers): .seg.nrrd, label/probability images, STL
surfaces (through FemurSegLib.surface), and every writer's overwrite guard and atomicity. The PNG
report and volumes JSON (FemurSegLib.montage) are tested in test_montage.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from FemurSegLib import images, montage, surface, writers
from FemurSegLib.errors import InputError, OutputExistsError
from FemurSegLib.segments import SegmentSpec, femur_segments, femur_terminology

from conftest import real_data_dir
from writer_helpers import (GREEN, OBLIQUE, RED, SPLIT, Boom, grid, labels_on, lps_points,  # noqa: F401
                            rotation, small_oblique_labels)


# ----------------------------------------------------------------------------------------------
# Helpers


def oblique_sphere(radius=20.0, value=1):
    """A sphere at the centre of an anisotropic (0.9 x 1.1 x 4 mm), oblique grid."""
    image = grid((60, 50, 16), (0.9, 1.1, 4.0), (-10.0, 20.0, 5.0), OBLIQUE)
    centre = images.ijk_to_lps(image) @ np.array([29.5, 24.5, 7.5, 1.0])
    inside = np.linalg.norm(lps_points(image) - centre[:3, None, None, None], axis=0) <= radius
    return labels_on(image, inside * value), centre[:3]


def read_stl(path: Path):
    """A tiny binary STL reader: (header, facet normals (M, 3), triangles (M, 3, 3))."""
    raw = Path(path).read_bytes()
    count = int.from_bytes(raw[80:84], "little")
    assert len(raw) == 84 + 50 * count
    record = np.dtype([("normal", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    data = np.frombuffer(raw[84:], dtype=record)
    return raw[:80], data["normal"].astype(float), data["v"].astype(float)


def enclosed_volume(tri: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)


def volume_centroid(tri: np.ndarray) -> np.ndarray:
    """Centroid of the solid bounded by a closed, outward-oriented mesh (tetrahedra on 0)."""
    vols = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6
    return (tri.sum(axis=1) / 4 * vols[:, None]).sum(axis=0) / vols.sum()


def assert_closed_and_oriented(tri: np.ndarray) -> None:
    """Every edge is shared by exactly two triangles that run it in opposite directions."""
    _, ids = np.unique(tri.reshape(-1, 3), axis=0, return_inverse=True)
    faces = ids.reshape(-1, 3)
    n = int(ids.max()) + 1
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    codes = edges[:, 0] * n + edges[:, 1]
    assert np.unique(codes).size == codes.size, "a directed edge occurs twice"
    assert np.isin(edges[:, 1] * n + edges[:, 0], codes).all(), "an edge has one triangle only"


def outward_fraction(normals, tri, centre) -> float:
    """Fraction of facets (ignoring float32 slivers, area < 1e-4 mm2) whose normal points away
    from ``centre``."""
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1) / 2
    assert (area >= 1e-4).mean() > 0.99
    big = area >= 1e-4
    return float((np.einsum("ij,ij->i", normals[big], tri[big].mean(axis=1) - centre) > 0).mean())


def leftovers(folder: Path) -> list:
    """Temporary files of atomic writes left in ``folder``."""
    return sorted(p.name for p in Path(folder).iterdir() if ".part" in p.name)


# ----------------------------------------------------------------------------------------------
# Validation shared by all writers


@pytest.mark.parametrize("segments, array, message", [
    ([], [[[0, 1]]], "no segments given for the label map"),
    (SPLIT, [[[0, 3, 1]]],
     "label map holds values [3] that no segment describes (segments: [1, 2])"),
    ([SegmentSpec(0, "Zero")], [[[0, 0]]], "segment label values must lie in 1..255, not [0]"),
    ([SegmentSpec(1, "A"), SegmentSpec(1, "B")], [[[0, 1]]], "duplicate segment label value: 1"),
    ([SegmentSpec(1, "A"), SegmentSpec(2, "A")], [[[0, 1]]], "duplicate segment name: A"),
    ([SegmentSpec(1, "A b"), SegmentSpec(2, "A_b")], [[[0, 1]]], "duplicate segment ID: A_b"),
    ([SegmentSpec(1, "a/b")], [[[0, 1]]],
     "invalid segment name 'a/b': it must be non-empty, without line breaks or any of /\\:*?\"<>|"),
])
def test_bad_segments_are_refused_with_one_line(tmp_path, segments, array, message):
    labels = sitk.GetImageFromArray(np.asarray(array, dtype=np.uint8))
    for write in (lambda: writers.write_seg_nrrd(labels, segments, tmp_path / "a.seg.nrrd"),
                  lambda: writers.write_stl(labels, segments, tmp_path),
                  lambda: montage.write_report(labels, labels, segments, tmp_path)):
        with pytest.raises(InputError) as err:
            write()
        assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []


def test_float_label_map_is_refused(tmp_path):
    labels = sitk.GetImageFromArray(np.ones((2, 2, 2), dtype=np.float32))
    with pytest.raises(InputError, match="^label map must have an integer voxel type, not "
                                         "32-bit float$"):
        writers.write_seg_nrrd(labels, SPLIT, tmp_path / "a.seg.nrrd")


# ----------------------------------------------------------------------------------------------
# .seg.nrrd


@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkInt16])
def test_seg_nrrd_round_trip_with_slicerio(tmp_path, pixel):
    labels, array = small_oblique_labels(pixel)
    path = writers.write_seg_nrrd(labels, SPLIT, tmp_path / "out.seg.nrrd",
                                  reference_name="hip01_0000.nii.gz")
    seg = slicerio.read_segmentation(str(path))
    # slicerio's voxel array is indexed [i, j, k]; its ijkToLPS is the image's index -> LPS.
    np.testing.assert_array_equal(seg["voxels"], array.transpose(2, 1, 0))
    np.testing.assert_allclose(seg["ijkToLPS"], images.ijk_to_lps(labels), atol=1e-9)
    assert seg["FemurSeg_ReferenceImage"] == "hip01_0000.nii.gz"
    assert seg["masterRepresentation"] == "Binary labelmap"
    right, left = seg["segments"]
    assert (right["id"], right["name"], right["labelValue"], right["layer"]) == \
        ("Right_femur", "Right femur", 1, 0)
    assert right["color"] == pytest.approx([0.902, 0.624, 0.0])
    assert right["extent"] == [1, 4, 2, 3, 1, 2]
    assert right["terminology"] == femur_terminology("right")
    assert right["nameAutoGenerated"] is False and right["colorAutoGenerated"] is False
    # The empty Left femur is kept, with Slicer's extent of an empty segment.
    assert (left["id"], left["name"], left["labelValue"]) == ("Left_femur", "Left femur", 2)
    assert left["extent"] == [0, -1, 0, -1, 0, -1]
    assert left["terminology"] == femur_terminology("left")
    assert left["color"] == pytest.approx([0.337, 0.706, 0.914])


def test_right_and_left_femur_colours_are_clearly_different():
    """In a report or a 3D view the side must never be in doubt: hues at least 90 degrees apart,
    and far apart in RGB (they were two shades of the same bone colour, 0.25 apart)."""
    import colorsys

    right, left = (np.asarray(s.color) for s in SPLIT)
    hue = [360 * colorsys.rgb_to_hsv(*c)[0] for c in (right, left)]
    assert min(abs(hue[0] - hue[1]), 360 - abs(hue[0] - hue[1])) >= 90
    assert np.linalg.norm(right - left) >= 0.5
    assert [s.name for s in SPLIT] == ["Right femur", "Left femur"]
    assert [s.value for s in SPLIT] == [1, 2]


def test_seg_nrrd_round_trip_with_simpleitk(tmp_path):
    labels, array = small_oblique_labels()
    path = writers.write_seg_nrrd(labels, SPLIT, tmp_path / "out.seg.nrrd")
    back = sitk.ReadImage(str(path))
    assert back.GetSize() == labels.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), labels.GetSpacing(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.GetOrigin(), labels.GetOrigin(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.GetDirection(), labels.GetDirection(), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)


def test_seg_nrrd_keeps_label_values_and_order_as_given(tmp_path):
    image = grid((4, 3, 2), (1, 1, 1))
    array = np.zeros((2, 3, 4), np.uint8)
    array[0, 0, :2], array[1, 2, 3] = 7, 3
    segments = [SegmentSpec(7, "Seven"), SegmentSpec(3, "Three")]
    path = writers.write_seg_nrrd(labels_on(image, array), segments, tmp_path / "x.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))
    assert [(s["name"], s["labelValue"]) for s in seg["segments"]] == [("Seven", 7), ("Three", 3)]
    np.testing.assert_array_equal(seg["voxels"], array.transpose(2, 1, 0))


def test_seg_nrrd_needs_its_ending(tmp_path):
    labels, _ = small_oblique_labels()
    with pytest.raises(InputError, match=r"^a Slicer segmentation file must end with "
                                         r"\.seg\.nrrd: out\.nrrd$"):
        writers.write_seg_nrrd(labels, SPLIT, tmp_path / "out.nrrd")


@pytest.fixture(scope="module")
def slicer_core():
    try:
        import slicer
    except ImportError as exc:  # absent, or a wheel that does not load here
        pytest.skip(f"slicer-core (3D Slicer's Qt-free core, import name 'slicer') cannot be "
                    f"imported ({exc}): cannot check that Slicer itself reads our files")
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():  # slicer-core starts without conversion rules
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    return slicer


@pytest.mark.slicer
def test_slicer_reads_names_colours_terminology_geometry(tmp_path, slicer_core):
    import vtk
    from vtk.util import numpy_support

    slicer = slicer_core
    labels, array = small_oblique_labels()
    path = writers.write_seg_nrrd(labels, SPLIT, tmp_path / "out.seg.nrrd",
                                  reference_name="hip01_0000.nii.gz")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())] \
        == ["Right_femur", "Left_femur"]  # the empty Left femur is there too
    for spec in SPLIT:
        segment = segmentation.GetSegment(spec.segment_id)
        assert segment.GetName() == spec.name
        assert segment.GetColor() == pytest.approx(spec.color)
        assert segment.GetLabelValue() == spec.value
        tag = vtk.mutable("")
        assert segment.GetTag("TerminologyEntry", tag)
        side = {"Right femur": "SCT^24028007^Right", "Left femur": "SCT^7771000^Left"}[spec.name]
        assert str(tag) == ("Segmentation category and type - DICOM master list"
                            f"~SCT^123037004^Anatomical Structure~SCT^71341001^Femur~{side}"
                            "~~^^~^^")
    # Geometry: Slicer's image-to-world (RAS) matrix is the label map's index -> LPS, flipped.
    labelmap = segmentation.GetSegment("Right_femur").GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(ijk_to_ras, np.diag([-1.0, -1.0, 1.0, 1.0]) @ images.ijk_to_lps(labels),
                               atol=1e-9)
    i0, i1, j0, j1, k0, k1 = labelmap.GetExtent()
    voxels = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    voxels = voxels.reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    np.testing.assert_array_equal(voxels, array[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1])
    assert (array == 1).sum() == (voxels == 1).sum() == 16
    # With the conversion rules registered Slicer builds its 3D surface from the file.
    assert node.CreateClosedSurfaceRepresentation()
    surface = segmentation.GetSegment("Right_femur").GetRepresentation("Closed surface")
    assert surface.GetNumberOfPoints() > 0


@pytest.mark.slicer
def test_slicer_surface_volume_agrees_with_our_stl(tmp_path, slicer_core):
    import vtk

    labels, _ = oblique_sphere(radius=20.0)
    spec = [SegmentSpec(1, "Ball")]
    path = writers.write_seg_nrrd(labels, spec, tmp_path / "ball.seg.nrrd")
    scene = slicer_core.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    assert node.CreateClosedSurfaceRepresentation()
    mass = vtk.vtkMassProperties()
    mass.SetInputData(node.GetSegmentation().GetSegment("Ball").GetRepresentation("Closed surface"))
    mass.Update()
    _, _, tri = read_stl(writers.write_stl(labels, spec, tmp_path)[0])
    assert enclosed_volume(tri) == pytest.approx(mass.GetVolume(), rel=0.03)


@pytest.mark.slicer
@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_slicer_reads_stl_in_the_declared_coordinate_system(tmp_path, slicer_core, system):
    labels, _ = oblique_sphere(radius=15.0)
    stl = writers.write_stl(labels, [RED], tmp_path, coordinate_system=system)[0]
    _, _, tri = read_stl(stl)
    scene = slicer_core.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLModelNode")
    storage = scene.AddNewNodeByClass("vtkMRMLModelStorageNode")
    storage.SetFileName(str(stl))
    assert storage.ReadData(node) == 1
    assert storage.GetCoordinateSystemAsString(storage.GetCoordinateSystem()) == system
    points = tri.reshape(-1, 3)
    if system == "LPS":  # Slicer's scene is RAS
        points = points * [-1, -1, 1]
    bounds = node.GetPolyData().GetBounds()
    np.testing.assert_allclose(bounds, np.ravel(list(zip(points.min(0), points.max(0)))),
                               atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Label map and probability images


@pytest.mark.parametrize("name", ["labels.nii.gz", "labels.nii", "labels.nrrd", "labels.mha"])
@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkInt16])
def test_write_labelmap_round_trip(tmp_path, name, pixel):
    labels, array = small_oblique_labels(pixel)
    path = writers.write_labelmap(labels, tmp_path / name)
    back = sitk.ReadImage(str(path))
    assert back.GetPixelID() == sitk.sitkUInt8
    assert images.grid_mismatch(back, labels, tol=1e-6) == ""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)


def test_write_labelmap_refuses_out_of_range_values(tmp_path):
    labels = sitk.GetImageFromArray(np.array([[[0, 300]]], dtype=np.int16))
    with pytest.raises(InputError, match="^label map values must be integers in 0..255$"):
        writers.write_labelmap(labels, tmp_path / "l.nii.gz")


def test_write_probability_as_float32(tmp_path):
    reference = grid((3, 2, 2), (0.9, 0.9, 5.2), (1, 2, 3), OBLIQUE)
    values = np.linspace(0, 1, 12).reshape(2, 2, 3)
    prob = images.array_to_image(values.astype(np.float64), reference)
    back = sitk.ReadImage(str(writers.write_probability(prob, tmp_path / "p.nii.gz")))
    assert back.GetPixelID() == sitk.sitkFloat32
    assert images.grid_mismatch(back, reference, tol=1e-6) == ""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), values.astype(np.float32))


@pytest.mark.parametrize("bad, message", [
    (1.5, "probability map values must lie in 0..1, not 0..1.5"),
    (-0.25, "probability map values must lie in 0..1, not -0.25..0.75"),
])
def test_write_probability_refuses_values_outside_0_1(tmp_path, bad, message):
    values = np.array([[[0.0, 0.75, bad]]], dtype=np.float32)
    with pytest.raises(InputError) as err:
        writers.write_probability(sitk.GetImageFromArray(values), tmp_path / "p.nii.gz")
    assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# STL


def test_stl_sphere_on_anisotropic_oblique_grid(tmp_path):
    radius = 20.0
    labels, centre = oblique_sphere(radius)
    voxel_volume = int(sitk.GetArrayViewFromImage(labels).sum()) * 0.9 * 1.1 * 4.0
    paths = writers.write_stl(labels, [RED], tmp_path)
    assert paths == [tmp_path / "Red_thing.stl"]
    header, normals, tri = read_stl(paths[0])
    assert b"SPACE=LPS" in header and not header.startswith(b"solid")
    volume = enclosed_volume(tri)
    assert volume == pytest.approx(voxel_volume, rel=0.02)
    assert volume == pytest.approx(4 / 3 * math.pi * radius ** 3, rel=0.03)
    np.testing.assert_allclose(volume_centroid(tri), centre, atol=0.3)  # millimetres, LPS
    radii = np.linalg.norm(tri.reshape(-1, 3) - centre, axis=1)
    assert radii.min() > radius - 2.2 and radii.max() < radius + 2.2  # within half a slice
    # Normals point outward, and the stored facet normals match the vertex order.
    assert outward_fraction(normals, tri, centre) == 1.0
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(cross, axis=1)
    big = length > 2e-4
    np.testing.assert_allclose(np.einsum("ij,ij->i", normals[big], cross[big]) / length[big],
                               1.0, atol=1e-3)
    assert_closed_and_oriented(tri)
    # The reader sees as many triangles as the mesher made.
    _, faces = surface.surface_mesh(sitk.GetArrayViewFromImage(labels) == 1,
                                    images.ijk_to_lps(labels), 0.5)
    assert len(tri) == len(faces)


def test_stl_in_ras_flips_x_and_y_and_keeps_orientation(tmp_path):
    labels, _ = oblique_sphere(radius=12.0)
    _, _, lps = read_stl(writers.write_stl(labels, [RED], tmp_path / "lps")[0])
    header, _, ras = read_stl(writers.write_stl(labels, [RED], tmp_path / "ras",
                                                coordinate_system="ras")[0])
    assert b"SPACE=RAS" in header
    np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-4)
    assert enclosed_volume(lps) > 0
    assert enclosed_volume(ras) == pytest.approx(enclosed_volume(lps), rel=1e-6)


def test_stl_one_file_per_non_empty_segment(tmp_path):
    image = grid((20, 10, 6), (1.0, 1.0, 3.0), direction=np.diag([-1.0, 1.0, -1.0]))
    array = np.zeros((6, 10, 20), np.uint8)
    array[1:5, 2:8, 2:8] = 1  # box of 4 x 6 x 6 voxels
    paths = writers.write_stl(labels_on(image, array), SPLIT, tmp_path)
    assert paths == [tmp_path / "Right_femur.stl"]  # no file for the empty Left femur
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Right_femur.stl"]
    _, _, tri = read_stl(paths[0])
    assert_closed_and_oriented(tri)  # direction with det = +1 but flipped axes
    assert enclosed_volume(tri) == pytest.approx(4 * 6 * 6 * 3.0, rel=0.1)
    assert writers.write_stl(labels_on(image, np.zeros_like(array)), SPLIT, tmp_path / "e") == []


def test_stl_closes_objects_cut_by_the_volume_border(tmp_path):
    labels, centre = oblique_sphere(radius=20.0)
    array = sitk.GetArrayFromImage(labels)
    array[:, :, :22] = 0  # cut the ball with the plane i = 22 ... and move it to the border:
    cut = images.array_to_image(np.ascontiguousarray(array[:, :, 22:]),
                            grid((38, 50, 16), (0.9, 1.1, 4.0),
                                 images.ijk_to_lps(labels)[:3] @ [22, 0, 0, 1], OBLIQUE))
    _, _, tri = read_stl(writers.write_stl(cut, [RED], tmp_path)[0])
    assert_closed_and_oriented(tri)
    voxels = int(sitk.GetArrayViewFromImage(cut).sum()) * 0.9 * 1.1 * 4.0
    assert enclosed_volume(tri) == pytest.approx(voxels, rel=0.03)


def test_stl_determinant_minus_one_grid_still_has_outward_normals(tmp_path):
    mirrored = OBLIQUE @ np.diag([1.0, 1.0, -1.0])  # a left-handed voxel frame
    image = grid((60, 50, 16), (0.9, 1.1, 4.0), (0, 0, 0), mirrored)
    centre = images.ijk_to_lps(image) @ np.array([29.5, 24.5, 7.5, 1.0])
    inside = np.linalg.norm(lps_points(image) - centre[:3, None, None, None], axis=0) <= 15
    _, normals, tri = read_stl(writers.write_stl(labels_on(image, inside), [RED], tmp_path)[0])
    assert outward_fraction(normals, tri, centre[:3]) == 1.0
    assert enclosed_volume(tri) > 0


def test_stl_single_voxel_speck_survives_smoothing(tmp_path):
    image = grid((5, 5, 5), (1.0, 1.0, 1.0))
    array = np.zeros((5, 5, 5), np.uint8)
    array[2, 2, 2] = 1
    _, _, tri = read_stl(writers.write_stl(labels_on(image, array), [RED], tmp_path,
                                           sigma_voxels=2.0)[0])
    assert len(tri) > 0
    assert_closed_and_oriented(tri)


def thick_slice_tilted_cylinder():
    """A cylinder (radius 10 mm) at 45 degrees to 5.2 mm slices, and its axis and centre."""
    image = grid((70, 34, 14), (0.9, 0.9, 5.2))
    centre = np.array([69 * 0.9 / 2, 33 * 0.9 / 2, 13 * 5.2 / 2])
    axis = np.array([math.sqrt(0.5), 0.0, math.sqrt(0.5)])
    d = lps_points(image) - centre[:, None, None, None]
    along = np.einsum("a,akji->kji", axis, d)
    radial = np.linalg.norm(d - along * axis[:, None, None, None], axis=0)
    return labels_on(image, (radial <= 10) & (np.abs(along) <= 25)), centre, axis


def radial_errors(vertices, centre, axis):
    """Distance from the cylinder wall (mm) of vertices away from the end caps."""
    d = vertices - centre
    along = d @ axis
    radial = np.linalg.norm(d - along[:, None] * axis, axis=1)
    return radial[np.abs(along) < 15] - 10


def test_stl_thick_slices_give_a_smooth_wall_not_a_staircase(tmp_path):
    from skimage import measure

    labels, centre, axis = thick_slice_tilted_cylinder()
    _, _, tri = read_stl(writers.write_stl(labels, [RED], tmp_path)[0])
    errors = radial_errors(tri.reshape(-1, 3), centre, axis)
    assert abs(errors.mean()) < 0.3 and errors.std() < 0.3 and np.abs(errors).max() < 1.0
    # Control: plain marching cubes on the binary mask shows the 5.2 mm staircase.
    mask = np.pad(sitk.GetArrayFromImage(labels), 1).astype(np.float32)
    verts, _, _, _ = measure.marching_cubes(mask.transpose(2, 1, 0), 0.5)
    naive = radial_errors((verts - 1) * [0.9, 0.9, 5.2], centre, axis)
    assert naive.std() > 0.5 and np.abs(naive).max() > 1.5


@pytest.mark.parametrize("kwargs, message", [
    ({"sigma_voxels": -1.0}, "STL smoothing must be a finite number >= 0, not -1.0"),
    ({"sigma_voxels": float("nan")}, "STL smoothing must be a finite number >= 0, not nan"),
    ({"sigma_voxels": "lots"}, "STL smoothing must be a finite number >= 0, not 'lots'"),
    ({"coordinate_system": "XYZ"}, "STL coordinate system must be LPS or RAS, not 'XYZ'"),
])
def test_stl_bad_options(tmp_path, kwargs, message):
    labels, _ = small_oblique_labels()
    with pytest.raises(InputError) as err:
        writers.write_stl(labels, SPLIT, tmp_path / "stl", **kwargs)
    assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []  # not even the folder was made


# ----------------------------------------------------------------------------------------------
# Overwriting and atomicity


def write_all(labels, folder: Path, overwrite=False):
    grey = sitk.Cast(labels, sitk.sitkInt16)
    return [writers.write_seg_nrrd(labels, SPLIT, folder / "s.seg.nrrd", overwrite=overwrite),
            writers.write_labelmap(labels, folder / "l.nii.gz", overwrite=overwrite),
            writers.write_probability(sitk.Cast(labels, sitk.sitkFloat32) / 2.0,
                                      folder / "p.nrrd", overwrite=overwrite),
            *writers.write_stl(labels, SPLIT, folder, overwrite=overwrite),
            montage.write_report(grey, labels, SPLIT, folder, overwrite=overwrite)]


def test_every_writer_refuses_to_overwrite_and_replaces_on_request(tmp_path):
    labels, array = small_oblique_labels()
    write_all(labels, tmp_path)
    names = ["Right_femur.stl", "l.nii.gz", "p.nrrd", "report.png", "s.seg.nrrd", "volumes.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for write in (lambda: writers.write_seg_nrrd(labels, SPLIT, tmp_path / "s.seg.nrrd"),
                  lambda: writers.write_labelmap(labels, tmp_path / "l.nii.gz"),
                  lambda: writers.write_probability(sitk.Cast(labels, sitk.sitkFloat32),
                                                    tmp_path / "p.nrrd"),
                  lambda: writers.write_stl(labels, SPLIT, tmp_path),
                  lambda: montage.write_report(labels, labels, SPLIT, tmp_path)):
        with pytest.raises(OutputExistsError, match=r"^output exists: .* \(use --overwrite to "
                                                    r"replace it\)$"):
            write()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # overwrite=True replaces them with the new content.
    array[array == 1] = 2  # everything is now Left femur
    write_all(labels_on(labels, array), tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names + ["Left_femur.stl"])
    seg = slicerio.read_segmentation(str(tmp_path / "s.seg.nrrd"))
    assert seg["segments"][1]["extent"] == [1, 4, 2, 3, 1, 2]
    assert json.loads((tmp_path / "volumes.json").read_text(encoding="utf-8"))["segments"][1]["voxel_count"] == 16


def test_multi_file_writers_check_every_target_first(tmp_path):
    labels, _ = small_oblique_labels()
    (tmp_path / "volumes.json").write_text("{}")  # report.png is free, volumes.json is taken
    with pytest.raises(OutputExistsError):
        montage.write_report(sitk.Cast(labels, sitk.sitkInt16), labels, SPLIT, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volumes.json"]
    both = np.zeros((5, 6, 7), np.uint8)
    both[1, 1, 1:3], both[3, 4, 4:6] = 1, 2
    (tmp_path / "Left_femur.stl").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        writers.write_stl(labels_on(labels, both), SPLIT, tmp_path)
    assert not (tmp_path / "Right_femur.stl").exists()
    assert (tmp_path / "Left_femur.stl").read_bytes() == b"old"


def test_failed_seg_nrrd_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    labels, _ = small_oblique_labels()

    def half_write(file, segmentation, **kwargs):
        Path(file).write_bytes(b"NRRD0004\npartial")
        raise Boom("disk full")

    monkeypatch.setattr(slicerio, "write_segmentation", half_write)
    with pytest.raises(Boom):
        writers.write_seg_nrrd(labels, SPLIT, tmp_path / "s.seg.nrrd")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "s.seg.nrrd").write_bytes(b"old")
    with pytest.raises(Boom):
        writers.write_seg_nrrd(labels, SPLIT, tmp_path / "s.seg.nrrd", overwrite=True)
    assert (tmp_path / "s.seg.nrrd").read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_failed_stl_write_leaves_finished_files_only(tmp_path, monkeypatch):
    labels, _ = small_oblique_labels()
    array = sitk.GetArrayFromImage(labels)
    array[3, 4, 4:6] = 2
    real = surface.surface_mesh
    calls = []

    def second_fails(mask, matrix, sigma_voxels):
        calls.append(1)
        if len(calls) == 2:
            raise Boom("out of memory")
        return real(mask, matrix, sigma_voxels)

    monkeypatch.setattr(writers, "surface_mesh", second_fails)
    with pytest.raises(Boom):
        writers.write_stl(labels_on(labels, array), SPLIT, tmp_path)
    # Each file is atomic: the first surface is complete, the second was never created.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Right_femur.stl"]
    _, _, tri = read_stl(tmp_path / "Right_femur.stl")
    assert_closed_and_oriented(tri)


def test_successful_writes_leave_no_temporary_files(tmp_path):
    labels, _ = small_oblique_labels()
    write_all(labels, tmp_path)
    write_all(labels, tmp_path, overwrite=True)
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# Real data (development machine only; nothing of it is written inside the repository)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_femur_surface_and_volumes(tmp_path):
    data = real_data_dir()
    image = images.read_image(data / "imagesTr" / "hip01_0000.nii.gz")
    labels = images.read_label(data / "labelsTr" / "hip01.nii.gz", image)
    femur = labels_on(image, sitk.GetArrayViewFromImage(labels) == 1)
    spec = femur_segments(False)
    (stl,) = writers.write_stl(femur, spec, tmp_path)
    _, _, tri = read_stl(stl)
    assert_closed_and_oriented(tri)
    report = montage.write_report(image, femur, spec, tmp_path)
    ml = report["segments"][0]["volume_ml"]
    assert 100 < ml < 600  # two proximal femurs
    assert enclosed_volume(tri) / 1000 == pytest.approx(ml, rel=0.03)
