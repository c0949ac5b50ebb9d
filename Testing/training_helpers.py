"""Helpers of the training tests: tiny nnU-Net-layout phantom datasets and tiny configs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

#: A 3D U-Net small enough to train for an epoch in well under a second.
TINY_3D = {
    "description": "tiny test config (not a model)",
    "architecture": {"type": "UNet3D", "in_channels": 1, "num_classes": 2, "features": 4,
                     "levels": 2, "pooling": [[1, 2, 2]], "norm": "none"},
    "input": {"orientation": "LIP", "spacing": None},
    "patch_size": [8, 32, 32],
    "batch_size": 1,
    "loss": "weighted_ce",
    "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 0.0},
    "patches_per_epoch": 2,
    "max_epochs": 2,
    "min_epochs": 1,
    "patience": 10,
    "folds": 2,
    "seed": 0,
    "inference": {"patch_size": None, "overlap": 0.5, "tta_flip_axes": [[2]]},
}

#: The paper's 2D network shape (unpadded, 3 slices in), tiny.
TINY_2D = {
    **TINY_3D,
    "architecture": {"type": "UNet2D", "in_channels": 3, "num_classes": 2, "features": 4,
                     "levels": 2, "norm": "none"},
    "patch_size": 44,
}

#: The 2.5D recipe (adjacent slices in, whole slices out) with its augmentation, tiny.
TINY_25D = {
    **TINY_3D,
    "architecture": {"type": "UNet25D", "in_channels": 3, "num_classes": 2, "features": 4,
                     "levels": 2, "norm": "batch"},
    "patch_size": 16,
    "batch_size": 2,
    "loss": "dice_ce",
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4},
    "lr_schedule": {"poly_exponent": 0.9},
    "augment": {"flip_lr": True, "robust_intensity": True, "affine": True},
    "select": "last",
}

PHANTOM_SIZE = (32, 32, 8)
PHANTOM_SPACING = (11.0, 11.0, 26.0)
LABELS = {"background": 0, "femur": 1, "ilium": 2, "spine": 3, "sacrum": 4}


def write_config(path: Path, base: Optional[dict] = None, **changes) -> Path:
    cfg = copy.deepcopy(base if base is not None else TINY_3D)
    cfg.update(changes)
    path = Path(path)
    path.write_text(json.dumps(cfg))
    return path


def make_dataset(root: Path, n: int = 4, *, seeds: Optional[Sequence[int]] = None,
                 size=PHANTOM_SIZE, spacing=PHANTOM_SPACING) -> Path:
    """An nnU-Net raw dataset of ``n`` small phantoms: ``caseNN_0000.nii.gz`` + labels."""
    from FemurSegLib.phantom import make_phantom

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    seeds = list(seeds) if seeds is not None else list(range(n))
    for i, seed in enumerate(seeds):
        ph = make_phantom(seed, size=size, spacing=spacing)
        sitk.WriteImage(ph.image, str(root / "imagesTr" / f"case{i:02d}_0000.nii.gz"))
        sitk.WriteImage(ph.labels, str(root / "labelsTr" / f"case{i:02d}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "name": "phantoms", "channel_names": {"0": "T1"}, "labels": LABELS,
        "numTraining": len(seeds), "file_ending": ".nii.gz"}))
    return root


def blob_cases(n: int, shape=(8, 32, 32), seed: int = 0):
    """Tiny preprocessed cases (normalised volume, target) with a box of foreground each."""
    from FemurSegTraining.data import Preprocessed

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        target = np.zeros(shape, np.uint8)
        c = rng.integers([2, 8, 8], [6, 24, 24])
        target[c[0] - 1:c[0] + 2, c[1] - 4:c[1] + 4, c[2] - 4:c[2] + 4] = 1
        image = (0.3 + 0.5 * target + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        out.append(Preprocessed(f"c{i}", image, target))
    return out
