"""Result writers of ``femurseg segment``: .seg.nrrd, label maps, probabilities, STL, PNG report.

Every writer takes a label map (a ``SimpleITK.Image`` of integer label values, on exactly the
input image's grid) and a list of :class:`~FemurSegLib.segments.SegmentSpec`. Every file is
written atomically through :func:`FemurSegLib.files.atomic_path` and an existing file is refused
unless ``overwrite=True``; a writer producing several files checks all of them before it writes
the first, so a refusal never leaves a half-replaced set behind.

Only numpy, scipy, scikit-image, SimpleITK, slicerio and matplotlib are used: no VTK, no Slicer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from . import files, images
from .errors import InputError
from .files import PathLike
from .segments import SegmentSpec

__all__ = ["write_seg_nrrd", "write_labelmap", "write_probability", "write_stl", "write_report",
           "segment_volumes", "surface_mesh", "write_binary_stl", "mesh_volume"]

#: Header field of a .seg.nrrd naming the image the segmentation was computed from.
REFERENCE_FIELD = "FemurSeg_ReferenceImage"
_BAD_NAME_CHARS = '\r\n\t/\\:*?"<>|'


# ----------------------------------------------------------------------------------------------
# Validation


def _check_inputs(labelmap: sitk.Image, segments: Sequence[SegmentSpec]) -> np.ndarray:
    """Validate ``labelmap`` against ``segments``; return its ``[k, j, i]`` array."""
    images.validate_image(labelmap, what="label map", allow_constant=True)
    if labelmap.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16,
                                     sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                                     sitk.sitkUInt64, sitk.sitkInt64):
        raise InputError(f"label map must have an integer voxel type, not "
                         f"{labelmap.GetPixelIDTypeAsString()}")
    if not segments:
        raise InputError("no segments given for the label map")
    values = [s.value for s in segments]
    if any(not 1 <= v <= 255 for v in values):
        raise InputError(f"segment label values must lie in 1..255, not {values}")
    for what, items in (("label value", values), ("name", [s.name for s in segments]),
                        ("ID", [s.segment_id for s in segments])):
        duplicates = sorted({str(x) for x in items if items.count(x) > 1})
        if duplicates:
            raise InputError(f"duplicate segment {what}: {', '.join(duplicates)}")
    for s in segments:  # names become file names (STL) and NRRD header lines
        if not s.name.strip() or any(c in s.name for c in _BAD_NAME_CHARS):
            raise InputError(f"invalid segment name {s.name!r}: it must be non-empty, without "
                             f"line breaks or any of {_BAD_NAME_CHARS.strip()}")
    array = sitk.GetArrayViewFromImage(labelmap)
    unknown = sorted(set(np.unique(array).tolist()) - set(values) - {0})
    if unknown:
        raise InputError(f"label map holds values {unknown} that no segment describes "
                         f"(segments: {sorted(values)})")
    return array


def segment_volumes(labelmap: sitk.Image, segments: Sequence[SegmentSpec]) -> List[dict]:
    """Voxel count and volume (mm3 and ml) of each segment, in the order of ``segments``."""
    array = _check_inputs(labelmap, segments)
    counts = np.bincount(array.ravel().astype(np.int64), minlength=256)
    voxel_mm3 = float(np.prod(labelmap.GetSpacing()))
    return [{"name": s.name, "label_value": int(s.value), "voxel_count": int(counts[s.value]),
             "volume_mm3": int(counts[s.value]) * voxel_mm3,
             "volume_ml": int(counts[s.value]) * voxel_mm3 / 1000.0}
            for s in segments]


# ----------------------------------------------------------------------------------------------
# .seg.nrrd (3D Slicer segmentation)


def write_seg_nrrd(labelmap: sitk.Image, segments: Sequence[SegmentSpec], path: PathLike, *,
                   overwrite: bool = False, reference_name: Optional[str] = None) -> Path:
    """Write a 3D Slicer segmentation (``.seg.nrrd``) with named, coloured, coded segments.

    The voxels are the label map's own values in a single layer (segment ``value`` is its
    ``LabelValue``), on exactly the label map's grid (an oblique direction is kept). Segments
    without voxels are written too (extent ``0 -1 0 -1 0 -1``, as Slicer writes an empty
    segment), so the user sees an empty "Left femur" rather than a missing one.
    ``reference_name`` (for example the input file name) is stored in the custom header field
    ``FemurSeg_ReferenceImage``.
    """
    import slicerio

    if not str(path).lower().endswith(".seg.nrrd"):
        raise InputError(f"a Slicer segmentation file must end with .seg.nrrd: {Path(path).name}")
    array = _check_inputs(labelmap, segments)
    voxels_ijk = np.ascontiguousarray(array.transpose(2, 1, 0), dtype=np.uint8)
    segmentation = slicerio.create_segmentation(labelmap.GetSize(), images.ijk_to_lps(labelmap),
                                                dtype="uint8")
    segmentation["voxels"] = voxels_ijk
    segmentation["containedRepresentationNames"] = ["Binary labelmap"]
    segmentation["masterRepresentation"] = "Binary labelmap"
    for spec in segments:
        present = np.nonzero(voxels_ijk == spec.value)
        extent = ([int(v) for axis in present for v in (axis.min(), axis.max())]
                  if present[0].size else [0, -1, 0, -1, 0, -1])
        segment = {"id": spec.segment_id, "name": spec.name, "nameAutoGenerated": False,
                   "color": [float(c) for c in spec.color], "colorAutoGenerated": False,
                   "labelValue": int(spec.value), "layer": 0, "extent": extent}
        if spec.terminology:
            segment["terminology"] = spec.terminology
        segmentation["segments"].append(segment)
    if reference_name:
        segmentation[REFERENCE_FIELD] = " ".join(str(reference_name).split())
    with files.atomic_path(path, overwrite) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation, compression_level=6)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# Plain images


def write_labelmap(labelmap: sitk.Image, path: PathLike, overwrite: bool = False) -> Path:
    """Write the label map (uint8) as NIfTI, NRRD or MHA; the format follows the file ending."""
    images.validate_image(labelmap, what="label map", allow_constant=True)
    if labelmap.GetPixelID() != sitk.sitkUInt8:
        array = sitk.GetArrayViewFromImage(labelmap)
        if array.min() < 0 or array.max() > 255 or not np.all(array == np.round(array)):
            raise InputError("label map values must be integers in 0..255")
        labelmap = sitk.Cast(labelmap, sitk.sitkUInt8)
    return images.write_image(labelmap, path, overwrite=overwrite)


def write_probability(prob_image: sitk.Image, path: PathLike, overwrite: bool = False) -> Path:
    """Write a foreground probability map (values in 0..1) as float32 NIfTI, NRRD or MHA."""
    images.validate_image(prob_image, what="probability map", allow_constant=True)
    array = sitk.GetArrayViewFromImage(prob_image)
    if array.min() < -1e-6 or array.max() > 1 + 1e-6:
        raise InputError(f"probability map values must lie in 0..1, not "
                         f"{float(array.min()):.4g}..{float(array.max()):.4g}")
    if prob_image.GetPixelID() != sitk.sitkFloat32:
        prob_image = sitk.Cast(prob_image, sitk.sitkFloat32)
    return images.write_image(prob_image, path, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------
# STL surfaces


def surface_mesh(mask: np.ndarray, ijk_to_lps: np.ndarray, smoothing: float = 0.5):
    """Closed triangle surface of a binary ``[k, j, i]`` mask, in LPS millimetres.

    The surface is a level set of the signed distance map of the mask (millimetres between
    voxel centres, positive inside), so that it runs half-way between inside and outside voxels:

    * the mask is cropped to its bounding box with a zero margin, so that objects touching the
      volume border are closed;
    * along a thick-slice axis (spacing > 1.5 x the finest) the distance map is interpolated
      linearly onto slices at most 1.5 x the finest spacing apart: between two 5 mm slices
      whose outlines differ the wall slopes from one outline to the other (shape-based
      interpolation) instead of making a staircase;
    * a Gaussian of ``smoothing`` voxels (standard deviation along each axis, in that axis's
      voxels; 0 = none) rounds off the remaining voxel edges and slice terraces;
    * the level is chosen so that the volume enclosed on the grid equals the voxels' volume
      (first from a count of grid cells, offset at most half the finest spacing; then one
      secant step on the measured mesh volume, offset at most one finest spacing), which
      undoes the shrinkage of convex and thin parts by the interpolation and the blur;
    * marching cubes contours that level; vertices go through the full index -> LPS matrix
      (anisotropic and oblique grids alike) and triangles are ordered with outward normals.

    Returns ``(vertices (N, 3) float64, faces (M, 3) int64)``; ``M == 0`` for an empty mask.
    """
    smoothing = _check_smoothing(smoothing)
    mask = np.asarray(mask, dtype=bool)
    m = np.asarray(ijk_to_lps, dtype=np.float64)
    if not mask.any():
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    spacing = np.linalg.norm(m[:3, :3], axis=0)[::-1]  # per array axis (k, j, i), mm
    fine = float(spacing.min())
    margin = 2 + int(math.ceil(3 * smoothing))
    nonzero = np.nonzero(mask)
    lo = np.array([int(a.min()) for a in nonzero]) - margin
    hi = np.array([int(a.max()) + 1 for a in nonzero]) + margin
    crop = np.zeros(hi - lo, dtype=bool)
    src = tuple(slice(max(l, 0), min(h, n)) for l, h, n in zip(lo, hi, mask.shape))
    dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
    crop[dst] = mask[src]

    field, step = _signed_distance(crop, spacing)
    if smoothing > 0:
        from scipy import ndimage
        blurred = ndimage.gaussian_filter(field, sigma=smoothing / step, mode="nearest")
        if blurred.max() > 0.5 * fine:  # else a speck smaller than the blur would vanish
            field = blurred
    # Interpolating and blurring a distance map shrink convex parts a little: contour at the
    # level (an offset in mm, at most half the finest spacing) whose enclosed volume on the
    # grid equals the voxels' volume.
    cells = min(max(int(round(np.count_nonzero(crop) / float(np.prod(step)))), 1), field.size)
    level = float(np.partition(field, field.size - cells, axis=None)[field.size - cells])
    level = float(np.clip(level, -0.5 * fine, 0.5 * fine))
    lps, faces = _mesh_at(field, level, step, lo, m)
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
            lps2, faces2 = _mesh_at(field, level2, step, lo, m)
            if len(faces2) and abs(abs(mesh_volume(lps2, faces2)) - target) < abs(volume - target):
                lps, faces = lps2, faces2
    return lps, faces


def _mesh_at(field: np.ndarray, level: float, step: np.ndarray, lo: np.ndarray, m: np.ndarray):
    """Marching cubes of ``field`` at ``level``: vertices in LPS mm, outward triangles."""
    from skimage import measure

    level = np.float32(level)
    while np.any(field == level):  # a grid value on the level makes coincident vertices
        level = np.nextafter(level, np.float32(np.inf))
    # Contour in (i, j, k) order so that vertices come out as (fractional) voxel indices.
    verts, faces, _, _ = measure.marching_cubes(np.ascontiguousarray(field.transpose(2, 1, 0)),
                                                level=float(level), allow_degenerate=False)
    ijk = verts.astype(np.float64) * step[::-1] + lo[::-1]
    lps = ijk @ m[:3, :3].T + m[:3, 3]
    # STL stores float32: weld vertices that float32 cannot tell apart (marching cubes makes
    # such pairs next to grid points on the level) and drop the triangles that collapse.
    lps, inverse = np.unique(lps.astype(np.float32), axis=0, return_inverse=True)
    lps = lps.astype(np.float64)
    faces = inverse.reshape(-1)[faces].astype(np.int64)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2])
                  & (faces[:, 2] != faces[:, 0])]
    if mesh_volume(lps, faces) < 0:
        faces = faces[:, ::-1].copy()
    return lps, faces


def _check_smoothing(smoothing) -> float:
    try:
        value = float(smoothing)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"STL smoothing must be a finite number >= 0, not {smoothing!r}")
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


def write_stl(labelmap: sitk.Image, segments: Sequence[SegmentSpec], out_dir: PathLike, *,
              smoothing: float = 0.5, overwrite: bool = False,
              coordinate_system: str = "LPS") -> List[Path]:
    """Write one binary STL surface per non-empty segment as ``<out_dir>/<segment_id>.stl``.

    Coordinates are physical millimetres in ``coordinate_system`` "LPS" (3D Slicer's default for
    STL files; the header says ``SPACE=LPS`` as Slicer's own files do) or "RAS". Surfaces are
    closed with outward normals; see :func:`surface_mesh` for ``smoothing``. Returns the written
    paths (segments without voxels get no file).
    """
    system = str(coordinate_system).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"STL coordinate system must be LPS or RAS, not {coordinate_system!r}")
    smoothing = _check_smoothing(smoothing)
    array = _check_inputs(labelmap, segments)
    out = Path(out_dir)
    present = [s for s in segments if np.any(array == s.value)]
    targets = [out / f"{s.segment_id}.stl" for s in present]
    for target in targets:
        files.check_writable(target, overwrite)
    m = images.ijk_to_lps(labelmap)
    if system == "RAS":
        m = np.diag([-1.0, -1.0, 1.0, 1.0]) @ m
    for spec, target in zip(present, targets):
        vertices, faces = surface_mesh(array == spec.value, m, smoothing)
        write_binary_stl(vertices, faces, target, overwrite=overwrite,
                         header=f"FemurSeg {spec.name} SPACE={system}")
    return targets


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


def write_report(image: sitk.Image, labelmap: sitk.Image, segments: Sequence[SegmentSpec],
                 out_dir: PathLike, *, overwrite: bool = False, title: Optional[str] = None,
                 n_slices: int = 12) -> dict:
    """Write ``out_dir/report.png`` (coronal montage) and ``out_dir/volumes.json``.

    The montage shows up to ``n_slices`` coronal slices evenly spaced over those that contain
    the mask (over the whole volume if it is empty): the grey image windowed at its 0.5th and
    99.5th percentiles, each segment's outline in its colour, the slice index and A-P position,
    in physical proportions (voxel spacing respected) and radiological orientation (patient
    right on the image left, superior at the top; R/L/S/I marked), with a legend of volumes.
    On an oblique grid the slices are the voxel planes nearest to coronal (not resampled).

    The JSON, also returned, holds the title, the voxel spacing and volume, and for each segment
    its name, label value, voxel count and volume in mm3 and ml (mm3 / 1000).
    """
    array = _check_inputs(labelmap, segments)
    images.validate_image(image, what="image", allow_constant=True)
    mismatch = images.grid_mismatch(labelmap, image)
    if mismatch:
        raise InputError(f"label map is not on the image grid: {mismatch}")
    if n_slices < 1:
        raise InputError(f"the report needs at least one slice, not {n_slices}")
    out = Path(out_dir)
    png_path, json_path = out / "report.png", out / "volumes.json"
    for target in (png_path, json_path):
        files.check_writable(target, overwrite)
    report = {"title": title or "FemurSeg segmentation",
              "spacing_mm": [float(s) for s in labelmap.GetSpacing()],
              "voxel_volume_mm3": float(np.prod(labelmap.GetSpacing())),
              "segments": segment_volumes(labelmap, segments)}
    figure = _montage(image, array, segments, report, n_slices)
    with files.atomic_path(png_path, overwrite) as tmp:
        figure.savefig(str(tmp), format="png", facecolor=figure.get_facecolor())
    files.write_json(report, json_path, overwrite=overwrite)
    return report


def _montage(image: sitk.Image, labels: np.ndarray, segments: Sequence[SegmentSpec],
             report: dict, n_slices: int):
    """The report figure (a bare matplotlib Figure: rendered with Agg, no pyplot state)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    direction = image.GetDirection()
    axes = coronal_axes(direction)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    row_mm, col_mm = spacing[axes["SI"]], spacing[axes["LR"]]
    grey = sitk.GetArrayViewFromImage(image)
    mask = labels > 0
    ap_in_array = 2 - axes["AP"]  # [k, j, i] axis of A-P
    in_slice = mask.any(axis=tuple(a for a in range(3) if a != ap_in_array))
    filled = np.flatnonzero(in_slice)
    picks = _pick_slices(filled if filled.size else np.arange(labels.shape[ap_in_array]),
                         n_slices)

    # Every panel shows the same window: the mask's in-plane extent over all slices + 15 mm.
    union = np.zeros_like(coronal_plane(mask, direction, 0))
    for n in filled:
        union |= coronal_plane(mask, direction, int(n))
    r0, r1, c0, c1 = 0, union.shape[0], 0, union.shape[1]
    if union.any():
        rows, cols = np.nonzero(union)
        pad_r, pad_c = int(math.ceil(15.0 / row_mm)), int(math.ceil(15.0 / col_mm))
        r0, r1 = max(rows.min() - pad_r, 0), min(rows.max() + 1 + pad_r, union.shape[0])
        c0, c1 = max(cols.min() - pad_c, 0), min(cols.max() + 1 + pad_c, union.shape[1])
    width_mm, height_mm = (c1 - c0) * col_mm, (r1 - r0) * row_mm

    values = np.asarray(grey, dtype=np.float64)
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0

    ncols = min(4, len(picks))
    nrows = int(math.ceil(len(picks) / ncols))
    panel_w = 3.2
    panel_h = panel_w * height_mm / width_mm
    head, foot = 0.75, 0.6  # inches for the title and the legend
    fig_h = panel_h * nrows + head + foot
    fig_w = max(panel_w * ncols, 7.5)  # room for the title and the legend
    side = 0.5 * (1 - panel_w * ncols / fig_w) + 0.01
    fig = Figure(figsize=(fig_w, fig_h), dpi=110, facecolor="black")
    grid = fig.add_gridspec(nrows, ncols, left=side, right=1 - side, top=1 - head / fig_h,
                            bottom=foot / fig_h, wspace=0.04, hspace=0.12)
    m = images.ijk_to_lps(image)
    centre = [(s - 1) / 2.0 for s in image.GetSize()]
    extent = (0.0, width_mm, height_mm, 0.0)  # millimetres: square pixels mean equal mm
    xs = (np.arange(c1 - c0) + 0.5) * col_mm
    ys = (np.arange(r1 - r0) + 0.5) * row_mm
    for number, n in enumerate(int(n) for n in picks):
        ax = fig.add_subplot(grid[number // ncols, number % ncols])
        ax.imshow(coronal_plane(grey, direction, n)[r0:r1, c0:c1], cmap="gray", vmin=lo,
                  vmax=hi, extent=extent, aspect="equal", interpolation="nearest")
        label_plane = coronal_plane(labels, direction, n)[r0:r1, c0:c1]
        for spec in segments:
            seg = (label_plane == spec.value).astype(np.float32)
            if seg.any() and min(seg.shape) > 1:  # a dark halo keeps pale outlines visible
                ax.contour(xs, ys, seg, levels=[0.5], colors=["black"], linewidths=2.6)
                ax.contour(xs, ys, seg, levels=[0.5], colors=[tuple(spec.color)],
                           linewidths=1.2)
        point = list(centre)
        point[axes["AP"]] = float(n)
        y_mm = float((m @ np.array(point + [1.0]))[1])
        ax.set_title(f"{'ijk'[axes['AP']]} = {n}   {'P' if y_mm >= 0 else 'A'} {abs(y_mm):.1f} mm",
                     color="white", fontsize=8, pad=2)
        for text, x, y, ha, va in (("R", 0.02, 0.5, "left", "center"),
                                   ("L", 0.98, 0.5, "right", "center"),
                                   ("S", 0.5, 0.98, "center", "top"),
                                   ("I", 0.5, 0.02, "center", "bottom")):
            ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow",
                    fontsize=8, fontweight="bold")
        ax.set_xlim(0, width_mm)
        ax.set_ylim(height_mm, 0)
        ax.set_axis_off()
    legend = [Patch(facecolor=tuple(s.color), edgecolor="white",
                    label=f"{v['name']} (label {v['label_value']}): {v['volume_ml']:.1f} ml")
              for s, v in zip(segments, report["segments"])]
    fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), 3), fontsize=9,
               frameon=False, labelcolor="white")
    sp = " x ".join(f"{s:.2f}" for s in spacing)
    note = "" if filled.size else " - nothing segmented"
    fig.suptitle(f"{report['title']}{note}\ncoronal slices, radiological view (patient right on "
                 f"the left); voxels {sp} mm", color="white", fontsize=10)
    return fig
