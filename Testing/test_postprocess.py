"""Tests of FemurSegLib.postprocess: connected components and the right/left femur split."""

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from FemurSegLib.errors import InputError
from FemurSegLib.postprocess import keep_components, largest_component, split_femurs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hip-mri-t1"


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
    assert -x_low > -x_high


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
    # The same pair separated along i (anterior-posterior) is not a left/right pair.
    image_ap = make_image(size_ijk=(14, 6, 5), direction=(0, -1, 0, 1, 0, 0, 0, 0, 1))
    labels, was_split = split_femurs(blobs((5, 6, 14), LOW_I, HIGH_I), image_ap)
    assert not was_split
    np.testing.assert_array_equal(labels, blobs((5, 6, 14), LOW_I).astype(np.uint8))


def test_pair_along_superior_axis_keeps_the_largest_only():
    top = (0, 3, 1, 4, 5, 8)              # 27 voxels, lower k
    bottom = (5, 7, 1, 4, 5, 8)           # 18 voxels, higher k (superior)
    mask = blobs((8, 6, 14), top, bottom)
    labels, was_split = split_femurs(mask, make_image(size_ijk=(14, 6, 8)))
    assert not was_split
    np.testing.assert_array_equal(labels, blobs((8, 6, 14), top).astype(np.uint8))


def test_sides_use_physical_spacing():
    # Offset 6 voxels in i and 2 in k. Isotropic: mostly left-right. With 0.5 mm columns and 5 mm
    # slices the offset is 3 mm left-right against 10 mm superior: not a left/right pair.
    a, b = (0, 2, 1, 4, 1, 4), (2, 4, 1, 4, 7, 10)
    mask = blobs((5, 6, 14), a, b)
    assert split_femurs(mask, make_image(spacing=(1, 1, 1)))[1]
    assert not split_femurs(mask, make_image(spacing=(0.5, 1, 5)))[1]


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
    assert was_split == expect_split
    assert labels[2, 2, 2] == 1  # the large one, on the right, is label 1 in both cases
    small = blobs((5, 6, 14), small_box)
    assert np.all(labels[small] == (2 if expect_split else 0))


def test_split_false_keeps_both_femurs_as_one_label():
    mask = blobs((5, 6, 14), LOW_I, HIGH_I, SPECK)
    labels, was_split = split_femurs(mask, make_image(), split=False)
    assert not was_split
    np.testing.assert_array_equal(labels, blobs((5, 6, 14), LOW_I, HIGH_I).astype(np.uint8))


def test_empty_mask_gives_empty_labelmap():
    labels, was_split = split_femurs(np.zeros((5, 6, 14), bool), make_image())
    assert not was_split
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
