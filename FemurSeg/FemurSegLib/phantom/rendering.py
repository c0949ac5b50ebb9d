"""Rendering the phantom on a voxel grid: partial volumes painted front to back, textures, the bias
field, reconstructed noise and the field-of-view mask.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
from scipy import ndimage

from .anatomy import (FEMUR, ILIUM, SACRUM, SPINE, TISSUES, Femur, HipBone, Sacrum, body_surface,
                      cavity, fat_profile, mirror_box, mirrored, muscle_axes, spine_levels, vertebra)
from .calibration import LABEL_INTO_CORTEX_MM, NOISE_BLUR_VOXELS, PSF_MM
from .shapes import capsule, ellipsoid, magnitude, sphere

# ----------------------------------------------------------------------------------------------
# The voxel grid, partial-volume fractions and painting


class Grid:
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


class Canvas:
    """Image and label arrays, painted front to back."""

    def __init__(self, grid: Grid):
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


def _intermuscular_fat(grid: "Grid", femurs, wiggle: np.ndarray, width: np.ndarray) -> np.ndarray:
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
        for a, b, r in muscle_axes(femur):
            a, b = a * np.array([side, 1.0, 1.0]), b * np.array([side, 1.0, 1.0])
            ba = b - a
            t = np.clip(sum((q[c] - np.float32(a[c])) * np.float32(ba[c] / (ba @ ba)) for c in range(3)),
                        0.0, 1.0)
            diff = [q[c] - (np.float32(a[c]) + t * np.float32(ba[c])) for c in range(3)]
            norm = np.maximum(magnitude(*diff), np.float32(1e-3))
            d = norm - np.float32(r)
            first, second = d < d1, d < d2
            for c in range(3):
                unit = diff[c] / norm
                g2[c] = np.where(first, g1[c], np.where(second, unit, g2[c]))
                g1[c] = np.where(first, unit, g1[c])
            d2 = np.where(first, d1, np.minimum(d2, d))
            d1 = np.minimum(d1, d)
    slope = np.maximum(magnitude(g2[0] - g1[0], g2[1] - g1[1], g2[2] - g1[2]), np.float32(0.5))
    dist = _upsample((d2 - d1) / slope, grid.shape)  # distance to the plane between the two
    dist += wiggle
    return np.clip(0.5 + (0.5 * width - np.abs(dist)) * (1.0 / 0.6), 0.0, 1.0)


def render(grid: Grid, p: dict, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint front to back; returns the noise-free image, the label map and the tissue map."""
    v, a, spacing, shape = p["contrast"], p["half_separation"], grid.spacing, grid.shape
    cv = Canvas(grid)
    full = grid.full()
    fine = _smooth_noise(rng, shape, spacing, (0.5, 0.5, 1.0))
    streak = _smooth_noise(rng, shape, spacing, (0.6, 2.0, 2.0))
    septa_field = _smooth_noise(rng, shape, spacing, (5.0, 25.0, 8.0), coarse=4)
    organ_field = _smooth_noise(rng, shape, spacing, (5.0, 5.0, 5.0), coarse=2)
    patch_field = _smooth_noise(rng, shape, spacing, (15.0, 25.0, 15.0), coarse=4)
    gas_field = _smooth_noise(rng, shape, spacing, (4.0, 4.0, 4.0), coarse=2)

    # skin, subcutaneous fat, muscle with fat septa
    b = p["body"]
    q = grid.coords(full)
    skin = body_surface(q, b, a)
    deep = skin + np.float32(b["fat"]) * fat_profile(q)
    # many small muscles (and fat planes) around the hips, few big ones along the thighs
    hip_region = np.clip((q[2] + np.float32(90.0)) * np.float32(1.0 / 40.0), 0.0, 1.0)
    del q
    cv.paint(full, lambda _, skin=skin: skin, v["skin"], "skin")
    cv.paint(full, lambda _, skin=skin: skin + np.float32(1.5), v["fat"] * (1.0 + 0.035 * fine), "fat")
    muscle = v["muscle"] * (1.0 + 0.12 * streak + 0.05 * fine + 0.07 * patch_field)
    # fat planes between the muscles, and thin septa within them
    femurs = [(-1, Femur(a, p["right"])), (1, Femur(a, p["left"]))]
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
        fbox = grid.box(*mirror_box(*femur.bounds(), side))
        if fbox is not None:
            F = femur.sdf(mirrored(grid.coords(fbox), side))
            femur_sdf[side] = (fbox, F)
            fat_weight[fbox] *= np.clip((F - 1.0) * (1.0 / 4.0), 0.0, 1.0)
    muscle += fat_weight * (np.float32(v["fat"]) * (1.0 + 0.035 * fine) - muscle)
    cv.paint(full, lambda _, deep=deep: deep, muscle, "muscle")
    cv.tissues[(cv.tissues == TISSUES["muscle"]) & (fat_weight > 0.5)] = TISSUES["fat"]
    del skin, deep, fat_weight

    # pelvic and abdominal cavity: fat, bowel loops with gas, bladder, rectum, pelvic organs
    bowel = np.clip((organ_field - 0.5) * 3.0, 0.0, 1.0)
    viscera = v["fat"] * (0.93 + 0.04 * fine)
    viscera += bowel * (v["bowel"] * (1.0 + 0.15 * fine) - viscera)
    viscera *= 1.0 - 0.9 * np.clip((gas_field - 2.0) * 2.0, 0.0, 1.0) * bowel
    cv.paint(grid.box((-150, -110, -60), (150, 90, 400)), lambda q: cavity(q, a), viscera, "viscera")
    del viscera, bowel
    bl = p["bladder"]
    r, c = bl["radius"], np.asarray(bl["centre"])
    cv.paint(grid.box(c - 1.3 * r, c + 1.3 * r),
             lambda q: ellipsoid(q, c, (1.15 * r, 0.9 * r, 0.85 * r)), v["urine"], "urine")
    sac = Sacrum(p["sacrum"])
    pts = [(0.0, float(sac.centre_y(z)) - 32.0, z) for z in (70.0, 30.0, -10.0)] + [(0.0, 50.0, -60.0)]
    rectum = v["bowel"] * (1.0 + 0.25 * organ_field)
    for p0, p1 in zip(pts[:-1], pts[1:]):
        cv.paint(grid.box(np.minimum(p0, p1) - 20, np.maximum(p0, p1) + 20),
                 lambda q, p0=p0, p1=p1: capsule(q, p0, p1, 13.0), rectum, "bowel")
    cv.paint(grid.box((-30, -20, -45), (30, 35, 10)),
             lambda q: ellipsoid(q, (0.0, 10.0, -18.0), (20.0, 15.0, 17.0)), 1.15 * v["muscle"], "organ")

    # lumbar spine and sacrum
    # vertebral marrow is darker than the pelvis' (real: 0.55-0.75 times the femoral marrow)
    vert = v["marrow"] * 0.65 * (1.0 + 0.1 * fine)
    sacral = v["marrow"] * 0.97 * (1.0 + 0.12 * fine)
    disc = p["spine"]["disc"]
    for z0, z1, y in spine_levels(p["spine"], sac):
        zc = 0.5 * (z0 + z1)
        box = grid.box((-60, y - 30, z0 - 12), (60, y + 75, z1 + 12))
        cv.paint(box, lambda q, zc=zc, y=y, h=z1 - z0: vertebra(q, zc, y, h), vert, "marrow", label=SPINE,
                 cortex=(1.5, v["cortex"]))
        cv.paint(box, lambda q, zc=zc, y=y: capsule(q, (0, y + 26, zc - 25), (0, y + 26, zc + 25), 7.5),
                 v["csf"], "csf")
        zd = z0 - 0.5 * disc
        cv.paint(grid.box((-35, y - 25, zd - 10), (35, y + 25, zd + 10)),
                 lambda q, zd=zd, y=y: np.maximum(ellipsoid(q, (0, y, zd), (25.0, 18.0, 60.0)),
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
        hip = HipBone(femur, p[name], a, sac)

        def on_side(fn, side=side):
            return lambda q: fn(mirrored(q, side))

        def box(lo, hi, side=side):
            return grid.box(*mirror_box(lo, hi, side))

        # fat of the femoral triangle (around the femoral vessels) and of the ischioanal fossa
        H = femur.head
        for centre, radii in (((H[0] - 22.0, -42.0, H[2] - 40.0), (22.0, 16.0, 45.0)),
                              ((H[0] - 50.0, 38.0, H[2] - 55.0), (16.0, 24.0, 28.0))):
            c3, r3 = np.asarray(centre), np.asarray(radii)
            fbox = box(c3 - r3 - 6.0, c3 + r3 + 6.0)
            if fbox is not None:
                wobble = np.float32(3.0) * septa_field[fbox]
                cv.paint(fbox, on_side(lambda q, c3=c3, r3=r3, wobble=wobble: ellipsoid(q, c3, r3) + wobble),
                         v["fat"] * (1.0 + 0.035 * fine), "fat")
        # obturator internus: a muscle layer on the inner face of the acetabulum and ischium
        # (the hip bone's implicit function is computed once, for this and for the bone)
        hip_box = box((0, -60, -80), (a + 60, 100, 160))
        if hip_box is not None:
            hq = mirrored(grid.coords(hip_box), side)
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
                     on_side(lambda q, p0=p0, p1=p1, r01=r01: capsule(q, p0, p1, r01)), muscle, "muscle")
        for dx, r in ((-14.0, 4.0), (-25.0, 5.5)):  # femoral artery and vein: dark flow voids
            p0, p1 = (a + dx, -46.0, 45.0), (a + dx + 10.0, -42.0, -300.0)
            cv.paint(box((a + dx - 10, -56, -300), (a + dx + 20, -30, 55)),
                     on_side(lambda q, p0=p0, p1=p1, r=r: capsule(q, p0, p1, r)), v["vessel"], "vessel")
        c = femur.head
        cv.paint(box(*femur.capsule_bounds()),
                 on_side(femur.capsule_sdf), 0.75 * muscle, "muscle")
        cv.paint(box(femur.trochanter - 30.0, femur.trochanter + 30.0),
                 on_side(femur.tendon_sdf), 0.7 * muscle, "muscle")
        cv.paint(box(c - hip.r_cup - 4, c + hip.r_cup + 4),
                 on_side(lambda q, c=c, r=hip.r_cup - 0.5: sphere(q, c, r)), v["cartilage"], "cartilage")
        if hip_box is not None:
            cv.paint(hip_box, lambda _: hip_F, pelvis_marrow, "marrow", label=ILIUM,
                     cortex=(1.6, v["cortex"]))
            del hip_F
        if side in femur_sdf:
            femur_box, F = femur_sdf.pop(side)
            q = mirrored(grid.coords(femur_box), side)
            marrow[femur_box] *= femur.marrow_shading(q) - femur.scar_darkening(q)
            del q
            cv.paint(femur_box, lambda _, F=F: F, marrow, "marrow", label=FEMUR,
                     cortex=(on_side(femur.cortex_thickness), v["cortex"]), label_inside_cortex=True)
    return cv.image, cv.labels, cv.tissues



def recon_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Unit-variance Gaussian noise, correlated between in-plane neighbours like the real scans'."""
    x = np.arange(-2, 3, dtype=np.float64)
    w = np.exp(-0.5 * (x / NOISE_BLUR_VOXELS) ** 2)
    w /= np.sqrt(np.sum(w * w))  # keeps the variance of white noise
    out = rng.standard_normal(shape, dtype=np.float32)
    for axis in (1, 2):
        if shape[axis] > 1:
            out = ndimage.correlate1d(out, w.astype(np.float32), axis=axis, mode="wrap")
    return out


def bias_field(grid: Grid, p: dict, image: np.ndarray, femoral_marrow: np.ndarray,
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


def fov_mask(grid: Grid, p: dict) -> np.ndarray:
    """1 inside the barrel-shaped area that distortion correction keeps, 0 in the corners."""
    _, J, I = grid.shape
    m = p["fov_mask"]
    u = (np.arange(I, dtype=np.float32) - (I - 1) / 2) / (I / 2)
    v = (np.arange(J, dtype=np.float32) - (J - 1) / 2) / (J / 2)
    U = np.abs(u[None, :] + m["shift"] * v[:, None])
    inside = U ** m["power"] + np.abs(v[:, None]) ** m["power"] <= m["extent"] ** m["power"]
    return inside.astype(np.float32)[None, :, :]


