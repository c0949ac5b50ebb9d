"""FemurSegTraining.splits: stratified folds, reproducible and reused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require_torch

torch = require_torch()

from FemurSegLib.errors import FemurSegError
from FemurSegTraining.splits import check_splits, load_or_make_splits, make_splits, stratified_folds


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
