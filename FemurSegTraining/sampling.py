"""Training samples: 3D patches, the paper's 2D tiles and 2.5D slice stacks, drawn around a
random voxel or (with the config's ``foreground_oversample``) around a femur voxel.

Beyond the volume, samples are filled exactly as inference fills them: 3D patches with the
volume's minimum (as :func:`FemurSegLib.inference.predict_3d` pads), 2D tiles mirrored at the
slice borders and slice stacks mirrored across the end slices (:func:`FemurSegLib.inference.
slice_stack`), so that training and inference see the same borders.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from FemurSegLib.inference import slice_stack

from .data import Preprocessed


def _crop_with_pad(vol: np.ndarray, starts: Sequence[int], size: Sequence[int], value: float
                   ) -> np.ndarray:
    """``vol[starts:starts+size]`` with out-of-volume parts filled with ``value``."""
    out = np.full(tuple(size), value, dtype=vol.dtype)
    src, dst = [], []
    for s, n, dim in zip(starts, size, vol.shape):
        a, b = max(s, 0), min(s + n, dim)
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[tuple(dst)] = vol[tuple(src)]
    return out


def sample_patch_3d(case: Preprocessed, size: Sequence[int], rng: np.random.Generator,
                    p_fg: float):
    """A patch (image, target) centred on a random voxel, or on a foreground voxel w.p. ``p_fg``."""
    shape = case.image.shape
    if rng.random() < p_fg and case.target.any():
        fg = np.argwhere(case.target)
        centre = fg[rng.integers(len(fg))]
    else:
        centre = np.array([rng.integers(s) for s in shape])
    starts = [int(c) - n // 2 for c, n in zip(centre, size)]
    # keep patches inside the volume where the volume is large enough
    starts = [min(max(s, 0), max(dim - n, 0)) if dim >= n else (dim - n) // 2
              for s, n, dim in zip(starts, size, shape)]
    bg = float(case.image.min())
    return _crop_with_pad(case.image, starts, size, bg), _crop_with_pad(case.target, starts, size, 0)


def reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored into ``0..n-1`` without repeating the edge (numpy's "reflect" padding:
    -1 -> 1, n -> n-2), any distance beyond the ends."""
    idx = np.asarray(idx)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def crop_mirrored(plane_stack: np.ndarray, rows: Sequence[int], cols: Sequence[int]) -> np.ndarray:
    """``plane_stack[..., rows, cols]`` with indices outside the planes mirrored as
    :func:`FemurSegLib.inference.predict_2d` mirrors slice borders."""
    h, w = plane_stack.shape[-2:]
    r = reflect_index(np.asarray(rows), h)
    c = reflect_index(np.asarray(cols), w)
    return plane_stack[..., r[:, None], c[None, :]]


def sample_patch_2d(case: Preprocessed, in_size: int, out_size: int, context: int,
                    rng: np.random.Generator, p_fg: float):
    """``context`` adjacent slices of ``in_size``^2 and the centre slice's ``out_size``^2 target.

    Beyond the volume the slices are mirrored as inference mirrors them: symmetric across the
    end slices, reflected across the in-plane borders (image and target alike)."""
    shape = case.image.shape
    if rng.random() < p_fg and case.target.any():
        fg = np.argwhere(case.target)
        z, y, x = fg[rng.integers(len(fg))]
    else:
        z, y, x = (int(rng.integers(s)) for s in shape)
    margin = (in_size - out_size) // 2
    y0 = int(y) - in_size // 2
    x0 = int(x) - in_size // 2
    stack = slice_stack(case.image, int(z), context)
    img = crop_mirrored(stack, range(y0, y0 + in_size), range(x0, x0 + in_size))
    tgt = crop_mirrored(case.target[int(z)], range(y0 + margin, y0 + margin + out_size),
                        range(x0 + margin, x0 + margin + out_size))
    return np.ascontiguousarray(img), np.ascontiguousarray(tgt)


_FG_INDEX_CACHE: Dict[int, np.ndarray] = {}


def _foreground_voxels(case: Preprocessed) -> np.ndarray:
    key = id(case.target)
    if key not in _FG_INDEX_CACHE:
        _FG_INDEX_CACHE[key] = np.argwhere(case.target)
    return _FG_INDEX_CACHE[key]


def sample_slab(case: Preprocessed, size: int, context: int, rng: np.random.Generator,
                p_fg: float):
    """``context`` adjacent slices (mirrored beyond the ends, as :func:`predict_slices` does)
    cropped to ``size``^2 in-plane around a random voxel, or around a femur voxel w.p. ``p_fg``;
    and the centre slice's class map (``Preprocessed.training_target``)."""
    shape = case.image.shape
    fg = _foreground_voxels(case) if rng.random() < p_fg else None
    if fg is not None and len(fg):
        z, y, x = (int(v) for v in fg[rng.integers(len(fg))])
    else:
        z, y, x = (int(rng.integers(s)) for s in shape)
    starts = []
    for c, dim in ((y, shape[1]), (x, shape[2])):
        s0 = c - size // 2
        starts.append(min(max(s0, 0), dim - size) if dim >= size else (dim - size) // 2)
    bg = float(case.image.min())
    stack = slice_stack(case.image, z, context)
    img = _crop_with_pad(stack, [0] + starts, [context, size, size], bg)
    tgt = _crop_with_pad(case.training_target[z:z + 1], [0] + starts, [1, size, size], 0)[0]
    return img, tgt
