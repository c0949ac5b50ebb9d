"""Contrast-changed test copies (FemurSegTraining.contrast) and the robustness evaluation."""

from __future__ import annotations


import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib.errors import FemurSegError
from FemurSegTraining.contrast import (BIAS_LOG_AMPLITUDE, BIAS_STRONG_LOG_AMPLITUDE, GAMMA,
                                      GAMMA_STRONG, contrast_copy)


def _body_image():
    """Air around a 'body' of three tissues (dark cortex 100, muscle 400, fat 900)."""
    a = np.zeros((6, 40, 40), np.float32)
    a[:, 5:35, 5:35] = 400.0
    a[:, 10:20, 10:20] = 900.0
    a[:, 22:26, 22:30] = 100.0
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((0.9, 0.9, 5.2))
    img.SetOrigin((3.0, -2.0, 7.0))
    return img, a


@pytest.mark.parametrize("kind", ["bias", "gamma", "inverted", "random_map", "bias_strong",
                                  "gamma_strong"])
def test_copies_keep_the_grid_and_are_seeded(kind):
    img, _ = _body_image()
    out = contrast_copy(img, kind, 7)
    assert out.GetSize() == img.GetSize() and out.GetSpacing() == img.GetSpacing()
    assert out.GetOrigin() == img.GetOrigin() and out.GetDirection() == img.GetDirection()
    again = sitk.GetArrayFromImage(contrast_copy(img, kind, 7))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), again)


@pytest.mark.parametrize("kind, power", [("gamma", GAMMA), ("gamma_strong", GAMMA_STRONG)])
def test_gamma_known_answer(kind, power):
    img, a = _body_image()
    out = sitk.GetArrayFromImage(contrast_copy(img, kind, 0))
    np.testing.assert_allclose(out, 900.0 * (a / 900.0) ** power, rtol=1e-5)


def test_inverted_keeps_air_dark_and_swaps_tissue_order():
    img, a = _body_image()
    out = sitk.GetArrayFromImage(contrast_copy(img, "inverted", 0))
    assert np.all(out[a == 0] == 0)
    cortex, muscle, fat = (out[a == v].mean() for v in (100.0, 400.0, 900.0))
    assert cortex > muscle > fat > 0


def test_random_map_is_not_monotone_and_keeps_air_dark():
    img, a = _body_image()
    for seed in range(5):
        out = sitk.GetArrayFromImage(contrast_copy(img, "random_map", seed))
        assert np.all(out[a == 0] == 0)
        assert np.all(out[a > 0] > 0)


@pytest.mark.parametrize("kind, amplitude", [("bias", BIAS_LOG_AMPLITUDE),
                                              ("bias_strong", BIAS_STRONG_LOG_AMPLITUDE)])
def test_bias_field_range_and_smoothness(kind, amplitude):
    img, a = _body_image()
    out = sitk.GetArrayFromImage(contrast_copy(img, kind, 3))
    ratio = out[a > 0] / a[a > 0]
    assert ratio.min() >= np.exp(-amplitude) - 1e-5
    assert ratio.max() <= np.exp(amplitude) + 1e-5
    # the same seed draws the same field shape: only its amplitude differs
    normal = sitk.GetArrayFromImage(contrast_copy(img, "bias", 3))[a > 0] / a[a > 0]
    np.testing.assert_allclose(np.log(ratio), np.log(normal) * amplitude / BIAS_LOG_AMPLITUDE,
                               atol=1e-5)
    assert ratio.max() / ratio.min() > 1.3
    field = out[:, 5:35, 5:35] / a[:, 5:35, 5:35]
    assert np.abs(np.diff(field, axis=2)).max() < 0.05


def test_unknown_contrast():
    img, _ = _body_image()
    with pytest.raises(FemurSegError, match="unknown contrast 'x' \\(known: bias, gamma, "
                                            "inverted, random_map, "
                                            "bias_strong, gamma_strong\\)"):
        contrast_copy(img, "x", 0)
