"""The synthetic hip MR phantom: geometry, anatomy, contrast, determinism, partial volume, writing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import real_data_dir
from FemurSegLib import phantom as P
from FemurSegLib.errors import InputError, OutputExistsError
from FemurSegLib.images import read_image, read_label, same_grid
from FemurSegLib.phantom.anatomy import Femur
from FemurSegLib.phantom.rendering import Canvas, Grid
from FemurSegLib.phantom.shapes import rotation_matrix, sphere

SMALL = dict(size=(96, 96, 16), spacing=(3.6, 3.6, 5.2))

# Femur volume per side measured on the 17 real scans (femur label, each of the two largest
# components; head, neck, trochanters and the shaft down to the field of view's lower edge):
# 99 to 155 mL. The phantom must stay within that range widened by about 15%.
FEMUR_ML_RANGE = (85.0, 175.0)


@pytest.fixture(scope="module")
def full():
    """Seed 0 on the default grid (384 x 384 x 40, 0.911 x 0.911 x 5.2 mm): 10 to 30 s to make,
    so every test using it is marked slow."""
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_labels_are_those_of_the_real_data(full):
    _, lab, _ = arrays(full)
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 4}
    # the femur reaches the lower edge of the field of view, as in the real masks
    assert (lab[:, -1, :] == P.FEMUR).any()
    # femur and ilium are separated by the joint space (never touching in-plane)
    femur = lab == P.FEMUR
    grown = ndimage.binary_dilation(femur, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]]))
    assert not np.any(grown & (lab == P.ILIUM))


@pytest.mark.slow
def test_femur_property_is_a_binary_mask_of_label_1(full):
    femur = sitk.GetArrayFromImage(full.femur)
    assert full.femur.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(femur).tolist()) == {0, 1}
    np.testing.assert_array_equal(femur, sitk.GetArrayFromImage(full.labels) == 1)


def tissue_means(ph):
    img, _, tis = arrays(ph)
    img = img.astype(float)
    return {name: img[tis == code].mean() for name, code in P.TISSUES.items() if (tis == code).any()}


@pytest.mark.slow
def test_t1_contrast_marrow_and_fat_over_muscle_over_cortex(full):
    m = tissue_means(full)
    assert min(m["marrow"], m["fat"]) > 1.4 * m["muscle"]
    assert m["air"] < 0.15 * m["muscle"]
    # the cortex: voxels tagged cortex are mostly partial volume (1.2-2 mm cortex in 5.2 mm
    # slices), so compare the dark band along the femoral shaft instead
    prof = shaft_edge_profile(full.image, full.labels)
    assert np.nanmin(prof[(EDGE_BINS >= 0) & (EDGE_BINS < 4)]) < 0.6 * prof[EDGE_BINS == 9][0]
    # femoral marrow is darker than subcutaneous fat (real scans: marrow median 330-445, fat
    # peak 400-510 and brighter near the coils)
    img, lab, tis = arrays(full)
    core = ndimage.binary_erosion(lab == P.FEMUR, np.ones((1, 9, 9)))
    assert 0.55 < np.median(img[core]) / np.median(img[tis == P.TISSUES["fat"]]) < 1.0


# Grey-value measurements made the same way on the phantom and on the real scans (the real values
# quoted in the tests below come from these functions run on the 17 real scans).

EDGE_BINS = np.arange(-10, 12)  # 1 mm bins of signed in-plane distance to the femur mask


def femur_box(labels: np.ndarray, margin: int = 30):
    """Index slices [k, j, i] round the femur label, with an in-plane margin of voxels."""
    k, j, i = np.nonzero(labels == P.FEMUR)
    return (slice(k.min(), k.max() + 1), slice(max(j.min() - margin, 0), j.max() + margin + 1),
            slice(max(i.min() - margin, 0), i.max() + margin + 1))


def shaft_edge_profile(image: sitk.Image, labels: sitk.Image) -> np.ndarray:
    """Median grey value (over the 99.5th percentile) per 1 mm of signed distance to the femur
    mask edge (negative inside), on rows at least 95 mm below the top of each femur."""
    img = sitk.GetArrayFromImage(image).astype(float)
    lab = sitk.GetArrayFromImage(labels)
    p995 = np.percentile(img, 99.5)
    box = femur_box(lab)
    img, fem = img[box], lab[box] == P.FEMUR
    pixel_mm = image.GetSpacing()[0]
    dist = np.full(img.shape, 99.0)
    for k in range(fem.shape[0]):
        if fem[k].any():
            dist[k] = (ndimage.distance_transform_edt(~fem[k])
                       - ndimage.distance_transform_edt(fem[k])) * pixel_mm
    shaft = np.zeros(img.shape, bool)
    half = img.shape[2] // 2
    for side in (slice(0, half), slice(half, None)):
        rows = np.nonzero(fem[:, :, side].any(axis=(0, 2)))[0]
        if rows.size:
            shaft[:, rows.min() + int(95 / pixel_mm):, side] = True
    out = []
    for d in EDGE_BINS:
        sel = shaft & (dist >= d) & (dist < d + 1) & (img > 0)
        out.append(np.median(img[sel]) / p995 if sel.sum() > 20 else np.nan)
    return np.array(out)


def marrow_texture(image: sitk.Image, labels: sitk.Image, window: int = 5) -> float:
    """Median local coefficient of variation (window x window in-plane) inside the femur mask,
    at least 4 voxels from its edge."""
    img = sitk.GetArrayFromImage(image).astype(float)
    lab = sitk.GetArrayFromImage(labels)
    box = femur_box(lab, margin=5)
    img, core = img[box], ndimage.binary_erosion(lab[box] == P.FEMUR, np.ones((1, 9, 9)))
    size = (1, window, window)
    core &= ndimage.minimum_filter(img, size) > 0  # not across the zeroed field-of-view edge
    mean = ndimage.uniform_filter(img, size)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(img * img, size) - mean * mean, 0.0))
    return float(np.median(sd[core] / mean[core]))


def marrow_level(image: sitk.Image, labels: sitk.Image) -> float:
    """Median of the femur mask (4 voxels in from its edge) over the image's 99.5th percentile."""
    img = sitk.GetArrayFromImage(image).astype(float)
    core = ndimage.binary_erosion(sitk.GetArrayFromImage(labels) == P.FEMUR, np.ones((1, 9, 9)))
    return float(np.median(img[core]) / np.percentile(img, 99.5))


@pytest.mark.slow
def test_femur_mask_ends_inside_the_dark_cortical_band(full):
    """As in the real masks, the femur label is the marrow inside a thick dark shaft cortex.

    Real scans (median over 17): 0.45-0.50 at 5-10 mm inside, 0.17 at 1 mm inside, 0.09 at the
    edge, 0.05 from 1 to 4 mm outside (the cortex, 5-7 mm wide with the last 1.5 mm labelled),
    0.25 for the muscle 7-10 mm outside.
    """
    prof = shaft_edge_profile(full.image, full.labels)
    at = dict(zip(EDGE_BINS.tolist(), prof))
    assert 0.38 < np.nanmedian([at[d] for d in range(-10, -5)]) < 0.65
    assert at[-1] < 0.25 and at[0] < 0.15
    assert max(at[d] for d in range(1, 4)) < 0.13  # dark for at least 3 mm outside the mask
    assert 0.18 < np.median([at[d] for d in range(7, 11)]) < 0.36


def test_cortex_is_thick_on_the_shaft_and_calcar_thin_at_head_and_trochanter():
    """Known-answer: the cortex thickness function of the femur model (mirrored frame, mm)."""
    side_params = dict(P.sample_parameters(0)["right"])
    femur = Femur(88.0, side_params)
    H, s, lat, neck = femur.head, femur.shaft, femur.lateral, femur.neck

    def thickness(point):
        q = tuple(np.array([c], dtype=np.float32) for c in point)
        return float(femur.cortex_thickness(q)[0])

    assert (thickness(H + 0.9 * femur.r_head * np.array([0.0, 0.0, 1.0]))
            == pytest.approx(side_params["head_cortex"]))
    assert thickness(H + 120.0 * s + femur.r_shaft * lat) == pytest.approx(side_params["shaft_cortex"])
    assert thickness(femur.trochanter + 11.0 * lat) < 2.5  # thin over the greater trochanter
    # the calcar: thick on the lower (inferomedial) side of the neck base, thin on its upper side
    base = femur.junction + 6.0 * neck
    down = s - (s @ neck) * neck
    down /= np.linalg.norm(down)
    assert thickness(base + 13.0 * down) == pytest.approx(side_params["calcar_cortex"], rel=1e-5)
    assert thickness(base - 13.0 * down) == pytest.approx(side_params["head_cortex"], rel=1e-5)


@pytest.mark.slow
def test_marrow_texture_is_fine_and_faint(full):
    """Real scans: local coefficient of variation 0.057-0.100 (median 0.074) in 5 x 5 voxels, and
    0.045-0.073 (median 0.056) in 3 x 3 voxels of 2 x 2 averaged ones; the earlier speckled phantom
    had a coarser grain (0.10 and 0.082)."""
    assert 0.057 < marrow_texture(full.image, full.labels) < 0.10
    half = sitk.BinShrink(sitk.Cast(full.image, sitk.sitkFloat32), (2, 2, 1))
    half_lab = sitk.Resample(full.labels, half, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert 0.045 < marrow_texture(half, half_lab, window=3) < 0.073


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.slow
def test_marrow_level_relative_to_the_99_5th_percentile_is_that_of_the_real_scans(seed):
    """Intensity normalisation divides by the 99.5th percentile: there the real femoral marrow
    lies at 0.45-0.61 (median 0.53); the coil shading is solved for to keep the phantom's within
    the middle of that range."""
    ph = P.make_phantom(seed, size=(192, 192, 40), spacing=(1.822, 1.822, 5.2))
    assert 0.50 < marrow_level(ph.image, ph.labels) < 0.61


def test_background_noise_is_correlated_like_an_interpolated_reconstruction():
    """Real scans: neighbour correlation of the background (air) 0.26-0.37 along i and j."""
    ph = P.make_phantom(2, bias=False, size=(192, 192, 8), spacing=(1.822, 1.822, 5.2))
    img, _, tis = arrays(ph)
    air = ndimage.binary_erosion((tis == P.TISSUES["air"]) & (img > 0), np.ones((1, 5, 5)))
    x = img.astype(float) - img[air].mean()
    for axis in (1, 2):
        both = air & np.roll(air, 1, axis=axis)
        r = np.mean((x * np.roll(x, 1, axis=axis))[both]) / np.mean(x[air] ** 2)
        assert 0.2 < r < 0.42, (axis, r)


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


@pytest.mark.slow
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
    direction = rotation_matrix([1, 2, 3], 11.0) @ P.LIP_DIRECTION  # oblique on purpose
    origin = -direction @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2 + 0.37)
    grid = Grid(size, spacing, direction, origin, np.eye(3), np.zeros(3))
    canvas = Canvas(grid)
    canvas.paint(grid.full(), lambda q: sphere(q, (1.3, -2.1, 0.7), 20.0), 1.0, "marrow",
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


def texture_and_edge_stats(image: sitk.Image, labels: sitk.Image) -> dict:
    """Marrow level and texture, and the shaft edge profile (full-resolution scans only)."""
    prof = dict(zip(EDGE_BINS.tolist(), shaft_edge_profile(image, labels)))
    return {"marrow_level": marrow_level(image, labels),
            "marrow_cv5": marrow_texture(image, labels),
            "shaft_marrow": np.nanmedian([prof[d] for d in range(-10, -5)]),
            "shaft_band": np.nanmax([prof[d] for d in range(1, 4)]),
            "shaft_muscle": np.nanmedian([prof[d] for d in range(7, 11)])}


@pytest.mark.realdata
@pytest.mark.slow
def test_phantom_intensities_are_in_the_range_of_the_real_scans(full):
    data = real_data_dir()
    pairs = [(sitk.ReadImage(str(f)), sitk.ReadImage(str(data / "labelsTr" / f.name.replace("_0000", ""))))
             for f in sorted((data / "imagesTr").glob("*_0000.nii.gz"))]
    assert len(pairs) >= 10
    real = [dict(intensity_stats(i, l), **texture_and_edge_stats(i, l)) for i, l in pairs]
    phantoms = [dict(intensity_stats(full.image, full.labels),
                     **texture_and_edge_stats(full.image, full.labels))]
    for seed in (1,):
        ph = P.make_phantom(seed, size=(192, 192, 40), spacing=(1.822, 1.822, 5.2))
        phantoms.append(intensity_stats(ph.image, ph.labels))
    for key in real[0]:
        lo, hi = min(r[key] for r in real), max(r[key] for r in real)
        for n, stats in enumerate(phantoms):
            if key in stats:
                assert 0.8 * lo <= stats[key] <= 1.2 * hi, (key, n, stats[key], lo, hi)
