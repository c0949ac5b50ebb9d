"""FemurSegMRMLLib.volumes on real MRML (slicer-core): volume node <-> SimpleITK image."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib.errors import InputError, OutputExistsError  # noqa: E402
from slicer_helpers import (DIRECTION, LPS_FROM_RAS, make_image, node_array, ORIGIN_LPS, rotation,
                            scene, SIZE, slicer, SLICER_MARKS, SPACING, volume, volumes, vtk)  # noqa: F401,E402

pytestmark = SLICER_MARKS


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
