"""FemurSegLib.montage: the PNG quality-control report (radiological coronal tiles, physical
proportions, the slices shown, the reference outline) and the volumes JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import images, montage
from FemurSegLib.errors import InputError
from writer_helpers import (GREEN, OBLIQUE, RED, SPLIT, Boom, grid, labels_on, lps_points,  # noqa: F401
                            rotation, small_oblique_labels)


# ----------------------------------------------------------------------------------------------
# Report and volumes


def test_volumes_json_known_answer(tmp_path):
    image = grid((10, 9, 8), (0.5, 0.8, 2.0), (3, 4, 5), OBLIQUE, sitk.sitkInt16)
    array = np.zeros((8, 9, 10), np.uint8)
    array[2:6, 1:6, 3:9] = 1  # 4 x 5 x 6 = 120 voxels of 0.8 mm3 = 96 mm3
    grey = images.array_to_image(np.arange(720, dtype=np.int16).reshape(8, 9, 10), image)
    report = montage.write_report(grey, labels_on(image, array), SPLIT, tmp_path, title="Box")
    assert report == json.loads((tmp_path / "volumes.json").read_text(encoding="utf-8"))
    assert report["title"] == "Box"
    assert report["spacing_mm"] == [0.5, 0.8, 2.0]
    assert report["voxel_volume_mm3"] == pytest.approx(0.8)
    right, left = report["segments"]
    assert right == {"name": "Right femur", "label_value": 1, "voxel_count": 120,
                     "volume_mm3": pytest.approx(96.0), "volume_ml": pytest.approx(0.096)}
    assert left == {"name": "Left femur", "label_value": 2, "voxel_count": 0,
                    "volume_mm3": 0.0, "volume_ml": 0.0}
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.png", "volumes.json"]

# Three layouts of the same patient frame: LPS-ordered axial, real-data-like coronal (i -> L,
# j -> inferior, k -> posterior) and a flipped one (i -> right, j -> superior, k -> anterior).
AXIAL = np.eye(3)

CORONAL = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns: L, I, P

FLIPPED = np.array([[-1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # columns: R, S, A


def test_report_lists_the_slices_to_check(tmp_path):
    # identity direction: voxel axis j runs posterior, so the coronal slices are j = const
    image = grid((10, 9, 8), (0.5, 0.8, 2.0), (3, 4, 5), np.eye(3), sitk.sitkInt16)
    array = np.zeros((8, 9, 10), np.uint8)
    array[2:6, 1:6, 3:9] = 1
    prob = np.where(array > 0, 0.97, 0.0).astype(np.float32)
    prob[2:6, 4, 3:9] = 0.5        # slice j = 4: every candidate voxel uncertain
    prob[2:6, 2, 3:6] = 0.3        # slice j = 2: half of its 24 candidates uncertain
    grey = images.array_to_image(np.arange(720, dtype=np.int16).reshape(8, 9, 10), image)
    report = montage.write_report(grey, labels_on(image, array), SPLIT, tmp_path, title="Box",
                                  probability=prob)
    assert report["slices_to_check"] == [
        {"slice": 4, "score": 1.0, "uncertain_share": 1.0, "disagree_share": 0.0,
         "candidate_voxels": 24},
        {"slice": 2, "score": 0.5, "uncertain_share": 0.5, "disagree_share": 0.0,
         "candidate_voxels": 24}]
    assert json.loads((tmp_path / "volumes.json").read_text())["slices_to_check"] == \
        report["slices_to_check"]
    with pytest.raises(InputError, match=r"probability shape \(8, 9\) does not match the "
                                         r"image grid \(8, 9, 10\)"):
        montage.write_report(grey, labels_on(image, array), SPLIT, tmp_path / "bad",
                             probability=prob[:, :, 0])


def test_report_counts_where_the_test_time_passes_disagree(tmp_path):
    image = grid((10, 9, 8), (0.5, 0.8, 2.0), (3, 4, 5), np.eye(3), sitk.sitkInt16)
    array = np.zeros((8, 9, 10), np.uint8)
    array[2:6, 1:6, 3:9] = 1
    plain = np.where(array > 0, 0.95, 0.0).astype(np.float32)
    flipped = plain.copy()
    flipped[2:6, 3, 3:6] = 0.68    # slice j = 3: half its voxels 0.95 / 0.68 around 0.7
    mean = (plain + flipped) / 2   # 0.815 there: not in the uncertain range (0.2, 0.8)
    grey = images.array_to_image(np.zeros((8, 9, 10), np.int16), image)
    labels = labels_on(image, array)
    report = montage.write_report(grey, labels, SPLIT, tmp_path / "a", probability=mean,
                                  passes=(plain, flipped), threshold=0.7)
    assert report["slices_to_check"] == [
        {"slice": 3, "score": 0.5, "uncertain_share": 0.5, "disagree_share": 0.5,
         "candidate_voxels": 24}]
    # at threshold 0.5 the passes agree, and 0.68 lies in the uncertain range: still listed
    report = montage.write_report(grey, labels, SPLIT, tmp_path / "b", probability=mean,
                                  passes=(plain, flipped), threshold=0.5)
    assert [s["disagree_share"] for s in report["slices_to_check"]] == [0.0]
    assert montage.write_report(grey, labels, SPLIT, tmp_path / "c",
                                probability=mean).get("slices_to_check") == []
    with pytest.raises(InputError, match="test-time pass shapes"):
        montage.write_report(grey, labels, SPLIT, tmp_path / "d", probability=mean,
                             passes=(plain[:, :, 0], flipped))


@pytest.mark.parametrize("direction, expected_axes", [
    (AXIAL, {"LR": 0, "AP": 1, "SI": 2}),
    (CORONAL, {"LR": 0, "AP": 2, "SI": 1}),
    (FLIPPED, {"LR": 0, "AP": 2, "SI": 1}),
    (np.array([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]), {"LR": 2, "AP": 0, "SI": 1}),
])
def test_coronal_plane_is_radiological(direction, expected_axes):
    """A voxel at the patient's right-superior corner lands top-left, left-inferior bottom-right."""
    assert montage.coronal_axes(direction.ravel()) == expected_axes
    image = grid((4, 5, 6), (1, 1, 1), direction=direction)
    points = lps_points(image)  # x grows to the patient's left, z to superior
    x, z = points[0], points[2]
    array = np.zeros(points.shape[1:], np.uint8)
    array[(x == x.min()) & (z == z.max())] = 1  # right-superior edge
    array[(x == x.max()) & (z == z.min())] = 2  # left-inferior edge
    for n in range(image.GetSize()[expected_axes["AP"]]):
        plane = montage.coronal_plane(array, direction.ravel(), n)
        assert plane[0, 0] == 1 and plane[-1, -1] == 2
        assert (plane == 1).sum() == 1 and (plane == 2).sum() == 1


def outline_box(png: Path, colour) -> tuple:
    """Width and height (pixels) and centre column of the largest blob of ``colour`` in a PNG."""
    from matplotlib import image as mpimg
    from scipy import ndimage

    rgb = mpimg.imread(str(png))[..., :3]
    hit = np.all(np.abs(rgb - np.asarray(colour)) < 0.15, axis=-1)
    blobs, count = ndimage.label(hit, structure=np.ones((3, 3)))
    assert count > 0
    largest = 1 + int(np.argmax(ndimage.sum(hit, blobs, range(1, count + 1))))
    rows, cols = np.nonzero(blobs == largest)
    return cols.max() - cols.min() + 1, rows.max() - rows.min() + 1, cols.mean() / rgb.shape[1]


@pytest.mark.parametrize("direction, spacing, size", [
    (AXIAL, (0.9, 0.9, 5.2), (100, 12, 16)),  # coronal pixels of 0.9 x 5.2 mm
    (CORONAL, (0.9, 0.9, 5.2), (100, 80, 5)),  # coronal pixels of 0.9 x 0.9 mm
    (FLIPPED, (1.2, 0.6, 3.0), (70, 120, 6)),
])
def test_report_keeps_physical_proportions_and_sides(tmp_path, direction, spacing, size):
    """Rods along A-P: the one on the patient's right is drawn on the viewer's left, and the
    outlines have the physical width : height ratio of the voxels inside them."""
    image = grid(size, spacing, (0, 0, 0), direction, sitk.sitkInt16)
    points = lps_points(image)
    middle = points.reshape(3, -1).mean(axis=1)
    rods = np.zeros(points.shape[1:], np.uint8)
    for value, dx, radius in ((1, -22, 18), (2, 22, 12)):
        dist = np.hypot(points[0] - middle[0] - dx, points[2] - middle[2])
        rods[dist < radius] = value
    grey = images.array_to_image((100 + 300 * (rods > 0)).astype(np.int16), image)
    montage.write_report(grey, labels_on(image, rods), [RED, GREEN], tmp_path, n_slices=1)
    axes = montage.coronal_axes(direction.ravel())
    plane = montage.coronal_plane(rods, direction.ravel(), 0)  # every slice looks the same
    for spec, side in ((RED, "left"), (GREEN, "right")):
        rows, cols = np.nonzero(plane == spec.value)
        physical = (np.ptp(cols) + 1) * spacing[axes["LR"]] / ((np.ptp(rows) + 1) *
                                                               spacing[axes["SI"]])
        width, height, where = outline_box(tmp_path / "report.png", spec.color)
        assert width / height == pytest.approx(physical, rel=0.08)
        assert (where < 0.5) if side == "left" else (where > 0.5)
    if direction is AXIAL:  # the check can fail: in voxel units the rod is 8 times wider
        assert (np.ptp(cols) + 1) / (np.ptp(rows) + 1) > 4 * physical


def test_report_of_an_empty_label_map(tmp_path):
    image = grid((10, 9, 8), (0.9, 0.9, 5.2), (0, 0, 0), CORONAL, sitk.sitkInt16)
    grey = images.array_to_image(np.arange(720, dtype=np.int16).reshape(8, 9, 10), image)
    report = montage.write_report(grey, labels_on(image, np.zeros((8, 9, 10))), SPLIT, tmp_path)
    assert [s["voxel_count"] for s in report["segments"]] == [0, 0]
    assert (tmp_path / "report.png").stat().st_size > 1000


def png_size(path: Path) -> tuple:
    """(width, height) in pixels from a PNG header."""
    raw = path.read_bytes()[:24]
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def coronal_femur(slices=20, filled=range(3, 18)):
    """A coronal (LIP) grid of 0.9 x 0.9 x 5.2 mm with a 'femur' rod on the slices ``filled``:
    label 1 on the patient's right (low i), label 2 on the left."""
    image = grid((120, 100, slices), (0.9, 0.9, 5.2), (-54.0, 10.0, 40.0), CORONAL,
                 sitk.sitkInt16)
    array = np.zeros((slices, 100, 120), np.uint8)
    for k in filled:
        array[k, 20:80, 15:35] = 1
        array[k, 20:80, 85:105] = 2
    grey = images.array_to_image((200 + 400 * (array > 0)).astype(np.int16), image)
    return grey, labels_on(image, array), array


@pytest.mark.slow
def test_report_shows_every_slice_with_femur(tmp_path):
    grey, labels, _ = coronal_femur(slices=20, filled=range(3, 18))  # 15 slices with femur
    report = montage.write_report(grey, labels, SPLIT, tmp_path)
    layout = report["montage"]
    assert layout["slices_shown"] == list(range(3, 18))
    assert layout["slices_left_out"] == [] and layout["slices_with_femur"] == 15
    assert layout["slice_axis"] == "k"
    assert report == json.loads((tmp_path / "volumes.json").read_text(encoding="utf-8"))
    # 4 tiles per row: 4 rows of tiles fit in the picture
    width, height = png_size(tmp_path / "report.png")
    tile_w, tile_h = layout["tile_pixels"]
    assert width >= 4 * tile_w and height >= 4 * tile_h


def test_report_says_which_slices_it_left_out(tmp_path):
    grey, labels, _ = coronal_femur(slices=20, filled=range(3, 18))
    report = montage.write_report(grey, labels, SPLIT, tmp_path, n_slices=4)
    assert report["montage"]["slices_shown"] == [3, 8, 12, 17]
    assert report["montage"]["slices_left_out"] == [4, 5, 6, 7, 9, 10, 11, 13, 14, 15, 16]
    assert montage._ranges(report["montage"]["slices_left_out"]) == "4-7, 9-11, 13-16"


@pytest.mark.parametrize("values, text", [
    ([], ""), ([5], "5"), ([1, 2, 3], "1-3"), ([1, 3, 4, 9], "1, 3-4, 9"),
])
def test_slice_ranges(values, text):
    assert montage._ranges(values) == text


@pytest.mark.parametrize("width_mm, height_mm, voxel_mm, expected", [
    (300.0, 160.0, 0.911, 2.0 / 0.911),   # a hip scan: 2 pixels per voxel, 659 px wide
    (60.0, 40.0, 0.911, 320 / 60.0),      # a small crop is drawn at least 320 px wide
    (600.0, 200.0, 0.5, 1100 / 600.0),    # a huge field of view: at most 1100 px wide
])
def test_tile_scale(width_mm, height_mm, voxel_mm, expected):
    assert montage.tile_scale(width_mm, height_mm, voxel_mm) == pytest.approx(expected)


@pytest.mark.slow
def test_report_tiles_show_each_voxel_with_two_pixels(tmp_path):
    """A rod of 20 voxels (18 mm) across is drawn at least 40 pixels wide (it was 3.2 inches
    per tile at 110 dpi: about 1.2 pixels per voxel for a hip scan)."""
    grey, labels, _ = coronal_femur()
    report = montage.write_report(grey, labels, SPLIT, tmp_path)
    assert report["montage"]["pixels_per_mm"] * 0.9 >= 2.0
    width, height, _ = outline_box(tmp_path / "report.png", SPLIT[0].color)
    assert width >= 40 and height >= 2 * 60


def test_report_draws_the_reference_outline(tmp_path):
    grey, labels, array = coronal_femur()
    reference = np.roll(array == 1, 8, axis=2)  # the right rod, 8 voxels toward the left
    montage.write_report(grey, labels, SPLIT, tmp_path / "with", reference=reference,
                         n_slices=1)
    montage.write_report(grey, labels, SPLIT, tmp_path / "without", n_slices=1)
    from matplotlib import image as mpimg

    def magenta(png):
        rgb = mpimg.imread(str(png))[..., :3]
        return np.all(np.abs(rgb - np.asarray(montage.REFERENCE_COLOR)) < 0.15, axis=-1)

    rows, cols = np.nonzero(magenta(tmp_path / "with" / "report.png"))
    # a dashed outline as tall as the rod (60 voxels, 2 pixels each), on the patient's right
    # (the viewer's left), besides the small legend line
    assert np.ptp(rows) >= 2 * 60 and np.median(cols) / magenta(
        tmp_path / "with" / "report.png").shape[1] < 0.5
    assert not magenta(tmp_path / "without" / "report.png").any()
    with pytest.raises(InputError, match=r"^reference shape \(20, 100, 119\) does not match "):
        montage.write_report(grey, labels, SPLIT, tmp_path / "bad", reference=reference[..., 1:])


def test_report_needs_the_label_map_on_the_image_grid(tmp_path):
    image = grid((10, 9, 8), (0.9, 0.9, 5.2), pixel=sitk.sitkInt16)
    other = grid((10, 9, 8), (0.9, 0.9, 5.0))
    with pytest.raises(InputError, match=r"^label map is not on the image grid: spacing "):
        montage.write_report(image, other, SPLIT, tmp_path)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Atomicity


def test_failed_report_leaves_no_png_no_json_no_temp(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    labels, _ = small_oblique_labels()

    def half_save(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG partial")
        raise Boom("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", half_save)
    with pytest.raises(Boom):
        montage.write_report(sitk.Cast(labels, sitk.sitkInt16), labels, SPLIT, tmp_path)
    assert list(tmp_path.iterdir()) == []
