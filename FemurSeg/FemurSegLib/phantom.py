"""Seeded synthetic phantom of a coronal T1-weighted hip MR scan, with ground-truth labels.

The phantom imitates the development data (``shared/data/hip-mri-t1``): a bilateral coronal
turbo-spin-echo scan, 384 x 384 voxels of 0.911 mm in-plane, 5.2 mm slices, orientation LIP (index
i toward patient Left, j toward Inferior, k toward Posterior), slightly oblique, int16 grey values
of roughly 0..1300, and a label map with 1 femur (both sides), 2 ilium (with acetabulum and
ischium), 3 lumbar spine and 4 sacrum. The pubis is bone in the image but not labelled, as in the
real masks.

How it is built
---------------
* The anatomy is a set of implicit shapes in physical millimetres, in a patient frame centred
  between the femoral heads (x toward Left, y toward Posterior, z toward Superior). Seeded
  parameters vary sizes, angles (neck-shaft angle, anteversion, cup inclination) and positions
  within ranges measured on the real scans; see :func:`sample_parameters`.
* Each voxel gets the *partial-volume fraction* of every shape: the voxel box (and a small in-plane
  point-spread function) is integrated analytically against the locally linearised implicit
  function, which equals supersampling with infinitely many samples for a planar edge. Thick
  slices therefore blur edges along the slice direction just as a 5.2 mm slice profile does, and a
  coarse grid shows the same anatomy at lower resolution. Labels are the voxel-centre inclusion
  (fraction above one half), like per-slice manual masks. As in the real masks, the femur label is
  the bone inside its dark cortical band: it ends 1.5 mm into the thick shaft cortex (5-6.5 mm)
  and at most 40% into the thin cortex of the head and neck.
* Grey values are composed front to back: air, subcutaneous fat, muscle with striation, fat
  planes between anatomically placed muscles and thinner septa within them, pelvic and abdominal
  contents, the hip joint capsule and the gluteal tendons, bones with a dark cortex (thick on the
  shaft and the calcar) around finely textured marrow (brighter in the greater trochanter, darker
  down the shaft, with a faint physeal scar). The image is then multiplied by a bias field whose
  coil shading is solved for so that the femoral marrow sits at the real scans' level relative to
  the 99.5th percentile, given Rician noise correlated between neighbours like an interpolated
  reconstruction, cut to the barrel-shaped field of view that geometric distortion correction
  leaves (zero corners), and stored as int16.

Calibration against the 17 real scans: real range (median), then phantom seeds 0-3, each measured
the same way on both (the functions are in ``Testing/test_phantom.py``); grey values are relative
to the image's 99.5th percentile, which intensity normalisation divides by.

* femoral marrow median 0.45-0.61 (0.53); phantom 0.55-0.58
* its local coefficient of variation in 5 x 5 voxels 0.057-0.100 (0.074); phantom 0.075-0.077;
  in 3 x 3 voxels of 2 x 2 averaged ones 0.045-0.073 (0.056); phantom 0.053-0.055
* neighbour correlation of the background noise 0.26-0.37; phantom 0.32
* femoral shaft across the mask edge, 5-10 mm inside 0.35-0.60 (0.49), 1-3 mm outside (the
  cortex) at most 0.03-0.26 (0.05), 7-10 mm outside (muscle) 0.22-0.33 (0.26); phantom 0.44-0.54,
  0.06-0.10, 0.21-0.28
* dark band at the edge of the mask in the central slice: 4.5-8 mm along the shaft, 0-3.6 mm at
  the trochanters; phantom 4.5-5.5 and 0-3.6 mm
* muscle mode round the shaft 0.22-0.32 (0.24); phantom 0.23-0.27
* body voxels, median 0.43-0.59 (0.50) and 75th percentile 0.60-0.70 (0.65); phantom 0.51-0.59
  and 0.66-0.69; below the hip centres and over 25 mm deep, 0.29-0.50 brighter than 0.4 (fat);
  phantom 0.27-0.37
* femur volume (both sides) 199-301 mL (255); phantom 238-271 mL

Everything is drawn from ``numpy.random.default_rng(seed)``: equal seeds give bitwise equal arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .files import PathLike, check_writable
from .images import write_image

#: Label values, as in the real data set.
BACKGROUND, FEMUR, ILIUM, SPINE, SACRUM = 0, 1, 2, 3, 4
LABEL_NAMES = {BACKGROUND: "background", FEMUR: "femur", ILIUM: "ilium", SPINE: "spine",
               SACRUM: "sacrum"}
#: Tissue codes of :attr:`Phantom.tissues` (the tissue at each voxel centre).
TISSUES = {"air": 0, "skin": 1, "fat": 2, "muscle": 3, "viscera": 4, "urine": 5, "bowel": 6,
           "organ": 7, "cortex": 8, "marrow": 9, "disc": 10, "csf": 11, "cartilage": 12,
           "vessel": 13}

#: Direction cosines of an axis-aligned LIP grid (columns: where i, j, k point in LPS).
LIP_DIRECTION = np.array([[1.0, 0.0, 0.0],
                          [0.0, 0.0, 1.0],
                          [0.0, -1.0, 0.0]])

DEFAULT_SIZE = (384, 384, 40)
DEFAULT_SPACING = (0.911, 0.911, 5.2)
#: The real femur masks end this far (mm) into the dark cortical band, not at its outer edge,
#: and at most 40% into a thin cortex (head and neck): measured by intensity profiles across
#: the mask edge (darkest 1-4 mm outside it on the shaft, 1 mm outside it at the head) and the
#: median of the mask's outer rim.
LABEL_INTO_CORTEX_MM = 1.5
#: In-plane point-spread function of the scanner (mm, standard deviation of a Gaussian).
PSF_MM = 0.45

Vec = np.ndarray


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
# Implicit shapes: functions of patient-frame coordinates p = (x, y, z) (float32 arrays, mm),
# negative inside. Constants are Python floats so that float32 arrays stay float32.


def _pt(v) -> Tuple[float, float, float]:
    return tuple(float(c) for c in v)


def _length(x, y, z=0.0):
    return np.sqrt(x * x + y * y + z * z)


def _sphere(p, c, r: float):
    c = _pt(c)
    return _length(p[0] - c[0], p[1] - c[1], p[2] - c[2]) - float(r)


def _ellipsoid(p, c, radii):
    """Approximate signed distance of an axis-aligned ellipsoid (exact on its axes)."""
    c, (rx, ry, rz) = _pt(c), _pt(radii)
    q = _length((p[0] - c[0]) / rx, (p[1] - c[1]) / ry, (p[2] - c[2]) / rz)
    return (q - 1.0) * min(rx, ry, rz)


def _capsule(p, a, b, r, y_scale: float = 1.0):
    """Distance to the segment a-b minus the radius ``r`` (or a pair ``(r_a, r_b)``: a cone).

    ``y_scale`` < 1 flattens the tube along y (an elliptic cross-section).
    """
    a, b = _pt(a), _pt(b)
    ba = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    bb = ba[0] ** 2 + ba[1] ** 2 + ba[2] ** 2
    px, py, pz = p[0] - a[0], p[1] - a[1], p[2] - a[2]
    t = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) * (1.0 / bb), 0.0, 1.0)
    d = _length(px - t * ba[0], (py - t * ba[1]) * (1.0 / y_scale), pz - t * ba[2])
    if np.ndim(r) == 0:
        return d - float(r)
    return d - (float(r[0]) + float(r[1] - r[0]) * t)


def _smin(a, b, k: float):
    """Smooth union of two implicit shapes (polynomial smooth minimum, blend width ``k`` mm)."""
    h = np.clip(0.5 + (0.5 / k) * (b - a), 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _interp(v, xs, ys):
    return np.interp(v, xs, ys).astype(np.float32)


def _unit(v) -> Vec:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _rotate(v, axis, deg: float) -> Vec:
    """Rodrigues rotation of vector ``v`` about ``axis`` by ``deg`` degrees."""
    k = _unit(axis)
    t = math.radians(deg)
    v = np.asarray(v, dtype=float)
    return v * math.cos(t) + np.cross(k, v) * math.sin(t) + k * (k @ v) * (1 - math.cos(t))


def _rotation(axis, deg: float) -> np.ndarray:
    return np.stack([_rotate(e, axis, deg) for e in np.eye(3)], axis=1)


# ----------------------------------------------------------------------------------------------
# The voxel grid, partial-volume fractions and painting


class _Grid:
    """A voxel grid and the affine map from voxel index (i, j, k) to the patient frame (mm)."""

    def __init__(self, size, spacing, direction, origin, frame_rotation, centre):
        self.size = tuple(int(s) for s in size)
        self.shape = self.size[::-1]
        self.spacing = np.asarray(spacing, dtype=float)
        # patient frame q = R^T (p - H) with p = O + D S idx, so q = A idx + b
        self.A = frame_rotation.T @ direction @ np.diag(self.spacing)
        self.b = frame_rotation.T @ (np.asarray(origin, dtype=float) - np.asarray(centre, dtype=float))
        self.A_inv = np.linalg.inv(self.A)

    def full(self) -> Tuple[slice, slice, slice]:
        return tuple(slice(0, n) for n in self.shape)

    def box(self, lo, hi, margin: int = 2) -> Optional[Tuple[slice, slice, slice]]:
        """Index slices ``[k, j, i]`` of the part of the grid that covers the frame box lo..hi."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])], dtype=float)
        idx = (self.A_inv @ (corners - self.b).T).T
        first = np.maximum(np.floor(idx.min(0)) - margin, 0).astype(int)
        last = np.minimum(np.ceil(idx.max(0)) + margin, np.array(self.size) - 1).astype(int)
        if np.any(last < first):
            return None
        return tuple(slice(int(first[a]), int(last[a]) + 1) for a in (2, 1, 0))

    def coords(self, box) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame x, y, z (float32 arrays) of the voxel centres in ``box``."""
        k = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None, None]
        j = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :, None]
        i = np.arange(box[2].start, box[2].stop, dtype=np.float32)[None, None, :]
        A, b = self.A.astype(np.float32), self.b.astype(np.float32)
        return tuple((A[c, 0] * i + (A[c, 1] * j + b[c])) + A[c, 2] * k for c in range(3))

    def coarse_coords(self, coarse: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame coordinates of an in-plane grid ``coarse`` times coarser (whole grid).

        Its cells are those of :func:`_upsample`, which brings a field on it back to this grid.
        """
        K, J, I = self.shape
        cj, ci = -(-J // coarse), -(-I // coarse)
        k = np.arange(K, dtype=np.float32)[:, None, None]
        j = ((np.arange(cj, dtype=np.float32) + 0.5) * (J / cj) - 0.5)[None, :, None]
        i = ((np.arange(ci, dtype=np.float32) + 0.5) * (I / ci) - 0.5)[None, None, :]
        A, b = self.A.astype(np.float32), self.b.astype(np.float32)
        return tuple((A[c, 0] * i + (A[c, 1] * j + b[c])) + A[c, 2] * k for c in range(3))

    def ramp_width(self, F: np.ndarray) -> np.ndarray:
        """Width (in units of F) over which a voxel goes from outside to inside ``F = 0``.

        With F linear across a voxel, its values over the voxel box are a sum of uniform variables
        of widths |dF/di|, |dF/dj|, |dF/dk| (plus the in-plane point-spread function); a linear
        ramp of the same variance has this width. For a planar edge that is the exact
        box-filtered (infinitely supersampled) partial volume, up to the ramp's shape.
        """
        w2 = np.zeros(F.shape, dtype=np.float32)
        for axis, spacing in ((2, self.spacing[0]), (1, self.spacing[1]), (0, None)):
            if F.shape[axis] < 2:
                continue
            g = np.gradient(F, axis=axis)
            extra = 1.0 if spacing is None else 1.0 + 12.0 * (PSF_MM / spacing) ** 2
            w2 += g * g * np.float32(extra)
        return np.sqrt(w2, out=w2)


def _fraction(F: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Partial-volume fraction inside ``F < 0`` for a linear ramp of full width ``width``."""
    return np.clip(0.5 - F / np.maximum(width, np.float32(1e-3)), 0.0, 1.0)


def _take(value, box):
    if isinstance(value, np.ndarray) and value.ndim == 3:
        return value[box]
    return np.float32(value)


class _Canvas:
    """Image and label arrays, painted front to back."""

    def __init__(self, grid: _Grid):
        self.grid = grid
        self.image = np.zeros(grid.shape, dtype=np.float32)
        self.labels = np.zeros(grid.shape, dtype=np.uint8)
        self.tissues = np.zeros(grid.shape, dtype=np.uint8)

    def paint(self, box, fn: Callable, value, tissue: str, label: Optional[int] = None,
              cortex: Optional[Tuple[object, object]] = None, label_inside_cortex: bool = False) -> None:
        """Blend ``value`` into the image by the partial volume of ``fn < 0``; set ``label``.

        ``value`` is a number or a full-grid array. With ``cortex=(thickness, cortex_value)`` the
        outer ``thickness`` mm (a number, or a function of the coordinates) get ``cortex_value``.
        If ``fn`` returns a pair, its second member is the region to label (e.g. the hip bone
        without the pubis, or the sacrum without its unlabelled lower part). With
        ``label_inside_cortex`` only the marrow inside the cortex is labelled (the real femur masks
        follow the inner edge of the dark cortical band).
        """
        if box is None:
            return
        q = self.grid.coords(box)
        F = fn(q)
        F, F_label = F if isinstance(F, tuple) else (F, F)
        F = np.broadcast_to(np.asarray(F, dtype=np.float32), q[0].shape)
        w = self.grid.ramp_width(F)
        region = self.image[box]
        if cortex is None:
            region += _fraction(F, w) * (_take(value, box) - region)
            self.tissues[box][F < 0] = TISSUES[tissue]
        else:
            thickness, cortex_value = cortex
            t = thickness(q) if callable(thickness) else np.float32(thickness)
            region += _fraction(F, w) * (_take(cortex_value, box) - region)
            region += _fraction(F + t, w) * (_take(value, box) - region)
            self.tissues[box][F < 0] = TISSUES["cortex"]
            self.tissues[box][F + t < 0] = TISSUES[tissue]
            if label_inside_cortex:
                F_label = F_label + np.maximum(t - np.float32(LABEL_INTO_CORTEX_MM), np.float32(0.6) * t)
        if label is not None:
            self.labels[box][np.broadcast_to(F_label < 0, F.shape)] = label


# ----------------------------------------------------------------------------------------------
# Random textures (grid based, scales in millimetres)


def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation from ``n_in`` cells to ``n_out`` cells spanning the same extent."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2) if n_in > 1 else np.zeros(n_out, int)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    if n_in == 1:
        m[:, 0] = 1
        return m
    frac = pos - lo
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] += frac
    return m


def _upsample(field: np.ndarray, shape) -> np.ndarray:
    """Linear in-plane interpolation of a coarse ``[k, j, i]`` field to ``shape``."""
    mj, mi = _upsample_matrix(shape[1], field.shape[1]), _upsample_matrix(shape[2], field.shape[2])
    return np.einsum("ja,kab,ib->kji", mj, field, mi, optimize=True)


def _smooth_noise(rng, shape, spacing, sigma_mm, coarse: int = 1) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (float32, [k, j, i]).

    ``sigma_mm`` = (sigma_i, sigma_j, sigma_k) in mm. With ``coarse`` > 1 the field is made on an
    in-plane grid that many times coarser and interpolated up (fast for large, smooth fields).
    """
    K, J, I = shape
    cshape = (K, -(-J // coarse), -(-I // coarse))
    white = rng.standard_normal(cshape, dtype=np.float32)
    sig = (sigma_mm[2] / spacing[2], sigma_mm[1] / (spacing[1] * coarse),
           sigma_mm[0] / (spacing[0] * coarse))
    out = white
    for axis, sg in enumerate(sig):
        if sg >= 0.3:  # narrower kernels hardly change white noise: skip them
            out = ndimage.gaussian_filter1d(out, sg, axis=axis, mode="reflect", truncate=3.0)
    if coarse > 1:
        out = _upsample(out, shape)
    std = float(out.std())
    return out / np.float32(std if std > 0 else 1.0)


# ----------------------------------------------------------------------------------------------
# Parameters


def sample_parameters(seed: int) -> Dict[str, object]:
    """Anatomy, contrast and acquisition parameters drawn for ``seed`` (lengths in mm).

    The ranges were measured on the 17 real scans (femur and ilium outlines per height relative to
    the femoral head centre, head separation 168-191 mm, head centre 46-82 mm below the centre of
    the field of view, femoral shaft about 20 mm behind and 32 mm lateral of the head centre).
    """
    rng = np.random.default_rng(seed)
    u = rng.uniform
    p: Dict[str, object] = {"half_separation": u(84.0, 94.0)}
    r_head = u(21.5, 24.5)
    for side in ("right", "left"):
        r = r_head + u(-0.5, 0.5)
        p[side] = {
            "head_radius": r,
            "head_shift": (u(-1.5, 1.5), u(-2.0, 2.0), u(-2.0, 2.0)),
            "neck_shaft_angle": u(122.0, 135.0),
            "anteversion": u(28.0, 40.0),     # with the usual external rotation of the legs
            "shaft_tilt": u(-8.0, 0.0),       # degrees, + = distal end medial
            "shaft_ap_tilt": u(-3.0, 3.0),
            "neck_length": r * u(1.7, 1.95),
            "shaft_radius": u(13.0, 15.0),
            "shaft_cortex": u(5.0, 6.5),
            "head_cortex": u(1.2, 1.8),
            "calcar_cortex": u(2.5, 4.0),
            "physeal_scar": u(0.45, 0.6),   # distance from the head centre, in head radii
            "cup_inclination": u(45.0, 58.0),
            "cup_anteversion": u(12.0, 25.0),
            "joint_gap": u(2.5, 3.5),
            "crest_height": u(132.0, 148.0),
            "wing_slope": u(0.42, 0.58),
            "wing_thickness": u(8.0, 10.0),
        }
    p["frame_rotation_deg"] = (u(-4.0, 4.0), u(-2.0, 2.0), u(-2.5, 2.5))  # tilt, roll, yaw
    p["centre_lps"] = (u(-10.0, 30.0), u(-20.0, 20.0), u(-110.0, -20.0))
    p["centre_offset_mm"] = (u(-6.0, 6.0), u(46.0, 72.0), u(-8.0, 14.0))  # along i, j, k
    p["oblique_axis"] = tuple(_unit(rng.standard_normal(3)))
    p["body"] = {"half_width": u(165.0, 190.0), "half_depth": u(105.0, 130.0),
                 "centre_y": u(5.0, 20.0), "fat": u(18.0, 40.0), "thigh_radius": u(82.0, 95.0),
                 "crotch_z": u(-95.0, -78.0)}
    p["bladder"] = {"radius": u(22.0, 42.0), "centre": (u(-6.0, 6.0), u(-30.0, -20.0), u(-4.0, 8.0))}
    p["sacrum"] = {"top_z": u(90.0, 102.0), "top_y": u(42.0, 50.0), "width": u(52.0, 60.0)}
    p["spine"] = {"y": u(8.0, 18.0), "body_height": u(26.0, 30.0), "disc": u(6.0, 9.0)}
    p["contrast"] = tissue_values(rng)
    p["noise_sigma"] = u(5.5, 9.5)
    p["bias"] = {"coefficients": tuple(float(c) for c in rng.normal(0.0, 0.06, 6)),
                 "coil": u(0.2, 0.45), "marrow_level": u(0.51, 0.57)}
    p["fov_mask"] = {"power": u(4.0, 4.6), "extent": u(1.0, 1.035), "shift": u(-0.04, 0.04)}
    p["texture_seed"] = int(rng.integers(0, 2**31 - 1))
    return p


def tissue_values(rng: np.random.Generator) -> Dict[str, float]:
    """Grey values before bias and noise, drawn around the real scans' typical levels.

    Measured on the real scans: subcutaneous fat peak about 470 (400-510), femoral marrow median
    390 (330-445), so marrow about 0.83 of fat; muscle mode round the femoral shaft 0.22-0.32 of
    the 99.5th percentile, about 0.46 of the marrow; dark cortex near 50; air about 5 (noise
    only). The overall level is set later by the bias field (see :func:`_bias_field`).
    """
    scale = rng.uniform(0.9, 1.1)
    fat = rng.uniform(430.0, 490.0) * scale
    muscle = rng.uniform(155.0, 195.0) * scale
    return {
        "fat": fat,
        "marrow": fat * rng.uniform(0.86, 0.96),
        "muscle": muscle,
        "cortex": rng.uniform(40.0, 85.0) * scale,
        "cartilage": muscle * rng.uniform(1.0, 1.25),
        "urine": muscle * rng.uniform(0.6, 0.85),
        "bowel": muscle * rng.uniform(1.1, 1.45),
        "disc": muscle * rng.uniform(1.0, 1.3),
        "csf": muscle * rng.uniform(0.45, 0.65),
        "vessel": muscle * rng.uniform(0.15, 0.35),
        "skin": muscle * rng.uniform(0.9, 1.2),
    }


# ----------------------------------------------------------------------------------------------
# Anatomy (per side in a mirrored frame: +x lateral on both sides)


def _mirrored(p, side: int):
    return (p[0] * np.float32(side), p[1], p[2])


def _mirror_box(lo, hi, side: int):
    lo, hi = np.array(lo, dtype=float), np.array(hi, dtype=float)
    if side < 0:
        lo[0], hi[0] = -hi[0], -lo[0]
    return lo, hi


class _Femur:
    """Proximal femur: head, neck, trochanters and the shaft to below the field of view."""

    def __init__(self, a: float, sp: dict):
        self.r_head = sp["head_radius"]
        self.head = np.array([a, 0.0, 0.0]) + np.asarray(sp["head_shift"])
        tilt, ap = math.radians(sp["shaft_tilt"]), math.radians(sp["shaft_ap_tilt"])
        s = _unit([-math.sin(tilt), math.sin(ap), -math.cos(tilt)])  # shaft, toward distal
        axis = _unit(np.cross(s, [-1.0, 0.0, 0.0]))
        neck = _rotate(s, axis, sp["neck_shaft_angle"])
        if neck[0] > 0:  # the head must lie medial of the shaft
            neck = _rotate(s, axis, -sp["neck_shaft_angle"])
        # anteversion: turn the neck about the shaft so that the head comes forward (-y)
        neck = min((_rotate(neck, s, sign * sp["anteversion"]) for sign in (1, -1)),
                   key=lambda v: v[1])
        self.shaft = s
        self.junction = self.head - sp["neck_length"] * neck
        lat = np.array([1.0, 0.0, 0.0])
        self.lateral = _unit(lat - (lat @ s) * s)
        post = np.cross(s, self.lateral)
        self.posterior = post if post[1] > 0 else -post
        self.r_shaft = sp["shaft_radius"]
        self.cortex = (sp["head_cortex"], sp["shaft_cortex"])
        self.calcar = sp["calcar_cortex"]
        self.neck = neck
        self.scar = self.head - sp["physeal_scar"] * self.r_head * neck

    def bounds(self):
        lo = np.minimum(self.head - self.r_head, self.junction - 45.0) - 5.0
        hi = np.maximum(self.head + self.r_head, self.junction + 45.0) + 5.0
        lo[2] = -1000.0
        return lo, hi

    def sdf(self, p):
        J, s, post = self.junction, self.shaft, self.posterior
        F = _sphere(p, self.head, self.r_head)
        F = _smin(F, _capsule(p, self.head, J, 0.66 * self.r_head, y_scale=0.82), 5.0)
        shaft = _capsule(p, J - 12.0 * s, J + 1000.0 * s, self.r_shaft)
        body = _ellipsoid(p, J + 12.0 * s + 3.0 * post, (1.5 * self.r_shaft, 1.43 * self.r_shaft, 30.0))
        F = _smin(F, _smin(shaft, body, 10.0), 10.0)
        greater = _ellipsoid(p, self.trochanter, (11.0, 14.0, 20.0))
        F = _smin(F, greater, 8.0)
        lesser = _ellipsoid(p, self.lesser_trochanter, (8.0, 7.0, 9.0))
        return _smin(F, lesser, 5.0)

    def cortex_thickness(self, p):
        """Thin cortex at the head and greater trochanter, thick on the shaft and the calcar.

        As the dark band measured on the real scans: 0-3 mm laterally down to the lesser
        trochanter, 0-5 mm (median 2.7) on the medial side of the neck (the calcar), 5-7 mm on
        the shaft from about 80 mm below the head centre.
        """
        H, s, J, lat = _pt(self.head), _pt(self.shaft), _pt(self.junction), _pt(self.lateral)
        along = (p[0] - H[0]) * s[0] + (p[1] - H[1]) * s[1] + (p[2] - H[2]) * s[2]
        medial = (J[0] - p[0]) * lat[0] + (J[1] - p[1]) * lat[1] + (J[2] - p[2]) * lat[2]
        t = np.clip((along - 40.0) * (1.0 / 40.0), 0.0, 1.0)
        shaft = self.cortex[0] + (self.cortex[1] - self.cortex[0]) * t
        # the calcar lines the lower (inferomedial) side of the neck only
        n = _pt(self.neck)
        down = _pt(_unit(self.shaft - (self.shaft @ self.neck) * self.neck))
        dx, dy, dz = p[0] - H[0], p[1] - H[1], p[2] - H[2]
        t = dx * n[0] + dy * n[1] + dz * n[2]
        rx, ry, rz = dx - t * n[0], dy - t * n[1], dz - t * n[2]
        below = (rx * down[0] + ry * down[1] + rz * down[2]) / np.maximum(_length(rx, ry, rz), 1e-3)
        calcar = (self.calcar * np.clip((along - 20.0) * (1.0 / 12.0), 0.0, 1.0)
                  * np.clip(medial * (1.0 / 8.0), 0.0, 1.0) * np.clip(below, 0.0, 1.0) ** 2)
        return np.maximum(shaft, calcar)

    def capsule_sdf(self, p, gap: float = 3.0):
        """The joint capsule: a dark sleeve 2 mm thick from the acetabular rim to the trochanters.

        On the real scans the capsule and its ligaments line the neck above and below as dark
        bands between the bone and the surrounding muscle and fat.
        """
        H, n = _pt(self.head), _pt(-self.neck)
        r, length = self.r_head, float(np.linalg.norm(self.junction - self.head))
        dx, dy, dz = p[0] - H[0], p[1] - H[1], p[2] - H[2]
        along = dx * n[0] + dy * n[1] + dz * n[2]
        rho = _length(dx - along * n[0], dy - along * n[1], dz - along * n[2])
        t0, t1 = 0.45 * r, length - 6.0
        r0 = math.sqrt(max((r + gap) ** 2 - t0 ** 2, 1.0)) + 1.0
        radius = _interp(along, [t0, t1], [r0, 0.66 * r + gap + 2.0])
        sleeve = np.abs(rho - radius) - 1.0
        return np.maximum(sleeve, np.maximum(t0 - along, along - t1))

    @property
    def trochanter(self) -> Vec:
        """Centre of the greater trochanter."""
        return self.junction - 14.0 * self.shaft + 13.0 * self.lateral + 10.0 * self.posterior

    @property
    def lesser_trochanter(self) -> Vec:
        """Centre of the lesser trochanter."""
        return (self.junction + 30.0 * self.shaft - (self.r_shaft + 2.0) * self.lateral
                + 8.0 * self.posterior)

    def tendon_sdf(self, p):
        """Gluteus medius and minimus tendons: a dark cap 2 mm thick on the greater trochanter."""
        G, u = _pt(self.trochanter), _pt(_unit(self.lateral - self.shaft))
        d = _length(p[0] - G[0], p[1] - G[1], p[2] - G[2])
        up = (p[0] - G[0]) * u[0] + (p[1] - G[1]) * u[1] + (p[2] - G[2]) * u[2]
        return np.maximum(np.abs(self.sdf(p) - 1.0) - 1.0, np.maximum(d - 26.0, 4.0 - up))

    def capsule_bounds(self):
        lo = np.minimum(self.head, self.junction) - self.r_head - 12.0
        hi = np.maximum(self.head, self.junction) + self.r_head + 12.0
        return lo, hi

    def marrow_shading(self, p):
        """Relative marrow brightness: fatty greater trochanter brighter, the shaft darker.

        Real scans (marrow median over head, neck, greater trochanter, intertrochanteric region,
        shaft): about 1.0, 1.0, 1.1, 0.96, 0.9.
        """
        H, s, J, lat = _pt(self.head), _pt(self.shaft), _pt(self.junction), _pt(self.lateral)
        along = (p[0] - H[0]) * s[0] + (p[1] - H[1]) * s[1] + (p[2] - H[2]) * s[2]
        lateral = (p[0] - J[0]) * lat[0] + (p[1] - J[1]) * lat[1] + (p[2] - J[2]) * lat[2]
        shaft = np.clip((along - 30.0) * (1.0 / 60.0), 0.0, 1.0)
        trochanter = np.clip((lateral - 5.0) * (1.0 / 12.0), 0.0, 1.0) * (1.0 - shaft)
        return 1.0 + 0.1 * trochanter - 0.1 * shaft

    def scar_darkening(self, p):
        """Relative darkening (0..0.15) along the physeal scar, a thin plane across the head base."""
        c, n = _pt(self.scar), _pt(self.neck)
        d = (p[0] - c[0]) * n[0] + (p[1] - c[1]) * n[1] + (p[2] - c[2]) * n[2]
        near = _length(p[0] - c[0], p[1] - c[1], p[2] - c[2]) < 1.2 * self.r_head
        return np.where(near, 0.15 * np.exp(-(d * (1.0 / 0.8)) ** 2), 0.0)


class _HipBone:
    """Ilium (wing and acetabulum), ischium and pubis of one side."""

    def __init__(self, femur: _Femur, sp: dict, a: float, sacrum: "_Sacrum"):
        self.c = _pt(femur.head)
        self.r = femur.r_head
        self.r_cup = femur.r_head + sp["joint_gap"]
        inc, av = math.radians(sp["cup_inclination"]), math.radians(sp["cup_anteversion"])
        self.opening = _pt([math.sin(inc) * math.cos(av), -math.sin(av), -math.cos(inc)])
        self.sp = sp
        self.a = a
        self.sacrum = sacrum

    def _rel(self, p):
        return p[0] - self.c[0], p[1] - self.c[1], p[2] - self.c[2]

    def wing(self, p):
        """The wing as a sheet whose lateral position varies with height and depth.

        Returns the shape and the signed distance from its inner (medial) face.
        """
        u, y, z = self._rel(p)
        sp = self.sp
        k_ant = _interp(z, [20.0, 40.0, 60.0, 100.0], [0.2, 0.3, 0.45, 0.7])
        k_post = _interp(z, [20.0, 60.0, 100.0], [0.3, 0.8, 1.1])
        base = _interp(z, [20.0, 60.0, 100.0, 150.0],
                       [-10.0, -10.0 + 40.0 * sp["wing_slope"], -10.0 + 80.0 * sp["wing_slope"],
                        -10.0 + 80.0 * sp["wing_slope"]])
        mid = base - np.where(y < 0, k_ant * y, k_post * y)
        half_t = 0.5 * _interp(z, [12.0, 20.0, 40.0, 60.0, 100.0, 150.0],
                               [30.0, 24.0, 20.0, 13.0, sp["wing_thickness"], sp["wing_thickness"] + 2])
        y_ant = _interp(z, [0.0, 20.0, 40.0, 60.0, 85.0, 110.0, 150.0],
                        [-18.0, -22.0, -31.0, -42.0, -44.0, -30.0, -20.0])
        y_post = _interp(z, [0.0, 20.0, 35.0, 45.0, 60.0, 100.0, 120.0, 150.0],
                         [25.0, 30.0, 22.0, 24.0, 49.0, 74.0, 70.0, 50.0])
        crest = sp["crest_height"] - 0.012 * (y - 30.0) ** 2
        outline = np.maximum(np.maximum(y_ant - y, y - y_post), np.maximum(z - crest, 12.0 - z))
        dist = u - mid
        return np.maximum(np.abs(dist) - half_t, outline), dist + half_t, outline

    def sdf(self, p):
        """(hip bone with pubis, labelled part without the pubis)."""
        c, r = self.c, self.r
        wing, _, _ = self.wing(p)
        u, y, z = self._rel(p)
        o = self.opening
        acet = _ellipsoid(p, (c[0] - 1.0, c[1] + 12.0, c[2] + 4.0), (r + 6.0, r + 14.0, r + 15.0))
        acet = np.maximum(acet, u * o[0] + y * o[1] + z * o[2] + 1.0)
        column = _capsule(p, (c[0] - 12.0, c[1] + 28.0, c[2] - 4.0),
                          (c[0] - 36.0, c[1] + 38.0, c[2] - 55.0), (12.0, 10.0))
        tuber = _ellipsoid(p, (c[0] - 38.0, c[1] + 38.0, c[2] - 60.0), (11.0, 12.0, 12.0))
        F = _smin(_smin(wing, acet, 8.0), _smin(column, tuber, 6.0), 8.0)
        cut = np.maximum(self.r_cup - _length(u, y, z), 2.5 - self.sacrum.sdf(p))  # joints
        ilium = np.maximum(F, cut)
        return np.maximum(np.minimum(F, self.pubis(p)), cut), ilium

    def pubis(self, p):
        c = self.c
        sup = _capsule(p, (c[0] - 18.0, c[1] - 14.0, c[2] - 8.0), (8.0, -44.0, -26.0), (11.0, 8.0))
        inf = _capsule(p, (7.0, -40.0, -40.0), (c[0] - 38.0, c[1] + 36.0, c[2] - 60.0), 6.0)
        body = _ellipsoid(p, (10.0, -44.0, -32.0), (8.0, 11.0, 17.0))
        return np.maximum(_smin(_smin(sup, inf, 6.0), body, 6.0), 1.5 - p[0])  # symphysis gap

    def iliacus(self, p):
        """Muscle on the inner face of the wing (the iliacus)."""
        _, inner, outline = self.wing(p)
        _, _, z = self._rel(p)
        return np.maximum(np.maximum(inner, -inner - 22.0), np.maximum(outline - 4.0, 15.0 - z))


class _Sacrum:
    """Sacrum in the midline: alae rising beside the promontory, curving back and down."""

    def __init__(self, sp: dict):
        self.top, self.y_top, self.width = sp["top_z"], sp["top_y"], sp["width"]
        self.bottom = -5.0

    def centre_y(self, z):
        return self.y_top + 0.55 * (self.top - z)

    def sdf(self, p):
        x, y, z = p
        t, b = self.top, self.bottom
        ax = np.abs(x)
        half_w = _interp(z, [b, t - 40.0, t - 20.0, t + 30.0], [12.0, self.width - 10.0, self.width, self.width])
        half_t = _interp(z, [b, t - 40.0, t - 20.0, t + 30.0], [5.0, 7.0, 20.0, 20.0])
        top = t + 30.0 * np.clip((ax - 12.0) * (1.0 / 25.0), 0.0, 1.0)
        F = np.maximum(ax - half_w, np.abs(y - self.centre_y(z)) - half_t)
        return np.maximum(F, np.maximum(z - top, b - z))


def _vertebra(p, zc: float, y0: float, height: float):
    """Lumbar vertebra: body, arch around the canal, spinous and transverse processes."""
    x, y, z = p
    dz = np.abs(z - zc)
    body = np.maximum(_length(x * (1.0 / 1.4), y - y0) * 1.4 - 24.0, dz - 0.5 * height)
    arch = np.maximum(_length(x, y - (y0 + 26.0)) - 14.0, dz - (0.5 * height - 2.0))
    spinous = _ellipsoid(p, (0.0, y0 + 48.0, zc), (4.5, 16.0, 11.0))
    ax = np.abs(x)
    transverse = _ellipsoid((ax, y, z), (24.0, y0 + 20.0, zc), (11.0, 5.5, 6.5))
    return np.minimum(np.minimum(body, arch), np.minimum(spinous, transverse))


def _rounded_rect(x, y, half_w: float, half_d: float, radius: float):
    """Signed distance of a rounded rectangle centred at the origin (2D)."""
    qx = np.abs(x) - (half_w - radius)
    qy = np.abs(y) - (half_d - radius)
    outside = _length(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - radius


def _body(p, b: dict, a: float):
    """Skin surface: the trunk joined to both thighs."""
    x, y, z = p
    half_d = b["half_depth"]
    waist = 1.0 - 0.1 * np.clip((z - 40.0) * (1.0 / 150.0), 0.0, 1.0)
    trunk = _rounded_rect(x * (1.0 / waist), y - b["centre_y"], b["half_width"], half_d, 0.8 * half_d)
    seat = b["crotch_z"] - 40.0 / (1.0 + np.exp((30.0 - y) * (1.0 / 15.0)))  # buttocks hang lower
    trunk = np.maximum(trunk, seat - z)
    for side in (-1.0, 1.0):
        cx = side * (a + 12.0 + 0.12 * np.minimum(z + 60.0, 0.0))
        thigh = np.maximum(_length(x - cx, (y - 5.0) * 1.1) - b["thigh_radius"], z)
        trunk = _smin(trunk, thigh, 25.0)
    return trunk


def _fat_profile(p):
    """Relative subcutaneous fat thickness: thin over the hips, thick on buttocks and belly."""
    x, y, z = p
    buttocks = np.clip((y - 20.0) * (1.0 / 70.0), 0.0, 1.0)
    belly = np.clip((-y - 40.0) * (1.0 / 50.0), 0.0, 1.0) * np.clip((z + 30.0) * (1.0 / 80.0), 0.0, 1.0)
    flank = np.clip((z - 40.0) * (1.0 / 100.0), 0.0, 1.0)
    perineum = (np.clip((60.0 - np.abs(x)) * (1.0 / 30.0), 0.0, 1.0)
                * np.clip((-40.0 - z) * (1.0 / 30.0), 0.0, 1.0))  # thin over the inner thighs
    return (0.75 + 0.7 * buttocks + 0.5 * belly + 0.4 * flank) * (1.0 - 0.6 * perineum)


def _cavity(p, a: float):
    """Pelvic cavity below the inlet joined to the abdominal cavity above it."""
    x, y, z = p
    pelvis = _ellipsoid(p, (0.0, 12.0, 5.0), (a - 42.0, 50.0, 56.0))
    half_w = _interp(z, [30.0, 70.0, 150.0, 250.0], [40.0, 90.0, 140.0, 140.0])
    abdomen = np.maximum(_length(x * (62.0 / half_w), y + 15.0) - 62.0, 40.0 - z)
    return _smin(pelvis, abdomen, 25.0)


def _muscle_axes(femur: _Femur):
    """Axes (start, end, radius; mirrored frame, mm) of the muscles around one hip.

    Gluteus maximus, medius and minimus, iliopsoas, obturator internus and externus, quadratus
    femoris, pectineus, the adductors, vastus lateralis and medialis, rectus femoris, sartorius,
    tensor fasciae latae and the hamstrings, placed from the femur's landmarks (head, greater and
    lesser trochanter, shaft) and the pelvis around it. Only where they meet matters: the
    intermuscular fat planes run between neighbouring axes.
    """
    H, J, s = femur.head, femur.junction, femur.shaft
    G, L = femur.trochanter, femur.lesser_trochanter
    T = H + np.array([-38.0, 38.0, -60.0])                       # ischial tuberosity
    P = np.array([14.0, -42.0, H[2] - 36.0])                     # pubis

    def S(t):  # on the shaft axis, t mm below the neck junction
        return J + t * s

    v = np.array
    return [
        (H + v([5.0, 35.0, 115.0]), G + v([0.0, 0.0, 15.0]), 14.0),      # gluteus medius
        (H + v([-5.0, 5.0, 75.0]), G + v([-5.0, -10.0, 5.0]), 9.0),      # gluteus minimus
        (v([35.0, 85.0, H[2] + 50.0]), G + v([20.0, 45.0, -100.0]), 22.0),  # gluteus maximus
        (H + v([-25.0, -25.0, 70.0]), L, 14.0),                         # iliopsoas
        (H + v([-48.0, 25.0, -25.0]), G + v([-8.0, 12.0, -5.0]), 7.0),   # obturator internus
        (v([22.0, -15.0, H[2] - 45.0]), G + v([-12.0, 8.0, -20.0]), 8.0),  # obturator externus
        (T + v([0.0, 0.0, 10.0]), v([G[0] - 5.0, G[1] + 10.0, H[2] - 50.0]), 8.0),  # quadratus
        (v([16.0, -32.0, H[2] - 22.0]), L + v([-3.0, -8.0, 0.0]), 7.0),  # pectineus
        (P + v([0.0, 0.0, -2.0]), S(120.0) + v([-15.0, -15.0, 0.0]), 10.0),  # adductor longus
        (P + v([8.0, 14.0, -19.0]), S(90.0) + v([-12.0, 0.0, 0.0]), 10.0),  # adductor brevis
        (T + v([0.0, 0.0, -8.0]), S(200.0) + v([-15.0, 20.0, 0.0]), 16.0),  # adductor magnus
        (G + v([10.0, 0.0, -25.0]), S(220.0) + v([16.0, 5.0, 0.0]), 14.0),  # vastus lateralis
        (S(25.0) + v([-5.0, -18.0, 0.0]), S(220.0) + v([-12.0, -15.0, 0.0]), 14.0),  # v. medialis
        (H + v([0.0, -38.0, 30.0]), S(220.0) + v([3.0, -35.0, 0.0]), 10.0),  # rectus femoris
        (H + v([18.0, -48.0, 75.0]), S(220.0) + v([-40.0, -25.0, 0.0]), 6.0),  # sartorius
        (H + v([25.0, -35.0, 65.0]), G + v([20.0, -20.0, -60.0]), 8.0),  # tensor fasciae latae
        (T, S(220.0) + v([-5.0, 40.0, 0.0]), 14.0),                      # hamstrings
    ]


def _intermuscular_fat(grid: "_Grid", femurs, wiggle: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Weight (0..1) of the fat planes between the muscles of both hips (full grid, float32).

    Each voxel's two nearest muscles (distance to the axis minus the radius) are found on a grid
    four times coarser in-plane, with the distance to the plane where the two are equally near
    (their difference over the difference of their gradients). Fat lies within half of
    ``width`` (mm, 1-4 mm) of that plane, shifted by ``wiggle`` mm. Real deep tissue of the
    hip region: 29-50% of it brighter than 0.4 times the 99.5th percentile, as fat.
    """
    q = grid.coarse_coords(4)
    big = np.float32(1e4)
    d1, d2 = np.full(q[0].shape, big, dtype=np.float32), np.full(q[0].shape, big, dtype=np.float32)
    g1 = [np.zeros(q[0].shape, dtype=np.float32) for _ in range(3)]
    g2 = [np.zeros(q[0].shape, dtype=np.float32) for _ in range(3)]
    for side, femur in femurs:
        for a, b, r in _muscle_axes(femur):
            a, b = a * np.array([side, 1.0, 1.0]), b * np.array([side, 1.0, 1.0])
            ba = b - a
            t = np.clip(sum((q[c] - np.float32(a[c])) * np.float32(ba[c] / (ba @ ba)) for c in range(3)),
                        0.0, 1.0)
            diff = [q[c] - (np.float32(a[c]) + t * np.float32(ba[c])) for c in range(3)]
            norm = np.maximum(_length(*diff), np.float32(1e-3))
            d = norm - np.float32(r)
            first, second = d < d1, d < d2
            for c in range(3):
                unit = diff[c] / norm
                g2[c] = np.where(first, g1[c], np.where(second, unit, g2[c]))
                g1[c] = np.where(first, unit, g1[c])
            d2 = np.where(first, d1, np.minimum(d2, d))
            d1 = np.minimum(d1, d)
    slope = np.maximum(_length(g2[0] - g1[0], g2[1] - g1[1], g2[2] - g1[2]), np.float32(0.5))
    dist = _upsample((d2 - d1) / slope, grid.shape)  # distance to the plane between the two
    dist += wiggle
    return np.clip(0.5 + (0.5 * width - np.abs(dist)) * (1.0 / 0.6), 0.0, 1.0)


def _spine_levels(sp: dict, sacrum: _Sacrum):
    """(z_bottom, z_top, y_centre) of the lumbar vertebral bodies from L5 upward."""
    levels = []
    z = sacrum.top + sp["disc"]
    for _ in range(5):
        levels.append((z, z + sp["body_height"], sp["y"] - 0.1 * (z - sacrum.top)))
        z += sp["body_height"] + sp["disc"]
    return levels


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
    direction = _rotation(p["oblique_axis"], oblique_deg) @ LIP_DIRECTION
    tilt, roll, yaw = p["frame_rotation_deg"]
    frame = _rotation([1, 0, 0], tilt) @ _rotation([0, 1, 0], roll) @ _rotation([0, 0, 1], yaw)
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
    grid = _Grid(size, spacing, direction, origin, frame, centre)
    rng = np.random.default_rng(p["texture_seed"])
    image, labels, tissues = _render(grid, p, rng)
    if bias:
        image *= _bias_field(grid, p, image, (tissues == TISSUES["marrow"]) & (labels == FEMUR),
                             _fov_mask(grid, p))
    if noise:
        sigma = np.float32(p["noise_sigma"])
        real = image + sigma * _recon_noise(rng, image.shape)
        imag = sigma * _recon_noise(rng, image.shape)
        image = np.sqrt(real * real + imag * imag)
    image *= _fov_mask(grid, p)
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


def _render(grid: _Grid, p: dict, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint front to back; returns the noise-free image, the label map and the tissue map."""
    v, a, sp, shape = p["contrast"], p["half_separation"], grid.spacing, grid.shape
    cv = _Canvas(grid)
    full = grid.full()
    fine = _smooth_noise(rng, shape, sp, (0.5, 0.5, 1.0))
    streak = _smooth_noise(rng, shape, sp, (0.6, 2.0, 2.0))
    septa_field = _smooth_noise(rng, shape, sp, (5.0, 25.0, 8.0), coarse=4)
    organ_field = _smooth_noise(rng, shape, sp, (5.0, 5.0, 5.0), coarse=2)
    patch_field = _smooth_noise(rng, shape, sp, (15.0, 25.0, 15.0), coarse=4)
    gas_field = _smooth_noise(rng, shape, sp, (4.0, 4.0, 4.0), coarse=2)

    # skin, subcutaneous fat, muscle with fat septa
    b = p["body"]
    q = grid.coords(full)
    skin = _body(q, b, a)
    deep = skin + np.float32(b["fat"]) * _fat_profile(q)
    # many small muscles (and fat planes) around the hips, few big ones along the thighs
    hip_region = np.clip((q[2] + np.float32(90.0)) * np.float32(1.0 / 40.0), 0.0, 1.0)
    del q
    cv.paint(full, lambda _: skin, v["skin"], "skin")
    cv.paint(full, lambda _: skin + np.float32(1.5), v["fat"] * (1.0 + 0.035 * fine), "fat")
    muscle = v["muscle"] * (1.0 + 0.12 * streak + 0.05 * fine + 0.07 * patch_field)
    # fat planes between the muscles, and thin septa within them
    femurs = [(-1, _Femur(a, p["right"])), (1, _Femur(a, p["left"]))]
    fat_weight = _intermuscular_fat(grid, femurs, np.float32(1.0) * septa_field,
                                     (np.float32(4.0) + np.float32(1.2) * organ_field)
                                     * (np.float32(0.5) + np.float32(0.5) * hip_region))
    for level in (-1.0, 0.0, 1.0):  # several families of thin septa
        septa = 0.9 * np.exp(-((septa_field - np.float32(level)) * np.float32(1 / 0.08)) ** 2)
        np.maximum(fat_weight, septa * (np.float32(0.5) + np.float32(0.5) * hip_region) if level == 0.0
                   else septa * hip_region, out=fat_weight)
    del septa, hip_region
    femur_sdf = {}  # muscles attach to the femur: no fat on its surface
    for side, femur in femurs:
        fbox = grid.box(*_mirror_box(*femur.bounds(), side))
        if fbox is not None:
            F = femur.sdf(_mirrored(grid.coords(fbox), side))
            femur_sdf[side] = (fbox, F)
            fat_weight[fbox] *= np.clip((F - 1.0) * (1.0 / 4.0), 0.0, 1.0)
    muscle += fat_weight * (np.float32(v["fat"]) * (1.0 + 0.035 * fine) - muscle)
    cv.paint(full, lambda _: deep, muscle, "muscle")
    cv.tissues[(cv.tissues == TISSUES["muscle"]) & (fat_weight > 0.5)] = TISSUES["fat"]
    del skin, deep, fat_weight

    # pelvic and abdominal cavity: fat, bowel loops with gas, bladder, rectum, pelvic organs
    bowel = np.clip((organ_field - 0.5) * 3.0, 0.0, 1.0)
    viscera = v["fat"] * (0.93 + 0.04 * fine)
    viscera += bowel * (v["bowel"] * (1.0 + 0.15 * fine) - viscera)
    viscera *= 1.0 - 0.9 * np.clip((gas_field - 2.0) * 2.0, 0.0, 1.0) * bowel
    cv.paint(grid.box((-150, -110, -60), (150, 90, 400)), lambda q: _cavity(q, a), viscera, "viscera")
    del viscera, bowel
    bl = p["bladder"]
    r, c = bl["radius"], np.asarray(bl["centre"])
    cv.paint(grid.box(c - 1.3 * r, c + 1.3 * r),
             lambda q: _ellipsoid(q, c, (1.15 * r, 0.9 * r, 0.85 * r)), v["urine"], "urine")
    sac = _Sacrum(p["sacrum"])
    pts = [(0.0, float(sac.centre_y(z)) - 32.0, z) for z in (70.0, 30.0, -10.0)] + [(0.0, 50.0, -60.0)]
    rectum = v["bowel"] * (1.0 + 0.25 * organ_field)
    for p0, p1 in zip(pts[:-1], pts[1:]):
        cv.paint(grid.box(np.minimum(p0, p1) - 20, np.maximum(p0, p1) + 20),
                 lambda q, p0=p0, p1=p1: _capsule(q, p0, p1, 13.0), rectum, "bowel")
    cv.paint(grid.box((-30, -20, -45), (30, 35, 10)),
             lambda q: _ellipsoid(q, (0.0, 10.0, -18.0), (20.0, 15.0, 17.0)), 1.15 * v["muscle"], "organ")

    # lumbar spine and sacrum
    # vertebral marrow is darker than the pelvis' (real: 0.55-0.75 times the femoral marrow)
    vert = v["marrow"] * 0.65 * (1.0 + 0.1 * fine)
    sacral = v["marrow"] * 0.97 * (1.0 + 0.12 * fine)
    disc = p["spine"]["disc"]
    for z0, z1, y in _spine_levels(p["spine"], sac):
        zc = 0.5 * (z0 + z1)
        box = grid.box((-60, y - 30, z0 - 12), (60, y + 75, z1 + 12))
        cv.paint(box, lambda q, zc=zc, y=y, h=z1 - z0: _vertebra(q, zc, y, h), vert, "marrow", label=SPINE,
                 cortex=(1.5, v["cortex"]))
        cv.paint(box, lambda q, zc=zc, y=y: _capsule(q, (0, y + 26, zc - 25), (0, y + 26, zc + 25), 7.5),
                 v["csf"], "csf")
        zd = z0 - 0.5 * disc
        cv.paint(grid.box((-35, y - 25, zd - 10), (35, y + 25, zd + 10)),
                 lambda q, zd=zd, y=y: np.maximum(_ellipsoid(q, (0, y, zd), (25.0, 18.0, 60.0)),
                                                  np.abs(q[2] - zd) - (0.5 * disc + 0.6)),
                 v["disc"], "disc", label=SPINE)
    # the real masks label the sacrum down to about S3 only
    cv.paint(grid.box((-70, 0, -15), (70, 160, 140)),
             lambda q: (lambda F: (F, np.maximum(F, sac.top - 45.0 - q[2])))(sac.sdf(q)), sacral, "marrow",
             label=SACRUM, cortex=(1.8, v["cortex"]))

    # each side: iliacus and psoas, femoral vessels, hip bone, joint cartilage, femur
    marrow = v["marrow"] * (1.0 + 0.075 * fine + 0.08 * organ_field + 0.04 * patch_field)
    pelvis_marrow = v["marrow"] * 0.97 * (1.0 + 0.14 * fine + 0.05 * organ_field)
    for (side, femur), name in zip(femurs, ("right", "left")):
        hip = _HipBone(femur, p[name], a, sac)

        def on_side(fn, side=side):
            return lambda q: fn(_mirrored(q, side))

        def box(lo, hi, side=side):
            return grid.box(*_mirror_box(lo, hi, side))

        # fat of the femoral triangle (around the femoral vessels) and of the ischioanal fossa
        H = femur.head
        for centre, radii in (((H[0] - 22.0, -42.0, H[2] - 40.0), (22.0, 16.0, 45.0)),
                              ((H[0] - 50.0, 38.0, H[2] - 55.0), (16.0, 24.0, 28.0))):
            c3, r3 = np.asarray(centre), np.asarray(radii)
            fbox = box(c3 - r3 - 6.0, c3 + r3 + 6.0)
            if fbox is not None:
                wobble = np.float32(3.0) * septa_field[fbox]
                cv.paint(fbox, on_side(lambda q, c3=c3, r3=r3, wobble=wobble: _ellipsoid(q, c3, r3) + wobble),
                         v["fat"] * (1.0 + 0.035 * fine), "fat")
        # obturator internus: a muscle layer on the inner face of the acetabulum and ischium
        # (the hip bone's implicit function is computed once, for this and for the bone)
        hip_box = box((0, -60, -80), (a + 60, 100, 160))
        if hip_box is not None:
            hq = _mirrored(grid.coords(hip_box), side)
            hip_F = hip.sdf(hq)
            cx, cz = float(femur.head[0]), float(femur.head[2])
            cv.paint(hip_box, lambda _: np.maximum(
                np.maximum(hip_F[0] - 8.0, hq[0] - (cx - 15.0)),
                np.maximum(hq[2] - (cz + 35.0), (cz - 65.0) - hq[2])), muscle, "muscle")
            del hq
        cv.paint(box((0, -80, 0), (a + 70, 90, 170)), on_side(hip.iliacus), muscle, "muscle")
        pts = [(28.0, p["spine"]["y"] + 4.0, 240.0), (44.0, 8.0, 110.0), (62.0, -16.0, 30.0),
               (a - 6.0, -34.0, -12.0), (a + 14.0, 4.0, -70.0)]
        radii = [12.0, 20.0, 21.0, 17.0, 11.0]
        for n in range(len(pts) - 1):
            p0, p1, r01 = pts[n], pts[n + 1], (radii[n], radii[n + 1])
            cv.paint(box(np.minimum(p0, p1) - 25, np.maximum(p0, p1) + 25),
                     on_side(lambda q, p0=p0, p1=p1, r01=r01: _capsule(q, p0, p1, r01)), muscle, "muscle")
        for dx, r in ((-14.0, 4.0), (-25.0, 5.5)):  # femoral artery and vein: dark flow voids
            p0, p1 = (a + dx, -46.0, 45.0), (a + dx + 10.0, -42.0, -300.0)
            cv.paint(box((a + dx - 10, -56, -300), (a + dx + 20, -30, 55)),
                     on_side(lambda q, p0=p0, p1=p1, r=r: _capsule(q, p0, p1, r)), v["vessel"], "vessel")
        c = femur.head
        cv.paint(box(*femur.capsule_bounds()),
                 on_side(femur.capsule_sdf), 0.75 * muscle, "muscle")
        cv.paint(box(femur.trochanter - 30.0, femur.trochanter + 30.0),
                 on_side(femur.tendon_sdf), 0.7 * muscle, "muscle")
        cv.paint(box(c - hip.r_cup - 4, c + hip.r_cup + 4),
                 on_side(lambda q, c=c, r=hip.r_cup - 0.5: _sphere(q, c, r)), v["cartilage"], "cartilage")
        if hip_box is not None:
            cv.paint(hip_box, lambda _: hip_F, pelvis_marrow, "marrow", label=ILIUM,
                     cortex=(1.6, v["cortex"]))
            del hip_F
        if side in femur_sdf:
            femur_box, F = femur_sdf.pop(side)
            q = _mirrored(grid.coords(femur_box), side)
            marrow[femur_box] *= femur.marrow_shading(q) - femur.scar_darkening(q)
            del q
            cv.paint(femur_box, lambda _, F=F: F, marrow, "marrow", label=FEMUR,
                     cortex=(on_side(femur.cortex_thickness), v["cortex"]), label_inside_cortex=True)
    return cv.image, cv.labels, cv.tissues


#: In-plane blur (voxels) of the reconstructed noise: the real scans' background noise has a
#: magnitude neighbour correlation of 0.26-0.37 (interpolated reconstruction); this blur gives 0.3.
NOISE_BLUR_VOXELS = 0.75


def _recon_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Unit-variance Gaussian noise, correlated between in-plane neighbours like the real scans'."""
    x = np.arange(-2, 3, dtype=np.float64)
    w = np.exp(-0.5 * (x / NOISE_BLUR_VOXELS) ** 2)
    w /= np.sqrt(np.sum(w * w))  # keeps the variance of white noise
    out = rng.standard_normal(shape, dtype=np.float32)
    for axis in (1, 2):
        if shape[axis] > 1:
            out = ndimage.correlate1d(out, w.astype(np.float32), axis=axis, mode="wrap")
    return out


def _bias_field(grid: _Grid, p: dict, image: np.ndarray, femoral_marrow: np.ndarray,
                fov: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field: low-order drift and surface-coil shading.

    The coils brighten the body surface: front and back (up to about 1.7 times) and above all the
    flanks, where the real scans' brightest voxels lie. On the real scans the median of the
    bone marrow is 0.45 to 0.61 times the 99.5th percentile of the image (what intensity
    normalisation divides by; median 0.53, half of them between 0.52 and 0.56): the flank gain is
    solved for so that the phantom's femoral marrow (all of it, before noise) comes out at
    ``marrow_level`` (0.51-0.57) times its percentile; measured away from the edges of the
    mask, as on the real scans, that gives 0.53-0.60.
    """
    x, y, z = grid.coords(grid.full())
    X, Y, Z = x * (1 / 175.0), y * (1 / 120.0), (z - 60.0) * (1 / 175.0)
    c = p["bias"]["coefficients"]
    out = np.exp(c[0] * X + c[1] * Y + c[2] * Z + c[3] * X * X + c[4] * Z * Z + c[5] * X * Z)
    out *= 1.0 + p["bias"]["coil"] * np.minimum(Y * Y, 1.5)
    flank = np.clip((np.abs(X) - 0.75) * (1 / 0.25), 0.0, 1.0)  # lateral of the femurs
    flank *= flank
    del x, y, z, X, Y, Z
    # bisection on a regular subsample (the percentile grows with the gain)
    step = max(1, image.size // 400_000)
    base = (image * out * fov).ravel()[::step]
    fl = flank.ravel()[::step]
    marrow = base[femoral_marrow.ravel()[::step]]
    target = (np.median(marrow) if marrow.size else p["contrast"]["marrow"]) / p["bias"]["marrow_level"]
    lo, hi = 0.0, 2.5
    for _ in range(14):
        gain = 0.5 * (lo + hi)
        if np.percentile(base * (1.0 + np.float32(gain) * fl), 99.5) < target:
            lo = gain
        else:
            hi = gain
    gain = 0.5 * (lo + hi)
    p["bias"]["lateral_coil"] = gain
    out *= 1.0 + np.float32(gain) * flank
    return out


def _fov_mask(grid: _Grid, p: dict) -> np.ndarray:
    """1 inside the barrel-shaped area that distortion correction keeps, 0 in the corners."""
    _, J, I = grid.shape
    m = p["fov_mask"]
    u = (np.arange(I, dtype=np.float32) - (I - 1) / 2) / (I / 2)
    v = (np.arange(J, dtype=np.float32) - (J - 1) / 2) / (J / 2)
    U = np.abs(u[None, :] + m["shift"] * v[:, None])
    inside = U ** m["power"] + np.abs(v[:, None]) ** m["power"] <= m["extent"] ** m["power"]
    return inside.astype(np.float32)[None, :, :]


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
