"""FemurSegTraining.losses: the paper's weighted cross-entropy, eq. (1) by hand."""

from __future__ import annotations

import math

import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegTraining.losses import class_weights, weighted_cross_entropy


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
