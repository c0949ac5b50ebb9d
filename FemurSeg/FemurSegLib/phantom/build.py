"""Building the phantom: grid geometry, rendering, bias, noise, int16 images; writing them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..files import PathLike, check_writable
from ..images import write_image
from .anatomy import FEMUR, TISSUES
from .calibration import sample_parameters
from .rendering import Grid, bias_field, fov_mask, recon_noise, render
from .shapes import rotation_matrix

#: Direction cosines of an axis-aligned LIP grid (columns: where i, j, k point in LPS).
LIP_DIRECTION = np.array([[1.0, 0.0, 0.0],
                          [0.0, 0.0, 1.0],
                          [0.0, -1.0, 0.0]])

DEFAULT_SIZE = (384, 384, 40)
DEFAULT_SPACING = (0.911, 0.911, 5.2)


@dataclass(frozen=True)
class Phantom:
    """A synthetic scan: ``image`` (int16) and ``labels`` (uint8, same grid).

    ``tissues`` (uint8, codes in :data:`TISSUES`) tells the tissue at each voxel centre, and
    ``params`` holds the parameters drawn for the seed.
    """

    image: sitk.Image
    labels: sitk.Image
    tissues: Optional[sitk.Image] = None
    params: Dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def femur(self) -> sitk.Image:
        """Binary femur mask (uint8 0/1, both sides) on the image grid."""
        mask = sitk.Cast(sitk.Equal(self.labels, FEMUR), sitk.sitkUInt8)
        mask.CopyInformation(self.labels)
        return mask


# ----------------------------------------------------------------------------------------------
# Building the phantom


def _check_grid(size, spacing, oblique_deg):
    try:
        size = tuple(int(s) for s in size)
        spacing = tuple(float(s) for s in spacing)
        oblique_deg = float(oblique_deg)
    except (TypeError, ValueError):
        raise InputError(f"phantom size, spacing and oblique_deg must be numbers, not {size!r}, "
                         f"{spacing!r}, {oblique_deg!r}") from None
    if len(size) != 3 or min(size) < 1:
        raise InputError(f"phantom size must be three positive voxel counts, not {size}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"phantom spacing must be three positive millimetre values, not {spacing}")
    if int(np.prod(size)) > 50_000_000:
        raise InputError(f"phantom size {size} is too large (at most 50 million voxels)")
    if not (math.isfinite(oblique_deg) and 0.0 <= oblique_deg <= 20.0):
        raise InputError(f"oblique_deg must be between 0 and 20 degrees, not {oblique_deg}")
    return size, spacing, oblique_deg


def _geometry(p: dict, size, spacing, oblique_deg: float):
    """Direction cosines, origin, patient-frame rotation and hip centre (LPS) of the scan."""
    direction = rotation_matrix(p["oblique_axis"], oblique_deg) @ LIP_DIRECTION
    tilt, roll, yaw = p["frame_rotation_deg"]
    frame = (rotation_matrix([1, 0, 0], tilt) @ rotation_matrix([0, 1, 0], roll)
             @ rotation_matrix([0, 0, 1], yaw))
    centre = np.asarray(p["centre_lps"], dtype=float)
    fov_centre = (np.asarray(size, dtype=float) - 1.0) / 2.0 * np.asarray(spacing)
    origin = centre - direction @ (fov_centre + np.asarray(p["centre_offset_mm"]))
    return direction, origin, frame, centre


def make_phantom(seed: int = 0, *, size: Sequence[int] = DEFAULT_SIZE,
                 spacing: Sequence[float] = DEFAULT_SPACING, oblique_deg: float = 2.0,
                 noise: bool = True, bias: bool = True) -> Phantom:
    """Build the phantom for ``seed`` on a grid of ``size`` (i, j, k) voxels of ``spacing`` mm.

    The anatomy depends on the seed only; the grid just samples it (a coarse grid shows the same
    anatomy at lower resolution). The grid is LIP, turned by ``oblique_deg`` degrees about a
    seeded axis and placed like a real scan. ``noise=False`` and ``bias=False`` leave out the
    Rician noise and the bias field. Raises :class:`InputError` for an unusable grid or seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, not {seed!r}")
    size, spacing, oblique_deg = _check_grid(size, spacing, oblique_deg)
    p = sample_parameters(int(seed))
    direction, origin, frame, centre = _geometry(p, size, spacing, oblique_deg)
    grid = Grid(size, spacing, direction, origin, frame, centre)
    rng = np.random.default_rng(p["texture_seed"])
    image, labels, tissues = render(grid, p, rng)
    if bias:
        image *= bias_field(grid, p, image, (tissues == TISSUES["marrow"]) & (labels == FEMUR),
                            fov_mask(grid, p))
    if noise:
        sigma = np.float32(p["noise_sigma"])
        real = image + sigma * recon_noise(rng, image.shape)
        imag = sigma * recon_noise(rng, image.shape)
        image = np.sqrt(real * real + imag * imag)
    image *= fov_mask(grid, p)
    pixels = np.clip(np.rint(image), 0, 32767).astype(np.int16)
    img = sitk.GetImageFromArray(pixels)
    img.SetSpacing(spacing)
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(img)
    tis = sitk.GetImageFromArray(tissues)
    tis.CopyInformation(img)
    return Phantom(image=img, labels=lab, tissues=tis, params=p)


def write_phantom(image_path: PathLike, labels_path: Optional[PathLike] = None, *, seed: int = 0,
                  overwrite: bool = False, **kwargs) -> Phantom:
    """Make the phantom for ``seed`` and write its image (and its label map) atomically.

    Keyword arguments go on to :func:`make_phantom`. Existing outputs are refused unless
    ``overwrite`` (checked for both files before anything is computed or written).
    """
    check_writable(image_path, overwrite)
    if labels_path is not None:
        if Path(labels_path).resolve() == Path(image_path).resolve():
            raise InputError(f"image and label outputs are the same file: {image_path}")
        check_writable(labels_path, overwrite)
    phantom = make_phantom(seed, **kwargs)
    write_image(phantom.image, image_path, overwrite=overwrite)
    if labels_path is not None:
        write_image(phantom.labels, labels_path, overwrite=overwrite)
    return phantom
