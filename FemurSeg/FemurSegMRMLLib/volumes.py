"""Volume nodes <-> ``SimpleITK`` images with exact geometry, and volume nodes as files.

Geometry: MRML volumes are RAS, ITK images are LPS. Only the signs of the first two rows of the
IJK-to-RAS matrix differ, so the conversion in both directions is exact.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from FemurSegLib import images
from FemurSegLib.errors import InputError

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def matrix_to_array(matrix) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a 4x4 numpy array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras(volume_node) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of ``volume_node`` (its own, not including parent transforms)."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return matrix_to_array(m)


def image_to_world(oriented_image) -> np.ndarray:
    """The 4x4 image-to-world matrix of a ``vtkOrientedImageData`` (a segment's labelmap)."""
    m = vtk.vtkMatrix4x4()
    oriented_image.GetImageToWorldMatrix(m)
    return matrix_to_array(m)


def _directions_ras(volume_node) -> np.ndarray:
    dirs = [[0.0] * 3 for _ in range(3)]
    volume_node.GetIJKToRASDirections(dirs)
    return np.array(dirs, dtype=float)


def volume_node_to_image(volume_node) -> sitk.Image:
    """Copy a scalar volume node into a ``SimpleITK.Image`` with the same geometry (in LPS).

    Raises :class:`InputError` for a node without image data or with several components.
    """
    name = volume_node.GetName() if volume_node is not None else None
    image_data = volume_node.GetImageData() if volume_node is not None else None
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise InputError(f"volume {name!r} has no image data")
    components = image_data.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(f"volume {name!r} has {components} components per voxel; "
                         "a scalar (grey-value) volume is required")
    dims = image_data.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    array = scalars.reshape(dims[::-1])  # [k, j, i]
    image = sitk.GetImageFromArray(array)  # copies
    spacing = np.asarray(volume_node.GetSpacing(), dtype=float)
    dirs_ras = _directions_ras(volume_node)
    origin_ras = np.asarray(volume_node.GetOrigin(), dtype=float)
    extent = image_data.GetExtent()
    if extent[0] or extent[2] or extent[4]:  # image data not starting at index 0
        origin_ras = origin_ras + dirs_ras @ (spacing * np.array(extent[::2], dtype=float))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(_LPS_FROM_RAS @ origin_ras))
    image.SetDirection(tuple((_LPS_FROM_RAS @ dirs_ras).ravel()))
    return image


def set_node_geometry_from_image(volume_node, image: sitk.Image) -> None:
    """Give ``volume_node`` the origin, spacing and directions of ``image`` (LPS -> RAS)."""
    dirs_ras = _LPS_FROM_RAS @ np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, dirs_ras[r, c])
    volume_node.SetIJKToRASDirectionMatrix(m)
    volume_node.SetSpacing(*image.GetSpacing())
    volume_node.SetOrigin(*(_LPS_FROM_RAS @ np.asarray(image.GetOrigin(), dtype=float)))


def image_to_volume_node(image: sitk.Image, scene, name: str,
                         node_class: str = "vtkMRMLScalarVolumeNode"):
    """Add a new volume node holding a copy of ``image`` (a 3D scalar image) to ``scene``."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: a 3D scalar image is required")
    array = sitk.GetArrayFromImage(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(*image.GetSize())
    vtk_array = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image_data.GetPointData().SetScalars(vtk_array)
    node = scene.AddNewNodeByClass(node_class, name)
    set_node_geometry_from_image(node, image)
    node.SetAndObserveImageData(image_data)
    return node


def write_volume_node(volume_node, path: os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``volume_node`` to ``path`` (NRRD, NIfTI, ...) with its exact geometry.

    The content is not judged here (a blank or odd volume is the CLI's to refuse, with the same
    message as on the command line).
    """
    return images.write_image(volume_node_to_image(volume_node), path, overwrite=overwrite,
                              compress=False)


def safe_file_name(text: str) -> str:
    """A node name as a file name: runs of characters other than ``A-Za-z0-9._-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "segment"
