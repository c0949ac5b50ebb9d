"""Implicit shapes of the phantom and small vector helpers.

Shapes are functions of patient-frame coordinates ``p = (x, y, z)`` (float32 arrays, mm), negative
inside. Constants are Python floats so that float32 arrays stay float32.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

Vec = np.ndarray


def as_point(v) -> Tuple[float, float, float]:
    return tuple(float(c) for c in v)


def magnitude(x, y, z=0.0):
    return np.sqrt(x * x + y * y + z * z)


def sphere(p, c, r: float):
    c = as_point(c)
    return magnitude(p[0] - c[0], p[1] - c[1], p[2] - c[2]) - float(r)


def ellipsoid(p, c, radii):
    """Approximate signed distance of an axis-aligned ellipsoid (exact on its axes)."""
    c, (rx, ry, rz) = as_point(c), as_point(radii)
    q = magnitude((p[0] - c[0]) / rx, (p[1] - c[1]) / ry, (p[2] - c[2]) / rz)
    return (q - 1.0) * min(rx, ry, rz)


def capsule(p, a, b, r, y_scale: float = 1.0):
    """Distance to the segment a-b minus the radius ``r`` (or a pair ``(r_a, r_b)``: a cone).

    ``y_scale`` < 1 flattens the tube along y (an elliptic cross-section).
    """
    a, b = as_point(a), as_point(b)
    ba = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    bb = ba[0] ** 2 + ba[1] ** 2 + ba[2] ** 2
    px, py, pz = p[0] - a[0], p[1] - a[1], p[2] - a[2]
    t = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) * (1.0 / bb), 0.0, 1.0)
    d = magnitude(px - t * ba[0], (py - t * ba[1]) * (1.0 / y_scale), pz - t * ba[2])
    if np.ndim(r) == 0:
        return d - float(r)
    return d - (float(r[0]) + float(r[1] - r[0]) * t)


def smooth_union(a, b, k: float):
    """Smooth union of two implicit shapes (polynomial smooth minimum, blend width ``k`` mm)."""
    h = np.clip(0.5 + (0.5 / k) * (b - a), 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def interp(v, xs, ys):
    return np.interp(v, xs, ys).astype(np.float32)


def unit_vector(v) -> Vec:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def rotate(v, axis, deg: float) -> Vec:
    """Rodrigues rotation of vector ``v`` about ``axis`` by ``deg`` degrees."""
    k = unit_vector(axis)
    t = math.radians(deg)
    v = np.asarray(v, dtype=float)
    return v * math.cos(t) + np.cross(k, v) * math.sin(t) + k * (k @ v) * (1 - math.cos(t))


def rotation_matrix(axis, deg: float) -> np.ndarray:
    return np.stack([rotate(e, axis, deg) for e in np.eye(3)], axis=1)


def rounded_rect(x, y, half_w: float, half_d: float, radius: float):
    """Signed distance of a rounded rectangle centred at the origin (2D)."""
    qx = np.abs(x) - (half_w - radius)
    qy = np.abs(y) - (half_d - radius)
    outside = magnitude(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - radius

