"""Tests of FemurSegLib.postprocess: connected components and the right/left femur split."""

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from FemurSegLib.errors import InputError
from FemurSegLib.postprocess import (femur_side, fill_slice_gaps, keep_components, label_probability,
                                     largest_component, side_from_anatomy,
                                     side_from_coordinates, side_regions, split_femurs)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hip-mri-t1"


# ----------------------------------------------------------------------------------------------
# Slice gaps of the probability


def _column(values):
    """A [slices, 1, 1] probability column."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


@pytest.mark.parametrize("values, expected", [
    ([0.9, 0.1, 0.8], [0.9, 0.8, 0.8]),             # a one-slice gap: raised to the lower side
    ([0.9, 0.1, 0.1, 0.8], [0.9, 0.1, 0.1, 0.8]),   # a two-slice gap stays
    ([0.1, 0.9, 0.1], [0.1, 0.9, 0.1]),             # a lone slice is not spread (no dilation)
    ([0.2, 0.6, 0.9, 0.6, 0.2], [0.2, 0.6, 0.9, 0.6, 0.2]),  # an object's ends stay
    ([0.0, 0.7, 0.3, 0.9, 0.0], [0.0, 0.7, 0.7, 0.9, 0.0]),
    ([0.1, 0.9], [0.1, 0.9]),                       # fewer than 3 slices: unchanged
])
def test_fill_slice_gaps_column(values, expected):
    out = fill_slice_gaps(_column(values))
    assert out.dtype == np.float32 and out.shape == (len(values), 1, 1)
    np.testing.assert_allclose(out[:, 0, 0], expected, atol=1e-7)


def test_fill_slice_gaps_along_other_axis_leaves_input_and_never_lowers():
    p = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    before = p.copy()
    out = fill_slice_gaps(p, axis=2)
    np.testing.assert_array_equal(p, before)        # a new array
    assert np.all(out >= p)
    np.testing.assert_allclose(out[..., 1:-1], np.maximum(
        p[..., 1:-1], np.minimum(p[..., :-2], p[..., 2:])))
    np.testing.assert_array_equal(out[..., [0, -1]], p[..., [0, -1]])


def test_fill_slice_gaps_reconnects_a_piece_that_the_component_rule_would_drop():
    # a femur on slices 0-4 of a column block, lost on slice 2 except a thin bridge elsewhere:
    # thresholded, slices 3-4 are a separate piece and the largest component drops it
    prob = np.zeros((5, 6, 6), np.float32)
    prob[:, 1:5, 1:5] = 0.9
    prob[0:2, 1:5, 1:5] = 0.95                      # the larger part
    prob[2] = 0.2                                   # the lost slice
    mask = largest_component(prob >= 0.5)
    assert mask[3:].sum() == 0
    filled = largest_component(fill_slice_gaps(prob) >= 0.5)
    assert filled.sum() == 5 * 16


def test_fill_slice_gaps_whole_pieces_only():
    # slice 1 lost a 3 x 3 piece (9 voxels) and a 1-voxel sliver between slices 0 and 2
    p = np.full((3, 5, 8), 0.1, np.float32)
    p[[0, 2], 1:4, 1:4] = 0.9
    p[[0, 2], 1, 6] = 0.8
    p[1, 1, 6] = 0.3
    every = fill_slice_gaps(p)
    assert every[1, 2, 2] == pytest.approx(0.9) and every[1, 1, 6] == pytest.approx(0.8)
    pieces = fill_slice_gaps(p, threshold=0.5, min_voxels=9)
    assert pieces[1, 2, 2] == pytest.approx(0.9)     # the whole piece comes back
    assert pieces[1, 1, 6] == pytest.approx(0.3)     # the sliver stays
    assert (pieces[1] >= 0.5).sum() == 9
    assert (fill_slice_gaps(p, threshold=0.5, min_voxels=10)[1] >= 0.5).sum() == 0
    with pytest.raises(ValueError, match="min_voxels needs the threshold"):
        fill_slice_gaps(p, min_voxels=9)


def test_fill_slice_gaps_rejects_non_3d():
    with pytest.raises(InputError, match="3D"):
        fill_slice_gaps(np.zeros((3, 3)))


# ----------------------------------------------------------------------------------------------
# Components

TWO_BLOBS = np.array([[[1, 1, 0, 0, 0, 1],
                       [1, 0, 0, 0, 1, 1],
                       [0, 0, 0, 0, 0, 1]]], dtype=bool)  # sizes 3 (left) and 4 (right)
DIAGONAL = np.array([[[1, 0, 0],
                      [0, 1, 0],
                      [0, 0, 1]]], dtype=bool)  # edge-touching voxels


@pytest.mark.parametrize("mask, connectivity, expected", [
    (TWO_BLOBS, 26, [[[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1]]]),
    (TWO_BLOBS, 6, [[[0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1]]]),
    (DIAGONAL, 26, DIAGONAL),  # one component
    (DIAGONAL, 6, [[[1, 0, 0], [0, 0, 0], [0, 0, 0]]]),  # three of size 1: the first one wins
    (np.zeros((2, 3, 4), bool), 26, np.zeros((2, 3, 4), bool)),
])
def test_largest_component(mask, connectivity, expected):
    out = largest_component(mask, connectivity=connectivity)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, np.asarray(expected, dtype=bool))


def test_corner_contact_depends_on_connectivity():
    mask = np.zeros((2, 2, 2), dtype=np.uint8)
    mask[0, 0, 0] = mask[1, 1, 1] = 1
    assert largest_component(mask, 26).sum() == 2
    assert largest_component(mask, 6).sum() == 1


def test_keep_components():
    mask = TWO_BLOBS.copy()
    mask[0, 2, 2] = True  # a third component of one voxel
    np.testing.assert_array_equal(keep_components(mask, 2), TWO_BLOBS)
    np.testing.assert_array_equal(keep_components(mask, 5), mask)
    with pytest.raises(ValueError, match="^n must be a positive integer, not 0$"):
        keep_components(mask, 0)
    with pytest.raises(ValueError, match="^connectivity must be 6 or 26, not 8$"):
        keep_components(mask, 1, connectivity=8)


def test_components_need_3d():
    with pytest.raises(InputError, match=r"^mask must be 3D, not 2D \(shape \(3, 6\)\)$"):
        largest_component(TWO_BLOBS[0])


# ----------------------------------------------------------------------------------------------
# Right / left split

# The convention, as a fact: LPS +x points to the patient's Left (RAS +x to the patient's Right).
# So the patient's right femur has the smaller LPS x, i.e. the larger RAS x = -LPS x.


def _rotation_z(degrees):
    a = math.radians(degrees)
    return (math.cos(a), -math.sin(a), 0.0, math.sin(a), math.cos(a), 0.0, 0.0, 0.0, 1.0)


def make_image(size_ijk=(14, 6, 5), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), spacing=(1, 1, 1),
               origin=(10.0, -20.0, 30.0)):
    image = sitk.Image(*size_ijk, sitk.sitkInt16)
    image.SetDirection(tuple(float(d) for d in direction))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(origin)
    return image


def blobs(shape_kji=(5, 6, 14), *boxes):
    """Mask with boxes given as (k0, k1, j0, j1, i0, i1)."""
    mask = np.zeros(shape_kji, dtype=bool)
    for k0, k1, j0, j1, i0, i1 in boxes:
        mask[k0:k1, j0:j1, i0:i1] = True
    return mask


LOW_I = (1, 4, 1, 4, 1, 4)      # 27 voxels at low i
HIGH_I = (1, 4, 1, 4, 9, 12)    # 27 voxels at high i
SPECK = (0, 1, 5, 6, 6, 7)      # a one-voxel stray fragment


def test_lps_fact_right_femur_has_smaller_lps_x():
    image = make_image()
    x_low = image.TransformIndexToPhysicalPoint((2, 2, 2))[0]
    x_high = image.TransformIndexToPhysicalPoint((10, 2, 2))[0]
    assert x_low < x_high  # with identity directions, i runs toward the patient's left
    labels, was_split = split_femurs(blobs((5, 6, 14), LOW_I, HIGH_I), image)
    assert was_split
    assert labels[2, 2, 2] == 1 and labels[2, 2, 10] == 2  # right = smaller LPS x = larger RAS x
    # the same voxels with i running toward the patient's right (LPS x decreasing with i): the
    # low-i blob now has the larger LPS x, so it is the left femur; a split by voxel index
    # instead of by patient coordinates gives the same labels as above and fails here
    mirrored = make_image(direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert (mirrored.TransformIndexToPhysicalPoint((2, 2, 2))[0]
            > mirrored.TransformIndexToPhysicalPoint((10, 2, 2))[0])
    labels, was_split = split_femurs(blobs((5, 6, 14), LOW_I, HIGH_I), mirrored)
    assert was_split
    assert labels[2, 2, 2] == 2 and labels[2, 2, 10] == 1


R150 = _rotation_z(150)


@pytest.mark.parametrize("direction, low_i_label", [
    ((1, 0, 0, 0, 1, 0, 0, 0, 1), 1),               # i toward the patient's left
    ((-1, 0, 0, 0, 1, 0, 0, 0, 1), 2),              # flipped i axis: low i is the left femur
    ((-1, 0, 0, 0, -1, 0, 0, 0, 1), 2),             # flipped i and j (a proper rotation)
    (_rotation_z(30), 1),                           # oblique, i still mostly toward left
    (R150, 2),                                      # oblique and flipped
    ((1, 0, 0, 0, 0, 1, 0, -1, 0), 1),              # coronal slices: j toward I, k toward P
])
def test_split_follows_direction_cosines(direction, low_i_label):
    mask = blobs((5, 6, 14), LOW_I, HIGH_I, SPECK)
    labels, was_split = split_femurs(mask, make_image(direction=direction))
    assert was_split
    expected = np.zeros(mask.shape, np.uint8)
    expected[blobs((5, 6, 14), LOW_I) ] = low_i_label
    expected[blobs((5, 6, 14), HIGH_I)] = 3 - low_i_label
    np.testing.assert_array_equal(labels, expected)  # the stray voxel is dropped
    assert labels.dtype == np.uint8


def test_split_along_j_when_j_points_right():
    # i toward posterior, j toward the patient's right: higher j = more to the right = label 1.
    image = make_image(size_ijk=(5, 14, 5), direction=(0, -1, 0, 1, 0, 0, 0, 0, 1))
    low_j, high_j = (1, 4, 1, 4, 1, 4), (1, 4, 9, 12, 1, 4)
    labels, was_split = split_femurs(blobs((5, 14, 5), low_j, high_j), image)
    assert was_split
    assert labels[2, 10, 2] == 1 and labels[2, 2, 2] == 2
    # The same pair separated along i (anterior-posterior) is not a left/right pair: only the
    # first of the two equal ones is kept, and placed by its position (LPS x = 8 mm: within the
    # 30 mm midline margin, and too small for the anatomy) by the sign of x: left, label 2.
    image_ap = make_image(size_ijk=(14, 6, 5), direction=(0, -1, 0, 1, 0, 0, 0, 0, 1))
    labels, was_split = split_femurs(blobs((5, 6, 14), LOW_I, HIGH_I), image_ap)
    assert was_split
    np.testing.assert_array_equal(labels, 2 * blobs((5, 6, 14), LOW_I).astype(np.uint8))


def test_pair_along_superior_axis_keeps_the_largest_only():
    top = (0, 3, 1, 4, 5, 8)              # 27 voxels, lower k
    bottom = (5, 7, 1, 4, 5, 8)           # 18 voxels, higher k (superior)
    mask = blobs((8, 6, 14), top, bottom)
    labels, was_split = split_femurs(mask, make_image(size_ijk=(14, 6, 8)))
    assert was_split  # the kept one lies at LPS x = 16 mm: the left femur, label 2
    np.testing.assert_array_equal(labels, 2 * blobs((8, 6, 14), top).astype(np.uint8))


def test_sides_use_physical_spacing():
    # Offset 6 voxels in i and 2 in k. Isotropic: mostly left-right. With 0.5 mm columns and 5 mm
    # slices the offset is 3 mm left-right against 10 mm superior: not a left/right pair.
    a, b = (0, 2, 1, 4, 1, 4), (2, 4, 1, 4, 7, 10)
    mask = blobs((5, 6, 14), a, b)
    assert np.unique(split_femurs(mask, make_image(spacing=(1, 1, 1)))[0]).tolist() == [0, 1, 2]
    assert np.unique(split_femurs(mask, make_image(spacing=(0.5, 1, 5)))[0]).tolist() == [0, 2]


@pytest.mark.parametrize("small_box, min_ratio, min_voxels, expect_split", [
    ((1, 3, 1, 3, 9, 11), 0.25, 1, True),     # 8 / 27 = 0.30 >= 0.25
    ((1, 3, 1, 4, 9, 10), 0.25, 1, False),    # 6 / 27 = 0.22 <  0.25
    ((1, 3, 1, 4, 9, 10), 0.2, 1, True),      # 6 / 27 = 0.22 >= 0.2
    ((1, 3, 1, 3, 9, 11), 0.25, 9, False),    # 8 voxels < min_voxels 9
    ((1, 3, 1, 3, 9, 11), 0.25, 8, True),
    ((2, 3, 2, 3, 9, 10), 0.01, 1, True),     # 1 voxel, permissive thresholds
    ((2, 3, 2, 3, 9, 10), 0.25, 1, False),    # 1 voxel: a stray fragment
])
def test_similar_size_rule(small_box, min_ratio, min_voxels, expect_split):
    mask = blobs((5, 6, 14), LOW_I, small_box)
    labels, was_split = split_femurs(mask, make_image(), min_ratio=min_ratio,
                                     min_voxels=min_voxels)
    assert was_split
    # the large one, at LPS x 12 mm (no side from coordinates or shape; x > 0: the left femur)
    # is label 2 alone, and label 1 (right) beside the small one on its left
    assert labels[2, 2, 2] == (1 if expect_split else 2)
    small = blobs((5, 6, 14), small_box)
    assert np.all(labels[small] == (2 if expect_split else 0))


def test_split_false_keeps_both_femurs_as_one_label():
    mask = blobs((5, 6, 14), LOW_I, HIGH_I, SPECK)
    labels, was_split = split_femurs(mask, make_image(), split=False)
    assert not was_split
    np.testing.assert_array_equal(labels, blobs((5, 6, 14), LOW_I, HIGH_I).astype(np.uint8))


def test_empty_mask_gives_empty_labelmap():
    labels, was_split = split_femurs(np.zeros((5, 6, 14), bool), make_image())
    assert was_split  # 1 = right, 2 = left, whether or not there is a femur
    assert labels.dtype == np.uint8 and labels.shape == (5, 6, 14) and not labels.any()


def test_mask_off_grid_is_a_clear_error():
    with pytest.raises(InputError, match=r"^mask shape \(14, 6, 5\) does not match the image "
                                         r"grid \(5, 6, 14\) \(\[k, j, i\] order\)$"):
        split_femurs(np.zeros((14, 6, 5), bool), make_image())


def test_bad_min_ratio():
    with pytest.raises(ValueError, match=r"^min_ratio must be in \(0, 1\], not 1.5$"):
        split_femurs(np.zeros((5, 6, 14), bool), make_image(), min_ratio=1.5)


@pytest.mark.realdata
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
@pytest.mark.parametrize("case", ["hip09", "hip22"])
@pytest.mark.slow
def test_real_masks_with_stray_fragments(case):
    label = sitk.ReadImage(str(DATA / "labelsTr" / f"{case}.nii.gz"))
    femur = sitk.GetArrayFromImage(label) == 1
    components, n = ndi.label(femur, structure=np.ones((3, 3, 3)))
    assert n > 2  # these two cases have stray fragments besides the two femurs
    labels, was_split = split_femurs(femur, label)
    assert was_split
    np.testing.assert_array_equal(labels > 0, keep_components(femur, 2))
    to_lps = np.asarray(label.GetDirection()).reshape(3, 3) @ np.diag(label.GetSpacing())
    x = [(to_lps @ np.argwhere(labels == v).mean(axis=0)[::-1])[0] for v in (1, 2)]
    assert x[0] < x[1]  # label 1 (right femur) has the smaller LPS x


# ----------------------------------------------------------------------------------------------
# One hip in view: the side is still decided (1 = right, 2 = left in every image)

def _points(*xyz):
    return np.asarray(xyz, dtype=float)


# A femur outline in LPS mm (x, y, z): head at the top, shaft below. For the right femur the
# head lies medial (+x) of the shaft; the left femur is its mirror image.
RIGHT_FEMUR = _points((-60, 0, 0), (-60, 0, 10), (-58, 0, 20), (-50, 0, 50), (-35, 0, 70),
                      (-20, 0, 80), (-25, 0, 90))
LEFT_FEMUR = RIGHT_FEMUR * [-1, 1, 1]


@pytest.mark.parametrize("points, origin, expected", [
    (RIGHT_FEMUR, (1.0, 2.0, 3.0), "right"),             # centroid x -44 mm
    (LEFT_FEMUR, (1.0, 2.0, 3.0), "left"),
    (RIGHT_FEMUR + [40, 0, 0], (1.0, 2.0, 3.0), None),    # x -4 mm: near the midline
    (RIGHT_FEMUR + [73, 0, 0], (1.0, 2.0, 3.0), None),    # x +29 mm: within the 30 mm margin
    (RIGHT_FEMUR + [74, 0, 0], (1.0, 2.0, 3.0), "left"),  # x +30 mm: what the coordinates say
    (RIGHT_FEMUR, (0.0, 0.0, 0.0), None),                 # no patient coordinate system
])
def test_side_from_coordinates(points, origin, expected):
    image = make_image(origin=origin)
    assert side_from_coordinates(points, image) == expected


@pytest.mark.parametrize("points, expected", [
    (RIGHT_FEMUR, "right"),
    (LEFT_FEMUR, "left"),
    (RIGHT_FEMUR + [300, 0, 0], "right"),                # the shape, not the position
    (RIGHT_FEMUR * [1, 1, 0.4], None),                   # 36 mm tall: too short to tell
    (_points((0, 0, 0), (3, 0, 20), (4, 0, 50)), None),  # head 4 mm from the shaft: straight
])
def test_side_from_anatomy(points, expected):
    assert side_from_anatomy(points) == expected


def test_femur_side_prefers_coordinates_then_anatomy_then_the_sign_of_x():
    far_right = RIGHT_FEMUR + [-100, 0, 0]
    assert femur_side(far_right, make_image()) == "right"
    # a left-shaped femur far on the patient's right: the coordinates win
    assert femur_side(LEFT_FEMUR + [-150, 0, 0], make_image()) == "right"
    # no coordinate system: the anatomy decides, wherever the femur lies
    assert femur_side(LEFT_FEMUR + [-150, 0, 0], make_image(origin=(0.0, 0.0, 0.0))) == "left"
    # neither tells: the sign of x
    blob = _points((5, 0, 0), (6, 0, 10))
    assert femur_side(blob, make_image()) == "left"
    assert femur_side(blob * [-1, 1, 1], make_image()) == "right"


#: Storage orders of the same physical image (DICOMOrient codes): as stored, flipped, permuted.
STORAGE = ["LIP", "RIP", "LSA", "PIL", "SAR"]


def _crop_sides(label: sitk.Image):
    """Crops of the right and the left half of ``label`` (stored LIP: low i = patient right)."""
    width = label.GetSize()[0]
    return {"right": label[: width // 2, :, :], "left": label[width // 2:, :, :]}


def _assert_one_side(crop: sitk.Image, side: str, storage: str, *, no_geometry: bool = False):
    """``crop`` stored in the order ``storage`` (and with ``no_geometry`` written with origin
    0, 0, 0, as tools that drop the geometry do) gets exactly the label of ``side``."""
    stored = sitk.DICOMOrient(crop, storage)
    if no_geometry:
        stored.SetOrigin((0.0, 0.0, 0.0))
    femur = sitk.GetArrayFromImage(stored) == 1
    labels, was_split = split_femurs(femur, stored)
    expected = 1 if side == "right" else 2
    assert was_split
    assert np.unique(labels).tolist() == [0, expected], (side, storage)
    np.testing.assert_array_equal(labels > 0, largest_component(femur))


@pytest.fixture(scope="module")
def coarse_phantom():
    from FemurSegLib.phantom import make_phantom

    return make_phantom(1, size=(96, 96, 20), spacing=(3.644, 3.644, 10.4))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("storage", STORAGE)
def test_phantom_crop_of_one_hip_gets_its_side(coarse_phantom, side, storage):
    crop = _crop_sides(coarse_phantom.labels)[side]
    _assert_one_side(crop, side, storage)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("storage", ["LIP", "RIP", "PIL"])
def test_phantom_crop_without_coordinates_gets_its_side_from_the_anatomy(coarse_phantom, side,
                                                                         storage):
    crop = _crop_sides(coarse_phantom.labels)[side]
    femur = sitk.GetArrayFromImage(crop) == 1
    # the crop moved so that its femur sits at x = 0 (the coordinates tell nothing) ...
    centre = np.argwhere(femur).mean(axis=0)[::-1]
    shifted = sitk.Image(crop)
    x_centre = crop.TransformContinuousIndexToPhysicalPoint(tuple(centre))[0]
    shifted.SetOrigin((crop.GetOrigin()[0] - x_centre,) + crop.GetOrigin()[1:])
    _assert_one_side(shifted, side, storage)
    # ... or written without geometry (origin 0, 0, 0)
    _assert_one_side(crop, side, storage, no_geometry=True)


@pytest.mark.realdata
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
@pytest.mark.parametrize("case", ["hip01", "hip05", "hip14"])
@pytest.mark.parametrize("storage", ["LIP", "RIP", "PIL"])
@pytest.mark.slow
def test_real_crop_of_one_hip_gets_its_side(case, storage):
    label = sitk.ReadImage(str(DATA / "labelsTr" / f"{case}.nii.gz"))
    assert preprocessing_orientation(label) == "LIP"
    for side, crop in _crop_sides(label).items():
        _assert_one_side(crop, side, storage)
        _assert_one_side(crop, side, storage, no_geometry=True)  # the anatomy alone


def preprocessing_orientation(image: sitk.Image) -> str:
    from FemurSegLib.preprocessing import orientation_of

    return orientation_of(image)


def test_side_regions_meet_midway_between_the_reference_femurs():
    # LOW_I spans i 1-3 (x 11-13 mm), HIGH_I i 9-11 (x 19-21): the plane lies at x = 16 mm,
    # between columns i = 5 (x 15) and i = 6 (x 16, on the left side)
    regions = side_regions(blobs((5, 6, 14), LOW_I, HIGH_I), make_image())
    assert sorted(regions) == ["left", "right"]
    expected_right = np.zeros((5, 6, 14), bool)
    expected_right[..., :6] = True
    np.testing.assert_array_equal(regions["right"], expected_right)
    np.testing.assert_array_equal(regions["left"], ~expected_right)


def test_side_regions_of_one_femur_cover_the_image():
    regions = side_regions(blobs((5, 6, 14), HIGH_I), make_image(origin=(-50.0, 0.0, 0.0)))
    assert list(regions) == ["right"]  # x -40 mm: the patient's right
    assert regions["right"].all()
    assert side_regions(np.zeros((5, 6, 14), bool), make_image()) == {}


# ----------------------------------------------------------------------------------------------
# Threshold and post-processing: one function for segment, evaluate and robustness


def test_label_probability_thresholds_inclusively_then_applies_the_rule():
    image = make_image()
    prob = np.zeros((5, 6, 14), dtype=np.float32)
    prob[1:4, 1:4, 1:4] = 0.6     # right femur (low i)
    prob[1:4, 1:4, 9:12] = 0.593  # left femur, exactly at the threshold: kept (>=)
    prob[0, 5, 6] = 0.9           # a stray voxel
    labels, split = label_probability(prob, image, 0.593, "largest_per_femur")
    assert split
    expected = np.zeros(prob.shape, np.uint8)
    expected[1:4, 1:4, 1:4], expected[1:4, 1:4, 9:12] = 1, 2
    np.testing.assert_array_equal(labels, expected)
    labels, split = label_probability(prob, image, 0.6, "none")  # the mask alone
    assert not split
    np.testing.assert_array_equal(labels, (prob >= 0.6).astype(np.uint8))
    # quantised scores and their level (as evaluate passes them) give the same mask
    levels = np.floor(prob * 1000).astype(np.int32)
    np.testing.assert_array_equal(label_probability(levels, image, 593, "largest")[0],
                                  label_probability(prob, image, 0.593, "largest")[0])


def test_only_label_probability_applies_the_rule():
    """segment, evaluate and robustness call label_probability; none thresholds and
    post-processes on its own (before, evaluate and robustness re-applied both themselves)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    callers = {}
    for path in sorted((root / "FemurSeg").rglob("*.py")) + sorted(
            (root / "FemurSegTraining").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
                if name in ("apply_rule", "label_probability"):
                    callers.setdefault(name, set()).add(path.name)
    assert callers == {"apply_rule": {"postprocess.py"},
                       "label_probability": {"inference.py", "evaluate.py", "robustness.py"}}


def test_segmenter_labels_through_label_probability(tiny_model_dir, monkeypatch):
    from FemurSegLib import postprocess
    from FemurSegLib.inference import Segmenter
    from FemurSegLib.phantom import make_phantom

    calls = []
    real = postprocess.label_probability

    def record(prob, image, threshold, rule, **kwargs):
        calls.append((threshold, rule, kwargs))
        return real(prob, image, threshold, rule, **kwargs)

    monkeypatch.setattr(postprocess, "label_probability", record)
    seg = Segmenter.from_folder(tiny_model_dir, device="cpu", engine="onnx", tta=False)
    seg.segment(make_phantom(0, size=(40, 40, 8), spacing=(3.6, 3.6, 5.2)).image)
    assert calls == [(0.5, "largest_per_femur", {"split": True})]
