"""The synthetic hip MR phantom: geometry, anatomy, contrast, determinism, partial volume, writing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import real_data_dir
from FemurSegLib import phantom as P
from FemurSegLib.errors import InputError, OutputExistsError
from FemurSegLib.io import read_image, read_label, same_grid

SMALL = dict(size=(96, 96, 16), spacing=(3.6, 3.6, 5.2))

# Femur volume per side measured on the 17 real scans (femur label, each of the two largest
# components; head, neck, trochanters and the shaft down to the field of view's lower edge):
# 99 to 155 mL. The phantom must stay within that range widened by about 15%.
FEMUR_ML_RANGE = (85.0, 175.0)


@pytest.fixture(scope="module")
def full():
    """Seed 0 on the default grid (384 x 384 x 40, 0.911 x 0.911 x 5.2 mm)."""
    return P.make_phantom(0)


@pytest.fixture(scope="module")
def small():
    return P.make_phantom(0, **SMALL)


def arrays(ph):
    return (sitk.GetArrayFromImage(ph.image), sitk.GetArrayFromImage(ph.labels),
            sitk.GetArrayFromImage(ph.tissues))


def femur_sides(ph):
    """{"right": (volume mL, centroid LPS), "left": ...} of the two femur components."""
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(ph.femur))
    arr = sitk.GetArrayFromImage(cc)
    voxel_ml = float(np.prod(ph.image.GetSpacing())) / 1000.0
    comps = []
    for value in range(1, int(arr.max()) + 1):
        k, j, i = np.nonzero(arr == value)
        centre = ph.image.TransformContinuousIndexToPhysicalPoint((i.mean(), j.mean(), k.mean()))
        comps.append((len(i) * voxel_ml, np.array(centre)))
    right, left = sorted(comps, key=lambda c: c[1][0])  # LPS x grows toward patient left
    return {"right": right, "left": left, "count": len(comps)}


# ----------------------------------------------------------------------------------------------
# Geometry


def test_default_grid_is_a_real_like_lip_scan(full):
    img, lab = full.image, full.labels
    assert img.GetSize() == (384, 384, 40)
    np.testing.assert_allclose(img.GetSpacing(), (0.911, 0.911, 5.2))
    assert img.GetPixelID() == sitk.sitkInt16 and lab.GetPixelID() == sitk.sitkUInt8
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection()) == "LIP"
    assert same_grid(img, lab) and same_grid(img, full.tissues) and same_grid(img, full.femur)
    # origin placed like a real scan: the hip centre (between the heads) in the field of view,
    # about 46-72 mm below its middle (measured on the real scans: 46-82 mm)
    centre = np.asarray(full.params["centre_lps"])
    i, j, k = img.TransformPhysicalPointToContinuousIndex(tuple(centre))
    assert abs(i - 191.5) < 8 and 46 / 0.911 < j - 191.5 < 72 / 0.911 and 0 < k < 39


@pytest.mark.parametrize("oblique_deg", [0.0, 2.0, 7.5])
def test_grid_is_turned_by_exactly_the_oblique_angle(oblique_deg):
    ph = P.make_phantom(4, oblique_deg=oblique_deg, **SMALL)
    direction = np.array(ph.image.GetDirection()).reshape(3, 3)
    turn = direction @ P.LIP_DIRECTION.T
    angle = math.degrees(math.acos(np.clip((np.trace(turn) - 1) / 2, -1, 1)))
    assert angle == pytest.approx(oblique_deg, abs=1e-6)
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        ph.image.GetDirection()) == "LIP"


def test_small_grid_has_the_requested_geometry(small):
    assert small.image.GetSize() == (96, 96, 16)
    np.testing.assert_allclose(small.image.GetSpacing(), (3.6, 3.6, 5.2))
    assert same_grid(small.image, small.labels)
    img, lab, _ = arrays(small)
    assert img.shape == lab.shape == (16, 96, 96)


def test_small_grid_shows_the_same_anatomy_as_the_full_grid(full):
    """Anatomy lives in millimetres: femur volumes and centres agree across resolutions.

    The coarse grid has 20 slices (104 mm front to back): the femur, with its shaft about 20 mm
    behind the head and 27-30 mm thick as in the real scans, spans about 70 mm, more than the
    16-slice grid of the other tests keeps.
    """
    coarse = P.make_phantom(0, size=(96, 96, 20), spacing=(3.6, 3.6, 5.2))
    a, b = femur_sides(full), femur_sides(coarse)
    for side in ("right", "left"):
        assert b[side][0] == pytest.approx(a[side][0], rel=0.08), side
        assert np.linalg.norm(b[side][1] - a[side][1]) < 3.0, side


# ----------------------------------------------------------------------------------------------
# Anatomy and contrast


def test_two_femurs_one_on_each_side_with_real_volumes(full):
    sides = femur_sides(full)
    assert sides["count"] == 2
    right, left = sides["right"], sides["left"]
    midline = full.params["centre_lps"][0]
    assert right[1][0] < midline < left[1][0]
    assert 150.0 < left[1][0] - right[1][0] < 260.0  # real centroid separation: 205-230 mm
    for volume, _ in (right, left):
        assert FEMUR_ML_RANGE[0] < volume < FEMUR_ML_RANGE[1], volume


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_femur_volumes_stay_realistic_across_seeds(seed):
    ph = P.make_phantom(seed, **SMALL)
    sides = femur_sides(ph)
    assert sides["count"] == 2
    for side in ("right", "left"):
        assert FEMUR_ML_RANGE[0] < sides[side][0] < FEMUR_ML_RANGE[1], (side, sides[side][0])


def test_labels_are_those_of_the_real_data(full):
    _, lab, _ = arrays(full)
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 4}
    # the femur reaches the lower edge of the field of view, as in the real masks
    assert (lab[:, -1, :] == P.FEMUR).any()
    # femur and ilium are separated by the joint space (never touching in-plane)
    femur = lab == P.FEMUR
    grown = ndimage.binary_dilation(femur, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]]))
    assert not np.any(grown & (lab == P.ILIUM))


def test_femur_property_is_a_binary_mask_of_label_1(full):
    femur = sitk.GetArrayFromImage(full.femur)
    assert full.femur.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(femur).tolist()) == {0, 1}
    np.testing.assert_array_equal(femur, sitk.GetArrayFromImage(full.labels) == 1)


def tissue_means(ph):
    img, _, tis = arrays(ph)
    img = img.astype(float)
    return {name: img[tis == code].mean() for name, code in P.TISSUES.items() if (tis == code).any()}


def test_t1_contrast_marrow_and_fat_over_muscle_over_cortex(full):
    m = tissue_means(full)
    assert min(m["marrow"], m["fat"]) > 1.4 * m["muscle"]
    assert m["muscle"] > 1.2 * m["cortex"]
    assert m["air"] < 0.15 * m["muscle"]
    # femoral marrow is darker than subcutaneous fat (real scans: marrow median 330-445, fat
    # peak 400-510 and brighter near the coils)
    img, lab, tis = arrays(full)
    core = ndimage.binary_erosion(lab == P.FEMUR, np.ones((1, 9, 9)))
    assert 0.55 < np.median(img[core]) / np.median(img[tis == P.TISSUES["fat"]]) < 1.0


def test_contrast_varies_between_seeds_but_keeps_its_order():
    ratios = []
    for seed in (5, 6, 7):
        m = tissue_means(P.make_phantom(seed, **SMALL))
        assert m["fat"] > m["muscle"] > m["cortex"] and m["marrow"] > m["muscle"]
        ratios.append(m["fat"] / m["muscle"])
    assert max(ratios) - min(ratios) > 0.05


def test_noise_is_rician_and_bias_can_be_switched_off():
    quiet = P.make_phantom(2, noise=False, bias=False, **SMALL)
    noisy = P.make_phantom(2, noise=True, bias=False, **SMALL)
    q, _, tis = arrays(quiet)
    n, _, _ = arrays(noisy)
    air = (tis == P.TISSUES["air"]) & (q == 0) & (n > 0)  # inside the field of view, no signal
    assert air.sum() > 200
    sigma = noisy.params["noise_sigma"]
    # noise on zero signal is Rayleigh distributed: mean sigma * sqrt(pi / 2)
    assert n[air].mean() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.15)
    # where the signal is strong the noise averages out around the noise-free value
    fat = tis == P.TISSUES["fat"]
    assert np.mean(n[fat] - q[fat].astype(float)) == pytest.approx(0, abs=0.1 * sigma + 2)
    assert np.std(n[fat] - q[fat].astype(float)) > 0.8 * sigma


def test_corners_outside_the_corrected_field_of_view_are_zero(full):
    img, _, _ = arrays(full)
    zero = (img == 0).mean()
    assert 0.01 < zero < 0.08  # real scans: 3.6% to 5.2% of voxels are exactly 0
    assert np.all(img[:, 0, 0] == 0) and np.all(img[:, -1, -1] == 0)
    assert np.all(img[:, 192, 192] > 0)


# ----------------------------------------------------------------------------------------------
# Partial volume (anti-aliasing)


@pytest.mark.parametrize("spacing", [(0.911, 0.911, 5.2), (3.6, 3.6, 5.2), (1.0, 1.0, 1.0)])
def test_partial_volume_of_a_sphere_adds_up_to_its_volume(spacing):
    """Known answer: the fractions of a sphere of radius 20 mm sum to 4/3 pi r^3."""
    size = tuple(int(round(100 / s)) for s in spacing)
    direction = P._rotation([1, 2, 3], 11.0) @ P.LIP_DIRECTION  # oblique on purpose
    origin = -direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2 + 0.37)
    grid = P._Grid(size, spacing, direction, origin, np.eye(3), np.zeros(3))
    canvas = P._Canvas(grid)
    canvas.paint(grid.full(), lambda q: P._sphere(q, (1.3, -2.1, 0.7), 20.0), 1.0, "marrow",
                 label=1)
    voxel = float(np.prod(spacing))
    exact = 4.0 / 3.0 * math.pi * 20.0 ** 3
    assert canvas.image.sum() * voxel == pytest.approx(exact, rel=0.015)
    assert (canvas.labels == 1).sum() * voxel == pytest.approx(exact, rel=0.06)
    values = canvas.image[canvas.image > 0]
    assert np.any((values > 0.05) & (values < 0.95))  # soft, not binary, edges
    assert values.max() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# Seeds


def test_same_seed_gives_bitwise_equal_arrays():
    a, b = P.make_phantom(3, **SMALL), P.make_phantom(3, **SMALL)
    for x, y in zip(arrays(a), arrays(b)):
        np.testing.assert_array_equal(x, y)
    assert a.image.GetOrigin() == b.image.GetOrigin()
    assert a.image.GetDirection() == b.image.GetDirection()


def test_different_seeds_differ(small):
    other = P.make_phantom(1, **SMALL)
    img0, lab0, _ = arrays(small)
    img1, lab1, _ = arrays(other)
    assert np.mean(img0 != img1) > 0.5
    assert np.mean(lab0 != lab1) > 0.001
    assert small.image.GetOrigin() != other.image.GetOrigin()
    assert small.params["left"]["head_radius"] != other.params["left"]["head_radius"]


# ----------------------------------------------------------------------------------------------
# Bad input and writing


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=(0, 96, 16)), "phantom size must be three positive voxel counts, not (0, 96, 16)"),
    (dict(size=(96, 96)), "phantom size must be three positive voxel counts, not (96, 96)"),
    (dict(spacing=(3.6, -1.0, 5.2)),
     "phantom spacing must be three positive millimetre values, not (3.6, -1.0, 5.2)"),
    (dict(oblique_deg=45.0), "oblique_deg must be between 0 and 20 degrees, not 45.0"),
    (dict(seed=-1), "phantom seed must be a non-negative integer, not -1"),
    (dict(seed=1.5), "phantom seed must be a non-negative integer, not 1.5"),
    (dict(size=(4000, 4000, 40)), "phantom size (4000, 4000, 40) is too large (at most 50 million voxels)"),
])
def test_bad_arguments_give_one_line_errors(kwargs, message):
    args = dict(SMALL, **kwargs)
    seed = args.pop("seed", 0)
    with pytest.raises(InputError) as err:
        P.make_phantom(seed, **args)
    assert str(err.value) == message


def test_write_phantom_round_trips_and_refuses_to_overwrite(tmp_path):
    image_path, labels_path = tmp_path / "ph.nii.gz", tmp_path / "sub" / "ph_labels.nrrd"
    ph = P.write_phantom(image_path, labels_path, seed=5, **SMALL)
    image = read_image(image_path)
    labels = read_label(labels_path, reference=image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ph.image))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(ph.labels))
    assert same_grid(image, ph.image)
    before = image_path.stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match=r"^output exists: .*ph\.nii\.gz \(use --overwrite"):
        P.write_phantom(image_path, tmp_path / "new_labels.nii.gz", seed=6, **SMALL)
    assert image_path.stat().st_mtime_ns == before and not (tmp_path / "new_labels.nii.gz").exists()
    P.write_phantom(image_path, labels_path, seed=6, overwrite=True, **SMALL)
    assert not np.array_equal(sitk.GetArrayFromImage(read_image(image_path)),
                              sitk.GetArrayFromImage(ph.image))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ph.nii.gz", "ph_labels.nrrd", "sub"]


def test_write_phantom_refuses_one_file_for_both_outputs(tmp_path):
    with pytest.raises(InputError, match="^image and label outputs are the same file: "):
        P.write_phantom(tmp_path / "a.nii.gz", tmp_path / "a.nii.gz", **SMALL)
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# Against the real scans


def intensity_stats(image: sitk.Image, labels: sitk.Image) -> dict:
    """Grey-value statistics that can be measured the same way on real and phantom scans."""
    img = sitk.GetArrayFromImage(image).astype(float)
    lab = sitk.GetArrayFromImage(labels)
    femur = lab == 1
    core = ndimage.binary_erosion(femur, np.ones((1, 9, 9)))
    rim = femur & ~ndimage.binary_erosion(femur, np.ones((1, 3, 3)))
    body = img[(img > 20) & (lab == 0)]
    return {"mean": img.mean(), "p99": np.percentile(img, 99), "zero": (img == 0).mean(),
            "marrow": np.median(img[core]), "femur_rim": np.median(img[rim]),
            "body_p25": np.percentile(body, 25), "body_p75": np.percentile(body, 75)}


@pytest.mark.realdata
def test_phantom_intensities_are_in_the_range_of_the_real_scans(full):
    data = real_data_dir()
    real = [intensity_stats(sitk.ReadImage(str(f)),
                            sitk.ReadImage(str(data / "labelsTr" / f.name.replace("_0000", ""))))
            for f in sorted((data / "imagesTr").glob("*_0000.nii.gz"))]
    assert len(real) >= 10
    phantoms = [intensity_stats(full.image, full.labels)]
    for seed in (1,):
        ph = P.make_phantom(seed, size=(192, 192, 40), spacing=(1.822, 1.822, 5.2))
        phantoms.append(intensity_stats(ph.image, ph.labels))
    for key in real[0]:
        lo, hi = min(r[key] for r in real), max(r[key] for r in real)
        for n, stats in enumerate(phantoms):
            assert 0.8 * lo <= stats[key] <= 1.2 * hi, (key, n, stats[key], lo, hi)
