"""Result writers of ``femurseg segment``: .seg.nrrd, label maps, probabilities, STL surfaces.

Every writer takes a label map (a ``SimpleITK.Image`` of integer label values, on exactly the
input image's grid) and a list of :class:`~FemurSegLib.segments.SegmentSpec`. Every file is
written atomically through :func:`FemurSegLib.files.atomic_path` and an existing file is refused
unless ``overwrite=True``; a writer producing several files checks all of them before it writes
the first, so a refusal never leaves a half-replaced set behind. Surfaces come from
:mod:`FemurSegLib.surface`, the PNG report from :mod:`FemurSegLib.montage`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import files, images
from .errors import InputError
from .files import PathLike
from .segments import SegmentSpec
from .surface import DEFAULT_SIGMA_VOXELS, check_sigma_voxels, surface_mesh, write_binary_stl

__all__ = ["write_seg_nrrd", "write_labelmap", "write_probability", "write_stl",
           "segment_volumes", "check_labelmap"]

#: Header field of a .seg.nrrd naming the image the segmentation was computed from.
REFERENCE_FIELD = "FemurSeg_ReferenceImage"
_BAD_NAME_CHARS = '\r\n\t/\\:*?"<>|'


# ----------------------------------------------------------------------------------------------
# Validation


def check_labelmap(labelmap: sitk.Image, segments: Sequence[SegmentSpec]) -> np.ndarray:
    """Validate ``labelmap`` against ``segments``; return its ``[k, j, i]`` array."""
    images.validate_image(labelmap, what="label map", allow_constant=True)
    if labelmap.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16,
                                     sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                                     sitk.sitkUInt64, sitk.sitkInt64):
        raise InputError(f"label map must have an integer voxel type, not "
                         f"{labelmap.GetPixelIDTypeAsString()}")
    if not segments:
        raise InputError("no segments given for the label map")
    values = [s.value for s in segments]
    if any(not 1 <= v <= 255 for v in values):
        raise InputError(f"segment label values must lie in 1..255, not {values}")
    for what, items in (("label value", values), ("name", [s.name for s in segments]),
                        ("ID", [s.segment_id for s in segments])):
        duplicates = sorted({str(x) for x in items if items.count(x) > 1})
        if duplicates:
            raise InputError(f"duplicate segment {what}: {', '.join(duplicates)}")
    for s in segments:  # names become file names (STL) and NRRD header lines
        if not s.name.strip() or any(c in s.name for c in _BAD_NAME_CHARS):
            raise InputError(f"invalid segment name {s.name!r}: it must be non-empty, without "
                             f"line breaks or any of {_BAD_NAME_CHARS.strip()}")
    array = sitk.GetArrayViewFromImage(labelmap)
    unknown = sorted(set(np.unique(array).tolist()) - set(values) - {0})
    if unknown:
        raise InputError(f"label map holds values {unknown} that no segment describes "
                         f"(segments: {sorted(values)})")
    return array


def segment_volumes(labelmap: sitk.Image, segments: Sequence[SegmentSpec]) -> List[dict]:
    """Voxel count and volume (mm3 and ml) of each segment, in the order of ``segments``."""
    array = check_labelmap(labelmap, segments)
    counts = np.bincount(array.ravel().astype(np.int64), minlength=256)
    voxel_mm3 = float(np.prod(labelmap.GetSpacing()))
    return [{"name": s.name, "label_value": int(s.value), "voxel_count": int(counts[s.value]),
             "volume_mm3": int(counts[s.value]) * voxel_mm3,
             "volume_ml": int(counts[s.value]) * voxel_mm3 / 1000.0}
            for s in segments]


# ----------------------------------------------------------------------------------------------
# .seg.nrrd (3D Slicer segmentation)


def write_seg_nrrd(labelmap: sitk.Image, segments: Sequence[SegmentSpec], path: PathLike, *,
                   overwrite: bool = False, reference_name: Optional[str] = None) -> Path:
    """Write a 3D Slicer segmentation (``.seg.nrrd``) with named, coloured, coded segments.

    The voxels are the label map's own values in a single layer (segment ``value`` is its
    ``LabelValue``), on exactly the label map's grid (an oblique direction is kept). Segments
    without voxels are written too (extent ``0 -1 0 -1 0 -1``, as Slicer writes an empty
    segment), so the user sees an empty "Left femur" rather than a missing one.
    ``reference_name`` (for example the input file name) is stored in the custom header field
    ``FemurSeg_ReferenceImage``.
    """
    import slicerio

    if not str(path).lower().endswith(".seg.nrrd"):
        raise InputError(f"a Slicer segmentation file must end with .seg.nrrd: {Path(path).name}")
    array = check_labelmap(labelmap, segments)
    voxels_ijk = np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.uint8)
    segmentation = slicerio.create_segmentation(labelmap.GetSize(), images.ijk_to_lps(labelmap),
                                                dtype="uint8")
    segmentation["voxels"] = voxels_ijk
    segmentation["containedRepresentationNames"] = ["Binary labelmap"]
    segmentation["masterRepresentation"] = "Binary labelmap"
    for spec in segments:
        present = np.nonzero(voxels_ijk == spec.value)
        extent = ([int(v) for axis in present for v in (axis.min(), axis.max())]
                  if present[0].size else [0, -1, 0, -1, 0, -1])
        segment = {"id": spec.segment_id, "name": spec.name, "nameAutoGenerated": False,
                   "color": [float(c) for c in spec.color], "colorAutoGenerated": False,
                   "labelValue": int(spec.value), "layer": 0, "extent": extent}
        if spec.terminology:
            segment["terminology"] = spec.terminology
        segmentation["segments"].append(segment)
    if reference_name:
        segmentation[REFERENCE_FIELD] = " ".join(str(reference_name).split())
    with files.atomic_path(path, overwrite) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation, compression_level=6)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Plain images


def write_labelmap(labelmap: sitk.Image, path: PathLike, overwrite: bool = False) -> Path:
    """Write the label map (uint8) as NIfTI, NRRD or MHA; the format follows the file ending."""
    images.validate_image(labelmap, what="label map", allow_constant=True)
    if labelmap.GetPixelID() != sitk.sitkUInt8:
        array = sitk.GetArrayViewFromImage(labelmap)
        if array.min() < 0 or array.max() > 255 or not np.all(array == np.round(array)):
            raise InputError("label map values must be integers in 0..255")
        labelmap = sitk.Cast(labelmap, sitk.sitkUInt8)
    return images.write_image(labelmap, path, overwrite=overwrite)


def write_probability(prob_image: sitk.Image, path: PathLike, overwrite: bool = False) -> Path:
    """Write a foreground probability map (values in 0..1) as float32 NIfTI, NRRD or MHA."""
    images.validate_image(prob_image, what="probability map", allow_constant=True)
    array = sitk.GetArrayViewFromImage(prob_image)
    if array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise InputError(f"probability map values must lie in 0..1, not "
                         f"{float(array.min()):.4g}..{float(array.max()):.4g}")
    if prob_image.GetPixelID() != sitk.sitkFloat32:
        prob_image = sitk.Cast(prob_image, sitk.sitkFloat32)
    return images.write_image(prob_image, path, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------
# STL surfaces


def write_stl(labelmap: sitk.Image, segments: Sequence[SegmentSpec], out_dir: PathLike, *,
              sigma_voxels: float = DEFAULT_SIGMA_VOXELS, overwrite: bool = False,
              coordinate_system: str = "LPS") -> List[Path]:
    """Write one binary STL surface per non-empty segment as ``<out_dir>/<segment_id>.stl``.

    Coordinates are physical millimetres in ``coordinate_system`` "LPS" (3D Slicer's default for
    STL files; the header says ``SPACE=LPS`` as Slicer's own files do) or "RAS". Surfaces are
    closed with outward normals; see :func:`surface_mesh` for ``sigma_voxels`` (the Gaussian
    smoothing in voxels). Returns the written paths (segments without voxels get no file).
    """
    system = str(coordinate_system).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"STL coordinate system must be LPS or RAS, not {coordinate_system!r}")
    sigma_voxels = check_sigma_voxels(sigma_voxels)
    array = check_labelmap(labelmap, segments)
    out = Path(out_dir)
    present = [s for s in segments if np.any(array == s.value)]
    targets = [out / f"{s.segment_id}.stl" for s in present]
    for target in targets:
        files.check_writable(target, overwrite)
    m = images.ijk_to_lps(labelmap)
    if system == "RAS":
        m = np.diag([-1.0, -1.0, 1.0, 1.0]) @ m
    for spec, target in zip(present, targets):
        vertices, faces = surface_mesh(array == spec.value, m, sigma_voxels)
        write_binary_stl(vertices, faces, target, overwrite=overwrite,
                         header=f"FemurSeg {spec.name} SPACE={system}")
    return targets


