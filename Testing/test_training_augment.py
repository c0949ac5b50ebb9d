"""Synthetic-contrast augmentation: shape, determinism, monotonic tables keep tissue order."""

import numpy as np

from FemurSegTraining.augment import random_lut, synthetic_contrast


def test_shape_dtype_and_determinism():
    img = np.linspace(0, 1, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
    a = synthetic_contrast(img, np.random.default_rng(5), p_apply=1.0)
    b = synthetic_contrast(img, np.random.default_rng(5), p_apply=1.0)
    assert a.shape == img.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, img)


def test_not_applied_returns_input():
    img = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(synthetic_contrast(img, np.random.default_rng(0), p_apply=0.0), img)


def test_monotonic_table_keeps_tissue_order():
    tissues = np.array([0.05, 0.3, 0.6, 0.9], np.float32)   # air, cortex, muscle, marrow/fat
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x, y = random_lut(rng, p_monotonic=1.0)
        assert np.all(np.diff(y) >= 0)
        mapped = np.interp(tissues, x, y)
        assert np.all(np.diff(mapped) >= 0)


def test_non_monotonic_tables_occur():
    flips = sum(np.any(np.diff(random_lut(np.random.default_rng(s), p_monotonic=0.0)[1]) < 0)
                for s in range(20))
    assert flips >= 15
