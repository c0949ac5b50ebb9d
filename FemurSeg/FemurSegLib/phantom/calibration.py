"""Parameters of the phantom, drawn per seed within ranges measured on the real scans.

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
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from .shapes import unit_vector

#: The real femur masks end this far (mm) into the dark cortical band, not at its outer edge,
#: and at most 40% into a thin cortex (head and neck): measured by intensity profiles across
#: the mask edge (darkest 1-4 mm outside it on the shaft, 1 mm outside it at the head) and the
#: median of the mask's outer rim.
LABEL_INTO_CORTEX_MM = 1.5
#: In-plane point-spread function of the scanner (mm, standard deviation of a Gaussian).
PSF_MM = 0.45
#: In-plane blur (voxels) of the reconstructed noise: the real scans' background noise has a
#: magnitude neighbour correlation of 0.26-0.37 (interpolated reconstruction); this blur gives 0.3.
NOISE_BLUR_VOXELS = 0.75


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
    p["oblique_axis"] = tuple(unit_vector(rng.standard_normal(3)))
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
    only). The overall level is set later by the bias field (see :func:`.rendering.bias_field`).
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
