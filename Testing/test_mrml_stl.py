"""FemurSegMRMLLib.stl on real MRML (slicer-core): STL export of the femur surfaces."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib.errors import InputError, OutputExistsError  # noqa: E402
from slicer_helpers import (DIRECTION, ellipsoids, jobs, ORIGIN_LPS, phantom, scene, scene_nodes,
                            SLICER_MARKS, SPACING, stl, volume, volumes, vtk, write_seg)  # noqa: F401,E402

pytestmark = SLICER_MARKS


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
