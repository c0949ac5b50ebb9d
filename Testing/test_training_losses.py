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


# ----------------------------------------------------------------------------------------------
# Deep supervision


def test_downsample_target_takes_every_kth_voxel_and_keeps_ignore():
    from FemurSegTraining.losses import IGNORE_INDEX, downsample_target

    t = torch.arange(16).reshape(1, 4, 4)
    t[0, 2, 2] = IGNORE_INDEX
    assert downsample_target(t, (2, 2)).tolist() == [[[0, 2], [8, IGNORE_INDEX]]]
    with pytest.raises(ValueError, match="not a multiple"):
        downsample_target(t, (3, 3))


def test_deep_supervised_loss_weights_the_levels_half_each():
    from FemurSegTraining.losses import deep_supervised

    seen = []

    def fake(logits, target):  # loss = the mean logit; records the target sizes it sees
        seen.append(tuple(target.shape))
        return logits.mean()

    loss = deep_supervised(fake)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    plain = torch.full((1, 2, 8, 8), 3.0)
    assert loss(plain, target).item() == 3.0            # a plain output passes through
    outs = (plain, torch.full((1, 2, 4, 4), 6.0), torch.full((1, 2, 2, 2), 12.0))
    # weights 1, 1/2, 1/4 normalised by 7/4: (3 + 3 + 3) * 4/7
    assert loss(outs, target).item() == pytest.approx(9 * 4 / 7)
    assert seen == [(1, 8, 8), (1, 8, 8), (1, 4, 4), (1, 2, 2)]


def test_get_loss_accepts_deeply_supervised_outputs():
    from FemurSegTraining.losses import dice_ce_loss, get_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    fn = get_loss("dice_ce")
    assert fn(logits, target).item() == pytest.approx(dice_ce_loss(logits, target).item())
    assert torch.isfinite(fn((logits, torch.randn(2, 3, 4, 4)), target))
