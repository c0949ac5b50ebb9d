"""FemurSegTraining.config: the paper's configurations, the learning-rate schedule, and a config
validated completely when it is read."""

from __future__ import annotations

import json
import math

import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib.errors import FemurSegError
from FemurSegLib.networks import build_network
from FemurSegTraining.config import CONFIG_DIR, load_config
from FemurSegTraining.plan import divisor_of


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
