"""The PNG quality-control report of a segmentation (coronal montage) and its volumes JSON.

Rendered with matplotlib's Agg backend through a bare ``Figure`` (no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import files, images
from .errors import InputError
from .files import PathLike
from .segments import SegmentSpec
from .writers import check_labelmap, segment_volumes

__all__ = ["write_report", "coronal_axes", "coronal_plane"]


# ----------------------------------------------------------------------------------------------
# PNG report and volumes


def coronal_axes(direction: Sequence[float]) -> Dict[str, int]:
    """Voxel axis (0 = i, 1 = j, 2 = k) nearest to each patient axis ``"LR"``, ``"AP"``, ``"SI"``.

    ``direction`` is a SimpleITK direction (9 numbers, row-major; column n is voxel axis n in
    LPS). On an oblique grid each patient axis takes the voxel axis best aligned with it.
    """
    cos = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    ap = int(np.argmax(cos[1]))
    lr = max((a for a in range(3) if a != ap), key=lambda a: cos[0, a])
    return {"LR": lr, "AP": ap, "SI": 3 - ap - lr}


def coronal_plane(array: np.ndarray, direction: Sequence[float], index: int) -> np.ndarray:
    """Slice ``index`` of a ``[k, j, i]`` array across its A-P axis, in radiological view.

    Rows run from superior (row 0) to inferior, columns from the patient's right (column 0, the
    viewer's left) to the patient's left, whatever the voxel order on disk.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    axes = coronal_axes(direction)
    plane = np.take(np.asarray(array).transpose(2, 1, 0), index, axis=axes["AP"])
    if axes["SI"] > axes["LR"]:  # remaining axes come in voxel order: make rows = S-I
        plane = plane.T
    if d[2, axes["SI"]] > 0:  # index runs towards superior: put the highest index on top
        plane = plane[::-1]
    if d[0, axes["LR"]] < 0:  # index runs towards the patient's right (-x in LPS)
        plane = plane[:, ::-1]
    return plane


def _pick_slices(candidates: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` of the sorted ``candidates``, evenly spaced (the middle one for ``n == 1``)."""
    if candidates.size <= n:
        return candidates
    if n == 1:
        return candidates[[candidates.size // 2]]
    return np.unique(candidates[np.round(np.linspace(0, candidates.size - 1, n)).astype(int)])


#: At most this many slices are drawn (a proximal femur spans 10-25 coronal slices of 5 mm);
#: beyond it the title names the slices left out.
MAX_SLICES = 48
#: Drawing scale: at least this many pixels per in-plane voxel, so a boundary can be judged
#: voxel by voxel; tiles are kept between these sizes (pixels along their longer side).
MIN_PIXELS_PER_VOXEL = 2.0
TILE_PIXELS = (320, 1100)
DPI = 100
#: Outline colour of a reference mask (magenta: apart from the grey image and the femur colours).
REFERENCE_COLOR = (1.0, 0.0, 1.0)
#: What a tile shows: ``"femurs"`` the femurs' (and reference's) in-plane bounding box over all
#: slices plus :data:`MARGIN_MM`, the same window in every tile; ``"full"`` the field of view.
VIEWS = ("femurs", "full")
MARGIN_MM = 15.0


def write_report(image: sitk.Image, labelmap: sitk.Image, segments: Sequence[SegmentSpec],
                 out_dir: PathLike, *, overwrite: bool = False, title: Optional[str] = None,
                 n_slices: Optional[int] = None, reference: Optional[np.ndarray] = None,
                 view: str = "femurs", probability: Optional[np.ndarray] = None,
                 passes: Optional[tuple] = None, threshold: float = 0.5) -> dict:
    """Write ``out_dir/report.png`` (coronal montage) and ``out_dir/volumes.json``.

    The montage shows every coronal slice that holds the mask (or the ``reference``), up to
    ``n_slices`` (default :data:`MAX_SLICES`; beyond it, evenly spaced ones, and the title says
    how many were left out and which), over the whole volume if both are empty: the grey image
    windowed at its 0.5th and 99.5th percentiles, each segment's outline in its colour, the
    reference's outline (a boolean ``[k, j, i]`` array on the image grid) dashed in magenta,
    the slice index and A-P position, in physical proportions (voxel spacing respected) at
    :data:`MIN_PIXELS_PER_VOXEL` pixels per voxel or more, in radiological orientation (patient
    right on the image left, superior at the top; R/L/S/I marked), with a legend of volumes.
    On an oblique grid the slices are the voxel planes nearest to coronal (not resampled).
    ``view`` (:data:`VIEWS`): every tile is cropped to the femurs' bounding box plus
    :data:`MARGIN_MM` (default; the whole field of view when nothing is segmented), or shows
    the whole field of view (``"full"``).

    The JSON, also returned, holds the title, the voxel spacing and volume, for each segment its
    name, label value, voxel count and volume in mm3 and ml (mm3 / 1000), and under ``montage``
    the slices shown and left out (voxel indices along the A-P axis) and the drawing scale.
    With ``probability`` (the femur probability, a ``[k, j, i]`` array on the image grid) it
    also lists under ``slices_to_check`` the coronal slices where the model is least certain
    (:func:`FemurSegLib.uncertainty.slices_to_check`, the list the review page shows), and the
    PNG's title names them; with ``passes`` (the plain and the flipped test-time passes' own
    probabilities on the same grid, of which ``probability`` is the mean) a slice also counts as
    uncertain where the two passes fall on different sides of ``threshold`` (the model's).
    """
    array = check_labelmap(labelmap, segments)
    images.validate_image(image, what="image", allow_constant=True)
    mismatch = images.grid_mismatch(labelmap, image)
    if mismatch:
        raise InputError(f"label map is not on the image grid: {mismatch}")
    if n_slices is None:
        n_slices = MAX_SLICES
    if n_slices < 1:
        raise InputError(f"the report needs at least one slice, not {n_slices}")
    if view not in VIEWS:
        raise InputError(f"report view must be one of {', '.join(VIEWS)}, not {view!r}")
    if reference is not None:
        reference = np.asarray(reference, dtype=bool)
        if reference.shape != array.shape:
            raise InputError(f"reference shape {reference.shape} does not match the image grid "
                             f"{array.shape}")
    to_check = None
    if probability is not None:
        from .uncertainty import slices_to_check

        probability = np.asarray(probability)
        if probability.shape != array.shape:
            raise InputError(f"probability shape {probability.shape} does not match the image "
                             f"grid {array.shape}")
        plain = flipped = None
        if passes is not None:
            plain, flipped = (np.asarray(a) for a in passes)
            if plain.shape != array.shape or flipped.shape != array.shape:
                raise InputError(f"test-time pass shapes {plain.shape}, {flipped.shape} do not "
                                 f"match the image grid {array.shape}")
        to_check = slices_to_check(probability, 2 - coronal_axes(image.GetDirection())["AP"],
                                   flipped=flipped, plain=plain, threshold=threshold)
    out = Path(out_dir)
    png_path, json_path = out / "report.png", out / "volumes.json"
    for target in (png_path, json_path):
        files.check_writable(target, overwrite)
    report = {"title": title or "FemurSeg segmentation",
              "spacing_mm": [float(s) for s in labelmap.GetSpacing()],
              "voxel_volume_mm3": float(np.prod(labelmap.GetSpacing())),
              "segments": segment_volumes(labelmap, segments)}
    if to_check is not None:
        report["slices_to_check"] = [s.to_dict() for s in to_check]
    figure, layout = _montage(image, array, segments, report, n_slices, reference, view)
    report["montage"] = layout
    with files.atomic_path(png_path, overwrite) as tmp:
        figure.savefig(str(tmp), format="png", facecolor=figure.get_facecolor())
    files.write_json(report, json_path, overwrite=overwrite)
    return report


def _ranges(values: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``."""
    parts, run = [], []
    for v in values:
        if run and v == run[-1] + 1:
            run.append(v)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
        run = [v]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ", ".join(parts)


def tile_scale(width_mm: float, height_mm: float, voxel_mm: float) -> float:
    """Pixels per millimetre of a tile of ``width_mm`` x ``height_mm``: at least
    :data:`MIN_PIXELS_PER_VOXEL` per in-plane voxel of ``voxel_mm``, within :data:`TILE_PIXELS`
    along the longer side (the upper limit wins for very large fields of view)."""
    longest = max(width_mm, height_mm, 1e-6)
    scale = max(MIN_PIXELS_PER_VOXEL / voxel_mm, TILE_PIXELS[0] / longest)
    return min(scale, TILE_PIXELS[1] / longest)


def _montage(image: sitk.Image, labels: np.ndarray, segments: Sequence[SegmentSpec],
             report: dict, n_slices: int, reference: Optional[np.ndarray] = None,
             view: str = "femurs"):
    """The report figure (a bare matplotlib Figure: rendered with Agg, no pyplot state) and its
    layout (slices shown and left out, scale)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    direction = image.GetDirection()
    axes = coronal_axes(direction)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    row_mm, col_mm = spacing[axes["SI"]], spacing[axes["LR"]]
    grey = sitk.GetArrayViewFromImage(image)
    mask = labels > 0
    shown_mask = mask | reference if reference is not None else mask
    ap_in_array = 2 - axes["AP"]  # [k, j, i] axis of A-P
    in_slice = shown_mask.any(axis=tuple(a for a in range(3) if a != ap_in_array))
    filled = np.flatnonzero(in_slice)
    picks = _pick_slices(filled if filled.size else np.arange(labels.shape[ap_in_array]),
                         n_slices)
    left_out = sorted(set(filled.tolist()) - set(picks.tolist()))

    # Every panel shows the same window: the masks' in-plane extent over all slices + a margin.
    union = np.zeros_like(coronal_plane(shown_mask, direction, 0))
    for n in filled:
        union |= coronal_plane(shown_mask, direction, int(n))
    r0, r1, c0, c1 = 0, union.shape[0], 0, union.shape[1]
    if union.any() and view == "femurs":
        rows, cols = np.nonzero(union)
        pad_r, pad_c = int(math.ceil(MARGIN_MM / row_mm)), int(math.ceil(MARGIN_MM / col_mm))
        r0, r1 = max(rows.min() - pad_r, 0), min(rows.max() + 1 + pad_r, union.shape[0])
        c0, c1 = max(cols.min() - pad_c, 0), min(cols.max() + 1 + pad_c, union.shape[1])
    width_mm, height_mm = (c1 - c0) * col_mm, (r1 - r0) * row_mm

    values = np.asarray(grey, dtype=np.float64)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0

    ncols = min(4, len(picks))
    nrows = int(math.ceil(len(picks) / ncols))
    px_per_mm = tile_scale(width_mm, height_mm, min(row_mm, col_mm))
    panel_w, panel_h = width_mm * px_per_mm / DPI, height_mm * px_per_mm / DPI  # inches
    gap_w, gap_h = 0.06, 0.3  # inches between tiles (room for each tile's title)
    head, foot = 1.0, 0.7  # inches for the title and the legend
    fig_w = max(panel_w * ncols + gap_w * (ncols + 1), 9.0)  # room for the title and legend
    fig_h = panel_h * nrows + gap_h * nrows + head + foot
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI, facecolor="black")
    m = images.ijk_to_lps(image)
    centre = [(s - 1) / 2.0 for s in image.GetSize()]
    extent = (0.0, width_mm, height_mm, 0.0)  # millimetres: square pixels mean equal mm
    xs = (np.arange(c1 - c0) + 0.5) * col_mm
    ys = (np.arange(r1 - r0) + 0.5) * row_mm
    left = (fig_w - (panel_w * ncols + gap_w * (ncols - 1))) / 2.0
    for number, n in enumerate(int(n) for n in picks):
        row, col = divmod(number, ncols)
        box = ((left + col * (panel_w + gap_w)) / fig_w,
               1 - (head + row * (panel_h + gap_h) + gap_h + panel_h) / fig_h,
               panel_w / fig_w, panel_h / fig_h)
        ax = fig.add_axes(box)
        ax.imshow(coronal_plane(grey, direction, n)[r0:r1, c0:c1], cmap="gray", vmin=lo,
                  vmax=hi, extent=extent, aspect="equal", interpolation="nearest")
        label_plane = coronal_plane(labels, direction, n)[r0:r1, c0:c1]
        for spec in segments:
            seg = (label_plane == spec.value).astype(np.float32)
            if seg.any() and min(seg.shape) > 1:  # a dark halo keeps pale outlines visible
                ax.contour(xs, ys, seg, levels=[0.5], colors=["black"], linewidths=3.4)
                ax.contour(xs, ys, seg, levels=[0.5], colors=[tuple(spec.color)],
                           linewidths=1.8)
        if reference is not None:
            ref = coronal_plane(reference, direction, n)[r0:r1, c0:c1].astype(np.float32)
            if ref.any() and min(ref.shape) > 1:
                ax.contour(xs, ys, ref, levels=[0.5], colors=[REFERENCE_COLOR],
                           linewidths=1.5, linestyles="dashed")
        point = list(centre)
        point[axes["AP"]] = float(n)
        y_mm = float((m @ np.array(point + [1.0]))[1])
        ax.set_title(f"{'ijk'[axes['AP']]} = {n}   {'P' if y_mm >= 0 else 'A'} {abs(y_mm):.1f} mm",
                     color="white", fontsize=9, pad=2)
        for text, x, y, ha, va in (("R", 0.02, 0.5, "left", "center"),
                                   ("L", 0.98, 0.5, "right", "center"),
                                   ("S", 0.5, 0.98, "center", "top"),
                                   ("I", 0.5, 0.02, "center", "bottom")):
            ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow",
                    fontsize=9, fontweight="bold")
        ax.set_xlim(0, width_mm)
        ax.set_ylim(height_mm, 0)
        ax.set_axis_off()
    legend = [Patch(facecolor=tuple(s.color), edgecolor="white",
                    label=f"{v['name']} (label {v['label_value']}): {v['volume_ml']:.1f} ml")
              for s, v in zip(segments, report["segments"])]
    if reference is not None:
        legend.append(Line2D([0], [0], color=REFERENCE_COLOR, linestyle="dashed",
                             label="reference"))
    fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 3), fontsize=10,
               frameon=False, labelcolor="white")
    sp = " x ".join(f"{s:.2f}" for s in spacing)
    note = "" if filled.size else " - nothing segmented"
    axis = "ijk"[axes["AP"]]
    if left_out:
        shown = (f"{len(picks)} of {filled.size} slices with femur shown; left out "
                 f"({len(left_out)}): {axis} = {_ranges(left_out)}")
    elif filled.size:
        shown = f"all {filled.size} slices with femur"
    else:
        shown = f"{len(picks)} slices"
    if report.get("slices_to_check"):
        shown += ("; slices to check (least certain first): " + axis + " = "
                  + ", ".join(str(s["slice"]) for s in report["slices_to_check"]))
    fig.suptitle(f"{report['title']}{note}\n{shown}\ncoronal slices, radiological view (patient "
                 f"right on the left); voxels {sp} mm", color="white", fontsize=11,
                 y=1 - 0.1 / fig_h, va="top")
    layout = {"slice_axis": axis, "slices_with_femur": int(filled.size), "view": view,
              "window_rows_columns": [int(r0), int(r1), int(c0), int(c1)],
              "slices_shown": [int(n) for n in picks], "slices_left_out": left_out,
              "pixels_per_mm": float(px_per_mm),
              "tile_pixels": [int(round(panel_w * DPI)), int(round(panel_h * DPI))]}
    return fig, layout
