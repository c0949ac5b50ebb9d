"""Post-processing of binary femur masks: connected components and the left/right split.

Masks are 3D numpy arrays indexed ``[k, j, i]`` (any non-zero value is foreground). Components
are ranked by voxel count, largest first; equal counts keep the order of their first voxel in
the array (C order), so results are deterministic.

Sides: images are in LPS (as ITK and SimpleITK use), where +x points to the patient's Left.
RAS x is -LPS x and +x there points to the patient's Right. So the patient's **right** femur
is the one with the *smaller* LPS x (*larger* RAS x) of its centroid. Voxel indices map to LPS
through the image's origin, spacing and direction cosines, so a flipped or oblique grid is
handled: "low i" means "right" only when the i axis points to the patient's left. With one femur
in view its side comes from the patient coordinate system, or where that is ambiguous from the
anatomy (the femoral head lies medial to the greater trochanter): see :func:`femur_side`.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .images import ijk_to_lps

__all__ = ["fill_slice_gaps", "largest_component", "keep_components", "split_femurs", "apply_rule", "label_probability", "femur_side",
           "side_from_coordinates", "side_from_anatomy", "side_regions"]


def fill_slice_gaps(probability: np.ndarray, axis: int = 0, *, threshold: Optional[float] = None,
                    min_voxels: int = 0) -> np.ndarray:
    """Close one-slice gaps in a probability map: a voxel gets at least the smaller of its two
    neighbours' probabilities along ``axis`` (a grey-value closing with a 3-voxel line).

    A femoral head that a 2.5D network loses on one slice between two slices that have it comes
    back, and the pieces beyond it stay connected to the femur, so that the largest-component
    rule keeps them. Only voxels whose both neighbours are more probable are raised, and never
    above the less probable neighbour: an object's ends and two-slice gaps stay as they are.
    The first and last slice are unchanged.

    With ``threshold`` and ``min_voxels``, only whole missed pieces are filled: on each slice the
    voxels below ``threshold`` whose both neighbours are at or above it form pieces (4-connected
    in the slice), and only pieces of at least ``min_voxels`` voxels are raised, so that the thin
    slivers along a femur's boundary (where the slices disagree by a voxel) stay as they are.
    Returns a new array of the same shape and dtype.
    """
    p = np.asarray(probability)
    if p.ndim != 3:
        raise InputError(f"probability must be 3D, not {p.ndim}D (shape {p.shape})")
    if min_voxels and threshold is None:
        raise ValueError("min_voxels needs the threshold that makes the pieces")
    out = np.array(p, copy=True)
    if p.shape[axis] < 3:
        return out
    src, dst = np.moveaxis(p, axis, 0), np.moveaxis(out, axis, 0)
    lower = np.minimum(src[:-2], src[2:])
    if not min_voxels:
        np.maximum(src[1:-1], lower, out=dst[1:-1])
        return out
    for k, (level, here) in enumerate(zip(lower, src[1:-1]), start=1):
        gap = (level >= threshold) & (here < threshold)
        if gap.sum() < min_voxels:
            continue
        # one slice as a volume: face connectivity is 4-connectivity in the slice
        labels, ranked, sizes = _ranked_components(gap[None], 6)
        keep = np.zeros(len(ranked) + 1, dtype=bool)
        keep[ranked[sizes >= min_voxels]] = True
        fill = keep[labels[0]]
        dst[k][fill] = level[fill]
    return out


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise InputError(f"mask must be 3D, not {mask.ndim}D (shape {mask.shape})")
    return mask if mask.dtype == bool else mask != 0


def _ranked_components(mask: np.ndarray, connectivity: int
                       ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Component label array, component labels largest first, and their voxel counts."""
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 or 26, not {connectivity!r}")
    # SimpleITK (already loaded for I/O) rather than scipy.ndimage: importing scipy costs about
    # a second of the ~5 s budget of `femurseg segment`. Labels follow raster order, as ndi.label.
    binary = np.ascontiguousarray(_check_mask(mask), dtype=np.uint8)
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(binary), connectivity == 26)
    labels = sitk.GetArrayFromImage(cc).astype(np.int32, copy=False)
    n = int(labels.max()) if labels.size else 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")  # ties: lower label = earlier first voxel
    return labels, order + 1, sizes[order]


def keep_components(mask: np.ndarray, n: int, connectivity: int = 26) -> np.ndarray:
    """Boolean mask of the ``n`` largest connected components (fewer if there are fewer).

    ``connectivity`` is 26 (faces, edges and corners touch) or 6 (faces only).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, not {n!r}")
    labels, ranked, _ = _ranked_components(mask, connectivity)
    keep = np.zeros(len(ranked) + 1, dtype=bool)
    keep[ranked[: int(n)]] = True
    return keep[labels]


def largest_component(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Boolean mask of the largest connected component; an empty mask stays empty."""
    return keep_components(mask, 1, connectivity)


def _lps_points(labels: np.ndarray, label: int, image: sitk.Image) -> np.ndarray:
    """LPS millimetres ``[n, 3]`` of the voxels of component ``label``."""
    kji = np.argwhere(labels == label)
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
    return (ijk1 @ ijk_to_lps(image).T)[:, :3]


#: A femur whose centroid lies within this distance (mm) of the plane LPS x = 0 is not placed by
#: the patient coordinate system: the scanner's x = 0 is only roughly the patient's midline, and
#: each femur lies 80-100 mm from it.
MIDLINE_MARGIN_MM = 30.0
#: The anatomy decides only when the femur is this tall (mm) and its head lies at least this far
#: (mm) to one side of the lower part.
MIN_ANATOMY_HEIGHT_MM = 40.0
MIN_ANATOMY_OFFSET_MM = 5.0


def side_from_coordinates(points_lps: np.ndarray, image: sitk.Image) -> Optional[str]:
    """``"right"`` or ``"left"`` from the patient coordinate system, None when ambiguous.

    The patient's right lies at negative LPS x. Ambiguous: the centroid is within
    :data:`MIDLINE_MARGIN_MM` of x = 0, or the image has no patient coordinate system (origin
    exactly at 0, 0, 0: written without geometry, so x says nothing about the patient).
    """
    if not np.any(image.GetOrigin()):
        return None
    x = float(np.mean(points_lps[:, 0]))
    if abs(x) < MIDLINE_MARGIN_MM:
        return None
    return "right" if x < 0 else "left"


def side_from_anatomy(points_lps: np.ndarray) -> Optional[str]:
    """``"right"`` or ``"left"`` from the femur's shape, None when its shape does not tell.

    The femoral head lies medial to the greater trochanter and the shaft: the top quarter of the
    femur (head and neck, superior = +z in LPS) has its centroid medial of the bottom quarter's
    (trochanters, shaft). Medial is +x (toward the patient's left) for the right femur.
    """
    z = points_lps[:, 2]
    height = float(z.max() - z.min()) if len(z) else 0.0
    if height < MIN_ANATOMY_HEIGHT_MM:
        return None
    top = points_lps[z >= z.max() - 0.25 * height, 0].mean()
    bottom = points_lps[z <= z.min() + 0.25 * height, 0].mean()
    offset = float(top - bottom)
    if abs(offset) < MIN_ANATOMY_OFFSET_MM:
        return None
    return "right" if offset > 0 else "left"


def femur_side(points_lps: np.ndarray, image: sitk.Image) -> str:
    """The side of one femur (its voxels in LPS mm): the patient coordinate system decides, the
    anatomy where that is ambiguous, and the sign of x when neither tells."""
    side = side_from_coordinates(points_lps, image) or side_from_anatomy(points_lps)
    if side is None:
        side = "right" if float(np.mean(points_lps[:, 0])) < 0 else "left"
    return side


def split_femurs(mask: np.ndarray, image: sitk.Image, *, split: bool = True,
                 min_ratio: float = 0.25, min_voxels: int = 10, connectivity: int = 26
                 ) -> Tuple[np.ndarray, bool]:
    """Keep the femur(s) of a binary mask and label them; drop small stray fragments.

    Labels mean the same in every image: 1 = right femur, 2 = left femur (with ``split=False``:
    1 = femur, both sides).

    The two largest components count as the two femurs when the smaller has at least
    ``min_ratio`` times the voxels of the larger and at least ``min_voxels`` voxels, and their
    centroids lie on different sides: the line joining them points mainly left-right (its LPS x
    part is longer than its y-z part, i.e. within 45 degrees of the left-right axis). The one with
    the smaller LPS x is the right femur. Otherwise only the largest component is kept, and its
    side is decided by :func:`femur_side` (patient coordinates, else anatomy): a crop with one hip
    gives label 1 for a right femur and 2 for a left one. An empty mask gives an all-zero map.

    ``mask`` is indexed ``[k, j, i]`` on ``image``'s grid. Returns ``(labelmap, split)``: a uint8
    label map and whether it holds 1 = right femur, 2 = left femur (``split`` as given: pass it
    to :func:`FemurSegLib.segments.femur_segments`).
    """
    if not 0.0 < min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in (0, 1], not {min_ratio!r}")
    if image.GetDimension() != 3:
        raise InputError(f"image must be 3D, not {image.GetDimension()}D")
    expected = tuple(reversed(image.GetSize()))
    if np.shape(mask) != expected:
        raise InputError(f"mask shape {np.shape(mask)} does not match the image grid {expected} "
                         "([k, j, i] order)")
    labels, ranked, sizes = _ranked_components(mask, connectivity)
    out = np.zeros(labels.shape, dtype=np.uint8)
    if len(ranked) == 0:
        return out, bool(split)
    if len(ranked) >= 2 and sizes[1] >= max(min_ratio * sizes[0], min_voxels):
        a, b = (_lps_points(labels, lab, image).mean(axis=0) for lab in ranked[:2])
        offset = a - b
        if abs(offset[0]) > np.hypot(offset[1], offset[2]):
            right, left = ranked[:2] if a[0] < b[0] else ranked[1::-1]
            out[labels == right] = 1
            out[labels == left] = 2 if split else 1
            return out, bool(split)
    if not split:
        out[labels == ranked[0]] = 1
        return out, False
    side = femur_side(_lps_points(labels, ranked[0], image), image)
    out[labels == ranked[0]] = 1 if side == "right" else 2
    return out, True


def apply_rule(mask: np.ndarray, image: sitk.Image, rule: str, *, split: bool = True
               ) -> Tuple[np.ndarray, bool]:
    """The model card's post-processing rule (``inference.postprocess``) on a binary mask.

    ``"largest_per_femur"``: :func:`split_femurs` (the femur or the two femurs, stray fragments
    dropped); ``"largest"``: the paper's largest connected component alone, then labelled as
    :func:`split_femurs` does; ``"none"``: every voxel kept, as label 1 (one "Femur" segment:
    without components there is no femur to tell apart). Returns ``(labelmap, was_split)``.
    """
    if rule == "largest_per_femur":
        return split_femurs(mask, image, split=split)
    if rule == "largest":
        return split_femurs(largest_component(mask), image, split=split)
    if rule == "none":
        return _check_mask(mask).astype(np.uint8), False
    raise ValueError(f"unknown post-processing rule {rule!r} (largest_per_femur, largest, none)")


def label_probability(probability: np.ndarray, image: sitk.Image, threshold: float, rule: str,
                      *, split: bool = True) -> Tuple[np.ndarray, bool]:
    """The one place where a foreground probability becomes a label map: the voxels with
    ``probability >= threshold``, then the card's post-processing ``rule`` (:func:`apply_rule`).
    ``femurseg segment`` (:class:`FemurSegLib.inference.Segmenter`), ``femurseg-train evaluate``
    and ``robustness`` all call it, so they score exactly what the product outputs.

    ``probability`` may be on any monotonic scale, ``threshold`` on the same (evaluate passes
    its quantised scores and the quantised level). Rule ``"none"`` gives the thresholded mask
    alone. Returns ``(labelmap, was_split)`` as :func:`apply_rule`.
    """
    return apply_rule(np.asarray(probability) >= threshold, image, rule, split=split)


def side_regions(reference: np.ndarray, image: sitk.Image) -> Dict[str, np.ndarray]:
    """The voxels on each femur's side of a reference femur mask, for per-femur metrics.

    The reference's femurs are told apart as in the outputs (:func:`split_femurs`). With both,
    the sides meet at the plane perpendicular to the left-right (LPS x) axis midway between their
    centroids: every voxel with a smaller x is on the right femur's side, any prediction there
    counts for the right femur (also stray fragments). With one femur the whole image is its
    side. Returns boolean ``[k, j, i]`` masks keyed ``"right"`` and ``"left"``, only for sides
    with a reference femur.
    """
    sides, _ = split_femurs(reference, image, split=True)
    present = {name: value for name, value in (("right", 1), ("left", 2)) if np.any(sides == value)}
    if len(present) < 2:
        return {name: np.ones(sides.shape, dtype=bool) for name in present}
    mid = 0.5 * sum(_lps_points(sides, v, image)[:, 0].mean() for v in present.values())
    m = ijk_to_lps(image)
    k, j, i = np.ogrid[tuple(slice(0, n) for n in sides.shape)]
    x = m[0, 0] * i + m[0, 1] * j + m[0, 2] * k + m[0, 3]
    right = np.broadcast_to(x < mid, sides.shape)
    return {"right": np.array(right), "left": ~right}
