"""Stratified, seeded k-fold splits, written to and reused from ``splits.json``.

Cases are sorted by a stratum value (e.g. femur volume) and dealt out in blocks of k, each block
shuffled with the seed, so every fold gets cases from the whole range of the stratum. Folds are
disjoint, cover every case, and their sizes differ by at most one (86 cases in 4 folds give the
paper's 21/21/22/22).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from FemurSegLib.errors import FemurSegError
from FemurSegLib.files import read_json, write_json


def stratified_folds(names: Sequence[str], strata: Sequence[float], k: int = 4,
                     seed: int = 0) -> List[List[str]]:
    """Validation cases of each of ``k`` folds."""
    if len(names) != len(strata):
        raise ValueError("names and strata differ in length")
    if len(set(names)) != len(names):
        raise ValueError("case names are not unique")
    if not 2 <= k <= len(names):
        raise ValueError(f"cannot make {k} folds of {len(names)} cases")
    rng = np.random.default_rng(seed)
    order = [names[i] for i in np.argsort(np.asarray(strata, dtype=float), kind="stable")]
    folds: List[List[str]] = [[] for _ in range(k)]
    # deal blocks of k to the folds, starting each block at the currently smallest folds
    for start in range(0, len(order), k):
        block = order[start:start + k]
        targets = sorted(range(k), key=lambda f: (len(folds[f]), rng.random()))[:len(block)]
        rng.shuffle(block)
        for f, name in zip(targets, block):
            folds[f].append(name)
    return [sorted(f) for f in folds]


def make_splits(names: Sequence[str], strata: Sequence[float], k: int = 4, seed: int = 0
                ) -> List[Dict[str, List[str]]]:
    """nnU-Net style list of ``{"train": [...], "val": [...]}``, one per fold."""
    vals = stratified_folds(names, strata, k, seed)
    return [{"train": sorted(n for n in names if n not in set(v)), "val": v} for v in vals]


def load_or_make_splits(path: Path, names: Sequence[str], strata: Sequence[float], k: int = 4,
                        seed: int = 0) -> List[Dict[str, List[str]]]:
    """Reuse ``path`` if it exists (and matches the cases); else write a new split there."""
    path = Path(path)
    if path.is_file():
        splits = read_json(path, "splits", kind=list)
        try:
            listed = sorted({n for s in splits for n in s["val"]})
        except (TypeError, KeyError):
            raise FemurSegError(f"splits {path} is not a list of {{\"train\": [...], "
                                f"\"val\": [...]}} folds") from None
        if listed != sorted(names):
            raise FemurSegError(f"splits {path} list other cases than the dataset; delete it "
                                "to re-split")
        return splits
    splits = make_splits(names, strata, k, seed)
    write_json(splits, path)
    return splits


def check_splits(splits: List[Dict[str, List[str]]], names: Optional[Sequence[str]] = None) -> None:
    """Raise ValueError unless validation folds are disjoint and cover all cases."""
    seen: List[str] = []
    for s in splits:
        if set(s["train"]) & set(s["val"]):
            raise FemurSegError("splits: a case is in both train and val of one fold")
        seen += s["val"]
    if len(seen) != len(set(seen)):
        raise FemurSegError("splits: a case is in the validation set of two folds")
    if names is not None and sorted(seen) != sorted(names):
        raise FemurSegError("splits: the validation folds do not cover every case")
