"""ROC and precision-recall curves of probabilities pooled over subjects (a leaf module).

The pooled curve is computed from probabilities quantised to multiples of 1/65536 (exact for
that quantisation, and a 65536-bin histogram instead of sorting every voxel of every subject);
a voxel is foreground at threshold ``b / 65536`` exactly when its probability is ``>= b / 65536``.
AUC, AP and the point nearest to (1, 1) are :mod:`FemurSegLib.metrics`' own helpers applied to
the histogram's cumulative counts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from FemurSegLib import files, metrics
from FemurSegLib.errors import FemurSegError

LEVELS = 1 << 16  # probability quantisation steps


def quantise(prob: np.ndarray) -> np.ndarray:
    """``floor(p * 65536)`` clipped to 0..65535 as uint16, so that ``q >= b <=> p >= b/65536``."""
    p = np.clip(np.asarray(prob, dtype=np.float64), 0.0, 1.0)
    return np.minimum(np.floor(p * LEVELS), LEVELS - 1).astype(np.uint16)


class PooledCurve:
    """ROC and precision-recall curves of quantised probabilities pooled over subjects."""

    def __init__(self, pos: Optional[np.ndarray] = None, neg: Optional[np.ndarray] = None):
        self.pos = np.zeros(LEVELS, np.int64) if pos is None else np.asarray(pos, np.int64)
        self.neg = np.zeros(LEVELS, np.int64) if neg is None else np.asarray(neg, np.int64)

    def add(self, q: np.ndarray, ref: np.ndarray) -> None:
        """Add one subject's quantised probabilities ``q`` and boolean reference ``ref``."""
        ref = np.asarray(ref, dtype=bool)
        self.pos += np.bincount(q[ref].ravel(), minlength=LEVELS)
        self.neg += np.bincount(q[~ref].ravel(), minlength=LEVELS)

    def counts(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Occupied levels in decreasing order and the TP / FP counts of ``q >= level``
        (the same points as :func:`FemurSegLib.metrics.precision_recall_curve` of ``q/65536``)."""
        pos, neg = self.pos[::-1], self.neg[::-1]
        keep = (pos + neg) > 0
        levels = np.arange(LEVELS - 1, -1, -1)[keep]
        return levels, np.cumsum(pos)[keep], np.cumsum(neg)[keep]

    def pr_optimal(self) -> Tuple[float, float, float]:
        """``(threshold, precision, recall)`` nearest to (1, 1); the highest threshold on ties."""
        levels, tps, fps = self.counts()
        if len(tps) == 0 or tps[-1] == 0:
            raise FemurSegError("cannot choose a threshold: the references have no foreground")
        prec, rec = tps / (tps + fps), metrics.rates(tps)
        best = metrics.nearest_to_one_one(prec, rec)
        return float(levels[best]) / LEVELS, float(prec[best]), float(rec[best])

    def roc_auc(self) -> float:
        _, tps, fps = self.counts()
        return metrics.auc_from_counts(tps, fps) if len(tps) else math.nan

    def average_precision(self) -> float:
        _, tps, fps = self.counts()
        if not len(tps) or not tps[-1]:
            return math.nan
        return metrics.ap_from_curve(tps / (tps + fps), metrics.rates(tps))

    def at(self, threshold: float) -> Tuple[float, float]:
        """Pooled ``(precision, recall)`` of ``p >= threshold``."""
        b = int(math.ceil(threshold * LEVELS))
        tp, fp = int(self.pos[b:].sum()), int(self.neg[b:].sum())
        return (tp / (tp + fp) if tp + fp else math.nan), tp / max(int(self.pos.sum()), 1)

    def plot_entry(self, label: str, pr_threshold: float) -> dict:
        _, tps, fps = self.counts()
        p_opt, r_opt = self.at(pr_threshold)
        p_half, r_half = self.at(0.5)
        return {"label": label, "fpr": np.r_[0, fps] / max(fps[-1], 1),
                "tpr": np.r_[0, tps] / max(tps[-1], 1), "precision": tps / (tps + fps),
                "recall": tps / max(tps[-1], 1), "auc": self.roc_auc(),
                "ap": self.average_precision(),
                "points": [(f"PR-opt {pr_threshold:.2f}", p_opt, r_opt),
                           ("0.5", p_half, r_half)]}

    def save(self, path: Path, overwrite: bool = False) -> None:
        with files.atomic_path(path, overwrite) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, pos=self.pos, neg=self.neg)

    @classmethod
    def load(cls, path: Path) -> "PooledCurve":
        with np.load(path) as z:
            return cls(z["pos"], z["neg"])
