"""Is a segmentation plausible? Checks against what the model saw in training.

A result is implausible when

- no femur was found;
- a femur's volume lies far outside the per-femur volumes of the model's training cases (the
  card's ``plausibility.femur_volume_ml.accepted`` range: the training range widened by a margin);
- the segmentation fills most of the image (:data:`COVERS_FRACTION`).

Where one of these happens, the likely cause is looked for in the image's *intensity fingerprint*:
a few robust numbers of the image after the model's own preprocessing (reoriented, resampled,
normalised), compared with the ranges the card records for the training images. An inverted or
T2-like contrast shows as a dark periphery (:func:`intensity_fingerprint`, ``lateral_contrast``).

The card section (optional; validated by :func:`validate_section` when a card is read)::

    "plausibility": {
      "source": "how it was computed",
      "cases": 17,
      "femur_volume_ml": {"training": [min, max], "margin": 0.5, "accepted": [low, high]},
      "fingerprint": {
        "body_threshold": 0.08, "lateral_fraction": 0.15, "bright_level": 0.8,
        "tolerance_sd": 3.0,
        "stats": {"body_p50": {"mean": m, "sd": s, "training": [min, max],
                               "accepted": [low, high]}, ...}
      }
    }

Everything here is a pure function of arrays and dicts, except :func:`training_section`, which
reads the training images and label maps.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

#: Fraction of the image that a segmentation may fill before it counts as covering the image
#: (a proximal femur fills about 1% of a hip scan, and under a third of a tight crop).
COVERS_FRACTION = 0.5
#: Defaults of the fingerprint (recorded on the card with the statistics they gave).
BODY_THRESHOLD = 0.08      # normalised intensity that separates air from the body
LATERAL_FRACTION = 0.15    # the outer part of the left-right extent on each side
BRIGHT_LEVEL = 0.8         # normalised intensity counted as bright
TOLERANCE_SD = 3.0         # accepted: the training range, at least mean +- this many sd
VOLUME_MARGIN = 0.5        # accepted volumes: training min x (1 - m) .. max x (1 + m)

#: The fingerprint's statistics, with the words a warning uses for them.
STATS = {
    "body_p25": "body 25th percentile",
    "body_p50": "body median",
    "body_p75": "body 75th percentile",
    "bright_fraction": "bright fraction",
    "lateral_contrast": "lateral contrast",
}

FINGERPRINT_PARAMETERS = ("body_threshold", "lateral_fraction", "bright_level")


# ----------------------------------------------------------------------------------------------
# The intensity fingerprint


def intensity_fingerprint(array: np.ndarray, lr_axis: int = 2, *,
                          body_threshold: float = BODY_THRESHOLD,
                          lateral_fraction: float = LATERAL_FRACTION,
                          bright_level: float = BRIGHT_LEVEL) -> Dict[str, float]:
    """A few robust numbers of a normalised image (as the network sees it).

    ``array`` is the preprocessed image ``[k, j, i]`` (intensities about 0..1) and ``lr_axis``
    its left-right axis. The *body* is every voxel above ``body_threshold``. Returns the body's
    25th, 50th and 75th percentiles, the fraction of body voxels above ``bright_level``, and the
    *lateral contrast*: the median of the body in the outer ``lateral_fraction`` of the
    left-right extent (both sides) minus the body median. On T1-weighted hip scans the periphery
    (subcutaneous fat, near the surface coils) is brighter than the body median; with inverted
    or T2-like contrast it is darker. NaN where the body is empty.
    """
    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"the fingerprint needs a 3D array, not {a.ndim}D")
    body = a > body_threshold
    out = {name: math.nan for name in STATS}
    if not body.any():
        return out
    values = a[body]
    p25, p50, p75 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    out.update(body_p25=p25, body_p50=p50, body_p75=p75,
               bright_fraction=float(np.mean(values > bright_level)))
    n = a.shape[lr_axis]
    width = max(1, int(round(lateral_fraction * n)))
    outer = np.unique(np.r_[np.arange(min(width, n)), np.arange(max(n - width, 0), n)])
    lateral = np.take(a, outer, axis=lr_axis)
    lateral = lateral[lateral > body_threshold]
    if lateral.size:
        out["lateral_contrast"] = float(np.median(lateral)) - p50
    return out


def lr_axis_of(orientation: str) -> int:
    """The ``[k, j, i]`` array axis that runs left-right on a grid of ``orientation`` (a DICOM
    orientation code such as ``"LIP"``: i toward Left, j Inferior, k Posterior)."""
    code = str(orientation).upper()
    for n, letter in enumerate(code[:3]):
        if letter in "LR":
            return 2 - n
    raise ValueError(f"orientation {orientation!r} has no left-right axis")


def stat_summary(values: Sequence[float], tolerance_sd: float = TOLERANCE_SD) -> dict:
    """Mean, sd, range and accepted range (the range, widened to mean +- ``tolerance_sd`` sd).
    Mean and sd are :func:`FemurSegLib.metrics.mean_sd`'s: the sd of one value is undefined
    (null on the card), and the accepted range is then the range itself."""
    from .metrics import mean_sd

    mean, sd, n = mean_sd(values)
    if n == 0:
        raise ValueError("no finite values to summarise")
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    lo, hi = float(v.min()), float(v.max())
    r = lambda x: round(x, 4)  # noqa: E731 - four decimals are plenty for a card
    widen = tolerance_sd * sd if n > 1 else 0.0
    return {"mean": r(mean), "sd": r(sd) if n > 1 else None, "training": [r(lo), r(hi)],
            "accepted": [r(min(lo, mean - widen)), r(max(hi, mean + widen))]}


def fingerprint_deviations(fingerprint: Dict[str, float], section: Optional[dict]) -> List[str]:
    """Statistics of ``fingerprint`` outside the card's accepted ranges, as words:
    ``"lateral contrast -0.14, training 0.03 to 0.19"``. Empty when all fit or there is no card
    section."""
    stats = ((section or {}).get("fingerprint") or {}).get("stats") or {}
    out = []
    for name, entry in stats.items():
        value = fingerprint.get(name, math.nan)
        lo, hi = entry["accepted"]
        if not np.isfinite(value) or not lo <= value <= hi:
            tlo, thi = entry["training"]
            out.append(f"{STATS[name]} {value:.2f}, training {tlo:.2f} to {thi:.2f}")
    return out


# ----------------------------------------------------------------------------------------------
# Volumes and coverage


def volume_range(volumes_ml: Sequence[float], margin: float = VOLUME_MARGIN) -> dict:
    """The card's ``femur_volume_ml``: training range of the per-femur volumes and the accepted
    range ``min x (1 - margin) .. max x (1 + margin)``."""
    v = [float(x) for x in volumes_ml if x > 0]
    if not v:
        raise ValueError("no femur volumes to summarise")
    if not 0 <= margin < 1:
        raise ValueError(f"volume margin must be in [0, 1), not {margin!r}")
    return {"training": [round(min(v), 1), round(max(v), 1)], "margin": margin,
            "accepted": [round(min(v) * (1 - margin), 1), round(max(v) * (1 + margin), 1)]}


def volume_problem(name: str, volume_ml: float, section: Optional[dict]) -> Optional[str]:
    """Why a femur's volume is implausible, or None (also None without a card section)."""
    vols = (section or {}).get("femur_volume_ml")
    if not vols or volume_ml <= 0:
        return None
    lo, hi = vols["accepted"]
    if lo <= volume_ml <= hi:
        return None
    tlo, thi = vols["training"]
    shown = f"{volume_ml:.0f}" if volume_ml >= 10 else f"{volume_ml:.2f}"
    return (f"{name} {shown} ml is far outside the training cases' "
            f"{tlo:.0f}-{thi:.0f} ml per femur")


def covers_image(fraction: float, limit: float = COVERS_FRACTION) -> Optional[str]:
    """Why a segmentation filling ``fraction`` of the image is implausible, or None."""
    if fraction < limit:
        return None
    return f"the segmentation fills {100 * fraction:.0f}% of the image"


# ----------------------------------------------------------------------------------------------
# One result


def assess(labels: np.ndarray, image, section: Optional[dict],
           fingerprint: Optional[Callable[[], Dict[str, float]]] = None
           ) -> Tuple[List[str], Optional[str]]:
    """``(problems, likely cause)`` of a segmentation ``labels`` (``[k, j, i]``, any non-zero
    label is femur) of ``image``; no problems means plausible.

    The femurs are told apart as in the outputs (:func:`FemurSegLib.postprocess.split_femurs`),
    whether or not the output is split. ``fingerprint`` (called only when there is a problem)
    gives the image's :func:`intensity_fingerprint` for the likely cause.
    """
    from .postprocess import split_femurs

    mask = np.asarray(labels) != 0
    problems: List[str] = []
    if not mask.any():
        problems.append("no femur found")
    else:
        sides, _ = split_femurs(mask, image, split=True)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        for value, name in ((1, "right femur"), (2, "left femur")):
            problem = volume_problem(name, np.count_nonzero(sides == value) * voxel_ml, section)
            if problem:
                problems.append(problem)
        covering = covers_image(float(mask.mean()))
        if covering:
            problems.append(covering)
    cause = None
    if problems and fingerprint is not None and (section or {}).get("fingerprint"):
        deviations = fingerprint_deviations(fingerprint(), section)
        if deviations:
            cause = ("its intensity profile is unlike the model's training images ("
                     + "; ".join(deviations) + "), as with another contrast (e.g. T2-weighted "
                     "or inverted), sequence or body region")
    return problems, cause


def warning_line(input_name: str, problems: Sequence[str], cause: Optional[str]) -> str:
    """The one warning line of an implausible result (without the ``warning:`` prefix)."""
    text = f"{input_name}: " + "; ".join(problems)
    return text + (f"; likely cause: {cause}" if cause else "")


# ----------------------------------------------------------------------------------------------
# The card section


def build_section(fingerprints: Sequence[Dict[str, float]], femur_volumes_ml: Sequence[float],
                  *, source: str, tolerance_sd: float = TOLERANCE_SD,
                  margin: float = VOLUME_MARGIN) -> dict:
    """The card's ``plausibility`` section from the training images' fingerprints and the
    per-femur volumes of their label maps."""
    stats = {name: stat_summary([fp[name] for fp in fingerprints], tolerance_sd)
             for name in STATS}
    return {"source": source, "cases": len(fingerprints),
            "femur_volume_ml": volume_range(femur_volumes_ml, margin),
            "fingerprint": {"body_threshold": BODY_THRESHOLD,
                            "lateral_fraction": LATERAL_FRACTION,
                            "bright_level": BRIGHT_LEVEL, "tolerance_sd": tolerance_sd,
                            "stats": stats}}


def image_fingerprint(prepared_array: np.ndarray, orientation: str,
                      section: Optional[dict] = None) -> Dict[str, float]:
    """:func:`intensity_fingerprint` of a preprocessed image on a grid of ``orientation``, with
    the parameters the card's section was computed with."""
    params = {k: float(v) for k, v in ((section or {}).get("fingerprint") or {}).items()
              if k in FINGERPRINT_PARAMETERS}
    return intensity_fingerprint(prepared_array, lr_axis_of(orientation), **params)


def training_section(cases: Iterable[Tuple[object, object]], input_spec, foreground: int, *,
                     source: str) -> dict:
    """:func:`build_section` from training cases ``(image path, label path)``: each image
    preprocessed exactly as for the network, each label map's femurs (value ``foreground``)
    split into right and left as in the outputs."""
    import SimpleITK as sitk

    from .images import read_image, read_label
    from .postprocess import split_femurs
    from .preprocessing import prepare

    fingerprints, volumes = [], []
    for image_path, label_path in cases:
        image = read_image(image_path, what="training image")
        label = read_label(label_path, image, what="training label map")
        fingerprints.append(image_fingerprint(prepare(image, input_spec).array,
                                              input_spec.orientation))
        sides, _ = split_femurs(sitk.GetArrayViewFromImage(label) == foreground, label)
        voxel_ml = float(np.prod(label.GetSpacing())) / 1000.0
        volumes += [np.count_nonzero(sides == v) * voxel_ml for v in (1, 2)
                    if np.any(sides == v)]
    if not fingerprints:
        raise ValueError("no training cases")
    return build_section(fingerprints, volumes, source=source)


def _pair(value, what: str) -> Tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in value)):
        raise ValueError(f"{what} must be two finite numbers, not {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise ValueError(f"{what} must be [low, high], not {value!r}")
    return lo, hi


def validate_section(section) -> None:
    """Raise ``ValueError`` with what is wrong unless ``section`` is a usable card section."""
    if not isinstance(section, dict):
        raise ValueError("must be a JSON object")
    vols = section.get("femur_volume_ml")
    if vols is not None:
        if not isinstance(vols, dict):
            raise ValueError("femur_volume_ml must be a JSON object")
        _pair(vols.get("training"), "femur_volume_ml.training")
        lo, _ = _pair(vols.get("accepted"), "femur_volume_ml.accepted")
        if lo < 0:
            raise ValueError(f"femur_volume_ml.accepted must not be negative: {vols['accepted']}")
    fp = section.get("fingerprint")
    if fp is not None:
        if not isinstance(fp, dict) or not isinstance(fp.get("stats"), dict) or not fp["stats"]:
            raise ValueError("fingerprint must be a JSON object with a non-empty 'stats' object")
        for key in FINGERPRINT_PARAMETERS:
            value = fp.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or \
                    not math.isfinite(value):
                raise ValueError(f"fingerprint.{key} must be a number, not {value!r}")
        for name, entry in fp["stats"].items():
            if name not in STATS:
                raise ValueError(f"fingerprint.stats has an unknown statistic {name!r} "
                                 f"(known: {', '.join(STATS)})")
            if not isinstance(entry, dict):
                raise ValueError(f"fingerprint.stats.{name} must be a JSON object")
            _pair(entry.get("training"), f"fingerprint.stats.{name}.training")
            _pair(entry.get("accepted"), f"fingerprint.stats.{name}.accepted")
    if vols is None and fp is None:
        raise ValueError("needs femur_volume_ml or fingerprint")
