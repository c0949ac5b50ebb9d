"""What the writer tests (test_writers.py) and the report tests (test_montage.py) share: segment
lists, oblique grids and label maps on them, and an exception to fail a write with."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from FemurSegLib import images
from FemurSegLib.segments import SegmentSpec, femur_segments


SPLIT = femur_segments(True)  # 1 = Right femur, 2 = Left femur

RED = SegmentSpec(1, "Red thing", (1.0, 0.0, 0.0), {})

GREEN = SegmentSpec(2, "Green thing", (0.0, 1.0, 0.0), {})


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    cx, sx = math.cos(math.radians(ax)), math.sin(math.radians(ax))
    cy, sy = math.cos(math.radians(ay)), math.sin(math.radians(ay))
    cz, sz = math.cos(math.radians(az)), math.sin(math.radians(az))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid(size, spacing, origin=(0.0, 0.0, 0.0), direction=np.eye(3), pixel=sitk.sitkUInt8):
    image = sitk.Image([int(s) for s in size], pixel)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    return image


def lps_points(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of all voxel centres, shape (3, k, j, i)."""
    m = images.ijk_to_lps(image)
    k, j, i = np.indices(image.GetSize()[::-1], dtype=float)
    return np.einsum("ab,bkji->akji", m[:3, :3], np.stack([i, j, k])) + m[:3, 3, None, None, None]


def labels_on(reference: sitk.Image, array) -> sitk.Image:
    return images.array_to_image(np.asarray(array, dtype=np.uint8), reference)

OBLIQUE = rotation(20, -15, 30)


def small_oblique_labels(pixel=sitk.sitkUInt8):
    """7 x 6 x 5 oblique grid; Right femur (1) is a 4 x 2 x 2 block, Left femur (2) is empty."""
    image = grid((7, 6, 5), (0.9, 1.1, 5.2), (-10.0, 20.0, 5.0), OBLIQUE, pixel)
    array = np.zeros((5, 6, 7), dtype=np.uint8)
    array[1:3, 2:4, 1:5] = 1  # k 1..2, j 2..3, i 1..4
    return images.array_to_image(array.astype(sitk.GetArrayViewFromImage(image).dtype), image), array


class Boom(RuntimeError):
    pass
