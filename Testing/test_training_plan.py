"""FemurSegTraining.plan: pooling, patch size and the plan filling a config's nulls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib.errors import FemurSegError
from FemurSegLib.networks import build_network
from FemurSegTraining.config import load_config
from FemurSegTraining.plan import apply_plan, plan_patch, plan_pooling


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
