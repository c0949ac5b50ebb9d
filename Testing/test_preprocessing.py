"""Preprocessing: canonical orientation, resampling, normalisation, and the exact inverse."""

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import images
from FemurSegLib.metrics import dice
from FemurSegLib.preprocessing import (InputSpec, network_grid, normalise, orientation_of,
                                       prepare, prepare_label, to_input_grid)
from geometry_helpers import blob, oblique_image

# axial-like, flipped and permuted bases: none of them is the canonical LIP
BASES = {
    "RAS-like": np.diag([-1.0, -1.0, 1.0]),
    "axial LPS": np.eye(3),
    "sagittal": np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float),
    "LIP": np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=float),
}


@pytest.mark.parametrize("base", list(BASES))
def test_mask_to_network_grid_and_back_is_exact(base):
    """Same spacing: the network grid is a permutation, and the round trip is voxel-exact."""
    mask = blob((10, 30, 24))
    img = oblique_image(mask, spacing=(0.8, 1.1, 4.0), base=BASES[base], tilt=6.0)
    spec = InputSpec(orientation="LIP", spacing=None)
    on_net = prepare_label(img, spec)
    assert orientation_of(on_net) == "LIP"
    assert on_net.GetSpacing() != img.GetSpacing() or base == "LIP"  # axes really moved
    back = to_input_grid(sitk.GetArrayFromImage(on_net), on_net, img, order="nearest")
    assert images.grid_mismatch(back, img) == ""
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), mask)


def test_resampled_round_trip_lands_on_input_grid():
    mask = blob((12, 60, 50), radius=(4, 20, 16))
    img = oblique_image(mask, spacing=(0.9, 0.9, 5.2), base=BASES["axial LPS"])
    spec = InputSpec(orientation="LIP", spacing=(1.8, 1.8, 5.2))
    net = prepare_label(img, spec)
    assert np.allclose(sorted(net.GetSpacing()), sorted((1.8, 1.8, 5.2)))
    prob = sitk.GetArrayFromImage(net).astype(np.float32)
    back = to_input_grid(prob, net, img, order="linear")
    assert images.grid_mismatch(back, img) == ""
    assert dice(sitk.GetArrayFromImage(back) >= 0.5, mask.astype(bool)) > 0.93


def test_network_grid_keeps_field_of_view():
    img = oblique_image(np.zeros((10, 40, 30), np.uint8), spacing=(0.9, 0.9, 5.0))
    grid = network_grid(img, (1.8, 1.8, 5.0))
    assert grid.GetSize() == (15, 20, 10)
    # first voxel's edge stays where it was: origin moves by half the voxel growth along i and j
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(grid.GetOrigin(), np.asarray(img.GetOrigin()) + d @ [0.45, 0.45, 0],
                               atol=1e-9)
    assert network_grid(img, (0.9, 0.9, 5.0)) is img


def test_prepare_label_is_label_safe():
    lab = blob((10, 40, 40)) * 2
    img = oblique_image(lab.astype(np.uint8))
    out = sitk.GetArrayFromImage(prepare_label(img, InputSpec(spacing=(1.3, 1.3, 5.2))))
    assert set(np.unique(out)) == {0, 2}


@pytest.mark.parametrize("method,check", [
    ("percentile", lambda a: (a.min(), a.max()) == (0.0, 1.0)),
    ("zscore", lambda a: abs(a.mean()) < 1e-5 and abs(a.std() - 1) < 1e-4),
])
def test_normalise(method, check):
    a = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    out = normalise(a, {"method": method, "percentiles": [1, 99]})
    assert out.dtype == np.float32
    assert check(out)


def test_normalise_percentile_known_values():
    a = np.array([0, 10, 20, 30, 40], np.float32)
    np.testing.assert_allclose(normalise(a, {"method": "percentile", "percentiles": [0, 100]}),
                               [0, 0.25, 0.5, 0.75, 1])


def test_prepare_orients_and_normalises():
    rng = np.random.default_rng(1)
    arr = rng.normal(500, 100, (8, 20, 16)).astype(np.float32)
    img = oblique_image(arr, base=BASES["axial LPS"], spacing=(1.0, 1.0, 3.0))
    p = prepare(img, InputSpec(orientation="LIP"))
    assert orientation_of(p.grid) == "LIP"
    assert p.array.shape == tuple(reversed(p.grid.GetSize()))
    assert 0.0 <= p.array.min() and p.array.max() <= 1.0
