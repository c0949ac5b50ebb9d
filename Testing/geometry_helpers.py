"""Small synthetic images with oblique, anisotropic geometry for the geometry tests."""

import numpy as np
import SimpleITK as sitk


def rotation(axis: str, degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def oblique_image(array: np.ndarray, spacing=(0.9, 0.9, 5.2), base=None, tilt=7.0,
                  origin=(-120.0, 35.5, 80.25)) -> sitk.Image:
    """``array`` [k, j, i] as an image whose axes are a permutation/flip of LPS, tilted."""
    if base is None:  # i -> L, j -> I, k -> P  ("LIP", like the real coronal scans)
        base = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float)
    direction = rotation("z", tilt) @ rotation("x", tilt / 2) @ base
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(tuple(direction.ravel()))
    return img


def blob(shape=(12, 40, 36), centre=None, radius=(3, 12, 10)) -> np.ndarray:
    k, j, i = np.indices(shape)
    c = centre or [s / 2 for s in shape]
    return (((k - c[0]) / radius[0]) ** 2 + ((j - c[1]) / radius[1]) ** 2
            + ((i - c[2]) / radius[2]) ** 2 <= 1).astype(np.uint8)
