"""Losses: the paper's class-weighted cross-entropy (eq. 1) and a Dice + CE extra.

Eq. (1) of Deniz et al. weights each voxel's cross-entropy by the frequency of the *other*
class, computed per training sample: femur voxels get ``w_f = N_b / N`` and background voxels
``w_b = N_p / N`` (N_p femur voxels, N_b background voxels, N = N_p + N_b), so that the rare
femur class counts as much as the background. The loss is the weighted sum divided by N (the
mean over voxels of the weighted voxel losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_weights(target: torch.Tensor) -> torch.Tensor:
    """Per-sample weights ``[B, 2]``: background N_p/N, femur N_b/N (paper eq. 1)."""
    b = target.shape[0]
    flat = target.reshape(b, -1).float()
    n = flat.shape[1]
    n_p = flat.sum(dim=1)
    n_b = n - n_p
    return torch.stack([n_p / n, n_b / n], dim=1)


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Paper eq. (1). ``logits`` ``[B, 2, ...]``, ``target`` ``[B, ...]`` in {0, 1}."""
    ce = F.cross_entropy(logits, target.long(), reduction="none")  # [B, ...]
    w = class_weights(target)  # [B, 2]
    shape = (target.shape[0],) + (1,) * (target.ndim - 1)
    voxel_w = torch.where(target.bool(), w[:, 1].reshape(shape), w[:, 0].reshape(shape))
    return (voxel_w * ce).mean()


IGNORE_INDEX = 255  # voxels no loss sees (FemurSegTraining.data.IGNORE)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch, averaged over the foreground classes (1..K-1).

    Voxels whose target is :data:`IGNORE_INDEX` count for no class. With two classes this is
    the foreground Dice.
    """
    p = torch.softmax(logits, dim=1)
    valid = (target != IGNORE_INDEX)
    t = torch.where(valid, target.long(), torch.zeros_like(target, dtype=torch.long))
    v = valid.unsqueeze(1).to(p.dtype)
    onehot = F.one_hot(t, p.shape[1]).movedim(-1, 1).to(p.dtype) * v
    p = p * v
    dims = [0] + list(range(2, p.ndim))
    inter = (p * onehot).sum(dim=dims)[1:]
    denom = (p.sum(dim=dims) + onehot.sum(dim=dims))[1:]
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice, both blind to :data:`IGNORE_INDEX` voxels."""
    return (F.cross_entropy(logits, target.long(), ignore_index=IGNORE_INDEX)
            + soft_dice_loss(logits, target))


LOSSES = {"weighted_ce": weighted_cross_entropy, "dice_ce": dice_ce_loss}


def downsample_target(target: torch.Tensor, size) -> torch.Tensor:
    """A class map ``[B, H, W]`` at the coarser ``size`` ``(h, w)``: every ``H // h``-th voxel
    (nearest neighbour, as nnU-Net; ignored voxels stay ignored)."""
    fh, fw = target.shape[-2] // size[0], target.shape[-1] // size[1]
    if fh * size[0] != target.shape[-2] or fw * size[1] != target.shape[-1]:
        raise ValueError(f"target size {tuple(target.shape[-2:])} is not a multiple of "
                         f"{tuple(size)}")
    return target[..., ::fh, ::fw]


def deep_supervised(loss_fn):
    """``loss_fn`` that also takes the tuple of a deeply supervised network (the logits, then
    coarser ones): the sum of the losses against the down-sampled targets, weighted 1, 1/2,
    1/4 .. and normalised to sum to 1 (nnU-Net's weighting). A plain output passes through."""
    def loss(outputs, target):
        if not isinstance(outputs, (tuple, list)):
            return loss_fn(outputs, target)
        weights = [0.5 ** i for i in range(len(outputs))]
        total = sum(weights)
        return sum(w / total * loss_fn(o, downsample_target(target, o.shape[-2:]) if i else target)
                   for i, (w, o) in enumerate(zip(weights, outputs)))
    return loss


def get_loss(name: str):
    """The config's loss, taking deeply supervised outputs too (:func:`deep_supervised`)."""
    try:
        return deep_supervised(LOSSES[name])
    except KeyError:
        raise ValueError(f"unknown loss {name!r} ({', '.join(LOSSES)})") from None
