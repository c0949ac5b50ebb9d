"""DICOM Segmentation output: results a PACS or research archive can take.

:func:`write_dicom_seg` writes the femur label map as one DICOM Segmentation Storage object
(BINARY, one segment per label value) and :func:`write_dicom_probability` the femur probability
(FRACTIONAL, PROBABILITY, 8 bits). Both are made with highdicom from the headers of the source
series (:class:`FemurSegLib.dicom.Series`), so that the object

* references every source instance and keeps the source's Patient, Study and Frame of Reference,
  in a new series (new Series and SOP Instance UIDs; series number 1000 or 2000 plus the source's)
  described as FemurSeg with the model name and version;
* has one frame per source slice and segment, in the source's slice order and with the source's
  plane positions and orientation (oblique series included; empty frames are kept), so a reader
  maps it back onto the source voxels exactly;
* describes each segment with the SNOMED CT category, type and laterality (type modifier) and the
  colour of the ``.seg.nrrd`` (:mod:`FemurSegLib.segments`), algorithm type AUTOMATIC and the
  model as the algorithm (name, version, family Artificial Intelligence).

highdicom and pydicom are the optional extra ``femurseg[dicom]``: :func:`require` names it when
they are missing. Files are written atomically and never silently overwritten.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import numpy as np
import SimpleITK as sitk

from . import __version__
from .dicom import Series, check_on_series
from .errors import FemurSegError, InputError
from .files import PathLike, atomic_path, check_writable
from .segments import SegmentSpec
from .writers import check_labelmap

#: The file ending of DICOM outputs.
DICOM_SUFFIX = ".dcm"
#: Added to the source's series number for the label and the probability segmentations.
SERIES_NUMBER_OFFSET = {"BINARY": 1000, "FRACTIONAL": 2000}
EXTRA_MISSING = ("writing a DICOM Segmentation needs the optional packages highdicom and pydicom "
                 "(Python >= 3.10): pip install femurseg[dicom]")


def require() -> None:
    """Raise a :class:`FemurSegError` naming the ``dicom`` extra when it is not installed."""
    try:
        import highdicom  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        raise FemurSegError(EXTRA_MISSING) from None


@dataclass(frozen=True)
class Creator:
    """What made the segmentation: the model (the algorithm) and this software."""

    model_name: str
    model_version: str
    software_version: str = __version__

    def series_description(self, what: str) -> str:
        return f"FemurSeg {self.model_name} {self.model_version} {what}"[:64]


def write_dicom_seg(labelmap: sitk.Image, segments: Sequence[SegmentSpec], series: Series,
                    path: PathLike, *, creator: Creator, overwrite: bool = False) -> Path:
    """Write ``labelmap`` (on the grid of ``series``) as a BINARY DICOM Segmentation."""
    array = check_labelmap(labelmap, segments)
    check_on_series(labelmap, series)
    return _write("BINARY", np.ascontiguousarray(array, dtype=np.uint8), list(segments), series,
                  path, creator, overwrite)


def write_dicom_probability(probability: sitk.Image, segment: SegmentSpec, series: Series,
                            path: PathLike, *, creator: Creator, overwrite: bool = False) -> Path:
    """Write the foreground ``probability`` (0..1, on the grid of ``series``) as a FRACTIONAL
    (PROBABILITY) DICOM Segmentation with the one segment ``segment``."""
    check_on_series(probability, series)
    array = sitk.GetArrayFromImage(probability).astype(np.float32)
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
        raise InputError("probability map values must lie in 0..1")
    return _write("FRACTIONAL", array, [segment], series, path, creator, overwrite)


def _write(kind: str, array: np.ndarray, segments: List[SegmentSpec], series: Series,
           path: PathLike, creator: Creator, overwrite: bool) -> Path:
    require()
    check_writable(path, overwrite)  # before the work, not only at the rename
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = _source_datasets(series)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=creator.model_name, version=creator.model_version, source="FemurSeg",
        family=codes.cid7162.ArtificialIntelligence)
    descriptions = [_segment_description(hd, spec, number, algorithm)
                    for number, spec in enumerate(segments, start=1)]
    if kind == "BINARY":  # segment numbers are 1..n in order: map label values onto them
        lut = np.zeros(256, dtype=np.uint8)
        for number, spec in enumerate(segments, start=1):
            lut[spec.value] = number
        array = lut[array]
    number = (series.number or 0) + SERIES_NUMBER_OFFSET[kind]
    with warnings.catch_warnings():
        # de-identified sources often have one-component patient names; highdicom warns on each
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=array,
            segmentation_type=getattr(hd.seg.SegmentationTypeValues, kind),
            segment_descriptions=descriptions, omit_empty_frames=False,
            fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
            series_instance_uid=hd.UID(), series_number=number, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="FemurSeg",
            manufacturer_model_name=creator.model_name[:64],
            software_versions=f"femurseg {creator.software_version}"[:64],
            device_serial_number=creator.model_version[:64],
            series_description=creator.series_description(
                "femur" if kind == "BINARY" else "femur probability"),
            content_label="FEMUR" if kind == "BINARY" else "FEMUR_PROB",
            content_description="FemurSeg automatic femur segmentation (research use only)")
    _frames_in_source_order(seg, series)
    with atomic_path(path, overwrite) as tmp:
        seg.save_as(str(tmp), enforce_file_format=True)
    return Path(path)


def _frames_in_source_order(seg, series: Series) -> None:
    """Put the frames of each segment in the source's slice order, with position indices 1..n.

    highdicom sorts the planes along a normal of its own (column x row cosines), which runs
    opposite to the source's order (ascending along row x column cosines, as GDCM, SimpleITK and
    the instance numbers of usual series run). Pixel data, per-frame functional groups and
    dimension index values are permuted together, so every frame keeps its own position and
    source reference; readers that map frames by position or reference are unaffected.
    """
    from pydicom.pixels import pack_bits, unpack_bits

    pointers = [item.DimensionIndexPointer for item in seg.DimensionIndexSequence]
    if pointers != [0x0062000B, 0x00200032]:  # segment number, then image position
        raise RuntimeError(f"unexpected dimension index pointers {pointers}")
    rank = {uid: k for k, uid in enumerate(series.sop_instance_uids)}
    items = list(seg.PerFrameFunctionalGroupsSequence)
    shared = seg.SharedFunctionalGroupsSequence[0]  # holds the segment when there is only one

    def key(item) -> tuple:
        segment = (item if "SegmentIdentificationSequence" in item else shared)
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        return (int(segment.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                rank[source.ReferencedSOPInstanceUID])

    keys = [key(item) for item in items]
    order = sorted(range(len(items)), key=keys.__getitem__)
    n, pixels = len(items), int(seg.Rows) * int(seg.Columns)
    if int(seg.BitsAllocated) == 1:
        frames = unpack_bits(seg.PixelData)[: n * pixels].reshape(n, pixels)
        data = pack_bits(frames[order].ravel())
    else:
        frames = np.frombuffer(seg.PixelData, dtype=np.uint8)[: n * pixels].reshape(n, pixels)
        data = frames[order].tobytes()
    seg.PixelData = data + b"\0" * (len(data) % 2)
    seg.PerFrameFunctionalGroupsSequence = [items[i] for i in order]
    for item, (segment, k) in zip(seg.PerFrameFunctionalGroupsSequence, sorted(keys)):
        item.FrameContentSequence[0].DimensionIndexValues = [segment, k + 1]


def _source_datasets(series: Series) -> list:
    """The headers of the source instances in slice order (checked against the series)."""
    import pydicom

    out = []
    for path, uid in zip(series.files, series.sop_instance_uids):
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        if str(ds.SOPInstanceUID) != uid:
            raise InputError(f"{path} changed since {series.name} was read")
        out.append(ds)
    return out


def _code(hd, triple) -> object:
    """A highdicom coded concept from a ``[scheme, value, meaning]`` list of a SegmentSpec."""
    scheme, value, meaning = (str(v) for v in triple)
    return hd.sr.CodedConcept(value, scheme, meaning)


def _segment_description(hd, spec: SegmentSpec, number: int, algorithm) -> object:
    """Segment ``number`` with the label, terminology and colour of ``spec`` (as the .seg.nrrd)."""
    term = spec.terminology
    if "category" not in term or "type" not in term:
        raise InputError(f"segment {spec.name!r} has no terminology category and type")
    rgb = [int(round(255 * min(1.0, max(0.0, float(c))))) for c in spec.color]
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=spec.name[:64],
        segmented_property_category=_code(hd, term["category"]),
        segmented_property_type=_code(hd, term["type"]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*rgb))
    if term.get("typeModifier"):  # laterality: a modifier of the type, as 3D Slicer writes it
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _code(hd, term["typeModifier"])]
    return description
