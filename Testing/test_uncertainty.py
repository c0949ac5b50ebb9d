"""The "slices to check" ranking (FemurSegLib.uncertainty) on literal arrays."""

from __future__ import annotations

import numpy as np
import pytest

from FemurSegLib.uncertainty import slices_to_check


def volume(*slices):
    """A [3, 2, 2] probability array from three 2 x 2 slices along axis 0."""
    return np.array(slices, dtype=np.float32)


CERTAIN = [[0.0, 0.0], [0.95, 1.0]]       # 2 candidates, 0 uncertain
HALF = [[0.5, 0.0], [0.9, 0.1]]           # 2 candidates (0.5, 0.9), 1 uncertain -> 0.5
ALL = [[0.3, 0.7], [0.21, 0.0]]           # 3 candidates, 3 uncertain -> 1.0
EMPTY = [[0.0, 0.1], [0.2, 0.05]]         # 0.2 is not above low: no candidate
EDGE = [[0.8, 0.2], [0.0, 0.0]]           # 0.8 is candidate, not uncertain; 0.2 neither -> 0.0

CASES = [
    # (slices, axis, kwargs, expected [(index, score)])
    ((CERTAIN, HALF, ALL), 0, {}, [(2, 1.0), (1, 0.5)]),
    ((ALL, HALF, ALL), 0, {}, [(0, 1.0), (2, 1.0), (1, 0.5)]),   # ties keep slice order
    ((EMPTY, EMPTY, EMPTY), 0, {}, []),
    ((EDGE, CERTAIN, EMPTY), 0, {}, []),                          # scores of 0 are left out
    ((CERTAIN, HALF, ALL), 0, {"limit": 1}, [(2, 1.0)]),
    ((CERTAIN, HALF, ALL), 0, {"min_share": 0.5}, [(2, 1.0)]),
    ((CERTAIN, HALF, ALL), 0, {"low": 0.4, "high": 0.6}, [(1, 0.5)]),  # ALL: 0.7 candidate only
]


@pytest.mark.parametrize("slices, axis, kwargs, expected", CASES)
def test_ranking(slices, axis, kwargs, expected):
    got = slices_to_check(volume(*slices), axis, **kwargs)
    assert [(s.index, round(s.score, 6)) for s in got] == expected


def test_ranking_along_another_axis():
    # along axis 2: column 0 of all slices holds 0.0 0.95 | 0.5 0.9 | 0.3 0.21 (5 candidates,
    # 3 uncertain), column 1 holds 0.0 1.0 | 0.0 0.1 | 0.7 0.0 (2 candidates, 1 uncertain)
    got = slices_to_check(volume(CERTAIN, HALF, ALL), 2)
    assert [(s.index, round(s.score, 6), s.candidates) for s in got] == [(0, 0.6, 5), (1, 0.5, 2)]


def test_flip_disagreement_counts():
    # both passes certain, but on opposite sides of the threshold on one voxel of slice 1
    p = volume(CERTAIN, CERTAIN, CERTAIN)
    q = p.copy()
    q[1, 1, 0] = 0.0          # the flipped pass says background where the first says 0.95
    got = slices_to_check(p, 0, flipped=q)
    assert [(s.index, s.disagree_share, s.uncertain_share, s.candidates) for s in got] == [
        (1, 0.5, 0.0, 2)]
    assert slices_to_check(p, 0) == []   # without the second pass nothing is uncertain


def test_to_dict():
    (s,) = slices_to_check(volume(EMPTY, HALF, EMPTY), 0)
    assert s.to_dict() == {"slice": 1, "score": 0.5, "uncertain_share": 0.5,
                           "disagree_share": 0.0, "candidate_voxels": 2}


@pytest.mark.parametrize("args, kwargs, message", [
    ((np.zeros((2, 2)), 0), {}, "probability must be a 3D array, not 2D"),
    ((np.zeros((2, 2, 2)), 3), {}, "axis must be 0, 1 or 2, not 3"),
    ((np.zeros((2, 2, 2)), 0), {"low": 0.8, "high": 0.2}, "need 0 <= low < high <= 1"),
    ((np.zeros((2, 2, 2)), 0), {"limit": 0}, "limit must be at least 1, not 0"),
    ((np.zeros((2, 2, 2)), 0), {"flipped": np.zeros((2, 2, 3))}, "flipped pass shape"),
])
def test_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        slices_to_check(*args, **kwargs)


def test_disagreement_of_the_plain_and_flipped_passes_of_a_mean():
    # the mean of two passes 0.9 and 0.45 is 0.675: above 0.6 like the plain pass, so the
    # mean and the flipped pass disagree too; with plain given, the passes themselves decide
    plain = np.full((3, 2, 2), 0.9, np.float32)
    flipped = plain.copy()
    flipped[1, 0, :] = 0.45
    mean = (plain + flipped) / 2
    (s,) = [c for c in slices_to_check(mean, 0, flipped=flipped, plain=plain, threshold=0.6)
            if c.index == 1]
    assert s.disagree_share == 0.5
    # a pass pair on the same side of the threshold does not disagree, whatever the mean
    assert all(c.disagree_share == 0.0 for c in slices_to_check(
        mean, 0, flipped=flipped, plain=plain, threshold=0.4))
    with pytest.raises(ValueError, match="plain pass shape"):
        slices_to_check(mean, 0, flipped=flipped, plain=plain[:2])
