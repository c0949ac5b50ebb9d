"""Scene nodes of a result: the segmentation node, the probability map node, the terminology."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from FemurSegLib import images
from FemurSegLib.errors import FemurSegError, InputError

from .volumes import image_to_volume_node, image_to_world, ijk_to_ras, volume_node_to_image

#: Suffixes of the node names made from an input volume called "<name>".
SEGMENTATION_NAME_SUFFIX = " femur segmentation"
PROBABILITY_NAME_SUFFIX = " femur probability"

#: Slicer's closed-surface smoothing factor (0..1) for the 3D view; 0.5 is Slicer's default for
#: binary labelmaps. Not the STL mesher's smoothing (:data:`.stl.DEFAULT_STL_SIGMA_VOXELS`).
DEFAULT_SURFACE_SMOOTHING = 0.5


# ----------------------------------------------------------------------------------------------
# Segmentation node


def register_segmentation_converter_rules() -> None:
    """Register the labelmap <-> closed surface conversion rules that the factory lacks.

    Slicer registers them at start-up; the ``slicer-core`` wheel starts with none, and without
    them ``CreateClosedSurfaceRepresentation()`` fails. A segmentation copies the factory's rules
    when it is constructed, so this runs before this package creates a segmentation node (on
    first use, never at import: in the application the Segmentations module has registered them
    long before, and a rule that is present is never added twice).
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for cls in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
                slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule,
                slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule):
        if cls.__name__ not in present:
            factory.RegisterConverterRule(cls())


def check_on_grid(labelmap, volume_node, what: str) -> None:
    """Raise :class:`InputError` unless the oriented image lies on the volume's voxel grid."""
    ext = labelmap.GetExtent()
    if ext[0] > ext[1] or ext[2] > ext[3] or ext[4] > ext[5]:
        return  # an empty segment has no voxels to place
    m_lab = image_to_world(labelmap)
    m_vol = ijk_to_ras(volume_node)
    scale = max(1.0, float(np.abs(m_vol).max()))
    if not np.allclose(m_lab, m_vol, rtol=0, atol=1e-4 * scale):
        raise InputError(f"{what} is not on the input volume's grid (IJK-to-RAS differs)")
    dims = volume_node.GetImageData().GetDimensions()
    if any(ext[2 * a] < 0 or ext[2 * a + 1] > dims[a] - 1 for a in range(3)):
        raise InputError(f"{what} extends beyond the input volume (extent {ext}, size {dims})")


def _unique_name(scene, base: str) -> str:
    return scene.GenerateUniqueName(base) if scene.GetFirstNodeByName(base) else base


def load_segmentation(path: os.PathLike, scene, reference_volume, *, name: Optional[str] = None,
                      surface_smoothing: float = DEFAULT_SURFACE_SMOOTHING,
                      closed_surface: bool = True):
    """Load a ``.seg.nrrd`` written by the CLI as a new ``vtkMRMLSegmentationNode``.

    Segment names, colours, label values and terminology come from the file (Slicer's own
    segmentation reader); the reference geometry is ``reference_volume``'s, and the file must lie
    on its voxel grid. The node is named "<volume name> femur segmentation", sits under the same
    parent transform as the volume, gets display nodes and (by default) a closed surface made
    with Slicer's smoothing factor ``surface_smoothing`` (0..1) so it shows in 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"segmentation file not found: {path}")
    register_segmentation_converter_rules()
    base = name or f"{reference_volume.GetName()}{SEGMENTATION_NAME_SUFFIX}"
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", _unique_name(scene, base))
    try:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        if not storage.ReadData(seg_node):
            raise InputError(f"cannot read segmentation file {path.name}")
        segmentation = seg_node.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            raise InputError(f"segmentation file {path.name} has no segments")
        for i in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(i)
            labelmap = segment.GetRepresentation(
                slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
            if labelmap is None:
                raise InputError(f"segment {segment.GetName()!r} in {path.name} has no labelmap")
            check_on_grid(labelmap, reference_volume, f"segmentation file {path.name}")
        # The parent transform first: Slicer bakes any transform between the volume and the
        # segmentation into the reference geometry (a registered volume would get a geometry
        # shifted by its registration, and Segment Editor edits would land off the voxels).
        transform_id = reference_volume.GetTransformNodeID()
        if transform_id:
            seg_node.SetAndObserveTransformNodeID(transform_id)
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        seg_node.CreateDefaultDisplayNodes()
        if closed_surface:
            update_closed_surface(seg_node, surface_smoothing)
    except BaseException:
        scene.RemoveNode(seg_node)
        raise
    return seg_node


def update_closed_surface(seg_node, smoothing_factor: float = DEFAULT_SURFACE_SMOOTHING) -> None:
    """(Re)create the closed-surface representation with Slicer's smoothing factor (0..1)."""
    if not 0.0 <= float(smoothing_factor) <= 1.0:
        raise InputError(f"smoothing factor must be between 0 and 1, not {smoothing_factor}")
    register_segmentation_converter_rules()
    segmentation = seg_node.GetSegmentation()
    segmentation.SetConversionParameter("Smoothing factor", f"{float(smoothing_factor):g}")
    seg_node.RemoveClosedSurfaceRepresentation()
    if not seg_node.CreateClosedSurfaceRepresentation():
        raise FemurSegError(f"cannot create surfaces for {seg_node.GetName()!r}")


def segment_ids(seg_node) -> List[str]:
    segmentation = seg_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segment_terminology(segment) -> str:
    """A segment's serialized terminology entry ("" if none), read the way Slicer 5.8 has it.

    ``vtkSegment.GetTerminology()`` only exists from Slicer 5.10; every version keeps the entry
    in the tag named by ``GetTerminologyEntryTagName()`` ("TerminologyEntry").
    """
    value = vtk.reference("")
    if not segment.GetTag(segment.GetTerminologyEntryTagName(), value):
        return ""
    return str(value)


def segment_voxel_volume_mm3(seg_node, segment_id: str) -> float:
    """Volume of a segment's binary labelmap: voxel count times voxel volume (mm^3)."""
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise InputError(f"no segment {segment_id!r} in {seg_node.GetName()!r}")
    labelmap = segment.GetRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if labelmap is None or labelmap.GetPointData().GetScalars() is None:
        return 0.0
    ext = labelmap.GetExtent()
    if ext[0] > ext[1] or ext[2] > ext[3] or ext[4] > ext[5]:
        return 0.0
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    count = int(np.count_nonzero(values == segment.GetLabelValue()))
    return count * abs(float(np.linalg.det(image_to_world(labelmap)[:3, :3])))


# ----------------------------------------------------------------------------------------------
# Probability map


def load_probability_map(path: os.PathLike, scene, reference_volume, *,
                         name: Optional[str] = None):
    """Load the CLI's probability map (float, input grid) as a new scalar volume node."""
    image = images.read_image(path, what="probability map", allow_constant=True)
    reference = volume_node_to_image(reference_volume)
    mismatch = images.grid_mismatch(image, reference)
    if mismatch:
        raise InputError(f"probability map is not on the input volume's grid: {mismatch}")
    image.CopyInformation(reference)  # remove rounding of the file's geometry
    base = name or f"{reference_volume.GetName()}{PROBABILITY_NAME_SUFFIX}"
    node = image_to_volume_node(sitk.Cast(image, sitk.sitkFloat32), scene,
                                _unique_name(scene, base))
    transform_id = reference_volume.GetTransformNodeID()
    if transform_id:
        node.SetAndObserveTransformNodeID(transform_id)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
    return node
