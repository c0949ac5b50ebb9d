"""STL export of the femur segments: volume-preserving surfaces in millimetres."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, List, Optional

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from FemurSegLib import files, images, surface
from FemurSegLib.errors import FemurSegError, InputError

from .scene import register_segmentation_converter_rules, segment_ids, segment_voxel_volume_mm3
from .volumes import safe_file_name, volume_node_to_image

#: Gaussian smoothing of the STL mesher: standard deviation in voxels (``femurseg segment
#: --stl-smoothing``). Not Slicer's 0..1 closed-surface smoothing factor of the 3D view.
DEFAULT_STL_SIGMA_VOXELS = surface.DEFAULT_SIGMA_VOXELS

#: Largest relative difference between the STL's enclosed volume and the voxel volume that is not
#: reported (met at the default smoothing on the data's resolution; strong smoothing of thick
#: slices shrinks thin parts such as the femoral neck).
STL_VOLUME_TOLERANCE = 0.02


def export_stl(seg_node, folder: os.PathLike, *,
               sigma_voxels: float = DEFAULT_STL_SIGMA_VOXELS,
               segment_ids_to_export: Optional[Iterable[str]] = None,
               overwrite: bool = False, lps: bool = True) -> List[Path]:
    """Export closed surfaces of the femur segments as STL files in millimetres.

    One file per non-empty segment, named "<segmentation node>_<segment>.stl", in LPS coordinates
    (as Slicer and ITK-based tools expect; ``lps=False`` gives RAS). Each segment's current
    voxels (after any editing) are exported on the segmentation's reference grid and meshed by
    the core's volume-preserving surface builder (:func:`FemurSegLib.surface.surface_mesh`, the
    same one `femurseg segment --stl` uses, with its marching cubes step done by VTK, see
    :func:`vtk_contour`): signed-distance interpolation across the thick slices, a Gaussian of
    ``sigma_voxels`` voxels, and a contour level chosen so the enclosed volume matches the voxel
    volume, which finite-element work needs. Slicer's own closed-surface
    smoothing shrinks thin parts such as the femoral neck on 5 mm slices by more than 2%. Existing
    files are refused unless ``overwrite``; every file is written to a temporary name and renamed
    into place.
    """
    sigma_voxels = surface.check_sigma_voxels(sigma_voxels)
    register_segmentation_converter_rules()
    ids = list(segment_ids_to_export) if segment_ids_to_export is not None else segment_ids(seg_node)
    ids = [sid for sid in ids if seg_node.GetSegmentation().GetSegment(sid) is None
           or segment_voxel_volume_mm3(seg_node, sid) > 0]  # an empty segment has no surface
    if not ids:
        raise InputError(f"{seg_node.GetName()!r} has no femur voxels to export as STL")
    target_dir = Path(folder)
    segmentation = seg_node.GetSegmentation()
    targets = {}
    for sid in ids:
        segment = segmentation.GetSegment(sid)
        if segment is None:
            raise InputError(f"no segment {sid!r} in {seg_node.GetName()!r}")
        file_name = safe_file_name(f"{seg_node.GetName()}_{segment.GetName()}") + ".stl"
        targets[sid] = files.check_writable(target_dir / file_name, overwrite)
    scene = seg_node.GetScene()
    reference = seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole())
    written: List[Path] = []
    for sid, target in targets.items():
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            ids_array = vtk.vtkStringArray()
            ids_array.InsertNextValue(sid)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                seg_node, ids_array, labelmap, reference)
            if not ok:
                raise FemurSegError(f"cannot export segment {segmentation.GetSegment(sid).GetName()!r}"
                                    " as voxels")
            image = volume_node_to_image(labelmap)
        finally:
            scene.RemoveNode(labelmap)
        mask = sitk.GetArrayViewFromImage(image) > 0
        vertices, faces = surface.surface_mesh(mask, images.ijk_to_lps(image), sigma_voxels,
                                               contour=vtk_contour)
        if not lps:  # RAS = LPS with x and y negated (a rotation: triangle winding stays outward)
            vertices = vertices * np.array([-1.0, -1.0, 1.0], dtype=vertices.dtype)
        surface.write_binary_stl(vertices, faces, target, overwrite=overwrite,
                                 header=f"FemurSeg {segmentation.GetSegment(sid).GetName()} "
                                        f"SPACE={'LPS' if lps else 'RAS'}")
        written.append(target)
        _warn_if_volume_differs(target, segment_voxel_volume_mm3(seg_node, sid))
    return written


def vtk_contour(field: np.ndarray, level: float):
    """The marching cubes step of the core's mesher done by VTK (``vtkFlyingEdges3D``).

    Slicer ships VTK but not scikit-image, which the command line uses for the same step. Takes
    a ``[k, j, i]`` field and returns vertices as fractional voxel indices ``(i, j, k)`` and
    triangles, as :func:`FemurSegLib.surface.marching_cubes` does.
    """
    nk, nj, ni = field.shape
    image = vtk.vtkImageData()
    image.SetDimensions(ni, nj, nk)  # origin 0, spacing 1: points come out in voxel indices
    values = numpy_support.numpy_to_vtk(np.ascontiguousarray(field, dtype=np.float32).ravel(),
                                        deep=True)
    image.GetPointData().SetScalars(values)
    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, float(level))
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    poly = contour.GetOutput()
    if poly.GetNumberOfPoints() == 0 or poly.GetNumberOfPolys() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    vertices = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    polys = poly.GetPolys()  # VTK 9 cell arrays (Slicer 5.8 has VTK 9.2, 5.10 VTK 9.5)
    offsets = numpy_support.vtk_to_numpy(polys.GetOffsetsArray())
    if np.any(np.diff(offsets) != 3):
        raise FemurSegError("the VTK contour filter made cells that are not triangles")
    faces = numpy_support.vtk_to_numpy(polys.GetConnectivityArray()).reshape(-1, 3)
    return vertices, faces.astype(np.int64)


def _warn_if_volume_differs(path: Path, voxel_mm3: float) -> None:
    surface_mm3 = surface_volume_mm3(read_stl(path))
    if voxel_mm3 > 0 and abs(surface_mm3 - voxel_mm3) / voxel_mm3 > STL_VOLUME_TOLERANCE:
        logging.getLogger("FemurSeg").warning(
            "%s encloses %.1f ml but the segment holds %.1f ml (%+.1f%%): lower the smoothing "
            "for a closer surface", path.name, surface_mm3 / 1000, voxel_mm3 / 1000,
            100 * (surface_mm3 - voxel_mm3) / voxel_mm3)


def read_stl(path: os.PathLike):
    """Read an STL file as ``vtkPolyData`` (raises :class:`InputError` if empty)."""
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    poly = reader.GetOutput()
    if poly is None or poly.GetNumberOfCells() == 0:
        raise InputError(f"no surface in {path}")
    return poly


def surface_volume_mm3(poly) -> float:
    """Volume enclosed by a closed triangle surface (``vtkMassProperties``), in mm^3."""
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputData(poly)
    mass = vtk.vtkMassProperties()
    mass.SetInputConnection(triangles.GetOutputPort())
    mass.Update()
    return float(mass.GetVolume())
