"""Image reading and writing that keeps geometry, with loud validation (writes are atomic,
through :mod:`FemurSegLib.files`).

Images are ``SimpleITK.Image`` objects throughout the core: they carry origin, spacing and
direction cosines (LPS, as ITK uses). Arrays taken from them are indexed ``[k, j, i]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError, OutputError, itk_message
# the file-name helpers live in files; images re-exports them for its callers
from .files import (IMAGE_SUFFIXES, PathLike, Staging, atomic_path, case_name,  # noqa: F401
                    check_writable, image_suffix, strip_image_suffix)
from .truncation import missing_data

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Reading


def read_image(path: PathLike, *, what: str = "image", check_finite: bool = True,
               allow_constant: bool = False) -> sitk.Image:
    """Read a 3D scalar image (NIfTI, NRRD, MHA/MHD, or a DICOM series given as a directory).

    Raises :class:`InputError` with a one-line message for anything that is not a non-empty,
    finite, 3D scalar image, and ``WHAT PATH is truncated or corrupt: reason`` for a file whose
    voxel data end early (a cut ``.nii.gz`` stream, a ``.nii``/``.nrrd``/``.mha`` shorter than its
    header describes, a missing detached data file): checked before SimpleITK reads the data,
    which would fill the gap with zeros.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    if p.is_dir():
        from .dicom import read_dicom_folder

        image = read_dicom_folder(p)
    else:
        if image_suffix(p) is None:
            raise InputError(
                f"unknown {what} format: {p.name} (expected one of "
                f"{', '.join(s for s in IMAGE_SUFFIXES if s != '.seg.nrrd')} or a DICOM folder)")
        if p.stat().st_size == 0:
            raise InputError(f"{what} file is empty: {p}")
        try:
            reason = missing_data(p)
        except OSError as exc:
            raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
        if reason:
            raise InputError(f"{what} {p} is truncated or corrupt: {reason}")
        try:
            image = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            if _header_readable(p):  # the header is fine, the voxel data are not
                raise InputError(f"{what} {p} is truncated or corrupt: "
                                 f"{itk_message(exc)}") from None
            raise InputError(f"cannot read {what} {p}: {itk_message(exc)}") from None
    validate_image(image, what=f"{what} {p.name}", check_finite=check_finite,
                   allow_constant=allow_constant)
    return image


def _header_readable(path: Path) -> bool:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    return True


def validate_image(image: sitk.Image, *, what: str = "image", check_finite: bool = True,
                   allow_constant: bool = False) -> None:
    """Check that ``image`` is a usable 3D scalar volume; raise :class:`InputError` otherwise."""
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        raise InputError(f"{what} is 4D with one time point; extract the 3D volume first")
    if dim != 3:
        raise InputError(f"{what} is {dim}D; a 3D volume is required")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{what} has {image.GetNumberOfComponentsPerPixel()} components per "
                         "voxel; a scalar (grey-value) volume is required")
    size = image.GetSize()
    if min(size) < 1 or int(np.prod(size)) == 0:
        raise InputError(f"{what} is empty (size {size})")
    spacing = image.GetSpacing()
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{what} has invalid voxel spacing {spacing}")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(abs(np.linalg.det(direction)) - 1) > 1e-3:
        raise InputError(f"{what} has invalid direction cosines")
    if check_finite or not allow_constant:
        arr = sitk.GetArrayViewFromImage(image)
        if check_finite and arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise InputError(f"{what} contains {bad} non-finite voxel values (NaN or inf)")
        if not allow_constant:
            lo, hi = np.nanmin(arr), np.nanmax(arr)
            if lo == hi:
                raise InputError(f"{what} is blank: every voxel has the value {lo}")


#: an image whose voxels take at most this many distinct whole-number values is a label map or
#: a mask, not an MR scan (a scan has hundreds of grey values)
LABEL_MAP_MAX_VALUES = 16


def label_map_values(image: sitk.Image) -> Optional[np.ndarray]:
    """The distinct voxel values of ``image`` when it looks like a label map or mask (at most
    :data:`LABEL_MAP_MAX_VALUES` whole numbers), else None. A scan is told apart on a sample of
    its voxels, so this costs little."""
    arr = sitk.GetArrayViewFromImage(image).ravel()
    if np.unique(arr[:: max(1, arr.size // 65536)]).size > LABEL_MAP_MAX_VALUES:
        return None
    values = np.unique(arr)
    if values.size > LABEL_MAP_MAX_VALUES or not np.all(values == np.round(values)):
        return None
    return values


def refuse_label_map(image: sitk.Image, path: PathLike, *, what: str = "input image") -> None:
    """Raise :class:`InputError` when the image read from ``path`` looks like a label map, with
    the matching image of an nnU-Net folder as the hint (``labelsTr/hip01.nii.gz`` ->
    ``imagesTr/hip01_0000.nii.gz``) where there is one."""
    values = label_map_values(image)
    if values is None:
        return
    p = Path(path)
    shown = f"{values.size} values, {values.min():g}-{values.max():g}" if values.size > 2 else \
        "values " + " and ".join(f"{v:g}" for v in values)
    hint = "pass the MR image, not a segmentation"
    if p.parent.name.lower().startswith("labels"):
        folder = p.parent.parent / ("images" + p.parent.name[len("labels"):])
        matches = sorted(q for q in folder.glob(f"{case_name(p)}*") if q.is_file()
                         and image_suffix(q) and case_name(q) == case_name(p)) \
            if folder.is_dir() else []
        if matches:
            hint = f"pass the image, e.g. {folder / matches[0].name}"
    raise InputError(f"{what} {p} looks like a label map ({shown}); {hint}")


def read_label(path: PathLike, reference: Optional[sitk.Image] = None, *, what: str = "label map"
               ) -> sitk.Image:
    """Read an integer label map; with ``reference``, require exactly its grid."""
    label = read_image(path, what=what, allow_constant=True)
    if label.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        arr = sitk.GetArrayViewFromImage(label)
        if not np.all(arr == np.round(arr)):
            raise InputError(f"{what} {Path(path).name} has non-integer values")
    if reference is not None:
        mismatch = grid_mismatch(label, reference)
        if mismatch:
            raise InputError(f"{what} {Path(path).name} is not on the image grid: {mismatch}")
    return label


# ----------------------------------------------------------------------------------------------
# Geometry


#: the one tolerance of "the same grid": spacing (relative and mm) and direction cosines within
#: 1e-4, origins within 1e-3 mm (what float32 headers and DICOM round trips keep)
GRID_TOLERANCE = 1e-4


def grid_mismatch(a: sitk.Image, b: sitk.Image, tol: float = GRID_TOLERANCE) -> str:
    """Empty string if ``a`` and ``b`` share size, spacing, origin and direction; else what differs.

    The project's one grid-equality check: label maps must lie on their image's grid, outputs on
    the input's, and preprocessing skips resampling between equal grids."""
    if a.GetSize() != b.GetSize():
        return f"size {a.GetSize()} != {b.GetSize()}"
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=tol, atol=tol):
        return f"spacing {tuple(np.round(a.GetSpacing(), 4))} != {tuple(np.round(b.GetSpacing(), 4))}"
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tol * 10):
        return f"origin {tuple(np.round(a.GetOrigin(), 3))} != {tuple(np.round(b.GetOrigin(), 3))}"
    if not np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=tol):
        return "direction cosines differ"
    return ""


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = GRID_TOLERANCE) -> bool:
    return not grid_mismatch(a, b, tol)


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 matrix mapping voxel index (i, j, k, 1) to LPS millimetres."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = direction @ np.diag(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    return m


def array_to_image(array: np.ndarray, reference: sitk.Image, dtype=None) -> sitk.Image:
    """Wrap a ``[k, j, i]`` array as an image on ``reference``'s grid."""
    if dtype is not None:
        array = np.asarray(array, dtype=dtype)
    expected = tuple(reversed(reference.GetSize()))
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match reference grid {expected}")
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


# ----------------------------------------------------------------------------------------------
# Writing images


def write_image(image: sitk.Image, path: PathLike, *, overwrite: bool = False,
                compress: bool = True) -> Path:
    """Write ``image`` atomically; the format follows the file ending."""
    if image_suffix(path) in (None, ".seg.nrrd"):
        raise InputError(f"unknown output image format: {Path(path).name} "
                         "(use .nii.gz, .nii, .nrrd, .mha or .mhd)")
    if image_suffix(path) == ".mhd":
        return _write_mhd(image, Path(path), overwrite, compress)
    with atomic_path(path, overwrite) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress)
        except RuntimeError as exc:  # ITK reports a failed write (disk full, ...) this way
            raise OutputError(f"cannot write {path}: {itk_message(exc)}") from None
    return Path(path)


def _write_mhd(image: sitk.Image, path: Path, overwrite: bool, compress: bool) -> Path:
    """MetaImage writes a header and a data file that the header names: both are written with
    their final names into a temporary folder beside the target and renamed into place together
    by :class:`~FemurSegLib.files.Staging` (data file first, so the header never points at a
    missing file; an existing file is refused unless ``overwrite``, and a failed rename puts
    back what it had replaced)."""
    target = check_writable(path, overwrite)

    def write(tmp_dir: Path) -> None:
        try:
            sitk.WriteImage(image, str(tmp_dir / target.name), compress)
        except RuntimeError as exc:  # ITK reports a failed write (disk full, ...) this way
            raise OutputError(f"cannot write {path}: {itk_message(exc)}") from None

    with Staging(overwrite) as staging:
        staging.write_folder(target.parent, write, last=(target.name,))
        staging.commit()
    return target


def expand_inputs(inputs: Sequence[PathLike]) -> list:
    """Inputs as given; a folder that holds image files (not a DICOM series) expands to them."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            images = sorted(q for q in p.iterdir() if q.is_file() and image_suffix(q)
                            and image_suffix(q) != ".seg.nrrd")
            out.extend(images if images else [p])
        else:
            out.append(p)
    return out
