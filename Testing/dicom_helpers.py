"""Small synthetic DICOM objects for the DICOM tests (written with pydicom: the `dicom` extra).

:func:`write_mr_series` writes a 3D image as a classic MR series, one file per slice, with file
names that are not in slice order (archives name files by UID); :func:`write_sr` writes a minimal
structured report (not an image).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
FRAME_OF_REFERENCE_UID = "1.2.826.0.1.3680043.8.498.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _file_dataset(sop_class: str, sop_instance: str):
    from pydicom.dataset import FileMetaDataset, Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Hip", "PH01", "", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = STUDY_UID, "20260101", "120000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    return ds


def write_mr_series(image: sitk.Image, folder: Path, *, series_uid: str, number: int,
                    description: str, slices: Optional[Sequence[int]] = None,
                    positions: Optional[Sequence[Sequence[float]]] = None) -> List[str]:
    """Write ``image`` (int16, right-handed direction) as an MR series; return the SOP Instance
    UIDs in slice order. ``slices`` picks which slices to write (default all); ``positions``
    overrides their Image Position (Patient)."""
    folder.mkdir(parents=True, exist_ok=True)
    array = sitk.GetArrayFromImage(image).astype(np.int16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    chosen = list(range(array.shape[0])) if slices is None else list(slices)
    uids = []
    for n, k in enumerate(chosen):
        uid = f"{series_uid}.{k + 1}"
        ds = _file_dataset(MR_IMAGE_STORAGE, uid)
        ds.Modality, ds.Manufacturer = "MR", "FemurSeg tests"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, number, description
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = FRAME_OF_REFERENCE_UID, ""
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType = "2D"
        position = (image.TransformIndexToPhysicalPoint((0, 0, k)) if positions is None
                    else positions[n])
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # rows (j), then columns (i)
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = array.shape[1], array.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(array[k]).tobytes()
        # archives name files by UID, not in slice order: reverse-sorted names test the sorting
        ds.save_as(str(folder / f"IM{len(chosen) - n:04d}.dcm"), enforce_file_format=True)
        uids.append(uid)
    return uids


def write_sr(path: Path, *, series_uid: str = "1.2.826.0.1.3680043.8.498.90") -> None:
    """A minimal Basic Text SR: a DICOM object that is not an image."""
    ds = _file_dataset(BASIC_TEXT_SR, series_uid + ".1")
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "SR", series_uid, 90
    ds.SeriesDescription = "report"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
