"""DICOM input: the image series of a folder tree, found, listed, chosen and read with geometry.

Archives (PACS, XNAT, Slicer's DICOM database) export a study as a tree with one subfolder per
series, or deeper. :func:`find_series` walks the tree, reads every file's header with SimpleITK
(GDCM: no optional package is needed to read DICOM) and groups the slices of each volume by Series
Instance UID. What is not a slice of a volume is skipped with a note: files that are not DICOM
images (structured reports, DICOMDIR, anything else), objects such as Segmentations or parametric
maps, multi-frame images, and images of another orientation inside a series (localizers).
:func:`choose_series` takes ``--series UID|NUMBER`` or the largest series, and :func:`read_series`
reads it in slice order (ascending along the slice normal, as GDCM sorts), which is the frame order
that DICOM outputs refer back to (:mod:`FemurSegLib.dicomseg`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError, itk_message
from .files import PathLike

log = logging.getLogger(__name__)

#: Names of SOP classes that are DICOM objects but not slices of a volume (for the notes).
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation",
    "1.2.840.10008.5.1.4.1.1.66.5": "Surface Segmentation",
    "1.2.840.10008.5.1.4.1.1.30": "Parametric Map",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
}
#: Direction cosines that differ by less than this belong to the same orientation.
SAME_ORIENTATION = 1e-4
#: Two slices closer than this along the normal (mm) are at the same position.
SAME_POSITION_MM = 1e-3
#: Slice gaps may differ from their mean by this fraction before a series counts as uneven.
GAP_TOLERANCE = 0.01

_TAGS = {"sop_class": "0008|0016", "sop_instance": "0008|0018", "modality": "0008|0060",
         "description": "0008|103e", "study": "0020|000d", "series": "0020|000e",
         "number": "0020|0011", "position": "0020|0032", "orientation": "0020|0037",
         "frame_of_reference": "0020|0052", "frames": "0028|0008",
         "patient_name": "0010|0010", "patient_id": "0010|0020", "study_date": "0008|0020"}


@dataclass(frozen=True)
class Series:
    """One image series: its slices in slice order and what identifies it."""

    uid: str
    number: Optional[int]
    description: str
    modality: str
    study_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    orientation: Tuple[float, ...]              # Image Orientation (Patient): row, then column
    columns: int
    rows: int
    files: Tuple[Path, ...]                     # ascending along the slice normal
    sop_instance_uids: Tuple[str, ...]          # of ``files``, same order
    positions: Tuple[Tuple[float, float, float], ...]  # Image Position (Patient) of ``files``
    patient: str = ""                           # Patient ID and Patient's Name
    study_date: str = ""                        # Study Date, YYYY-MM-DD

    @property
    def name(self) -> str:
        """How messages name the series: by number and description (the UID alone says little)."""
        number = "?" if self.number is None else str(self.number)
        return f'series {number} "{self.description}"' if self.description else f"series {number}"

    @property
    def size(self) -> Tuple[int, int, int]:
        """Voxels along i (columns), j (rows) and k (slices)."""
        return self.columns, self.rows, len(self.files)

    @property
    def direction(self) -> np.ndarray:
        """3 x 3 direction cosines (columns: where i, j, k point in LPS), right-handed."""
        row, col = np.asarray(self.orientation[:3]), np.asarray(self.orientation[3:])
        return np.stack([row, col, np.cross(row, col)], axis=1)

    def orientation_text(self) -> str:
        """Plane, axis code and obliquity, e.g. ``coronal LIP, 1.8 deg oblique`` (the largest
        angle between an image axis and its nearest patient axis)."""
        direction = self.direction
        plane = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(direction[:, 2])))]
        oblique = max(math.degrees(math.acos(min(1.0, float(np.max(np.abs(direction[:, a]))))))
                      for a in range(3))
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            [float(v) for v in direction.ravel()])
        return f"{plane} {code}" + (f", {oblique:.1f} deg oblique" if oblique >= 0.05 else "")


@dataclass(frozen=True)
class Scan:
    """The image series found under ``folder`` (largest first) and what was skipped."""

    folder: Path
    series: Tuple[Series, ...]
    notes: Tuple[str, ...]


# ----------------------------------------------------------------------------------------------
# Finding series


def _header(path: Path) -> Optional[Dict[str, str]]:
    """The tags of :data:`_TAGS` of a DICOM image file, or None when it is not one."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    keys = set(reader.GetMetaDataKeys())
    if _TAGS["sop_class"] not in keys:
        return None  # an image format other than DICOM
    out = {name: reader.GetMetaData(tag).strip() if tag in keys else ""
           for name, tag in _TAGS.items()}
    out["size"] = reader.GetSize()
    return out


def _numbers(text: str, count: int) -> Optional[Tuple[float, ...]]:
    try:
        values = tuple(float(v) for v in text.split("\\"))
    except ValueError:
        return None
    return values if len(values) == count and all(math.isfinite(v) for v in values) else None


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def find_series(folder: PathLike) -> Scan:
    """The image series anywhere under ``folder`` (largest first), and notes on what was skipped.

    Raises :class:`InputError` when ``folder`` is not a folder or holds no image series.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"not a folder: {root}")
    not_dicom: List[Path] = []
    objects: Dict[str, List[str]] = {}          # SOP class name -> series names
    multiframe: List[Path] = []
    groups: Dict[str, List[List[tuple]]] = {}  # series UID -> slices grouped by orientation
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        header = _header(path)
        if header is None:
            not_dicom.append(path)
            continue
        orientation = _numbers(header["orientation"], 6)
        position = _numbers(header["position"], 3)
        frames = int(header["frames"]) if header["frames"].isdigit() else 1
        label = header["description"] or header["series"]
        if header["sop_class"] in NON_IMAGE_SOP_CLASSES:
            objects.setdefault(NON_IMAGE_SOP_CLASSES[header["sop_class"]], []).append(label)
        elif frames > 1 or header["size"][2] > 1:
            multiframe.append(path)
        elif orientation is None or position is None or not header["series"]:
            objects.setdefault(f"image without position ({header['modality'] or 'unknown'})",
                               []).append(label)
        else:
            member = (path, {**header, "_position": position, "_orientation": orientation})
            same_series = groups.setdefault(header["series"], [])
            for group in same_series:
                if np.allclose(group[0][1]["_orientation"], orientation, rtol=0, atol=SAME_ORIENTATION):
                    group.append(member)
                    break
            else:
                same_series.append([member])
    series, other_orientation = _group(groups)
    notes = _notes(root, not_dicom, objects, multiframe, other_orientation)
    if not series:
        _refuse_image_tree(root, not_dicom)
        raise InputError(f"no DICOM image series found in folder {root}"
                         + (f" ({'; '.join(notes)})" if notes else ""))
    series.sort(key=lambda s: (-len(s.files), s.number if s.number is not None else 1 << 31, s.uid))
    return Scan(root, tuple(series), tuple(notes))


def _group(by_series: Dict[str, List[List[tuple]]]) -> Tuple[List[Series], List[Tuple[Series, int]]]:
    """One :class:`Series` per Series Instance UID from its largest orientation group; the other
    orientation groups (localizers) are counted per series."""
    series, other = [], []
    for uid, groups in by_series.items():
        groups = sorted(groups, key=len, reverse=True)  # largest orientation group first
        members = groups[0]
        first = members[0][1]
        orientation = first["_orientation"]
        normal = np.cross(orientation[:3], orientation[3:])
        members = sorted(members, key=lambda m: float(np.dot(normal, m[1]["_position"])))
        number = first["number"]
        s = Series(uid=uid, number=int(number) if number.lstrip("-").isdigit() else None,
                   description=first["description"], modality=first["modality"],
                   study_uid=first["study"], frame_of_reference_uid=first["frame_of_reference"],
                   sop_class_uid=first["sop_class"], orientation=orientation,
                   columns=int(first["size"][0]), rows=int(first["size"][1]),
                   files=tuple(m[0] for m in members),
                   sop_instance_uids=tuple(m[1]["sop_instance"] for m in members),
                   positions=tuple(m[1]["_position"] for m in members),
                   patient=_patient(first), study_date=_date(first["study_date"]))
        series.append(s)
        skipped = sum(len(g) for g in groups[1:])
        if skipped:
            other.append((s, skipped))
    return series, other


def _refuse_image_tree(root: Path, not_dicom: List[Path]) -> None:
    """A folder with image files (NIfTI, NRRD, ...) in subfolders only, such as an nnU-Net
    dataset's root, is not a DICOM export: say which subfolder holds the images."""
    from .files import image_suffix

    holders = sorted({p.parent for p in not_dicom if image_suffix(p) and p.parent != root})
    if not holders:
        return
    scans = [d for d in holders if not d.name.lower().startswith("labels")] or holders
    scans.sort(key=lambda d: (not d.name.lower().startswith("images"), len(d.parts), str(d)))
    guesses = " or ".join(f"{d}{os.sep}" for d in scans[:2])
    raise InputError(f"no images in {root}; did you mean {guesses}?")


def _patient(header: Dict[str, str]) -> str:
    """``ID (name)`` as the headers give them (the name's ``^`` separators as spaces; once when
    an anonymised export gives the same for both)."""
    name = " ".join(part for part in header["patient_name"].split("^") if part.strip())
    if name == header["patient_id"]:
        name = ""
    return " ".join(v for v in (header["patient_id"], f"({name})" if name else "") if v)


def _date(value: str) -> str:
    value = value.strip()
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() \
        else value


def _folder(scan_root: Path, series: Series) -> str:
    """The folder that holds the series' files, relative to the scanned folder."""
    common = Path(os.path.commonpath([str(p.parent) for p in series.files]))
    rel = common.relative_to(scan_root).as_posix() if common != scan_root else "."
    return rel + "/" if rel != "." else "./"


def _notes(root: Path, not_dicom, objects, multiframe, other_orientation) -> List[str]:
    notes = []
    if not_dicom:
        examples = ", ".join(p.relative_to(root).as_posix() for p in not_dicom[:3])
        notes.append(f"skipped {_count(len(not_dicom), 'file', 'files')} that SimpleITK does not "
                     f"read as a DICOM image (structured reports, DICOMDIR, other files: {examples}"
                     f"{', ...' if len(not_dicom) > 3 else ''})")
    for kind, labels in sorted(objects.items()):
        names = ", ".join(f'"{name}"' for name in sorted(set(labels)))
        notes.append(f"skipped {_count(len(labels), kind + ' object', kind + ' objects')} (not "
                     f"an image series: {names})")
    if multiframe:
        n = _count(len(multiframe), "multi-frame image", "multi-frame images")
        notes.append(f"skipped {n} (enhanced multi-frame images are not read; export classic "
                     "single-frame images)")
    for s, count in other_orientation:
        n = _count(count, "image", "images")
        notes.append(f"skipped {n} of another orientation in {s.name} (localizers)")
    return notes


# ----------------------------------------------------------------------------------------------
# Choosing, listing and reading


def choose_series(scan: Scan, selector: Optional[str] = None) -> Series:
    """The series with Series Instance UID or Series Number ``selector``, else the largest one.

    Several series and no selector: a warning names the one taken, by number and description.
    """
    if selector is None:
        chosen = scan.series[0]
        if len(scan.series) > 1:
            log.warning("%s holds %d image series; using the largest, %s (%d images); choose "
                        "another with --series NUMBER|UID (femurseg dicom-series lists them)",
                        scan.folder, len(scan.series), chosen.name, len(chosen.files))
        return chosen
    selector = selector.strip()
    by_uid = [s for s in scan.series if s.uid == selector]
    if by_uid:
        return by_uid[0]
    by_number = [s for s in scan.series
                 if s.number is not None and selector.lstrip("-").isdigit() and s.number == int(selector)]
    if len(by_number) == 1:
        return by_number[0]
    if len(by_number) > 1:
        raise InputError(f"series number {selector} is ambiguous in {scan.folder}: "
                         + "; ".join(f"{s.name} (UID {s.uid})" for s in by_number)
                         + "; give the Series Instance UID")
    raise InputError(f"no image series {selector} in {scan.folder} (it has "
                     + ", ".join(s.name for s in scan.series) + ")")


def series_table(scan: Scan) -> str:
    """The series of ``scan`` as a text table, with the notes on what was skipped."""
    header = ("number", "size (i x j x k)", "orientation", "modality", "description",
              "patient", "study date", "folder", "series UID")
    rows = [(("-" if s.number is None else str(s.number)), " x ".join(str(n) for n in s.size),
             s.orientation_text(), s.modality or "-", s.description or "-", s.patient or "-",
             s.study_date or "-", _folder(scan.folder, s), s.uid)
            for s in scan.series]
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = [f"{scan.folder}: {_count(len(scan.series), 'image series', 'image series')}"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
              for row in [header, *rows]]
    lines += [f"  note: {n}" for n in scan.notes]
    return "\n".join(lines)


def read_series(series: Series) -> sitk.Image:
    """The voxels of ``series`` with their geometry; slice k is ``series.files[k]``."""
    positions = np.asarray(series.positions, dtype=float)
    gaps = np.diff(positions @ series.direction[:, 2]) if len(positions) > 1 else np.zeros(0)
    if np.any(gaps < SAME_POSITION_MM):
        raise InputError(f"{series.name} has several images at the same position (echoes, "
                         "phases or repeated slices), not one volume; choose another series")
    if gaps.size and np.any(np.abs(gaps - gaps.mean()) > GAP_TOLERANCE * gaps.mean() + 1e-3):
        raise InputError(f"{series.name} has unevenly spaced slices ({gaps.min():.2f} to "
                         f"{gaps.max():.2f} mm apart): slices are missing or it is not one volume")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read {series.name}: {itk_message(exc)}") from None
    if image.GetDimension() != 3 or image.GetSize() != series.size:
        raise InputError(f"{series.name} did not read as a {' x '.join(map(str, series.size))} "
                         f"volume (got {image.GetSize()})")
    return image


def read_dicom_folder(folder: PathLike, selector: Optional[str] = None) -> sitk.Image:
    """The image of the chosen series under ``folder`` (see :func:`choose_series`)."""
    scan = find_series(folder)
    for note in scan.notes:
        log.info("%s: %s", scan.folder, note)
    return read_series(choose_series(scan, selector))


def check_on_series(image: sitk.Image, series: Series, tol_mm: float = 1e-3) -> None:
    """Refuse an image that is not on the grid of ``series`` (size, slice positions, orientation)."""
    if tuple(image.GetSize()) != series.size:
        raise InputError(f"image size {image.GetSize()} differs from {series.name} "
                         f"({' x '.join(map(str, series.size))})")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(direction[:, :2], series.direction[:, :2], atol=1e-4):
        raise InputError(f"image orientation differs from {series.name}")
    origin, spacing = np.asarray(image.GetOrigin()), np.asarray(image.GetSpacing())
    k = np.arange(len(series.files))
    centres = origin + (direction[:, 2:3] * spacing[2] * k).T
    worst = float(np.max(np.linalg.norm(centres - np.asarray(series.positions), axis=1)))
    if worst > tol_mm:
        raise InputError(f"image slices lie up to {worst:.3f} mm from those of {series.name}")

