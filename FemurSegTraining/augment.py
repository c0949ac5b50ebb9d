"""Training augmentation: small transforms, each a pure function of its inputs and a generator.

Intensity transforms work on normalised images (about 0..1, as :func:`FemurSegLib.preprocessing.
normalise` makes them) and cover what another scanner, coil or sequence changes:

- :func:`bias_field`: a smooth multiplicative field (receive-coil shading), up to about +-40%
  across the field of view (stronger with the config's ``augment.bias_log_amplitude``);
- :func:`gamma`: intensities raised to a random power;
- :func:`invert`: inverted contrast inside the body (fat dark, fluid bright, as on T2-weighted
  images) with the air kept dark, or the whole image inverted;
- :func:`synthetic_contrast`: a random, possibly non-monotone look-up table (the SynthSeg idea,
  Billot et al. 2023): every tissue's grey level moves to a new random level while the texture
  inside each tissue stays;
- :func:`blur`, :func:`low_resolution` and :func:`noise`.

:func:`robust_intensity` draws a random chain of them; :func:`augment_sample` applies the
config's choice to one training sample. Spatial transforms: left-right flips (numpy) and a random in-plane rotation and
scaling of a whole batch (:func:`affine_batch`, torch).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# ----------------------------------------------------------------------------------------------
# Named ranges of the random parameters (MONAI/torchio style: one place to read and change)

BIAS_LOG_AMPLITUDE = (0.0, 0.4)      # log of the field's peak factor (exp(0.4) = 1.49)
BIAS_GRID = 4                        # control points per axis of the smooth field
GAMMA_LOG = (-0.7, 0.7)              # log of the exponent (exp(0.47) = 1.6)
SCALE = (0.75, 1.25)                 # multiplicative contrast
SHIFT = (-0.1, 0.1)                  # additive brightness
NOISE_SD = (0.0, 0.05)
BLUR_SIGMA = (0.3, 1.2)              # voxels, in-plane
LOW_RES_FACTOR = (1.3, 2.5)
LUT_KNOTS = 6
BODY_THRESHOLD = 0.08                # normalised intensity that separates air from the body

# probabilities of each transform in robust_intensity
P_BIAS = 0.5
P_GAMMA = 0.5
P_INVERT = 0.15
P_LUT = 0.25
P_BLUR = 0.15
P_LOW_RES = 0.15
P_NOISE = 0.3


def random_lut(rng: np.random.Generator, knots: int = LUT_KNOTS, p_monotonic: float = 0.5):
    """Knot positions ``x`` (0..1) and random levels ``y`` (0..1) of a look-up table."""
    x = np.linspace(0.0, 1.0, knots)
    y = rng.uniform(0.0, 1.0, knots)
    if rng.random() < p_monotonic:
        y = np.sort(y)
    y[0] = min(y[0], 0.1)  # keep air dark: background stays background-like
    return x, y


def synthetic_contrast(image: np.ndarray, rng: np.random.Generator, *, knots: int = LUT_KNOTS,
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


def smooth_field(shape_hw: Tuple[int, int], rng: np.random.Generator, grid: int = BIAS_GRID
                 ) -> np.ndarray:
    """A smooth random field in [-1, 1] over an ``H x W`` plane (bicubic-like interpolation of
    a ``grid x grid`` set of random control values, scaled so its extremes are +-1)."""
    from scipy.ndimage import zoom

    ctrl = rng.standard_normal((grid, grid))
    h, w = shape_hw
    field = zoom(ctrl, (h / grid, w / grid), order=3, mode="nearest")[:h, :w]
    field = field - field.mean()
    peak = float(np.abs(field).max())
    return (field / peak if peak > 0 else field).astype(np.float32)


def bias_field(image: np.ndarray, rng: np.random.Generator,
               log_amplitude: Optional[float] = None) -> np.ndarray:
    """Multiply ``[..., H, W]`` by ``exp(a * field)``: a smooth shading of up to ``exp(a)``."""
    a = rng.uniform(*BIAS_LOG_AMPLITUDE) if log_amplitude is None else float(log_amplitude)
    field = np.exp(a * smooth_field(image.shape[-2:], rng))
    return (image * field).astype(np.float32)


def gamma(image: np.ndarray, rng: np.random.Generator, exponent: Optional[float] = None
          ) -> np.ndarray:
    g = float(np.exp(rng.uniform(*GAMMA_LOG))) if exponent is None else float(exponent)
    return (np.clip(image, 0.0, None) ** np.float32(g)).astype(np.float32)


def body_mask(image: np.ndarray, threshold: float = BODY_THRESHOLD) -> np.ndarray:
    """Voxels brighter than ``threshold`` (normalised), i.e. not air."""
    return image > threshold


def filled_body_mask(image: np.ndarray, threshold: float = BODY_THRESHOLD) -> np.ndarray:
    """:func:`body_mask` with each in-plane slice's holes filled: dark tissue inside the body
    (the femur's cortex, tendons) counts as body, as the evaluation's inversion
    (:func:`FemurSegTraining.contrast.body_mask`) and real inverted contrasts treat it."""
    from scipy.ndimage import binary_fill_holes

    mask = body_mask(image, threshold)
    flat = mask.reshape((-1,) + mask.shape[-2:])
    return np.stack([binary_fill_holes(m) for m in flat]).reshape(mask.shape)


def invert(image: np.ndarray, rng: np.random.Generator, whole: Optional[bool] = None,
           fill: bool = False) -> np.ndarray:
    """Inverted contrast: ``1 - x`` inside the body with the air kept dark (as tissues look on a
    T2-weighted image), or with ``whole`` the whole image inverted. Without ``fill`` the body is
    every voxel brighter than air, so the dark cortex stays dark; with ``fill`` it is the body
    with its holes filled (:func:`filled_body_mask`), so the cortex turns bright too."""
    whole = bool(rng.random() < 0.3) if whole is None else whole
    x = np.clip(image, 0.0, 1.0)
    if whole:
        return (1.0 - x).astype(np.float32)
    body = filled_body_mask(image) if fill else body_mask(image)
    return np.where(body, 1.0 - x, x).astype(np.float32)


def blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = rng.uniform(*BLUR_SIGMA)
    sig = (0.0,) * (image.ndim - 2) + (sigma, sigma)
    return gaussian_filter(image, sig).astype(np.float32)


def low_resolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Down-sample in-plane by a random factor and up-sample back (a coarser acquisition)."""
    from scipy.ndimage import zoom

    f = rng.uniform(*LOW_RES_FACTOR)
    lead = (1.0,) * (image.ndim - 2)
    small = zoom(image, lead + (1.0 / f, 1.0 / f), order=1)
    h, w = image.shape[-2:]
    back = zoom(small, lead + (h / small.shape[-2], w / small.shape[-1]), order=1)
    out = np.zeros_like(image)
    hh, ww = min(h, back.shape[-2]), min(w, back.shape[-1])
    out[..., :hh, :ww] = back[..., :hh, :ww]
    return out.astype(np.float32)


def noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sd = rng.uniform(*NOISE_SD)
    return (image + rng.normal(0.0, sd, image.shape)).astype(np.float32)


def renormalise(image: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Clip to the percentiles and scale to 0..1, as the inference normalisation does."""
    lo, hi = np.percentile(image, percentiles)
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    return ((np.clip(image, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def robust_intensity(image: np.ndarray, rng: np.random.Generator, *,
                     bias_log_amplitude: Tuple[float, float] = BIAS_LOG_AMPLITUDE,
                     p_bias: float = P_BIAS, invert_fill: bool = False) -> np.ndarray:
    """A random chain of the intensity transforms above (each with its own probability),
    ending on the 0..1 range of the inference normalisation. ``bias_log_amplitude`` (the range
    of the field's log peak factor), ``p_bias`` and ``invert_fill`` (:func:`invert`'s ``fill``)
    make the stronger variants of the config's ``augment`` section."""
    x = np.asarray(image, dtype=np.float32)
    if rng.random() < p_bias:
        x = bias_field(x, rng, rng.uniform(*bias_log_amplitude))
    if rng.random() < P_GAMMA:
        x = gamma(renormalise(x), rng)
    r = rng.random()
    if r < P_INVERT:
        x = invert(renormalise(x), rng, fill=invert_fill)
    elif r < P_INVERT + P_LUT:
        x = synthetic_contrast(renormalise(x), rng, p_apply=1.0)
    x = x * np.float32(rng.uniform(*SCALE)) + np.float32(rng.uniform(*SHIFT))
    x = renormalise(x)
    if rng.random() < P_BLUR:
        x = blur(x, rng)
    elif rng.random() < P_LOW_RES:
        x = low_resolution(x, rng)
    if rng.random() < P_NOISE:
        x = noise(x, rng)
    return x.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# One training sample, as the config asks


def robust_options(aug: dict) -> dict:
    """:func:`robust_intensity`'s keyword arguments from the optional keys of a config's
    ``augment`` section (absent: the ranges above, so that older configs train as they did),
    checked: ``bias_log_amplitude`` [low, high] with 0 <= low <= high <= 1.5, ``p_bias`` in
    [0, 1], ``invert_fill`` true or false."""
    out = {}
    if "bias_log_amplitude" in aug:
        r = aug["bias_log_amplitude"]
        if (not isinstance(r, (list, tuple)) or len(r) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
                or not 0 <= r[0] <= r[1] <= 1.5):
            raise ValueError(f"augment.bias_log_amplitude must be [low, high] with "
                             f"0 <= low <= high <= 1.5, not {r!r}")
        out["bias_log_amplitude"] = (float(r[0]), float(r[1]))
    if "p_bias" in aug:
        p = aug["p_bias"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"augment.p_bias must be a probability in [0, 1], not {p!r}")
        out["p_bias"] = float(p)
    if "invert_fill" in aug:
        if not isinstance(aug["invert_fill"], bool):
            raise ValueError(f"augment.invert_fill must be true or false, not "
                             f"{aug['invert_fill']!r}")
        out["invert_fill"] = aug["invert_fill"]
    return out


def augment_sample(image: np.ndarray, target: np.ndarray, rng: np.random.Generator, cfg: dict):
    """Left-right flip (the paper's augmentation), plus optional intensity changes: mild
    (``intensity``), SynthSeg-like look-up tables (``synthetic_contrast``), or the scanner and
    sequence changes of :func:`robust_intensity` (``robust_intensity``: true for every sample,
    or a probability, so that the other samples keep the training contrast; tuned by the keys
    of :func:`robust_options`)."""
    aug = cfg.get("augment", {})
    if aug.get("flip_lr", True) and rng.random() < 0.5:
        image, target = image[..., ::-1], target[..., ::-1]
    if aug.get("intensity"):
        gamma = float(np.exp(rng.uniform(-0.3, 0.3)))
        lo = image.min()
        rngv = max(float(image.max() - lo), 1e-6)
        image = lo + rngv * ((image - lo) / rngv) ** gamma
        image = image * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)
        image = image + rng.normal(0, rng.uniform(0, 0.03), image.shape).astype(np.float32)
    if aug.get("synthetic_contrast"):
        image = synthetic_contrast(image, rng)
    robust = aug.get("robust_intensity")
    if robust is True or (robust and rng.random() < float(robust)):
        image = robust_intensity(image, rng, **robust_options(aug))
    return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(target)


# ----------------------------------------------------------------------------------------------
# Spatial


ROTATION_DEG = (-15.0, 15.0)
ZOOM = (0.85, 1.2)


def affine_batch(images, targets, rng: np.random.Generator, p: float = 0.5):
    """Random in-plane rotation and scaling of a torch batch ``[N, C, H, W]`` (bilinear) and its
    class maps ``[N, H, W]`` (nearest); each sample is transformed with probability ``p``.
    Outside the image, images get 0 (air) and class maps background."""
    import torch
    import torch.nn.functional as F

    n = images.shape[0]
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    moved = False
    for i in range(n):
        if rng.random() >= p:
            continue
        a = np.deg2rad(rng.uniform(*ROTATION_DEG))
        s = 1.0 / rng.uniform(*ZOOM)
        theta[i, :, :2] = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        moved = True
    if not moved:
        return images, targets
    th = torch.from_numpy(theta).to(images.device)
    grid = F.affine_grid(th, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    t = targets.float()[:, None]
    t = F.grid_sample(t, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return images, t[:, 0].round().to(targets.dtype)
