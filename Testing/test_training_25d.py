"""The 2.5D recipe: network, slice stacks, targets with the unlabelled-end zone, losses,
schedule and augmentation, on literal arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib.inference import predict_slices, slice_stack
from FemurSegLib.networks import UNet25D, build_network
from FemurSegTraining import augment as A
from FemurSegTraining.config import foreground_index, lr_at_epoch
from FemurSegTraining.data import IGNORE, Preprocessed, TargetSpec, class_map, unlabelled_end_zone
from FemurSegTraining.losses import dice_ce_loss, soft_dice_loss
from FemurSegTraining.train import sample_slab


# ----------------------------------------------------------------------------------------------
# network


@pytest.mark.slow
def test_unet25d_keeps_in_plane_size_and_checks_context():
    net = UNet25D(in_channels=5, num_classes=5, features=4, levels=3).eval()
    assert net.divisor == (1, 4, 4)
    with torch.no_grad():
        y = net(torch.zeros(2, 5, 24, 32))
    assert tuple(y.shape) == (2, 5, 24, 32)
    with pytest.raises(ValueError, match="odd"):
        UNet25D(in_channels=4)


def test_build_network_knows_unet25d_and_max_features():
    net = build_network({"type": "UNet25D", "in_channels": 3, "num_classes": 2, "features": 4,
                         "levels": 4, "max_features": 8})
    widths = [block[0].out_channels for block in net.down]
    assert widths == [4, 8, 8, 8]
    with pytest.raises(ValueError, match="unknown UNet25D parameters: pooling"):
        build_network({"type": "UNet25D", "pooling": [[1, 2, 2]]})


def test_deep_supervision_heads_answer_only_in_training():
    arch = {"type": "UNet25D", "in_channels": 3, "num_classes": 4, "features": 4, "levels": 4,
            "deep_supervision": 2}
    net = build_network(arch)
    x = torch.zeros(2, 3, 32, 32)
    outs = net.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 4, 32, 32), (2, 4, 16, 16), (2, 4, 8, 8)]
    with torch.no_grad():
        y = net.eval()(x)
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (2, 4, 32, 32)
    plain = build_network({**arch, "deep_supervision": 0})
    plain.load_state_dict(net.state_dict(), strict=False)
    main = plain.train()(x)
    assert isinstance(main, torch.Tensor)
    torch.testing.assert_close(main, outs[0])           # the heads leave the main output alone
    assert set(net.state_dict()) - set(plain.state_dict()) == {
        "aux_heads.0.weight", "aux_heads.0.bias", "aux_heads.1.weight", "aux_heads.1.bias"}
    with pytest.raises(ValueError, match="deep_supervision must be 0..2"):
        build_network({**arch, "deep_supervision": 3})


# ----------------------------------------------------------------------------------------------
# slice stacks and whole-slice prediction


@pytest.mark.parametrize("z, expected", [
    (0, [1, 0, 0, 1, 2]),      # mirrored (symmetric) before the first slice
    (1, [0, 0, 1, 2, 3]),
    (3, [1, 2, 3, 3, 2]),      # and after the last
])
def test_slice_stack_mirrors_symmetrically(z, expected):
    vol = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 2), np.float32)
    assert slice_stack(vol, z, 5)[:, 0, 0].tolist() == expected


class _CentreSliceEngine:
    """Returns [1 - x, x] of the centre channel: shows which slice and pixels went in."""

    def __init__(self):
        self.shapes = []

    def __call__(self, x):
        self.shapes.append(x.shape)
        c = x[:, x.shape[1] // 2]
        return np.stack([1 - c, c], axis=1)


def test_predict_slices_whole_volume_and_box_agree():
    rng = np.random.default_rng(0)
    vol = rng.random((7, 10, 13)).astype(np.float32)
    eng = _CentreSliceEngine()
    full = predict_slices(eng, vol, context=3, divisor=(1, 4, 4), batch_size=3)
    assert full.shape == (2, 7, 10, 13)
    np.testing.assert_allclose(full[1], vol, atol=1e-7)
    assert all(s[2] % 4 == 0 and s[3] % 4 == 0 for s in eng.shapes)
    box = (slice(2, 5), slice(1, 9), slice(3, 11))
    part = predict_slices(_CentreSliceEngine(), vol, context=3, divisor=(1, 4, 4), box=box)
    np.testing.assert_allclose(part[1], vol[box], atol=1e-7)


def test_predict_slices_box_sees_real_neighbours():
    vol = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 4, 4), np.float32)
    seen = []

    def engine(x):
        seen.append(x[:, :, 0, 0].copy())
        return np.zeros((x.shape[0], 2) + x.shape[2:], np.float32)

    predict_slices(engine, vol, context=3, divisor=(1, 1, 1),
                   box=(slice(2, 4), slice(0, 4), slice(0, 4)))
    assert np.concatenate(seen).tolist() == [[1, 2, 3], [2, 3, 4]]


# ----------------------------------------------------------------------------------------------
# training targets


def _femur_block():
    """Two femurs on slices 1..3 (right half of columns) and 1..4 (left half)."""
    f = np.zeros((8, 10, 20), bool)
    f[1:4, 4:6, 2:5] = True
    f[1:5, 4:6, 14:17] = True
    return f


def test_unlabelled_end_zone_follows_each_femur_past_its_last_slice():
    f = _femur_block()
    zone = unlabelled_end_zone(f, (5.0, 1.0, 1.0), slices=2, margin_mm=1.0)
    # first femur: slices 4 and 5; second femur: slices 5 and 6; none before the femurs
    assert sorted(set(np.nonzero(zone[:, :, :10])[0])) == [4, 5]
    assert sorted(set(np.nonzero(zone[:, :, 10:])[0])) == [5, 6]
    assert not zone[:4, :, :10].any() and not zone[:5, :, 10:].any()
    # the footprint of the last slice grown by one voxel (margin 1 mm at 1 mm voxels)
    fp = zone[4, :, :10]
    assert fp[4:6, 2:5].all() and fp[3, 3] and fp[6, 3] and fp[4, 1] and not fp[2, 3]
    assert not unlabelled_end_zone(f, (5.0, 1.0, 1.0), 0, 1.0).any()


def test_class_map_maps_labels_to_channels_and_ignores_only_unlabelled_end_voxels():
    f = _femur_block()
    label = np.zeros(f.shape, np.uint8)
    label[f] = 1
    label[5, 4, 3] = 2          # ilium labelled inside the zone keeps its class
    label[0, 0, 0] = 3          # spine, not an output class here: background
    spec = TargetSpec(classes=(0, 1, 2), foreground_index=1, end_slices=1, end_margin_mm=0.5)
    cm = class_map(label, spec, (5.0, 1.0, 1.0))
    assert cm[f].tolist() == [1] * int(f.sum())
    assert cm[0, 0, 0] == 0
    assert cm[4, 4, 3] == IGNORE            # first femur's next slice
    assert cm[5, 4, 15] == IGNORE           # second femur's next slice
    assert cm[5, 4, 3] == 2                 # a labelled class inside the zone stays
    assert cm[5, 5, 3] == 0                 # the first femur's zone is one slice only
    assert set(np.unique(cm)) == {0, 1, 2, IGNORE}
    label[4, 4, 3] = 2
    assert class_map(label, spec, (5.0, 1.0, 1.0))[4, 4, 3] == 2


def test_foreground_index_of_classes():
    assert foreground_index({"classes": None}) == 1
    assert foreground_index({"classes": ["ilium", "femur"], "foreground": "femur"}) == 2


def test_sample_slab_crops_stack_and_centre_target():
    img = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 20, 20), np.float32)
    target = np.zeros((4, 20, 20), np.uint8)
    target[3, 8:12, 8:12] = 1
    classes = target * 2
    case = Preprocessed("c", img, target, classes)
    x, y = sample_slab(case, 16, 3, np.random.default_rng(0), p_fg=1.0)
    assert x.shape == (3, 16, 16) and y.shape == (16, 16)
    assert x[:, 0, 0].tolist() == [2, 3, 3]          # slice 3 and its mirrored neighbour
    assert set(np.unique(y)) == {0, 2}               # the class map, not the binary target


# ----------------------------------------------------------------------------------------------
# losses and schedule


def test_soft_dice_known_answers_and_ignore():
    target = torch.tensor([[0, 1, 1, 2]])
    perfect = torch.full((1, 3, 4), -20.0)
    perfect[0, target[0], torch.arange(4)] = 20.0
    assert float(soft_dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    # class 2 never predicted: its Dice is (0 + 1) / (1 + 1) = 0.5 with eps 1; class 1 perfect
    wrong = perfect.clone()
    wrong[0, :, 3] = torch.tensor([20.0, -20.0, -20.0])
    assert float(soft_dice_loss(wrong, target)) == pytest.approx(1 - (1.0 + 0.5) / 2, abs=1e-6)
    # ignoring that voxel: class 2 has no voxels and no predictions, Dice 1
    ignored = torch.tensor([[0, 1, 1, 255]])
    assert float(soft_dice_loss(wrong, ignored)) == pytest.approx(0.0, abs=1e-6)
    assert float(dice_ce_loss(wrong, ignored)) == pytest.approx(0.0, abs=1e-6)


def test_poly_schedule_is_a_function_of_the_epoch():
    cfg = {"optimizer": {"lr": 1.0}, "max_epochs": 10, "lr_schedule": {"poly_exponent": 1.0}}
    assert [round(lr_at_epoch(cfg, e), 6) for e in (0, 5, 9, 12)] == [1.0, 0.5, 0.1, 0.0]


# ----------------------------------------------------------------------------------------------
# augmentation


def test_intensity_transforms_known_answers():
    rng = np.random.default_rng(0)
    x = np.array([[[0.0, 0.5], [0.25, 1.0]]], np.float32)
    np.testing.assert_allclose(A.gamma(x, rng, exponent=2.0), x ** 2)
    np.testing.assert_allclose(A.invert(x, rng, whole=True), 1 - x)
    # air (below the body threshold) stays dark when only the body is inverted
    np.testing.assert_allclose(A.invert(x, rng, whole=False), [[[0.0, 0.5], [0.75, 0.0]]])
    np.testing.assert_allclose(A.bias_field(x, rng, log_amplitude=0.0), x)


def test_bias_field_is_smooth_and_bounded():
    rng = np.random.default_rng(1)
    ones = np.ones((3, 64, 64), np.float32)
    out = A.bias_field(ones, rng, log_amplitude=0.4)
    assert out.min() >= np.exp(-0.4) - 1e-5 and out.max() <= np.exp(0.4) + 1e-5
    assert out.max() / out.min() > 1.3                      # a real shading
    assert np.abs(np.diff(out, axis=-1)).max() < 0.1        # no jumps between neighbours
    np.testing.assert_allclose(out[0], out[2])              # the same field on every slice


@pytest.mark.parametrize("seed", range(5))
def test_robust_intensity_ends_in_unit_range(seed):
    rng = np.random.default_rng(seed)
    x = rng.random((5, 32, 32)).astype(np.float32)
    out = A.robust_intensity(x, rng)
    assert out.shape == x.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert -0.3 < out.min() and out.max() < 1.3             # 0..1 plus at most the noise


def test_affine_batch_moves_image_and_labels_together():
    img = torch.zeros(4, 1, 32, 32)
    img[:, :, 10:22, 10:22] = 1.0
    lab = (img[:, 0] > 0.5).long() * 3
    out, lab_out = A.affine_batch(img, lab, np.random.default_rng(0), p=1.0)
    assert set(torch.unique(lab_out).tolist()) <= {0, 3}
    agree = ((out[:, 0] > 0.5) == (lab_out == 3)).float().mean()
    assert agree > 0.97
    assert not torch.equal(lab_out, lab)


# ----------------------------------------------------------------------------------------------
# the paper's 2D tiles: borders mirrored as inference mirrors them


@pytest.mark.parametrize("idx, n, expected", [
    ([-2, -1, 0, 1, 2, 3, 4], 3, [2, 1, 0, 1, 2, 1, 0]),
    ([-1, 0, 5], 1, [0, 0, 0]),
])
def test_reflect_index(idx, n, expected):
    from FemurSegTraining.sampling import reflect_index

    assert reflect_index(np.array(idx), n).tolist() == expected


def test_2d_tiles_are_mirrored_like_predict_2d():
    from FemurSegTraining.sampling import sample_patch_2d

    rng = np.random.default_rng(0)
    image = rng.random((3, 12, 14)).astype(np.float32)
    target = np.zeros((3, 12, 14), np.uint8)
    target[1, 0, 0] = 1                      # the only femur voxel: the tile hangs off the corner
    in_size, out_size = 10, 4
    x, y = sample_patch_2d(Preprocessed("c", image, target), in_size, out_size, 3, rng, p_fg=1.0)
    # what predict_2d feeds the network for the same place: symmetric across slices,
    # reflected across in-plane borders
    margin = (in_size - out_size) // 2
    pad = in_size
    zpad = np.pad(image, ((1, 1), (0, 0), (0, 0)), mode="symmetric")[1:4]
    plane = np.pad(zpad, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    y0 = x0 = -in_size // 2 + pad
    np.testing.assert_array_equal(x, plane[:, y0:y0 + in_size, x0:x0 + in_size])
    tpad = np.pad(target[1], pad, mode="reflect")
    np.testing.assert_array_equal(y, tpad[y0 + margin:y0 + margin + out_size,
                                         x0 + margin:x0 + margin + out_size])


@pytest.mark.parametrize("robust, applied", [(True, 20), (False, 0), (0.0, 0), (1.0, 20)])
def test_robust_intensity_probability(monkeypatch, robust, applied):
    from FemurSegTraining import augment

    calls = []
    monkeypatch.setattr(augment, "robust_intensity", lambda x, rng: calls.append(1) or x)
    cfg = {"augment": {"flip_lr": False, "robust_intensity": robust}}
    rng = np.random.default_rng(0)
    for _ in range(20):
        augment.augment_sample(np.zeros((3, 4, 4), np.float32), np.zeros((4, 4)), rng, cfg)
    assert len(calls) == applied


def test_robust_intensity_half_of_the_samples(monkeypatch):
    from FemurSegTraining import augment

    calls = []
    monkeypatch.setattr(augment, "robust_intensity", lambda x, rng: calls.append(1) or x)
    cfg = {"augment": {"flip_lr": False, "robust_intensity": 0.5}}
    rng = np.random.default_rng(0)
    for _ in range(400):
        augment.augment_sample(np.zeros((3, 4, 4), np.float32), np.zeros((4, 4)), rng, cfg)
    assert 160 < len(calls) < 240


def test_robust_intensity_setting_is_checked(tmp_path):
    import json

    from FemurSegLib.errors import FemurSegError
    from FemurSegTraining.config import load_config

    from FemurSegTraining.config import CONFIG_DIR

    raw = json.loads((CONFIG_DIR / "default_25d_f16l5_half.json").read_text(encoding="utf-8"))
    raw["augment"]["robust_intensity"] = 1.5
    p = tmp_path / "c.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(FemurSegError, match="augment.robust_intensity must be true, false or a "
                                            "probability in \\[0, 1\\], not 1.5"):
        load_config(str(p))


def test_invert_fill_also_inverts_dark_tissue_inside_the_body():
    # a bright body (0.6) around a dark cortex ring (0.02) around marrow (0.8), air (0.0) outside
    x = np.zeros((1, 9, 9), np.float32)
    x[0, 1:8, 1:8] = 0.6
    x[0, 2:7, 2:7] = 0.02
    x[0, 3:6, 3:6] = 0.8
    rng = np.random.default_rng(0)
    plain = A.invert(x, rng, whole=False)
    filled = A.invert(x, rng, whole=False, fill=True)
    assert plain[0, 2, 2] == pytest.approx(0.02)     # the cortex counts as air: stays dark
    assert filled[0, 2, 2] == pytest.approx(0.98)    # inside the filled body: inverted
    for out in (plain, filled):
        assert out[0, 0, 0] == 0.0                    # the air around stays dark
        assert out[0, 4, 4] == pytest.approx(0.2) and out[0, 1, 1] == pytest.approx(0.4)


@pytest.mark.parametrize("aug, expected", [
    ({}, {}),
    ({"bias_log_amplitude": [0.2, 0.7], "p_bias": 0.8, "invert_fill": True},
     {"bias_log_amplitude": (0.2, 0.7), "p_bias": 0.8, "invert_fill": True}),
    ({"bias_log_amplitude": [0, 1]}, {"bias_log_amplitude": (0.0, 1.0)}),
])
def test_robust_options(aug, expected):
    assert A.robust_options(aug) == expected


@pytest.mark.parametrize("aug, message", [
    ({"bias_log_amplitude": 0.7}, r"bias_log_amplitude must be \[low, high\]"),
    ({"bias_log_amplitude": [0.7, 0.2]}, r"0 <= low <= high <= 1.5, not \[0.7, 0.2\]"),
    ({"bias_log_amplitude": [0.2, 2.0]}, r"not \[0.2, 2.0\]"),
    ({"p_bias": 1.5}, r"p_bias must be a probability in \[0, 1\], not 1.5"),
    ({"p_bias": True}, "p_bias must be a probability"),
    ({"invert_fill": "yes"}, "invert_fill must be true or false, not 'yes'"),
])
def test_robust_options_are_checked(aug, message):
    with pytest.raises(ValueError, match=message):
        A.robust_options(aug)


def test_augment_sample_passes_the_robust_options(monkeypatch):
    from FemurSegTraining import augment

    seen = []
    monkeypatch.setattr(augment, "robust_intensity", lambda x, rng, **kw: seen.append(kw) or x)
    cfg = {"augment": {"flip_lr": False, "robust_intensity": True,
                       "bias_log_amplitude": [0.3, 0.7], "invert_fill": True}}
    augment.augment_sample(np.zeros((3, 4, 4), np.float32), np.zeros((4, 4)),
                           np.random.default_rng(0), cfg)
    assert seen == [{"bias_log_amplitude": (0.3, 0.7), "invert_fill": True}]


def test_stronger_bias_range_shades_more():
    x = np.full((1, 64, 64), 0.5, np.float32)
    ratios = {}
    for lo_hi in ((0.0, 0.4), (0.7, 0.7)):
        r = []
        for seed in range(10):
            rng = np.random.default_rng(seed)
            a = rng.uniform(*lo_hi)
            out = A.bias_field(x, rng, a)
            r.append(out.max() / out.min())
        ratios[lo_hi] = max(r)
    assert ratios[(0.0, 0.4)] <= np.exp(0.8) + 1e-4
    assert ratios[(0.7, 0.7)] > 3.0                   # up to exp(1.4) = 4 across the plane


def test_robust_intensity_bias_options_reach_the_field(monkeypatch):
    from FemurSegTraining import augment

    amplitudes = []
    real = augment.bias_field
    monkeypatch.setattr(augment, "bias_field",
                        lambda x, rng, a=None: amplitudes.append(a) or real(x, rng, a))
    x = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    for seed in range(20):
        augment.robust_intensity(x, np.random.default_rng(seed), bias_log_amplitude=(0.6, 0.7),
                                 p_bias=1.0)
    assert len(amplitudes) == 20 and all(0.6 <= a <= 0.7 for a in amplitudes)


def test_robust_option_errors_name_the_config(tmp_path):
    import json

    from FemurSegLib.errors import FemurSegError
    from FemurSegTraining.config import CONFIG_DIR, load_config

    raw = json.loads((CONFIG_DIR / "default_25d_f16l5_half.json").read_text(encoding="utf-8"))
    raw["augment"]["p_bias"] = 2
    p = tmp_path / "c.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(FemurSegError, match=r"config c.json: augment.p_bias must be a "
                                            r"probability in \[0, 1\], not 2"):
        load_config(str(p))


@pytest.mark.slow
def test_deeply_supervised_recipe_trains_exports_and_segments(tmp_path, one_thread):
    """Deep supervision end to end: the auxiliary heads train, the export's ONNX graph and the
    torch fallback both give the main head's probabilities, and segment runs the model."""
    import json

    from FemurSegLib.cli import main as femurseg
    from FemurSegLib.modelfolder import load_model
    from FemurSegTraining.cli import main

    from training_helpers import TINY_25D, make_dataset, write_config

    data = make_dataset(tmp_path / "ds", 4)
    arch = {**TINY_25D["architecture"], "levels": 3, "deep_supervision": 1}
    cfg = write_config(tmp_path / "tiny_ds.json", TINY_25D, architecture=arch, max_epochs=2,
                       min_epochs=2, patches_per_epoch=2)
    run = tmp_path / "run"
    assert main(["cv", str(cfg), "--data", str(data), "--run-dir", str(run), "--quiet"]) == 0
    weights = torch.load(run / "fold_0" / "best.pt", weights_only=True)
    assert "aux_heads.0.weight" in weights
    assert main(["evaluate", str(run), "--quiet"]) == 0
    model = tmp_path / "model"
    assert main(["export", str(run), str(model)]) == 0
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    assert card["architecture"]["deep_supervision"] == 1
    assert load_model(model).folds
    for engine in ("onnx", "torch"):
        out = tmp_path / f"seg_{engine}.nii.gz"
        code = femurseg(["segment", str(data / "imagesTr" / "case00_0000.nii.gz"), "-o",
                         str(out), "--model", str(model), "--engine", engine, "--quiet"])
        assert code in (0, 3) and out.is_file()  # 3: a 2-epoch model may warn; it still writes
