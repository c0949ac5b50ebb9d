"""Synthetic-contrast augmentation, in the spirit of SynthSeg (Billot et al. 2023).

The real training scans have one contrast (T1 TSE). To make a model less tied to it (and to the
exact grey values of tissues), each patch may get a random intensity remapping: the normalised
intensities (about 0..1) go through a random piecewise-linear look-up table, so that every
tissue's grey level moves to a new random level while the texture inside each tissue stays. With
probability ``p_monotonic`` the table is monotonic (contrast changes, order kept); otherwise
tissues may swap brightness. A random gamma and noise follow.
"""

from __future__ import annotations

import numpy as np


def random_lut(rng: np.random.Generator, knots: int = 6, p_monotonic: float = 0.5):
    """Knot positions ``x`` (0..1) and random levels ``y`` (0..1) of a look-up table."""
    x = np.linspace(0.0, 1.0, knots)
    y = rng.uniform(0.0, 1.0, knots)
    if rng.random() < p_monotonic:
        y = np.sort(y)
    y[0] = min(y[0], 0.1)  # keep air dark: background stays background-like
    return x, y


def synthetic_contrast(image: np.ndarray, rng: np.random.Generator, *, knots: int = 6,
                       p_monotonic: float = 0.5, p_apply: float = 0.5) -> np.ndarray:
    """Randomly remap the intensities of a normalised patch (returns float32, same shape)."""
    if rng.random() >= p_apply:
        return np.asarray(image, dtype=np.float32)
    x, y = random_lut(rng, knots, p_monotonic)
    out = np.interp(np.clip(image, 0.0, 1.0), x, y).astype(np.float32)
    lo, hi = float(out.min()), float(out.max())
    if hi > lo:
        out = (out - lo) / (hi - lo)
    out = out ** np.float32(np.exp(rng.uniform(-0.4, 0.4)))
    out = out + rng.normal(0.0, rng.uniform(0.0, 0.04), out.shape).astype(np.float32)
    return out.astype(np.float32)
