"""Preprocessing shared by training and inference, and its exact inverse.

The path from an input image to the network and back:

1. :func:`reorient` permutes and flips axes to the model's canonical orientation (default "LIP":
   index i toward the patient's Left, j toward Inferior, k toward Posterior, i.e. coronal slices
   stacked along k). This is exact: no interpolation.
2. :func:`network_grid` / :func:`resample_image` resample to the model's voxel spacing (B-spline
   for images, label-safe one-hot linear for label maps, linear for probabilities), keeping the
   physical field of view. When the spacing already matches, nothing is resampled.
3. :func:`normalise` maps intensities as the model card records.
4. :func:`to_input_grid` maps a probability map on the network grid back onto *exactly* the
   input image's grid (size, origin, spacing, direction).

Arrays are ``[k, j, i]`` (SimpleITK order), so on the canonical grid axis 0 is the slice axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .images import same_grid
from .specs import DEFAULT_ORIENTATION, InputSpec

__all__ = ["InputSpec", "DEFAULT_ORIENTATION", "prepare", "prepare_label", "to_input_grid",
           "normalise", "reorient", "network_grid", "resample_image", "resample_label",
           "orientation_of", "Prepared"]


def orientation_of(image: sitk.Image) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def reorient(image: sitk.Image, orientation: str = DEFAULT_ORIENTATION) -> sitk.Image:
    """Permute/flip axes to ``orientation`` (exact; oblique directions stay oblique)."""
    if orientation_of(image) == orientation:
        return image
    return sitk.DICOMOrient(image, orientation)


def network_grid(image: sitk.Image, spacing: Optional[Sequence[float]]) -> sitk.Image:
    """An empty reference image covering ``image``'s field of view at ``spacing``.

    Voxel edges of the first voxel stay in place; the size is rounded so the extent changes by
    less than half a voxel. Returns ``image`` itself when the spacing already matches (1e-3 mm).
    """
    old = np.asarray(image.GetSpacing(), dtype=float)
    if spacing is None or np.allclose(old, spacing, rtol=0, atol=1e-3):
        return image
    new = np.asarray(spacing, dtype=float)
    size = np.maximum(1, np.round(np.asarray(image.GetSize()) * old / new)).astype(int)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    # first voxel centre moves by half the change of voxel size, so that the edges coincide
    origin = np.asarray(image.GetOrigin()) + direction @ ((new - old) / 2.0)
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing(tuple(new))
    ref.SetOrigin(tuple(origin))
    ref.SetDirection(image.GetDirection())
    return ref


def resample_image(image: sitk.Image, reference: sitk.Image, *, order: str = "bspline",
                   default: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (no-op when the grids are equal)."""
    if same_grid(image, reference):
        return image
    interp = {"bspline": sitk.sitkBSpline, "linear": sitk.sitkLinear,
              "nearest": sitk.sitkNearestNeighbor}[order]
    src = sitk.Cast(image, sitk.sitkFloat32) if order != "nearest" else image
    return sitk.Resample(src, reference, sitk.Transform(), interp, default,
                         src.GetPixelID())


def resample_label(label: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """Label-safe resampling: each label's indicator resampled linearly, then arg-max.

    Unlike nearest-neighbour this does not shift boundaries by up to half a voxel when the grids
    do not align, and unlike linear interpolation of label values it never invents labels.
    """
    if same_grid(label, reference):
        return label
    arr = sitk.GetArrayViewFromImage(label)
    values = np.unique(arr)
    best = None
    best_p = None
    for v in values:
        ind = sitk.GetImageFromArray((arr == v).astype(np.float32))
        ind.CopyInformation(label)
        p = sitk.GetArrayFromImage(sitk.Resample(ind, reference, sitk.Transform(),
                                                 sitk.sitkLinear, 1.0 if v == 0 else 0.0,
                                                 sitk.sitkFloat32))
        if best is None:
            best = np.full(p.shape, v, dtype=arr.dtype)
            best_p = p
        else:
            take = p > best_p
            best[take] = v
            best_p = np.where(take, p, best_p)
    out = sitk.GetImageFromArray(best)
    out.CopyInformation(reference)
    return out


def normalise(array: np.ndarray, spec: dict) -> np.ndarray:
    """Intensity normalisation as recorded on the model card; returns float32.

    ``{"method": "percentile", "percentiles": [lo, hi]}``: clip to those percentiles of the
    volume and scale linearly to [0, 1] (robust to the arbitrary scale of MR intensities and to
    how much air is in the field of view).
    ``{"method": "zscore", "percentiles": [lo, hi]}``: clip, then subtract the mean and divide by
    the standard deviation of the clipped volume.
    """
    method = spec.get("method", "percentile")
    lo_p, hi_p = spec.get("percentiles", [0.5, 99.5])
    a = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(a, [lo_p, hi_p])
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        raise InputError("image has no usable intensity range (is it blank?)")
    a = np.clip(a, lo, hi)
    if method == "percentile":
        return ((a - lo) / (hi - lo)).astype(np.float32)
    if method == "zscore":
        std = float(a.std())
        return ((a - float(a.mean())) / max(std, 1e-8)).astype(np.float32)
    raise ValueError(f"unknown normalisation method {method!r} (percentile, zscore)")


@dataclass
class Prepared:
    """An image prepared for a network, with what is needed to map results back."""

    array: np.ndarray          # normalised float32 [k, j, i] on the network grid
    grid: sitk.Image           # the network grid (geometry only is meaningful)
    original: sitk.Image       # the input image (its grid is where outputs go)


def prepare(image: sitk.Image, spec: InputSpec) -> Prepared:
    """Reorient, resample and normalise ``image`` for a network."""
    oriented = reorient(image, spec.orientation)
    grid = network_grid(oriented, spec.spacing)
    resampled = resample_image(oriented, grid, order="bspline")
    arr = normalise(sitk.GetArrayViewFromImage(resampled), spec.normalisation)
    return Prepared(array=arr, grid=_geometry_only(grid), original=image)


def prepare_label(label: sitk.Image, spec: InputSpec) -> sitk.Image:
    """Map a label map onto the network grid exactly as :func:`prepare` maps its image."""
    oriented = reorient(label, spec.orientation)
    return resample_label(oriented, network_grid(oriented, spec.spacing))


def _geometry_only(grid: sitk.Image) -> sitk.Image:
    ref = sitk.Image(grid.GetSize(), sitk.sitkUInt8)
    ref.CopyInformation(grid)
    return ref


def to_input_grid(array: np.ndarray, grid: sitk.Image, original: sitk.Image, *,
                  order: str = "linear") -> sitk.Image:
    """Map an array on the network ``grid`` back onto exactly ``original``'s grid.

    Exact (a pure axis permutation) when no resampling happened; otherwise resampled with
    ``order`` ("linear" for probabilities, "nearest" for labels).
    """
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.CopyInformation(grid)
    back_orientation = orientation_of(original)
    if same_grid(reorient(_geometry_only(original), orientation_of(grid)), grid):
        out = reorient(img, back_orientation)
        if out.GetSize() != original.GetSize():  # pragma: no cover - guarded by same_grid
            raise RuntimeError("reorientation did not restore the input grid")
        out.CopyInformation(original)
        return out
    interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}[order]
    return sitk.Resample(img, original, sitk.Transform(), interp, 0.0, img.GetPixelID())
