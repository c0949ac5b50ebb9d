"""Closed, volume-preserving triangle surfaces of binary masks, and binary STL files.

Only numpy, scipy, scikit-image (the marching cubes step, which callers may replace) and the
standard library are used: no VTK, no Slicer.
"""

from __future__ import annotations

import math
from pathlib import Path


import numpy as np

from . import files
from .errors import InputError
from .files import PathLike

__all__ = ["surface_mesh", "marching_cubes", "write_binary_stl", "mesh_volume",
           "check_sigma_voxels", "DEFAULT_SIGMA_VOXELS"]

#: Gaussian smoothing of the signed distance map before contouring: standard deviation in voxels
#: of each axis (``femurseg segment --stl-smoothing``). Not Slicer's 0..1 closed-surface
#: smoothing factor, which is a different filter on a different scale.
DEFAULT_SIGMA_VOXELS = 0.5


# ----------------------------------------------------------------------------------------------
# STL surfaces


def surface_mesh(mask: np.ndarray, ijk_to_lps: np.ndarray,
                 sigma_voxels: float = DEFAULT_SIGMA_VOXELS, *, contour=None):
    """Closed triangle surface of a binary ``[k, j, i]`` mask, in LPS millimetres.

    The surface is a level set of the signed distance map of the mask (millimetres between
    voxel centres, positive inside), so that it runs half-way between inside and outside voxels:

    * the mask is cropped to its bounding box with a zero margin, so that objects touching the
      volume border are closed;
    * along a thick-slice axis (spacing > 1.5 x the finest) the distance map is interpolated
      linearly onto slices at most 1.5 x the finest spacing apart: between two 5 mm slices
      whose outlines differ the wall slopes from one outline to the other (shape-based
      interpolation) instead of making a staircase;
    * a Gaussian of ``sigma_voxels`` (standard deviation along each axis, in that axis's
      voxels; 0 = none) rounds off the remaining voxel edges and slice terraces;
    * the level is chosen so that the volume enclosed on the grid equals the voxels' volume
      (first from a count of grid cells, offset at most half the finest spacing; then one
      secant step on the measured mesh volume, offset at most one finest spacing), which
      undoes the shrinkage of convex and thin parts by the interpolation and the blur;
    * marching cubes contours that level; vertices go through the full index -> LPS matrix
      (anisotropic and oblique grids alike) and triangles are ordered with outward normals.

    ``contour(field, level)`` is the marching-cubes step (default :func:`marching_cubes`, with
    scikit-image); the Slicer module passes one built on VTK, which Slicer ships (scikit-image
    it does not). Returns ``(vertices (N, 3) float64, faces (M, 3) int64)``; ``M == 0`` for an
    empty mask.
    """
    sigma_voxels = check_sigma_voxels(sigma_voxels)
    contour = marching_cubes if contour is None else contour
    mask = np.asarray(mask, dtype=bool)
    m = np.asarray(ijk_to_lps, dtype=np.float64)
    if not mask.any():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    spacing = np.linalg.norm(m[:3, :3], axis=0)[::-1]  # per array axis (k, j, i), mm
    fine = float(spacing.min())
    margin = 2 + int(math.ceil(3 * sigma_voxels))
    nonzero = np.nonzero(mask)
    lo = np.array([int(a.min()) for a in nonzero]) - margin
    hi = np.array([int(a.max()) + 1 for a in nonzero]) + margin
    crop = np.zeros(hi - lo, dtype=bool)
    src = tuple(slice(max(l, 0), min(h, n)) for l, h, n in zip(lo, hi, mask.shape))
    dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
    crop[dst] = mask[src]

    field, step = _signed_distance(crop, spacing)
    if sigma_voxels > 0:
        from scipy import ndimage
        blurred = ndimage.gaussian_filter(field, sigma=sigma_voxels / step, mode="nearest")
        if blurred.max() > 0.5 * fine:  # else a speck smaller than the blur would vanish
            field = blurred
    # Interpolating and blurring a distance map shrink convex parts a little: contour at the
    # level (an offset in mm, at most half the finest spacing) whose enclosed volume on the
    # grid equals the voxels' volume.
    cells = min(max(int(round(np.count_nonzero(crop) / float(np.prod(step)))), 1), field.size)
    level = float(np.partition(field, field.size - cells, axis=None)[field.size - cells])
    level = float(np.clip(level, -0.5 * fine, 0.5 * fine))
    lps, faces = _mesh_at(field, level, step, lo, m, contour)
    # The grid-cell count above is a good first guess; thin parts (a femoral neck across 5 mm
    # slices) can still come out a few percent small. One secant step on the level, with the
    # surface area as the volume's derivative (dV = -area * dlevel), fixes that; the closer mesh
    # is kept, and the level stays within one finest voxel spacing.
    target = float(np.count_nonzero(crop)) * float(np.prod(spacing))
    volume = abs(mesh_volume(lps, faces))
    if len(faces) and abs(volume - target) > 0.01 * target:
        tri = lps[faces]
        area = 0.5 * float(np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                                          axis=1).sum())
        if area > 0:
            level2 = float(np.clip(level + (volume - target) / area, -fine, fine))
            lps2, faces2 = _mesh_at(field, level2, step, lo, m, contour)
            if len(faces2) and abs(abs(mesh_volume(lps2, faces2)) - target) < abs(volume - target):
                lps, faces = lps2, faces2
    return lps, faces


def marching_cubes(field: np.ndarray, level: float):
    """Marching cubes (scikit-image) of a ``[k, j, i]`` field at ``level``.

    Returns vertices as fractional voxel indices ``(i, j, k)`` of the field and triangles.
    """
    from skimage import measure

    # Contour in (i, j, k) order so that vertices come out as (fractional) voxel indices.
    verts, faces, _, _ = measure.marching_cubes(np.ascontiguousarray(field.transpose(2, 1, 0)),
                                                level=float(level), allow_degenerate=False)
    return verts, faces


def _mesh_at(field: np.ndarray, level: float, step: np.ndarray, lo: np.ndarray, m: np.ndarray,
             contour):
    """``contour`` of ``field`` at ``level``: vertices in LPS mm, outward triangles."""
    level = np.float32(level)
    while np.any(field == level):  # a grid value on the level makes coincident vertices
        level = np.nextafter(level, np.float32(np.inf))
    verts, faces = contour(field, float(level))
    if len(faces) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    ijk = np.asarray(verts, dtype=np.float64) * step[::-1] + lo[::-1]
    lps = ijk @ m[:3, :3].T + m[:3, 3]
    # STL stores float32: weld vertices that float32 cannot tell apart (marching cubes makes
    # such pairs next to grid points on the level) and drop the triangles that collapse.
    lps, inverse = np.unique(lps.astype(np.float32), axis=0, return_inverse=True)
    lps = lps.astype(np.float64)
    faces = inverse.reshape(-1)[np.asarray(faces, dtype=np.int64)]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
                  & (faces[:, 2] != faces[:, 0])]
    if mesh_volume(lps, faces) < 0:
        faces = faces[:, ::-1].copy()
    return lps, faces


def check_sigma_voxels(sigma_voxels) -> float:
    """``sigma_voxels`` as a float; :class:`InputError` unless finite and >= 0."""
    try:
        value = float(sigma_voxels)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"STL smoothing must be a finite number >= 0, not {sigma_voxels!r}")
    return value


def _signed_distance(mask: np.ndarray, spacing: np.ndarray):
    """Signed distance (mm, > 0 inside) of a zero-bordered mask, and the grid step per axis.

    Distances are between voxel centres in millimetres (so an outside voxel next to the mask
    through a 5 mm slice is at most 5 mm away). Along a thick-slice axis the field is then
    sampled more finely by linear interpolation (step < 1 voxel there, 1 elsewhere).
    """
    from scipy import ndimage

    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    dist = (inside - outside).astype(np.float32)
    step = np.ones(3)
    thick = int(np.argmax(spacing))
    fine = float(np.delete(spacing, thick).min())
    factor = int(math.ceil(spacing[thick] / (1.5 * fine)))
    if factor <= 1:
        return dist, step
    slices = np.moveaxis(dist, thick, 0)
    positions = np.arange((len(slices) - 1) * factor + 1) / factor
    below = np.minimum(np.floor(positions).astype(int), len(slices) - 2)
    weight = (positions - below)[:, None, None].astype(np.float32)
    fine_dist = slices[below] * (1 - weight) + slices[below + 1] * weight
    step[thick] = 1.0 / factor
    return np.moveaxis(fine_dist, 0, thick), step


def mesh_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by a closed triangle mesh (divergence theorem; > 0 if outward)."""
    v = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def write_binary_stl(vertices: np.ndarray, faces: np.ndarray, path: PathLike, *,
                     header: str = "", overwrite: bool = False) -> Path:
    """Write a binary STL (80-byte header, facet normals from the vertex order), atomically."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    record = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])
    data = np.zeros(len(tri), dtype=record)
    data["normal"] = normals
    data["vertices"] = tri
    head = header.encode("ascii", "replace")[:80].ljust(80, b" ")
    if head.lower().startswith(b"solid"):  # would make readers take it for ASCII STL
        head = b"binary " + head[:73]
    with files.atomic_path(path, overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(head)
            f.write(np.uint32(len(data)).tobytes())
            f.write(data.tobytes())
    return Path(path)


