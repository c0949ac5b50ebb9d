"""Training units: paper loss, splits, early stopping, threshold selection, plan, configs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib import metrics
from FemurSegLib.errors import FemurSegError
from FemurSegLib.networks import build_network
from FemurSegTraining.config import CONFIG_DIR, load_config
from FemurSegTraining.curves import LEVELS, PooledCurve, quantise
from FemurSegTraining.losses import class_weights, weighted_cross_entropy
from FemurSegTraining.plan import apply_plan, divisor_of, plan_patch, plan_pooling
from FemurSegTraining.splits import (check_splits, load_or_make_splits, make_splits,
                                     stratified_folds)
from FemurSegTraining.train import EarlyStopping

# ----------------------------------------------------------------------------------------------
# Loss: eq. (1) by hand


def test_weighted_ce_equals_hand_computed_value():
    # 4 voxels, 1 femur: w_femur = N_b/N = 3/4, w_background = N_p/N = 1/4.
    # voxel 0 (femur): logits (0, ln 3) -> p_femur = 3/4 -> CE = ln(4/3); others: logits (0, 0)
    # -> CE = ln 2.  Loss = (3/4 ln(4/3) + 3 * 1/4 ln 2) / 4 = 3/16 ln(8/3).
    logits = torch.zeros(1, 2, 4)
    logits[0, 1, 0] = math.log(3.0)
    target = torch.tensor([[1, 0, 0, 0]])
    assert weighted_cross_entropy(logits, target).item() == pytest.approx(
        3.0 / 16.0 * math.log(8.0 / 3.0), rel=1e-6)


def test_class_weights_are_per_sample():
    target = torch.tensor([[[1, 0], [0, 0]], [[1, 1], [0, 0]]])  # 1 of 4, 2 of 4 femur
    w = class_weights(target)
    assert torch.allclose(w, torch.tensor([[0.25, 0.75], [0.5, 0.5]]))


def test_weighted_ce_background_only_sample_has_zero_loss():
    # N_p = 0 gives background weight N_p/N = 0: such a patch does not train the network
    logits = torch.randn(1, 2, 3, 3)
    assert weighted_cross_entropy(logits, torch.zeros(1, 3, 3, dtype=torch.long)).item() == 0.0


# ----------------------------------------------------------------------------------------------
# Splits


@pytest.mark.parametrize("n,sizes", [(86, [21, 21, 22, 22]), (17, [4, 4, 4, 5]),
                                     (8, [2, 2, 2, 2]), (5, [1, 1, 1, 2])])
def test_folds_disjoint_covering_balanced(n, sizes):
    names = [f"c{i:03d}" for i in range(n)]
    strata = np.random.default_rng(1).uniform(100, 300, n)
    folds = stratified_folds(names, strata, 4, seed=3)
    assert sorted(len(f) for f in folds) == sizes
    assert sorted(sum(folds, [])) == names          # covering, and disjoint (no repeats)
    check_splits(make_splits(names, strata, 4, 3), names)


def test_folds_are_stratified():
    # every block of 4 cases adjacent in the stratum goes to 4 different folds
    names = [f"c{i:02d}" for i in range(40)]
    strata = np.random.default_rng(0).permutation(40).astype(float)
    folds = stratified_folds(names, strata, 4, seed=0)
    fold_of = {n: k for k, f in enumerate(folds) for n in f}
    by_stratum = [names[i] for i in np.argsort(strata)]
    for start in range(0, 40, 4):
        assert len({fold_of[n] for n in by_stratum[start:start + 4]}) == 4
    means = [np.mean([strata[names.index(n)] for n in f]) for f in folds]
    assert max(means) - min(means) < 4.0  # whole range in every fold (overall mean 19.5)


def test_splits_reproducible_by_seed():
    names = [f"c{i}" for i in range(20)]
    strata = list(range(20))
    assert stratified_folds(names, strata, 4, 7) == stratified_folds(names, strata, 4, 7)
    assert stratified_folds(names, strata, 4, 7) != stratified_folds(names, strata, 4, 8)


def test_splits_json_is_reused(tmp_path):
    names = [f"c{i}" for i in range(10)]
    path = tmp_path / "splits.json"
    first = load_or_make_splits(path, names, list(range(10)), 4, seed=0)
    assert json.loads(path.read_text(encoding="utf-8")) == first
    # another seed (or strata) does not re-split: the file wins
    assert load_or_make_splits(path, names, list(range(10))[::-1], 4, seed=99) == first
    with pytest.raises(FemurSegError, match="splits .* list other cases than the dataset; delete it"):
        load_or_make_splits(path, names + ["new"], list(range(11)), 4)


@pytest.mark.parametrize("splits,message", [
    ([{"train": ["a"], "val": ["a", "b"]}], "both train and val"),
    ([{"train": [], "val": ["a"]}, {"train": [], "val": ["a"]}], "two folds"),
    ([{"train": [], "val": ["a"]}], "cover"),
])
def test_check_splits_rejects(splits, message):
    with pytest.raises(FemurSegError, match=message):
        check_splits(splits, ["a", "b"])


# ----------------------------------------------------------------------------------------------
# Early stopping: (min_delta, patience, min_epochs), metric per epoch -> epoch after which it stops


def _stop_epoch(params, sequence):
    es = EarlyStopping(*params)
    for epoch, m in enumerate(sequence):
        if es.update(m):
            return epoch, es.best_epoch
    return None, es.best_epoch


@pytest.mark.parametrize("params,sequence,expected", [
    # steady gains of 0.01: never stops
    ((1e-4, 3, 5), [0.01 * i for i in range(12)], (None, 11)),
    # flat from the start: runs the minimum of 5 epochs, then stops (4 - 0 >= 3)
    ((1e-4, 3, 5), [0.5] * 12, (4, 0)),
    # improvement at epoch 2, then flat: stops 3 epochs later
    ((1e-4, 3, 5), [0.1, 0.2, 0.3] + [0.3] * 9, (5, 2)),
    # patience would be exhausted at epoch 1, but the first 5 epochs always run
    ((1e-4, 1, 5), [0.5] + [0.4] * 11, (4, 0)),
    # a gain of exactly min_delta does not count ...
    ((0.25, 3, 1), [0.0, 0.25, 0.25, 0.25, 0.25], (3, 0)),
    # ... gains smaller than min_delta add up: +0.3 over the best epoch at epoch 3 counts
    ((0.25, 3, 1), [0.0, 0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3], (6, 3)),
    # a later best resets the count
    ((1e-4, 2, 1), [0.5, 0.4, 0.6, 0.5, 0.5, 0.5], (4, 2)),
    # the paper: 1e-4, 10 epochs, first 30 always run
    ((1e-4, 10, 30), [0.9] * 40, (29, 0)),
    ((1e-4, 10, 30), [0.5] * 25 + [0.6] + [0.6] * 20, (35, 25)),
])
def test_early_stopping_decisions(params, sequence, expected):
    assert _stop_epoch(params, sequence) == expected


def test_early_stopping_state_round_trip():
    a = EarlyStopping(1e-4, 3, 1)
    for m in (0.1, 0.3, 0.2):
        a.update(m)
    b = EarlyStopping(1e-4, 3, 1)
    b.load_state_dict(a.state_dict())
    assert [a.update(0.2), a.update(0.2)] == [b.update(0.2), b.update(0.2)] == [False, True]
    assert b.best == 0.3 and b.best_epoch == 1


# ----------------------------------------------------------------------------------------------
# Threshold selection and the pooled curve


def test_pr_optimal_threshold_on_known_curve():
    # scores 7/8 .. 2/8 with labels 1 1 0 1 0 0; (precision, recall) per threshold:
    # 7/8 (1, 1/3)  6/8 (1, 2/3)  5/8 (2/3, 2/3)  4/8 (3/4, 1)  3/8 (3/5, 1)  2/8 (1/2, 1)
    # squared distances to (1, 1): 4/9, 1/9, 2/9, 1/16, 4/25, 1/4 -> threshold 1/2
    scores = np.array([7, 6, 5, 4, 3, 2]) / 8.0
    labels = np.array([1, 1, 0, 1, 0, 0], bool)
    curve = PooledCurve()
    curve.add(quantise(scores), labels)
    assert curve.pr_optimal() == (0.5, 0.75, 1.0)
    assert metrics.pr_optimal_threshold(scores, labels) == (0.5, 0.75, 1.0)
    # AP = 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4; AUC: 8 of the 9 positive/negative pairs are ordered
    assert curve.average_precision() == pytest.approx(11 / 12)
    assert curve.roc_auc() == pytest.approx(8 / 9)


def test_pr_optimal_ties_take_the_highest_threshold():
    # 3/4: (1, 1/2); 1/2: (1/2, 1) -> both at squared distance 1/4
    curve = PooledCurve()
    curve.add(quantise(np.array([0.75, 0.5, 0.5, 0.5])), np.array([1, 1, 0, 0], bool))
    assert curve.pr_optimal() == (0.75, 1.0, 0.5)


def test_pooled_curve_equals_core_metrics_on_quantised_scores():
    rng = np.random.default_rng(5)
    qs, refs = [], []
    curve = PooledCurve()
    for n in (500, 700):  # two subjects, pooled
        ref = rng.random(n) < 0.2
        prob = np.clip(ref * 0.4 + rng.random(n) * 0.6, 0, 1)
        q = quantise(prob)
        curve.add(q, ref)
        qs.append(q / LEVELS)
        refs.append(ref)
    assert curve.pr_optimal() == pytest.approx(metrics.pr_optimal_threshold(qs, refs), abs=1e-12)
    assert curve.roc_auc() == pytest.approx(metrics.roc_auc(qs, refs), abs=1e-12)
    assert curve.average_precision() == pytest.approx(metrics.average_precision(qs, refs),
                                                      abs=1e-12)


def test_quantised_threshold_is_exact():
    p = np.array([0.0, 1e-9, 0.5 - 1e-9, 0.5, 0.5 + 1e-9, 0.99999, 1.0])
    q = quantise(p)
    assert q.dtype == np.uint16
    for b in (0, 1, LEVELS // 2, LEVELS - 1):
        assert np.array_equal(q >= b, p >= b / LEVELS)


def test_no_foreground_no_threshold():
    curve = PooledCurve()
    curve.add(quantise(np.array([0.2, 0.9])), np.array([False, False]))
    with pytest.raises(FemurSegError, match="no foreground"):
        curve.pr_optimal()


# ----------------------------------------------------------------------------------------------
# Plan


@pytest.mark.parametrize("spacing_kji,levels,expected", [
    ((5.2, 0.911, 0.911), 4, [[1, 2, 2], [1, 2, 2], [2, 2, 2]]),
    ((5.2, 0.911, 0.911), 5, [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]]),
    ((1.0, 1.0, 1.0), 3, [[2, 2, 2], [2, 2, 2]]),
    ((1.5, 0.234, 0.234), 4, [[1, 2, 2], [1, 2, 2], [2, 2, 2]]),  # the paper's data
    ((2.0, 1.0, 1.0), 3, [[2, 2, 2], [2, 2, 2]]),  # exactly twice as thick: pooled
])
def test_plan_pooling(spacing_kji, levels, expected):
    assert plan_pooling(spacing_kji, levels) == expected


def test_plan_patch_known_answer_and_properties():
    assert plan_patch((10, 20, 20), (1.0, 1.0, 1.0), (1, 1, 1), 1000) == [10, 10, 10]
    patch = plan_patch((39, 384, 384), (5.2, 0.911, 0.911), (2, 8, 8), 16 * 160 * 160)
    assert np.prod(patch) <= 16 * 160 * 160
    assert [p % d for p, d in zip(patch, (2, 8, 8))] == [0, 0, 0]
    extents = [p * s for p, s in zip(patch, (5.2, 0.911, 0.911))]
    assert max(extents) / min(extents) < 1.2  # about as long in mm on every axis
    # a small image is not exceeded
    assert plan_patch((8, 40, 40), (5.0, 1.0, 1.0), (1, 4, 4), 10 ** 6) == [8, 40, 40]


PLAN = {"orientation": "LIP", "spacing": [0.9, 0.9, 5.2], "median_shape": [40, 384, 384],
        "patch_size": [20, 128, 128], "pooling": [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]]}


def test_apply_plan_fills_only_nulls():
    cfg = load_config("paper_3d_f16l3")
    filled = apply_plan({**cfg, "patch_size": None,
                         "architecture": {**cfg["architecture"], "pooling": None}}, PLAN)
    assert filled["input"]["spacing"] == [0.9, 0.9, 5.2]      # was null: the paper keeps its own
    assert filled["architecture"]["pooling"] == [[1, 2, 2], [1, 2, 2]]
    assert filled["patch_size"] == [20, 128, 128]
    kept = apply_plan({**cfg, "input": {**cfg["input"], "spacing": [1, 1, 1]}}, PLAN)
    assert kept["input"]["spacing"] == [1, 1, 1] and kept["patch_size"] == [16, 160, 160]
    assert kept["plan_used"] == {}


def test_apply_plan_2d_input_covers_a_slice_with_nine_tiles():
    cfg = load_config("paper_2d_f64l4")
    filled = apply_plan({**cfg, "patch_size": None}, PLAN)
    net = build_network(filled["architecture"])
    assert net.output_size(filled["patch_size"]) >= 128  # 3 tiles x 128 >= 384
    assert filled["patch_size"] == net.valid_input_size(128) == 220  # the smallest such input


def test_config_without_patch_needs_plan(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"architecture": {"type": "UNet3D", "in_channels": 1,
                                              "num_classes": 2, "features": 4, "levels": 2}}))
    with pytest.raises(FemurSegError, match="has no patch_size .*--plan"):
        load_config(str(p))


# ----------------------------------------------------------------------------------------------
# The paper's configurations


PAPER = {"paper_3d_f32l4": ("UNet3D", 32, 4), "paper_3d_f32l3": ("UNet3D", 32, 3),
         "paper_3d_f16l4": ("UNet3D", 16, 4), "paper_3d_f16l3": ("UNet3D", 16, 3),
         "paper_2d_f64l4": ("UNet2D", 64, 4), "paper_2d_f64l3": ("UNet2D", 64, 3)}


def test_every_table2_row_has_a_config():
    assert set(PAPER) <= {p.stem for p in CONFIG_DIR.glob("*.json")}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_settings(name):
    cfg = load_config(name)
    kind, features, levels = PAPER[name]
    arch = cfg["architecture"]
    assert (arch["type"], arch["features"], arch["levels"]) == (kind, features, levels)
    assert cfg["paper_row"] == f"{kind[-2:]} F{features}L{levels}"
    assert arch["norm"] == "none" and arch["bias_init"] == 0.1
    assert cfg["loss"] == "weighted_ce" and cfg["batch_size"] == 1
    assert cfg["optimizer"] == {"name": "adam", "lr": 5e-5, "weight_decay": 0.0}
    assert cfg["augment"] == {"flip_lr": True, "intensity": False, "synthetic_contrast": False}
    assert (cfg["min_delta"], cfg["patience"], cfg["min_epochs"], cfg["folds"]) == (1e-4, 10, 30, 4)
    assert "Differences from the paper" in cfg["description"]
    net = build_network(arch)
    if kind == "UNet3D":
        assert [p % d for p, d in zip(cfg["patch_size"], divisor_of(arch["pooling"]))] == [0, 0, 0]
    else:
        assert arch["in_channels"] == 3
        assert net.output_size(cfg["patch_size"]) * 3 >= 384  # nine tiles cover a slice


@pytest.mark.parametrize("schedule, lrs", [
    (None, [1e-3] * 5),                                                    # constant (the paper)
    ({"constant_epochs": 2, "decay_epochs": 0}, [1e-3] * 5),
    # cosine over D=3 epochs after C=2: lr * (1 + cos(pi k / 4)) / 2 for k = 1, 2, 3, then held
    ({"constant_epochs": 2, "decay_epochs": 3},
     [1e-3, 1e-3, 1e-3 * (1 + math.sqrt(0.5)) / 2, 0.5e-3, 1e-3 * (1 - math.sqrt(0.5)) / 2,
      1e-3 * (1 - math.sqrt(0.5)) / 2]),
    ({"constant_epochs": 0, "decay_epochs": 1}, [0.5e-3, 0.5e-3]),
])
def test_lr_schedule_known_values(schedule, lrs):
    from FemurSegTraining.config import lr_at_epoch

    cfg = {"optimizer": {"lr": 1e-3}, "lr_schedule": schedule}
    assert [lr_at_epoch(cfg, e) for e in range(len(lrs))] == pytest.approx(lrs, rel=1e-12)


@pytest.mark.parametrize("schedule", [
    {"constant_epochs": 2}, {"constant_epochs": -1, "decay_epochs": 2},
    {"constant_epochs": 2.5, "decay_epochs": 2}, [2, 2], {"constant_epochs": True, "decay_epochs": 1},
])
def test_lr_schedule_validated(tmp_path, schedule):
    raw = json.loads((CONFIG_DIR / "default_3d_f8l4_half.json").read_text(encoding="utf-8"))
    raw["lr_schedule"] = schedule
    p = tmp_path / "c.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(FemurSegError, match="lr_schedule must be null, "):
        load_config(str(p))



_SUBJECTS = [  # tiny literal per-subject rows: two folds, three cases
    {"subject": "b", "fold": 1.0, "dsc": 0.8, "dsc_labelled_slices": 0.85, "precision": 0.9, "recall": 0.7, "hd95_mm": 5.2,
     "assd_mm": 1.0, "volume_pred_ml": 200.4, "volume_ref_ml": 210.6},
    {"subject": "a", "fold": 0.0, "dsc": 0.9, "dsc_labelled_slices": 0.9, "precision": 0.8, "recall": 1.0, "hd95_mm": 3.0,
     "assd_mm": 0.5, "volume_pred_ml": 100.0, "volume_ref_ml": 90.0},
    {"subject": "c", "fold": 1.0, "dsc": 0.6, "precision": 0.7, "recall": 0.5, "hd95_mm": float("nan"),
     "assd_mm": 2.0, "volume_pred_ml": 50.0, "volume_ref_ml": 60.0},
]


def test_fold_table_known_answer():
    from FemurSegTraining.report import fold_table

    lines = fold_table(_SUBJECTS).splitlines()
    assert lines[0] == ("| Fold | Validation cases | DSC | DSC (labelled slices) | Precision | "
                        "Recall | HD95 mm | ASSD mm |")
    # one case: the sample sd of one value is undefined (n/a), not 0
    assert lines[2] == ("| 0 | a | 0.900 ± n/a | 0.900 ± n/a | 0.800 ± n/a | 1.000 ± n/a "
                        "| 3.0 ± n/a | 0.50 ± n/a |")
    # fold 1: DSC 0.8, 0.6 -> 0.7 ± 0.141 (sample sd); HD95 and the labelled-slice DSC ignore
    # the missing values (case c has no labelled-slice DSC)
    assert lines[3] == ("| 1 | b, c | 0.700 ± 0.141 | 0.850 ± n/a | 0.800 ± 0.141 | "
                        "0.600 ± 0.141 | 5.2 ± n/a | 1.50 ± 0.71 |")
    assert lines[4].startswith("| all | 3 | 0.767 ± 0.153 |")


def test_case_table_known_answer():
    from FemurSegTraining.report import case_table

    lines = case_table(_SUBJECTS).splitlines()
    assert [ln.split(" | ")[0] for ln in lines[2:]] == ["| a", "| b", "| c"]  # sorted by case
    assert lines[3] == "| b | 1 | 0.800 | 0.850 | 0.900 | 0.700 | 5.2 | 1.00 | 200 / 211 |"
    assert lines[4] == "| c | 1 | 0.600 | n/a | 0.700 | 0.500 | n/a | 2.00 | 50 / 60 |"


def test_comparison_tables_side_by_side():
    from FemurSegTraining.report import comparison_tables

    other = [dict(r, dsc=r["dsc"] - 0.1) for r in _SUBJECTS[:2]]  # case c missing
    text = comparison_tables([("3D", _SUBJECTS), ("2D + PP", other)])
    assert "| Fold | 3D | 2D + PP |" in text
    assert "| 1 | 0.700 ± 0.141 | 0.700 ± n/a |" in text  # one case: no sd
    assert "| all | 0.767 ± 0.153 | 0.750 ± 0.071 |" in text
    assert "| a | 0 | 0.900 | 0.800 |" in text and "| c | 1 | 0.600 | n/a |" in text


@pytest.mark.parametrize("readme, expected", [
    ("# Title\n\nFirst paragraph\nof two lines.\n\nSecond.", "First paragraph of two lines."),
    ("# T\n\n17 scans. Layout follows nnU-Net:\n\n    imagesTr/", "17 scans."),  # block intro dropped
    ("Only: a colon", "Only: a colon"),
])
def test_card_data_description_from_readme(tmp_path, readme, expected):
    from FemurSegTraining.cards import data_description

    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    assert data_description(str(tmp_path)) == expected
    assert data_description(str(tmp_path / "missing")) is None


# ----------------------------------------------------------------------------------------------
# A config is validated completely when it is read


@pytest.mark.parametrize("changes, message", [
    ({"postprocess": "biggest"}, r"inference\.postprocess: must be one of largest_per_femur, "
                                 r"largest, none, not 'biggest'"),
    ({"inference": {"overlap": 1.5}}, r"inference\.overlap: must be a number in \[0, 0\.95\], "
                                      r"not 1\.5"),
    ({"inference": {"tta_flip_axes": [[3]]}}, r"inference\.tta_flip_axes: axes must be 0, 1 or "
                                              r"2"),
    ({"input": {"orientation": "LIP", "spacing": None,
                "normalisation": {"method": "percentile", "percentiles": [99.5, 0.5]}}},
     r"input\.normalisation\.percentiles: must be two numbers 0 <= low < high <= 100, not "
     r"\[99\.5, 0\.5\]"),
    ({"architecture": {"type": "UNet3D", "in_channels": 1, "num_classes": 2, "levels": 2}},
     r"architecture: missing keys features"),
])
def test_config_is_validated_when_read(tmp_path, changes, message):
    """Before, these were found when the card was built after the first epoch (or never)."""
    from training_helpers import TINY_3D, write_config

    path = write_config(tmp_path / "bad.json", TINY_3D, **changes)
    with pytest.raises(FemurSegError, match=rf"^config bad\.json: {message}"):
        load_config(str(path))


def test_every_named_config_passes_the_card_checks():
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
    assert "default_25d_f16l5_long" in names
    for name in names:
        load_config(name)
