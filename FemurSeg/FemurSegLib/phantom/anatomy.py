"""The phantom's anatomy as implicit shapes in the patient frame (mm; x Left, y Posterior, z Superior).

Femur and hip bone are built per side in a mirrored frame (+x lateral on both sides, see
:func:`mirrored`); their landmarks also place the muscles (:func:`muscle_axes`).
"""

from __future__ import annotations

import math

import numpy as np

from .shapes import (Vec, as_point, capsule, ellipsoid, interp, magnitude, rotate, rounded_rect,
                     smooth_union, sphere, unit_vector)

#: Label values, as in the real data set.
BACKGROUND, FEMUR, ILIUM, SPINE, SACRUM = 0, 1, 2, 3, 4
LABEL_NAMES = {BACKGROUND: "background", FEMUR: "femur", ILIUM: "ilium", SPINE: "spine",
               SACRUM: "sacrum"}
#: Tissue codes of :attr:`.build.Phantom.tissues` (the tissue at each voxel centre).
TISSUES = {"air": 0, "skin": 1, "fat": 2, "muscle": 3, "viscera": 4, "urine": 5, "bowel": 6,
           "organ": 7, "cortex": 8, "marrow": 9, "disc": 10, "csf": 11, "cartilage": 12,
           "vessel": 13}


def mirrored(p, side: int):
    return (p[0] * np.float32(side), p[1], p[2])


def mirror_box(lo, hi, side: int):
    lo, hi = np.array(lo, dtype=float), np.array(hi, dtype=float)
    if side < 0:
        lo[0], hi[0] = -hi[0], -lo[0]
    return lo, hi


class Femur:
    """Proximal femur: head, neck, trochanters and the shaft to below the field of view."""

    def __init__(self, a: float, side_params: dict):
        self.r_head = side_params["head_radius"]
        self.head = np.array([a, 0.0, 0.0]) + np.asarray(side_params["head_shift"])
        tilt, ap = math.radians(side_params["shaft_tilt"]), math.radians(side_params["shaft_ap_tilt"])
        s = unit_vector([-math.sin(tilt), math.sin(ap), -math.cos(tilt)])  # shaft, toward distal
        axis = unit_vector(np.cross(s, [-1.0, 0.0, 0.0]))
        neck = rotate(s, axis, side_params["neck_shaft_angle"])
        if neck[0] > 0:  # the head must lie medial of the shaft
            neck = rotate(s, axis, -side_params["neck_shaft_angle"])
        # anteversion: turn the neck about the shaft so that the head comes forward (-y)
        neck = min((rotate(neck, s, sign * side_params["anteversion"]) for sign in (1, -1)),
                   key=lambda v: v[1])
        self.shaft = s
        self.junction = self.head - side_params["neck_length"] * neck
        lat = np.array([1.0, 0.0, 0.0])
        self.lateral = unit_vector(lat - (lat @ s) * s)
        post = np.cross(s, self.lateral)
        self.posterior = post if post[1] > 0 else -post
        self.r_shaft = side_params["shaft_radius"]
        self.cortex = (side_params["head_cortex"], side_params["shaft_cortex"])
        self.calcar = side_params["calcar_cortex"]
        self.neck = neck
        self.scar = self.head - side_params["physeal_scar"] * self.r_head * neck

    def bounds(self):
        lo = np.minimum(self.head - self.r_head, self.junction - 45.0) - 5.0
        hi = np.maximum(self.head + self.r_head, self.junction + 45.0) + 5.0
        lo[2] = -1000.0
        return lo, hi

    def sdf(self, p):
        J, s, post = self.junction, self.shaft, self.posterior
        F = sphere(p, self.head, self.r_head)
        F = smooth_union(F, capsule(p, self.head, J, 0.66 * self.r_head, y_scale=0.82), 5.0)
        shaft = capsule(p, J - 12.0 * s, J + 1000.0 * s, self.r_shaft)
        body = ellipsoid(p, J + 12.0 * s + 3.0 * post, (1.5 * self.r_shaft, 1.43 * self.r_shaft, 30.0))
        F = smooth_union(F, smooth_union(shaft, body, 10.0), 10.0)
        greater = ellipsoid(p, self.trochanter, (11.0, 14.0, 20.0))
        F = smooth_union(F, greater, 8.0)
        lesser = ellipsoid(p, self.lesser_trochanter, (8.0, 7.0, 9.0))
        return smooth_union(F, lesser, 5.0)

    def cortex_thickness(self, p):
        """Thin cortex at the head and greater trochanter, thick on the shaft and the calcar.

        As the dark band measured on the real scans: 0-3 mm laterally down to the lesser
        trochanter, 0-5 mm (median 2.7) on the medial side of the neck (the calcar), 5-7 mm on
        the shaft from about 80 mm below the head centre.
        """
        H, s = as_point(self.head), as_point(self.shaft)
        J, lat = as_point(self.junction), as_point(self.lateral)
        along = (p[0] - H[0]) * s[0] + (p[1] - H[1]) * s[1] + (p[2] - H[2]) * s[2]
        medial = (J[0] - p[0]) * lat[0] + (J[1] - p[1]) * lat[1] + (J[2] - p[2]) * lat[2]
        t = np.clip((along - 40.0) * (1.0 / 40.0), 0.0, 1.0)
        shaft = self.cortex[0] + (self.cortex[1] - self.cortex[0]) * t
        # the calcar lines the lower (inferomedial) side of the neck only
        n = as_point(self.neck)
        down = as_point(unit_vector(self.shaft - (self.shaft @ self.neck) * self.neck))
        dx, dy, dz = p[0] - H[0], p[1] - H[1], p[2] - H[2]
        t = dx * n[0] + dy * n[1] + dz * n[2]
        rx, ry, rz = dx - t * n[0], dy - t * n[1], dz - t * n[2]
        below = (rx * down[0] + ry * down[1] + rz * down[2]) / np.maximum(magnitude(rx, ry, rz), 1e-3)
        calcar = (self.calcar * np.clip((along - 20.0) * (1.0 / 12.0), 0.0, 1.0)
                  * np.clip(medial * (1.0 / 8.0), 0.0, 1.0) * np.clip(below, 0.0, 1.0) ** 2)
        return np.maximum(shaft, calcar)

    def capsule_sdf(self, p, gap: float = 3.0):
        """The joint capsule: a dark sleeve 2 mm thick from the acetabular rim to the trochanters.

        On the real scans the capsule and its ligaments line the neck above and below as dark
        bands between the bone and the surrounding muscle and fat.
        """
        H, n = as_point(self.head), as_point(-self.neck)
        r, length = self.r_head, float(np.linalg.norm(self.junction - self.head))
        dx, dy, dz = p[0] - H[0], p[1] - H[1], p[2] - H[2]
        along = dx * n[0] + dy * n[1] + dz * n[2]
        rho = magnitude(dx - along * n[0], dy - along * n[1], dz - along * n[2])
        t0, t1 = 0.45 * r, length - 6.0
        r0 = math.sqrt(max((r + gap) ** 2 - t0 ** 2, 1.0)) + 1.0
        radius = interp(along, [t0, t1], [r0, 0.66 * r + gap + 2.0])
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
        G, u = as_point(self.trochanter), as_point(unit_vector(self.lateral - self.shaft))
        d = magnitude(p[0] - G[0], p[1] - G[1], p[2] - G[2])
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
        H, s = as_point(self.head), as_point(self.shaft)
        J, lat = as_point(self.junction), as_point(self.lateral)
        along = (p[0] - H[0]) * s[0] + (p[1] - H[1]) * s[1] + (p[2] - H[2]) * s[2]
        lateral = (p[0] - J[0]) * lat[0] + (p[1] - J[1]) * lat[1] + (p[2] - J[2]) * lat[2]
        shaft = np.clip((along - 30.0) * (1.0 / 60.0), 0.0, 1.0)
        trochanter = np.clip((lateral - 5.0) * (1.0 / 12.0), 0.0, 1.0) * (1.0 - shaft)
        return 1.0 + 0.1 * trochanter - 0.1 * shaft

    def scar_darkening(self, p):
        """Relative darkening (0..0.15) along the physeal scar, a thin plane across the head base."""
        c, n = as_point(self.scar), as_point(self.neck)
        d = (p[0] - c[0]) * n[0] + (p[1] - c[1]) * n[1] + (p[2] - c[2]) * n[2]
        near = magnitude(p[0] - c[0], p[1] - c[1], p[2] - c[2]) < 1.2 * self.r_head
        return np.where(near, 0.15 * np.exp(-(d * (1.0 / 0.8)) ** 2), 0.0)


class HipBone:
    """Ilium (wing and acetabulum), ischium and pubis of one side."""

    def __init__(self, femur: Femur, side_params: dict, a: float, sacrum: "Sacrum"):
        self.c = as_point(femur.head)
        self.r = femur.r_head
        self.r_cup = femur.r_head + side_params["joint_gap"]
        inc, av = math.radians(side_params["cup_inclination"]), math.radians(side_params["cup_anteversion"])
        self.opening = as_point([math.sin(inc) * math.cos(av), -math.sin(av), -math.cos(inc)])
        self.side_params = side_params
        self.a = a
        self.sacrum = sacrum

    def _rel(self, p):
        return p[0] - self.c[0], p[1] - self.c[1], p[2] - self.c[2]

    def wing(self, p):
        """The wing as a sheet whose lateral position varies with height and depth.

        Returns the shape and the signed distance from its inner (medial) face.
        """
        u, y, z = self._rel(p)
        params = self.side_params
        k_ant = interp(z, [20.0, 40.0, 60.0, 100.0], [0.2, 0.3, 0.45, 0.7])
        k_post = interp(z, [20.0, 60.0, 100.0], [0.3, 0.8, 1.1])
        base = interp(z, [20.0, 60.0, 100.0, 150.0],
                       [-10.0, -10.0 + 40.0 * params["wing_slope"], -10.0 + 80.0 * params["wing_slope"],
                        -10.0 + 80.0 * params["wing_slope"]])
        mid = base - np.where(y < 0, k_ant * y, k_post * y)
        half_t = 0.5 * interp(z, [12.0, 20.0, 40.0, 60.0, 100.0, 150.0],
                              [30.0, 24.0, 20.0, 13.0, params["wing_thickness"],
                               params["wing_thickness"] + 2])
        y_ant = interp(z, [0.0, 20.0, 40.0, 60.0, 85.0, 110.0, 150.0],
                        [-18.0, -22.0, -31.0, -42.0, -44.0, -30.0, -20.0])
        y_post = interp(z, [0.0, 20.0, 35.0, 45.0, 60.0, 100.0, 120.0, 150.0],
                         [25.0, 30.0, 22.0, 24.0, 49.0, 74.0, 70.0, 50.0])
        crest = params["crest_height"] - 0.012 * (y - 30.0) ** 2
        outline = np.maximum(np.maximum(y_ant - y, y - y_post), np.maximum(z - crest, 12.0 - z))
        dist = u - mid
        return np.maximum(np.abs(dist) - half_t, outline), dist + half_t, outline

    def sdf(self, p):
        """(hip bone with pubis, labelled part without the pubis)."""
        c, r = self.c, self.r
        wing, _, _ = self.wing(p)
        u, y, z = self._rel(p)
        o = self.opening
        acet = ellipsoid(p, (c[0] - 1.0, c[1] + 12.0, c[2] + 4.0), (r + 6.0, r + 14.0, r + 15.0))
        acet = np.maximum(acet, u * o[0] + y * o[1] + z * o[2] + 1.0)
        column = capsule(p, (c[0] - 12.0, c[1] + 28.0, c[2] - 4.0),
                          (c[0] - 36.0, c[1] + 38.0, c[2] - 55.0), (12.0, 10.0))
        tuber = ellipsoid(p, (c[0] - 38.0, c[1] + 38.0, c[2] - 60.0), (11.0, 12.0, 12.0))
        F = smooth_union(smooth_union(wing, acet, 8.0), smooth_union(column, tuber, 6.0), 8.0)
        cut = np.maximum(self.r_cup - magnitude(u, y, z), 2.5 - self.sacrum.sdf(p))  # joints
        ilium = np.maximum(F, cut)
        return np.maximum(np.minimum(F, self.pubis(p)), cut), ilium

    def pubis(self, p):
        c = self.c
        sup = capsule(p, (c[0] - 18.0, c[1] - 14.0, c[2] - 8.0), (8.0, -44.0, -26.0), (11.0, 8.0))
        inf = capsule(p, (7.0, -40.0, -40.0), (c[0] - 38.0, c[1] + 36.0, c[2] - 60.0), 6.0)
        body = ellipsoid(p, (10.0, -44.0, -32.0), (8.0, 11.0, 17.0))
        return np.maximum(smooth_union(smooth_union(sup, inf, 6.0), body, 6.0), 1.5 - p[0])  # symphysis gap

    def iliacus(self, p):
        """Muscle on the inner face of the wing (the iliacus)."""
        _, inner, outline = self.wing(p)
        _, _, z = self._rel(p)
        return np.maximum(np.maximum(inner, -inner - 22.0), np.maximum(outline - 4.0, 15.0 - z))


class Sacrum:
    """Sacrum in the midline: alae rising beside the promontory, curving back and down."""

    def __init__(self, sacrum_params: dict):
        self.top, self.y_top = sacrum_params["top_z"], sacrum_params["top_y"]
        self.width = sacrum_params["width"]
        self.bottom = -5.0

    def centre_y(self, z):
        return self.y_top + 0.55 * (self.top - z)

    def sdf(self, p):
        x, y, z = p
        t, b = self.top, self.bottom
        ax = np.abs(x)
        half_w = interp(z, [b, t - 40.0, t - 20.0, t + 30.0],
                        [12.0, self.width - 10.0, self.width, self.width])
        half_t = interp(z, [b, t - 40.0, t - 20.0, t + 30.0], [5.0, 7.0, 20.0, 20.0])
        top = t + 30.0 * np.clip((ax - 12.0) * (1.0 / 25.0), 0.0, 1.0)
        F = np.maximum(ax - half_w, np.abs(y - self.centre_y(z)) - half_t)
        return np.maximum(F, np.maximum(z - top, b - z))


def vertebra(p, zc: float, y0: float, height: float):
    """Lumbar vertebra: body, arch around the canal, spinous and transverse processes."""
    x, y, z = p
    dz = np.abs(z - zc)
    body = np.maximum(magnitude(x * (1.0 / 1.4), y - y0) * 1.4 - 24.0, dz - 0.5 * height)
    arch = np.maximum(magnitude(x, y - (y0 + 26.0)) - 14.0, dz - (0.5 * height - 2.0))
    spinous = ellipsoid(p, (0.0, y0 + 48.0, zc), (4.5, 16.0, 11.0))
    ax = np.abs(x)
    transverse = ellipsoid((ax, y, z), (24.0, y0 + 20.0, zc), (11.0, 5.5, 6.5))
    return np.minimum(np.minimum(body, arch), np.minimum(spinous, transverse))


def body_surface(p, b: dict, a: float):
    """Skin surface: the trunk joined to both thighs."""
    x, y, z = p
    half_d = b["half_depth"]
    waist = 1.0 - 0.1 * np.clip((z - 40.0) * (1.0 / 150.0), 0.0, 1.0)
    trunk = rounded_rect(x * (1.0 / waist), y - b["centre_y"], b["half_width"], half_d, 0.8 * half_d)
    seat = b["crotch_z"] - 40.0 / (1.0 + np.exp((30.0 - y) * (1.0 / 15.0)))  # buttocks hang lower
    trunk = np.maximum(trunk, seat - z)
    for side in (-1.0, 1.0):
        cx = side * (a + 12.0 + 0.12 * np.minimum(z + 60.0, 0.0))
        thigh = np.maximum(magnitude(x - cx, (y - 5.0) * 1.1) - b["thigh_radius"], z)
        trunk = smooth_union(trunk, thigh, 25.0)
    return trunk


def fat_profile(p):
    """Relative subcutaneous fat thickness: thin over the hips, thick on buttocks and belly."""
    x, y, z = p
    buttocks = np.clip((y - 20.0) * (1.0 / 70.0), 0.0, 1.0)
    belly = np.clip((-y - 40.0) * (1.0 / 50.0), 0.0, 1.0) * np.clip((z + 30.0) * (1.0 / 80.0), 0.0, 1.0)
    flank = np.clip((z - 40.0) * (1.0 / 100.0), 0.0, 1.0)
    perineum = (np.clip((60.0 - np.abs(x)) * (1.0 / 30.0), 0.0, 1.0)
                * np.clip((-40.0 - z) * (1.0 / 30.0), 0.0, 1.0))  # thin over the inner thighs
    return (0.75 + 0.7 * buttocks + 0.5 * belly + 0.4 * flank) * (1.0 - 0.6 * perineum)


def cavity(p, a: float):
    """Pelvic cavity below the inlet joined to the abdominal cavity above it."""
    x, y, z = p
    pelvis = ellipsoid(p, (0.0, 12.0, 5.0), (a - 42.0, 50.0, 56.0))
    half_w = interp(z, [30.0, 70.0, 150.0, 250.0], [40.0, 90.0, 140.0, 140.0])
    abdomen = np.maximum(magnitude(x * (62.0 / half_w), y + 15.0) - 62.0, 40.0 - z)
    return smooth_union(pelvis, abdomen, 25.0)


def muscle_axes(femur: Femur):
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


def spine_levels(spine_params: dict, sacrum: Sacrum):
    """(z_bottom, z_top, y_centre) of the lumbar vertebral bodies from L5 upward."""
    levels = []
    z = sacrum.top + spine_params["disc"]
    for _ in range(5):
        levels.append((z, z + spine_params["body_height"], spine_params["y"] - 0.1 * (z - sacrum.top)))
        z += spine_params["body_height"] + spine_params["disc"]
    return levels


