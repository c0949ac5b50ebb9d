"""Where a segmentation most needs a look: the slices where the model is least certain.

:func:`slices_to_check` ranks the slices of a probability map (one slice index along one array
axis, usually the coronal one) by the share of the slice's candidate voxels (probability above
``low`` in any pass) that are uncertain: probability strictly between ``low`` and ``high`` (0.2
and 0.8 by default), or, when a second (left-right flipped) pass is given, on different sides of the
threshold in the two passes. The QC report (``femurseg segment --report``) and the review page
(``femurseg review``) list the same slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

__all__ = ["SliceToCheck", "slices_to_check", "UNCERTAIN_RANGE", "MAX_SLICES_TO_CHECK"]

#: Probabilities strictly between these two count as uncertain.
UNCERTAIN_RANGE = (0.2, 0.8)
#: The list is cut after this many slices.
MAX_SLICES_TO_CHECK = 10


@dataclass(frozen=True)
class SliceToCheck:
    index: int               # slice index along the ranking axis
    score: float             # the larger of the two shares
    uncertain_share: float   # uncertain voxels / candidate voxels
    disagree_share: float    # voxels where the two passes disagree / candidate voxels (0 without)
    candidates: int          # voxels above ``low`` in any pass

    def to_dict(self) -> dict:
        return {"slice": self.index, "score": round(self.score, 4),
                "uncertain_share": round(self.uncertain_share, 4),
                "disagree_share": round(self.disagree_share, 4),
                "candidate_voxels": self.candidates}


def slices_to_check(probability: np.ndarray, axis: int, *, flipped: Optional[np.ndarray] = None,
                    plain: Optional[np.ndarray] = None, threshold: float = 0.5, low: float = UNCERTAIN_RANGE[0],
                    high: float = UNCERTAIN_RANGE[1], limit: int = MAX_SLICES_TO_CHECK,
                    min_share: float = 0.0) -> List[SliceToCheck]:
    """Slices along array ``axis`` of ``probability`` (values in 0..1), least certain first.

    ``flipped``: the probability of the flipped test-time pass on the same grid (optional);
    ``plain``: the unflipped pass, when ``probability`` is the mean of both (default:
    ``probability`` itself is the unflipped pass). A voxel disagrees where ``plain`` and
    ``flipped`` lie on different sides of ``threshold``.
    Slices without candidate voxels, or whose score is not above ``min_share``, are left out;
    equal scores keep slice order. At most ``limit`` slices are returned.
    """
    p = np.asarray(probability, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"probability must be a 3D array, not {p.ndim}D")
    if not -3 <= axis < 3:
        raise ValueError(f"axis must be 0, 1 or 2, not {axis}")
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, not low={low}, high={high}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    axis = axis % 3
    others = tuple(a for a in range(3) if a != axis)
    candidate = p > low
    uncertain = (p > low) & (p < high)
    disagree = np.zeros_like(candidate)
    if flipped is not None:
        q = np.asarray(flipped, dtype=np.float32)
        if q.shape != p.shape:
            raise ValueError(f"flipped pass shape {q.shape} differs from {p.shape}")
        r = p if plain is None else np.asarray(plain, dtype=np.float32)
        if r.shape != p.shape:
            raise ValueError(f"plain pass shape {r.shape} differs from {p.shape}")
        for other in (q, r):
            candidate |= other > low
            uncertain |= (other > low) & (other < high)
        disagree = (r >= threshold) != (q >= threshold)
    n = candidate.sum(axis=others)
    n_uncertain = (uncertain & candidate).sum(axis=others)
    n_disagree = (disagree & candidate).sum(axis=others)
    ranked = []
    for index in np.flatnonzero(n):
        u = float(n_uncertain[index]) / float(n[index])
        d = float(n_disagree[index]) / float(n[index])
        score = max(u, d)
        if score > min_share:
            ranked.append(SliceToCheck(int(index), score, u, d, int(n[index])))
    ranked.sort(key=lambda s: (-s.score, s.index))
    return ranked[:limit]
