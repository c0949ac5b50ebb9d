"""Inference: window geometry, blending, the 2D nine-patch scheme, TTA/ensembles, Segmenter."""

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import images
from FemurSegLib.inference import (Segmenter, gaussian_importance, nine_patch_starts,
                                   pad_to_shape, predict_2d, predict_3d, window_starts)
from geometry_helpers import blob, oblique_image


@pytest.mark.parametrize("size,patch,overlap,expected", [
    (10, 10, 0.5, [0]),
    (8, 10, 0.5, [0]),
    (20, 10, 0.5, [0, 5, 10]),
    (21, 10, 0.5, [0, 4, 7, 11]),
    (20, 10, 0.0, [0, 10]),
])
def test_window_starts(size, patch, overlap, expected):
    starts = window_starts(size, patch, overlap)
    assert starts == expected
    assert starts[0] == 0 and starts[-1] + patch >= size


def test_gaussian_importance_peak_and_floor():
    w = gaussian_importance((5, 9, 9))
    assert w.shape == (5, 9, 9)
    assert w[2, 4, 4] == pytest.approx(1.0)
    assert w.min() > 0
    assert w[2, 4, 0] < w[2, 4, 2] < w[2, 4, 4]


def test_pad_to_shape_and_crop_back():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    p, crop = pad_to_shape(a, (4, 4, 4), -1.0)
    assert p.shape == (4, 4, 4)
    np.testing.assert_array_equal(p[crop], a)
    assert (p == -1).sum() == 64 - 24


class Pointwise:
    """A fake network: foreground probability = the input intensity, voxel by voxel."""

    def __init__(self, crop: int = 0, centre_channel: bool = False):
        self.crop, self.centre, self.calls = crop, centre_channel, 0

    def __call__(self, x):
        self.calls += 1
        v = x[:, x.shape[1] // 2] if self.centre else x[:, 0]
        if self.crop:
            v = v[..., self.crop:-self.crop, self.crop:-self.crop]
        return np.stack([1 - v, v], axis=1).astype(np.float32)


def test_sliding_window_blending_reproduces_a_pointwise_network():
    vol = np.random.default_rng(0).random((7, 21, 18), dtype=np.float32)
    eng = Pointwise()
    out = predict_3d(eng, vol, patch=(4, 8, 8), divisor=(1, 1, 1), overlap=0.5)
    assert out.shape == (2, 7, 21, 18)
    np.testing.assert_allclose(out[1], vol, atol=1e-6)
    assert eng.calls == len(window_starts(7, 4, .5)) * len(window_starts(21, 8, .5)) * len(window_starts(18, 8, .5))


def test_whole_volume_pads_to_divisor_and_crops_back():
    vol = np.random.default_rng(1).random((5, 9, 10), dtype=np.float32)
    out = predict_3d(Pointwise(), vol, patch=None, divisor=(2, 4, 4))
    np.testing.assert_allclose(out[1], vol, atol=1e-6)


def test_nine_patches():
    assert nine_patch_starts(100, 40) == [0, 30, 60]
    assert nine_patch_starts(30, 40) == [0]


def test_predict_2d_mirrored_nine_patches_reproduce_centre_slice():
    vol = np.random.default_rng(2).random((4, 50, 44), dtype=np.float32)
    eng = Pointwise(crop=6, centre_channel=True)   # input 32 -> output 20, margin 6
    out = predict_2d(eng, vol, input_size=32, output_size=20, context=3)
    assert out.shape == (2, 4, 50, 44)
    np.testing.assert_allclose(out[1], vol, atol=1e-6)
    assert eng.calls == 4  # one batch of 9 tiles per slice


def test_predict_2d_rejects_too_small_tiles():
    with pytest.raises(ValueError, match="too small"):
        predict_2d(Pointwise(), np.zeros((1, 90, 90), np.float32), input_size=30, output_size=20)


def _phantom_like(shape=(10, 48, 40)):
    rng = np.random.default_rng(3)
    arr = (blob(shape, centre=[5, 24, 10], radius=(3, 10, 6)).astype(float)
           + blob(shape, centre=[5, 24, 30], radius=(3, 10, 6))) * 800
    arr = arr + rng.normal(100, 10, shape)
    return oblique_image(arr.astype(np.int16), spacing=(1.8, 1.8, 5.2))


@pytest.mark.parametrize("engine,tta", [("onnx", True), ("torch", False)])
def test_segmenter_outputs_on_exact_input_grid(tiny_model_dir, engine, tta):
    img = _phantom_like()
    seg = Segmenter.from_folder(tiny_model_dir, device="cpu", engine=engine, tta=tta)
    steps = []
    res = seg.segment(img, progress=lambda f, m: steps.append(f))
    assert images.grid_mismatch(res.labelmap, img) == ""
    assert images.grid_mismatch(res.probability, img) == ""
    assert res.labelmap.GetPixelID() == sitk.sitkUInt8
    p = sitk.GetArrayFromImage(res.probability)
    assert 0 <= p.min() and p.max() <= 1
    assert set(np.unique(sitk.GetArrayFromImage(res.labelmap))) <= {0, 1, 2}
    assert steps[0] == 0.0 and steps[-1] == 1.0 and steps == sorted(steps)
    assert res.threshold == 0.5


def test_onnx_and_torch_paths_agree(tiny_model_dir):
    img = _phantom_like()
    a = Segmenter.from_folder(tiny_model_dir, engine="onnx").segment(img)
    b = Segmenter.from_folder(tiny_model_dir, engine="torch").segment(img)
    np.testing.assert_allclose(sitk.GetArrayFromImage(a.probability),
                               sitk.GetArrayFromImage(b.probability), atol=1e-4)


@pytest.mark.slow
def test_2d_model_segments(tiny_model_2d_dir):
    img = _phantom_like((6, 40, 36))
    res = Segmenter.from_folder(tiny_model_2d_dir, tta=False).segment(img)
    assert images.grid_mismatch(res.labelmap, img) == ""


class _FakeEngine:
    def __init__(self, device):
        self.device = device


@pytest.mark.parametrize("device,card,expected", [
    ("cpu", {}, False),                        # CPU: off unless the card says it pays
    ("cpu", {"tta_on_cpu": True}, True),
    ("cuda", {}, True),                         # GPU: on
    ("cuda", {"tta_on_cpu": False}, True),
    ("cuda", {"tta_on_gpu": False}, False),
])
def test_default_tta(tiny_model_dir, device, card, expected):
    import dataclasses

    from FemurSegLib.inference import default_tta
    from FemurSegLib.modelfolder import load_model

    model = load_model(tiny_model_dir)
    model.inference = dataclasses.replace(model.inference, **card)
    assert default_tta(model, [_FakeEngine(device)]) is expected
    assert Segmenter(model, [_FakeEngine(device)]).tta is expected
    assert Segmenter(model, [_FakeEngine(device)], tta=not expected).tta is (not expected)


@pytest.mark.parametrize("margin,divisor,expected", [
    ((0, 0, 0), (1, 1, 1), (slice(2, 4), slice(3, 6), slice(5, 6))),
    ((1, 2, 2), (1, 1, 1), (slice(1, 5), slice(1, 8), slice(3, 8))),
    ((0, 0, 0), (2, 4, 4), (slice(2, 4), slice(3, 7), slice(4, 8))),   # grown to the divisor
    ((9, 9, 9), (1, 1, 1), (slice(0, 6), slice(0, 10), slice(0, 12))),  # clipped to the volume
])
def test_roi_box(margin, divisor, expected):
    from FemurSegLib.inference import roi_box

    prob = np.zeros((6, 10, 12), np.float32)
    prob[2:4, 3:6, 5] = 0.9
    assert roi_box(prob, 0.5, margin, divisor) == expected
    assert roi_box(np.zeros((3, 3, 3)), 0.5, margin, divisor) is None


class _Counting(Pointwise):
    def __init__(self):
        super().__init__()
        self.voxels = 0

    def __call__(self, x):
        self.voxels += x[0, 0].size
        return super().__call__(x)


def _model(roi):
    from types import SimpleNamespace

    from FemurSegLib.specs import InferenceSpec

    inf = {"patch_size": None, "divisor": [1, 1, 1], "tta_flip_axes": [[2]]}
    if roi:
        inf["roi"] = {"threshold": 0.5, "margin": [1, 2, 2]}
    return SimpleNamespace(inference=InferenceSpec.from_dict(inf),
                           architecture={"type": "UNet3D"})


@pytest.mark.parametrize("tta", [False, True])
def test_roi_cascade_is_exact_and_runs_later_folds_on_the_box_only(tta):
    from FemurSegLib.inference import predict_array

    vol = np.random.default_rng(4).random((8, 20, 24), dtype=np.float32) * 0.4
    vol[3:5, 6:10, 4:9] = 0.95   # the "femur": the only place above 0.5
    engines = [_Counting(), _Counting(), _Counting()]
    out = predict_array(_model(roi=True), engines, vol, tta=tta)
    np.testing.assert_allclose(out, vol, atol=1e-6)   # pointwise folds: the ensemble is the input
    full = vol.size * (2 if tta else 1)
    assert engines[0].voxels == full
    box = (2 + 2) * (4 + 4) * (5 + 4)                 # bounding box plus margin [1, 2, 2]
    assert engines[1].voxels == engines[2].voxels == box * (2 if tta else 1)
    plain = [_Counting() for _ in range(3)]
    np.testing.assert_allclose(predict_array(_model(roi=False), plain, vol, tta=tta), out, atol=1e-6)
    assert all(e.voxels == full for e in plain)


@pytest.mark.parametrize("area, expected_middle", [
    (None, 0.1),     # off: as it was
    (0, 0.9),        # every gap voxel
    (16, 0.9),       # the piece covers 4 x 4 voxels of 1 x 1 mm: 16 mm2
    (17, 0.1),       # too small a piece for this setting
])
def test_close_slice_gaps_follows_the_card(area, expected_middle):
    from FemurSegLib.inference import close_slice_gaps
    from FemurSegLib.specs import InferenceSpec

    fg = np.full((5, 6, 6), 0.1, np.float32)
    fg[1:4, 1:5, 1:5] = 0.9
    fg[2, 1:5, 1:5] = 0.1                           # slice 2 lost the 4 x 4 piece
    grid = sitk.Image(6, 6, 5, sitk.sitkUInt8)      # 1 mm in-plane
    spec = InferenceSpec.from_dict({"threshold": 0.5} | ({} if area is None else
                                                         {"fill_slice_gaps": area}))
    out = close_slice_gaps(fg, spec, grid)
    assert out[2, 2, 2] == pytest.approx(expected_middle)
    np.testing.assert_array_equal(out[[0, 1, 3, 4]], fg[[0, 1, 3, 4]])


class _LeftBiased(Pointwise):
    """A fake network that is not left-right symmetric: it adds 0.2 on the left half of its
    input (array axis 2), so its flipped pass sees the bias on the other side."""

    def __call__(self, x):
        out = super().__call__(x)
        out[:, 1, ..., : x.shape[-1] // 2] += 0.2
        out[:, 0] = 1 - out[:, 1]
        return out


@pytest.mark.parametrize("tta, n_engines", [(True, 1), (True, 2), (False, 1)])
def test_predict_passes_gives_the_flipped_passes_own_mean(tta, n_engines):
    from FemurSegLib.inference import predict_array, predict_passes

    vol = np.full((2, 3, 4), 0.5, np.float32)
    engines = [_LeftBiased() for _ in range(n_engines)]
    mean, plain_pass, flipped = predict_passes(_model(roi=False), engines, vol, tta=tta)
    plain = np.full(vol.shape, 0.5, np.float32)
    plain[..., :2] += 0.2                             # the plain pass: bias on the left
    if not tta:
        assert flipped is None and plain_pass is None
        np.testing.assert_allclose(mean, plain, atol=1e-6)
        return
    np.testing.assert_allclose(plain_pass, plain, atol=1e-6)
    np.testing.assert_allclose(flipped, plain[..., ::-1], atol=1e-6)   # flipped back
    np.testing.assert_allclose(mean, (plain + plain[..., ::-1]) / 2, atol=1e-6)
    np.testing.assert_allclose(predict_array(_model(roi=False), engines, vol, tta=tta), mean)


@pytest.mark.parametrize("tta", [True, False])
def test_segmenter_keeps_the_passes_only_when_asked(tiny_model_dir, tta):
    img = _phantom_like()
    seg = Segmenter.from_folder(tiny_model_dir, engine="onnx", tta=tta)
    plain = seg.segment(img)
    assert plain.flipped_probability is None and plain.plain_probability is None
    kept = seg.segment(img, keep_passes=True)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(kept.probability),
                                  sitk.GetArrayFromImage(plain.probability))
    if not tta:
        assert kept.flipped_probability is None and kept.plain_probability is None
        return
    f, q = kept.flipped_probability, kept.plain_probability
    for a in (f, q):
        assert a.shape == tuple(reversed(img.GetSize())) and a.dtype == np.float32
        assert 0 <= a.min() and a.max() <= 1
    # linear interpolation commutes with the mean: the probability is the passes' mean
    p = sitk.GetArrayFromImage(kept.probability)
    np.testing.assert_allclose(p, (f + q) / 2, atol=1e-5)
    assert np.abs(f - q).max() > 0                    # a trained net is not exactly symmetric
