"""From an image to a femur segmentation on exactly the input grid.

:class:`Segmenter` loads a model folder once and segments any number of images:
prepare (reorient, resample, normalise) -> network (whole volume or Gaussian-blended sliding
window for 3D; mirrored borders and nine overlapping patches per slice for 2D) -> optional flip
test-time augmentation -> mean over folds -> probabilities back onto the input grid -> threshold
from the model card -> connected-component clean-up and left/right split.

No torch import happens here; engines decide (see :mod:`FemurSegLib.engines`).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from . import postprocess
from .engines import Engine, make_engines, needs_for
from .images import array_to_image
from .modelfolder import Model, load_model
from .specs import InferenceSpec
from .preprocessing import Prepared, prepare, to_input_grid
from .segments import SegmentSpec

log = logging.getLogger(__name__)

#: progress(fraction in [0, 1], message)
Progress = Callable[[float, str], None]


def _no_progress(fraction: float, message: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------
# Patch geometry


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """nnU-Net style Gaussian weight map (centre 1, never exactly 0) for blending windows."""
    grids = np.meshgrid(*[np.arange(p, dtype=np.float32) - (p - 1) / 2.0 for p in patch],
                        indexing="ij")
    sq = np.zeros(patch, dtype=np.float32)
    for g, p in zip(grids, patch):
        sigma = max(p * sigma_scale, 1e-3)
        sq += (g / sigma) ** 2
    w = np.exp(-0.5 * sq)
    w /= w.max()
    w[w == 0] = w[w > 0].min()
    return np.maximum(w, 1e-3).astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> List[int]:
    """Start positions of windows of length ``patch`` covering ``[0, size)`` with the overlap.

    The first window starts at 0 and the last ends at ``size``; steps are as even as possible.
    """
    if patch >= size:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    n = int(np.ceil((size - patch) / step)) + 1
    return [int(round(v)) for v in np.linspace(0, size - patch, n)]


def pad_to_shape(array: np.ndarray, shape: Sequence[int], value: float
                 ) -> Tuple[np.ndarray, Tuple[slice, ...]]:
    """Pad the last ``len(shape)`` axes symmetrically up to at least ``shape``; return the crop back."""
    lead = array.ndim - len(shape)
    pads = [(0, 0)] * lead
    crop = [slice(None)] * lead
    for n, s in zip(array.shape[lead:], shape):
        total = max(0, s - n)
        before = total // 2
        pads.append((before, total - before))
        crop.append(slice(before, before + n))
    if any(p != (0, 0) for p in pads):
        array = np.pad(array, pads, mode="constant", constant_values=value)
    return array, tuple(crop)


def round_up(shape: Sequence[int], divisor: Sequence[int]) -> Tuple[int, ...]:
    return tuple(int(np.ceil(s / d) * d) for s, d in zip(shape, divisor))


# ----------------------------------------------------------------------------------------------
# 3D prediction


def predict_3d(engine: Engine, volume: np.ndarray, *, patch: Optional[Sequence[int]],
               divisor: Sequence[int], overlap: float = 0.5, batch_size: int = 1,
               progress: Progress = _no_progress) -> np.ndarray:
    """Class probabilities ``[K, D, H, W]`` of a normalised volume ``[D, H, W]``.

    ``patch=None`` runs the whole volume at once (padded to a multiple of ``divisor``);
    otherwise windows of ``patch`` are blended with Gaussian weights.
    """
    pad_value = float(volume.min())
    if patch is None:
        target = round_up(volume.shape, divisor)
        padded, crop = pad_to_shape(volume, target, pad_value)
        out = engine(padded[None, None])[0]
        progress(1.0, "network")
        return out[(slice(None),) + crop]
    patch = tuple(int(p) for p in patch)
    padded, crop = pad_to_shape(volume, patch, pad_value)
    shape = padded.shape
    starts = list(itertools.product(*[window_starts(s, p, overlap)
                                      for s, p in zip(shape, patch)]))
    weight = gaussian_importance(patch)
    acc = None
    norm = np.zeros(shape, dtype=np.float32)
    for b in range(0, len(starts), batch_size):
        chunk = starts[b:b + batch_size]
        x = np.stack([padded[tuple(slice(s, s + p) for s, p in zip(st, patch))]
                      for st in chunk])[:, None]
        y = engine(x)
        if acc is None:
            acc = np.zeros((y.shape[1],) + shape, dtype=np.float32)
        for st, yy in zip(chunk, y):
            sl = tuple(slice(s, s + p) for s, p in zip(st, patch))
            acc[(slice(None),) + sl] += yy * weight
            norm[sl] += weight
        progress(min(1.0, (b + len(chunk)) / len(starts)), "network")
    acc /= norm[None]
    return acc[(slice(None),) + crop]


# ----------------------------------------------------------------------------------------------
# 2.5D prediction (adjacent slices in, the centre slice out)


def slice_stack(volume: np.ndarray, z: int, context: int) -> np.ndarray:
    """Slices ``z - context//2 .. z + context//2`` of ``volume`` ``[D, H, W]``, mirrored
    (symmetric: -1 -> 0, D -> D-1) beyond the ends. Training and inference both use this."""
    d = volume.shape[0]
    half = context // 2
    idx = np.arange(z - half, z + half + 1)
    period = 2 * d
    idx = np.mod(idx, period)
    idx = np.where(idx >= d, period - 1 - idx, idx)
    return volume[idx]


def predict_slices(engine: Engine, volume: np.ndarray, *, context: int,
                   divisor: Sequence[int], batch_size: int = 8,
                   box: Optional[Tuple[slice, ...]] = None,
                   progress: Progress = _no_progress) -> np.ndarray:
    """Probabilities ``[K, D, H, W]`` of a 2.5D network (``context`` adjacent slices in).

    Every slice is predicted whole, with its neighbours as channels (mirrored beyond the
    volume's ends); in-plane the slices are padded with the volume's minimum up to a multiple of
    ``divisor`` (as training pads its crops). With ``box`` only that part of the volume is
    predicted (its slices still see their real neighbours) and the result has the box's shape.
    """
    pad_value = float(volume.min())
    box = box if box is not None else tuple(slice(0, n) for n in volume.shape)
    zs = list(range(*box[0].indices(volume.shape[0])))
    plane = volume[:, box[1], box[2]]
    target = round_up(plane.shape[1:], divisor[1:])
    acc = None
    for b in range(0, len(zs), batch_size):
        chunk = zs[b:b + batch_size]
        x = np.stack([slice_stack(plane, z, context) for z in chunk])
        x, crop = pad_to_shape(x, target, pad_value)
        y = engine(np.ascontiguousarray(x, dtype=np.float32))
        y = y[(slice(None), slice(None)) + crop[-2:]]
        if acc is None:
            acc = np.zeros((y.shape[1], len(zs)) + plane.shape[1:], dtype=np.float32)
        acc[:, b:b + len(chunk)] = np.moveaxis(y, 0, 1)
        progress(min(1.0, (b + len(chunk)) / len(zs)), "network")
    return acc


# ----------------------------------------------------------------------------------------------
# 2D prediction (the paper's 2D U-Net)


def nine_patch_starts(size: int, out: int) -> List[int]:
    """Three output-tile positions per axis: start, centre, end (9 tiles per slice)."""
    if out >= size:
        return [0]
    return sorted(set([0, (size - out) // 2, size - out]))


def predict_2d(engine: Engine, volume: np.ndarray, *, input_size: int, output_size: int,
               context: int = 3, progress: Progress = _no_progress) -> np.ndarray:
    """Probabilities ``[K, D, H, W]`` from a 2D unpadded U-Net on ``context`` adjacent slices.

    Each slice is mirrored at its borders by the network's margin and predicted as nine
    overlapping output tiles (3 x 3), averaged where they overlap, as in the paper. Slices beyond
    the volume's ends are mirrored too.
    """
    d, h, w = volume.shape
    if output_size < max(h, w) / 3.0:
        raise ValueError(f"output tile {output_size} too small to cover {h}x{w} with 3x3 tiles")
    margin = (input_size - output_size) // 2
    half = context // 2
    zpad = np.pad(volume, ((half, half), (0, 0), (0, 0)), mode="symmetric") if half else volume
    # mirror in-plane borders; tiles that overhang the slice when out > size are padded too
    ph, pw = max(0, output_size - h), max(0, output_size - w)
    mirrored = np.pad(zpad, ((0, 0), (margin, margin + ph), (margin, margin + pw)),
                      mode="reflect" if margin < min(h, w) else "symmetric")
    rows, cols = nine_patch_starts(h, output_size), nine_patch_starts(w, output_size)
    acc = None
    count = np.zeros((h + ph, w + pw), dtype=np.float32)
    for r, c in itertools.product(rows, cols):
        count[r:r + output_size, c:c + output_size] += 1
    for z in range(d):
        stack = mirrored[z:z + context]
        tiles = np.stack([stack[:, r:r + input_size, c:c + input_size]
                          for r, c in itertools.product(rows, cols)])
        y = engine(tiles)
        if acc is None:
            acc = np.zeros((y.shape[1], d, h + ph, w + pw), dtype=np.float32)
        for (r, c), yy in zip(itertools.product(rows, cols), y):
            acc[:, z, r:r + output_size, c:c + output_size] += yy
        progress((z + 1) / d, "network")
    acc /= count[None, None]
    return acc[:, :, :h, :w]


# ----------------------------------------------------------------------------------------------


def roi_box(prob: np.ndarray, threshold: float, margin: Sequence[int],
            divisor: Sequence[int]) -> Optional[Tuple[slice, ...]]:
    """Bounding box of ``prob > threshold`` grown by ``margin`` voxels per axis and to a multiple
    of ``divisor`` where the volume allows; None when nothing exceeds the threshold."""
    idx = np.argwhere(prob > threshold)
    if len(idx) == 0:
        return None
    box = []
    for axis, (lo, hi) in enumerate(zip(idx.min(0), idx.max(0) + 1)):
        n = prob.shape[axis]
        lo, hi = max(0, int(lo) - int(margin[axis])), min(n, int(hi) + int(margin[axis]))
        want = int(np.ceil((hi - lo) / divisor[axis]) * divisor[axis])
        grow = min(want, n) - (hi - lo)
        lo = max(0, lo - grow // 2)
        hi = min(n, lo + min(want, n))
        lo = max(0, hi - min(want, n))
        box.append(slice(lo, hi))
    return tuple(box)


def fold_probabilities(engine: Engine, volume: np.ndarray, architecture: dict,
                       spec: InferenceSpec, *, box: Optional[Tuple[slice, ...]] = None,
                       progress: Progress = _no_progress) -> np.ndarray:
    """Class probabilities ``[K, D, H, W]`` of one fold's network on a normalised volume, with
    the geometry of ``spec``: the paper's 2D tiles, whole 2.5D slices, or 3D windows / the whole
    volume. ``box`` restricts the prediction to part of the volume (a 2.5D box still sees its
    slices' real neighbours; a 3D or 2D box is cut out first)."""
    kind = architecture["type"]
    if kind == "UNet25D":
        return predict_slices(engine, volume, context=int(architecture["in_channels"]),
                              divisor=spec.divisor, batch_size=spec.batch_size, box=box,
                              progress=progress)
    part = volume if box is None else np.ascontiguousarray(volume[box])
    if kind == "UNet2D":
        return predict_2d(engine, part, input_size=spec.input_size, output_size=spec.output_size,
                          context=int(architecture.get("in_channels", 3)), progress=progress)
    return predict_3d(engine, part, patch=spec.patch_size, divisor=spec.divisor,
                      overlap=spec.overlap, batch_size=spec.batch_size, progress=progress)


def foreground_probability(probs: np.ndarray, spec: InferenceSpec) -> np.ndarray:
    """The femur probability: the sum of the ``spec.foreground_channels`` of ``probs``."""
    fg = probs[spec.foreground_channels[0]]
    for c in spec.foreground_channels[1:]:
        fg = fg + probs[c]
    return fg


def predict_fold(engine: Engine, volume: np.ndarray, architecture: dict, spec: InferenceSpec,
                 *, flip: tuple = (), box: Optional[Tuple[slice, ...]] = None,
                 progress: Progress = _no_progress) -> np.ndarray:
    """One fold's femur probability of ``volume`` (or of its ``box``), predicted on the volume
    flipped along the array axes ``flip`` and flipped back."""
    if flip:
        volume = np.ascontiguousarray(np.flip(volume, axis=flip))
        if box is not None:  # the same region of the flipped volume
            box = tuple(slice(n - b.stop, n - b.start) if a in flip else b
                        for a, (b, n) in enumerate(zip(box, volume.shape)))
    fg = foreground_probability(fold_probabilities(engine, volume, architecture, spec, box=box,
                                                   progress=progress), spec)
    return np.flip(fg, axis=flip) if flip else fg


def predict_array(model: Model, engines: Sequence[Engine], volume: np.ndarray, *,
                  tta: bool = True, dense: bool = False,
                  progress: Progress = _no_progress) -> np.ndarray:
    """Foreground probability ``[D, H, W]``: mean over folds and (optionally) flips
    (:func:`predict_passes` without the passes' own means)."""
    return predict_passes(model, engines, volume, tta=tta, dense=dense, progress=progress)[0]


def predict_passes(model: Model, engines: Sequence[Engine], volume: np.ndarray, *,
                   tta: bool = True, dense: bool = False, progress: Progress = _no_progress
                   ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """Foreground probability ``[D, H, W]``: mean over folds and (optionally) flips; then the
    means of the plain and of the flipped passes alone (both None without flips), whose
    disagreement marks where the model is unsure (:func:`FemurSegLib.uncertainty.
    slices_to_check`).

    With a region-of-interest cascade on the card (``inference.roi``) and several folds, the
    first fold runs on the whole volume and the others only in the box around the first fold's
    probability above its threshold (plus the margin, for context); outside that box every fold
    counts with the first fold's probability, which is below the threshold there. This cascade
    is exact outside the box and spares most of the network time. It applies to 3D and 2.5D
    networks; ``dense`` runs every fold on the whole volume regardless.
    """
    spec = model.inference
    arch = model.architecture
    flips = [()] + (list(spec.tta_flip_axes) if tta else [])
    runs = [(e, f) for e in engines for f in flips]
    roi = spec.roi if arch["type"] != "UNet2D" and len(engines) > 1 and not dense else None
    box = None
    first = None
    total = None
    flipped = plain = None
    for n, (engine, flip) in enumerate(runs):
        def sub(frac: float, msg: str, n=n) -> None:
            progress((n + frac) / len(runs), f"fold {n // len(flips) + 1}/{len(engines)}"
                     + (" (flipped)" if n % len(flips) else ""))
        if roi and n == len(flips):  # the first fold is done: find the region of interest
            first = total / len(flips)
            box = roi_box(first, roi.threshold, roi.margin, spec.divisor)
        if box is None:
            fg = predict_fold(engine, volume, arch, spec, flip=flip, progress=sub)
        else:  # outside the box this fold counts with the first fold's probability
            fg = first.copy()
            fg[box] = predict_fold(engine, volume, arch, spec, flip=flip, box=box, progress=sub)
        total = fg.astype(np.float32) if total is None else total + fg
        if flip:
            flipped = fg.astype(np.float32) if flipped is None else flipped + fg
        else:
            plain = fg.astype(np.float32) if plain is None else plain + fg
    mean = (total / len(runs)).astype(np.float32)
    if flipped is None:
        return mean, None, None
    return (mean, (plain / len(engines)).astype(np.float32),
            (flipped / (len(runs) - len(engines))).astype(np.float32))


def close_slice_gaps(fg: np.ndarray, spec: InferenceSpec, grid: sitk.Image) -> np.ndarray:
    """The card's ``fill_slice_gaps`` on a foreground probability ``[k, j, i]`` of the network
    ``grid``: one-slice gaps along k (the 2.5D and 2D networks' slice axis) closed in pieces of
    at least that many mm² (:func:`FemurSegLib.postprocess.fill_slice_gaps`); as it was when
    the card has none."""
    if spec.fill_slice_gaps is None:
        return fg
    sx, sy = grid.GetSpacing()[:2]
    min_voxels = int(np.ceil(spec.fill_slice_gaps / (sx * sy))) if spec.fill_slice_gaps else 0
    return postprocess.fill_slice_gaps(fg, axis=0, threshold=spec.mask_threshold,
                                       min_voxels=min_voxels)


def default_tta(model: Model, engines: Sequence[Engine]) -> bool:
    """Flip test-time augmentation when nothing says otherwise: the card's ``tta_on_gpu`` on a
    GPU (default on), ``tta_on_cpu`` on the CPU (default off: it doubles the network time)."""
    device = "cpu" if all(e.device == "cpu" for e in engines) else "gpu"
    return model.inference.tta_default(device)


@dataclass
class Result:
    labelmap: sitk.Image          # uint8 on the input grid: 1 = right, 2 = left (no split: 1)
    probability: sitk.Image       # float32 foreground probability on the input grid
    segments: List[SegmentSpec]
    split: bool
    threshold: float
    timings: Dict[str, float] = field(default_factory=dict)
    prepared: Optional[Prepared] = None  # the image as the network saw it (for plausibility)
    # float32 [k, j, i] on the input grid: the plain and the flipped passes' own foreground
    # probabilities, with segment(keep_passes=True) and flip TTA on (else None); the slices to
    # check use them (where the two passes disagree)
    plain_probability: Optional[np.ndarray] = None
    flipped_probability: Optional[np.ndarray] = None


class Segmenter:
    """A loaded model ready to segment images (the model is read and verified once)."""

    def __init__(self, model: Model, engines: Sequence[Engine], *, tta: Optional[bool] = None,
                 split: bool = True, dense: bool = False):
        self.model = model
        self.dense = dense
        self.engines = list(engines)
        self.tta = default_tta(model, self.engines) if tta is None else bool(tta)
        self.split = split

    @classmethod
    def from_folder(cls, model_dir, *, device: str = "auto", engine: str = "auto",
                    folds: Optional[List[int]] = None, tta: Optional[bool] = None,
                    split: bool = True, dense: bool = False,
                    threads: Optional[int] = None) -> "Segmenter":
        model = load_model(model_dir, folds=folds, need=needs_for(engine))
        return cls(model, make_engines(model, device, engine, threads), tta=tta, split=split,
                   dense=dense)

    def segment(self, image: sitk.Image, progress: Progress = _no_progress, *,
                keep_passes: bool = False) -> Result:
        """Segment ``image``. ``keep_passes``: also map the plain and the flipped passes' own
        probabilities onto the input grid (:attr:`Result.plain_probability`,
        :attr:`Result.flipped_probability`; with flip TTA on), for the slices to check of the
        QC report and the review page."""
        t0 = time.perf_counter()
        timings = {}
        progress(0.0, "preprocessing")
        prep = prepare(image, self.model.input)
        timings["preprocess_s"] = time.perf_counter() - t0

        def net_progress(frac: float, msg: str) -> None:
            progress(0.05 + 0.85 * frac, msg)

        t1 = time.perf_counter()
        fg, *fg_passes = predict_passes(self.model, self.engines, prep.array, tta=self.tta,
                                        dense=self.dense, progress=net_progress)
        fg = close_slice_gaps(fg, self.model.inference, prep.grid)
        timings["network_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        progress(0.9, "post-processing")
        prob = to_input_grid(fg, prep.grid, image, order="linear")
        prob_arr = np.clip(sitk.GetArrayViewFromImage(prob), 0.0, 1.0).astype(np.float32)
        threshold = self.model.threshold
        labels, split = postprocess.label_probability(prob_arr, image, threshold,
                                                      self.model.inference.postprocess,
                                                      split=self.split)
        labelmap = array_to_image(labels.astype(np.uint8), image)
        probability = array_to_image(prob_arr, image)
        passes = [None, None]
        if keep_passes and fg_passes[0] is not None:
            passes = [np.clip(sitk.GetArrayFromImage(to_input_grid(  # a copy: the image goes
                close_slice_gaps(a, self.model.inference, prep.grid), prep.grid, image,
                order="linear")), 0.0, 1.0).astype(np.float32) for a in fg_passes]
        timings["postprocess_s"] = time.perf_counter() - t2
        timings["total_s"] = time.perf_counter() - t0
        progress(1.0, "done")
        return Result(labelmap=labelmap, probability=probability,
                      segments=self.model.segments(split), split=split, threshold=threshold,
                      timings=timings, prepared=prep, plain_probability=passes[0],
                      flipped_probability=passes[1])

    def plausibility(self, image: sitk.Image, result: Result) -> Tuple[List[str], Optional[str]]:
        """``(problems, likely cause)`` of ``result`` (see :func:`FemurSegLib.plausibility.
        assess`): no femur, a femur volume far outside the card's training range, or a
        segmentation covering most of the image; the cause from the intensity fingerprint."""
        from .plausibility import assess, image_fingerprint

        section = self.model.plausibility

        def fingerprint() -> Dict[str, float]:
            return image_fingerprint(result.prepared.array, self.model.input.orientation, section)

        return assess(sitk.GetArrayViewFromImage(result.labelmap), image, section,
                      fingerprint if result.prepared is not None else None)
