"""Contrast-changed copies of real images: the test transforms of the robustness evaluation.

Another scanner, coil or sequence changes the grey values of a scan, not its anatomy. These
transforms make such copies of a validation image, on its raw intensities and its own grid
(before any of the model's preprocessing), each seeded so that every run sees the same copies:

- ``bias``: a smooth multiplicative field over the whole volume (a cubic polynomial in the three
  patient axes) that varies about +-40% across the field of view, as a receive-coil shading;
- ``gamma``: intensities raised to the power 1.6 (scaled to the image's range and back);
- ``inverted``: the contrast inside the body inverted, the air kept dark (fat dark, fluid and
  muscle bright, as on a T2-weighted image);
- ``random_map``: intensities through a random, non-monotone piecewise-linear map (tissues swap
  brightness), the air kept dark.

``bias_strong`` and ``gamma_strong`` are the stronger settings of the first two (a field of
exp(+-0.5), about 0.61..1.65, and the power 2), as the measurements on real scans outside the
project used.

They are deliberately not the training augmentations (:mod:`.augment` works on normalised 2D
slice stacks with other field models and ranges), so the evaluation does not test the training
distribution itself.
"""

from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import SimpleITK as sitk

from FemurSegLib.images import array_to_image

#: peak-to-centre log factor of the bias field: exp(+-0.34) is about 0.71..1.40
BIAS_LOG_AMPLITUDE = 0.34
#: the stronger field: exp(+-0.5) is about 0.61..1.65 (up to 2.7x between two places)
BIAS_STRONG_LOG_AMPLITUDE = 0.5
GAMMA = 1.6
GAMMA_STRONG = 2.0
MAP_KNOTS = 7


def _float_array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image).astype(np.float64)


def _as_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """``array`` on ``reference``'s grid, as float32 (the raw range is no longer integer)."""
    return array_to_image(array.astype(np.float32), reference)


def body_mask(array: np.ndarray) -> np.ndarray:
    """Not-air voxels: above 10% of the 99th percentile, per slice closed and filled."""
    from scipy import ndimage

    hi = float(np.percentile(array, 99.0))
    mask = array > 0.1 * hi
    mask = ndimage.binary_closing(mask, structure=np.ones((1, 5, 5)), iterations=2)
    return np.stack([ndimage.binary_fill_holes(m) for m in mask])


def bias(image: sitk.Image, seed: int, amplitude: float = BIAS_LOG_AMPLITUDE) -> sitk.Image:
    rng = np.random.default_rng([seed, 1])
    a = _float_array(image)
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in a.shape], indexing="ij")
    field = np.zeros(a.shape)
    for px in range(4):
        for py in range(4 - px):
            for pz in range(4 - px - py):
                if px + py + pz:
                    field += rng.standard_normal() * grids[0] ** px * grids[1] ** py * grids[2] ** pz
    field -= field.mean()
    field *= amplitude / max(float(np.abs(field).max()), 1e-9)
    return _as_image(a * np.exp(field), image)


def gamma(image: sitk.Image, seed: int = 0, power: float = GAMMA) -> sitk.Image:
    a = _float_array(image)
    lo, hi = float(a.min()), float(a.max())
    return _as_image(lo + (hi - lo) * ((a - lo) / max(hi - lo, 1e-9)) ** power, image)


def inverted(image: sitk.Image, seed: int = 0) -> sitk.Image:
    a = _float_array(image)
    top = float(np.percentile(a, 99.5))
    body = body_mask(a)
    out = np.where(body, np.clip(top - a, 0.0, None) + 0.05 * top, 0.0)
    return _as_image(out, image)


def random_map(image: sitk.Image, seed: int) -> sitk.Image:
    rng = np.random.default_rng([seed, 2])
    a = _float_array(image)
    top = float(np.percentile(a, 99.5))
    x = np.linspace(0.0, 1.0, MAP_KNOTS)
    y = rng.uniform(0.15, 1.0, MAP_KNOTS)
    while np.all(np.diff(y) > 0) or np.all(np.diff(y) < 0):  # must not be monotone
        y = rng.uniform(0.15, 1.0, MAP_KNOTS)
    mapped = np.interp(np.clip(a / top, 0.0, 1.0), x, y) * top
    return _as_image(np.where(body_mask(a), mapped, 0.0), image)


def bias_strong(image: sitk.Image, seed: int) -> sitk.Image:
    return bias(image, seed, BIAS_STRONG_LOG_AMPLITUDE)


def gamma_strong(image: sitk.Image, seed: int = 0) -> sitk.Image:
    return gamma(image, seed, GAMMA_STRONG)


CONTRASTS: Dict[str, Callable[[sitk.Image, int], sitk.Image]] = {
    "bias": bias, "gamma": gamma, "inverted": inverted, "random_map": random_map,
    "bias_strong": bias_strong, "gamma_strong": gamma_strong}


def contrast_copy(image: sitk.Image, kind: str, seed: int) -> sitk.Image:
    """A contrast-changed copy of ``image`` (``kind`` in :data:`CONTRASTS`), seeded."""
    try:
        fn = CONTRASTS[kind]
    except KeyError:
        from FemurSegLib.errors import FemurSegError
        raise FemurSegError(f"unknown contrast {kind!r} (known: {', '.join(CONTRASTS)})") from None
    return fn(image, seed)
