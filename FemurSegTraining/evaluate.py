"""Cross-validated evaluation of a run, per subject on each subject's original image grid.

For every fold, ``best.pt`` predicts that fold's validation cases through the core inference
path (:class:`FemurSegLib.inference.Segmenter`: preprocessing, network, probabilities mapped back
onto the input grid). Per subject: DSC, precision, recall, specificity, HD95, ASSD
(:mod:`FemurSegLib.metrics`) at threshold 0.5 and at the PR-optimal threshold, each without and
with post-processing ("PP"), plus ROC AUC and average precision of the probabilities. The
PR-optimal threshold is the point of the precision-recall curve of all subjects' voxels pooled
that is nearest to (1, 1).

The pooled curve is computed from probabilities quantised to multiples of 1/65536 (exact for
that quantisation, and a 65536-bin histogram instead of sorting every voxel of every subject);
a voxel is foreground at threshold ``b / 65536`` exactly when its probability is ``>= b / 65536``.

Writes ``RUN_DIR/evaluation/``: ``per_subject.csv``, ``table.md``, ``table.csv``,
``roc_pr.png`` (Fig. 3), ``boxplots.png`` (Fig. 4), ``curves.npz`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from FemurSegLib import files, images, metrics, postprocess
from FemurSegLib.errors import FemurSegError

from .report import (BOX_METRICS, case_table, fold_table, plot_boxes, plot_curves,
                     table_row, write_tables)

log = logging.getLogger("femurseg.train")

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
        prec, rec = tps / (tps + fps), tps / tps[-1]
        best = int(np.argmin((1.0 - prec) ** 2 + (1.0 - rec) ** 2))
        return float(levels[best]) / LEVELS, float(prec[best]), float(rec[best])

    def roc_auc(self) -> float:
        _, tps, fps = self.counts()
        if not tps[-1] or not fps[-1]:
            return math.nan
        tpr, fpr = np.r_[0, tps] / tps[-1], np.r_[0, fps] / fps[-1]
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)

    def average_precision(self) -> float:
        _, tps, fps = self.counts()
        if not tps[-1]:
            return math.nan
        prec, rec = tps / (tps + fps), tps / tps[-1]
        return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))

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


# ----------------------------------------------------------------------------------------------


def variant_key(threshold_kind: str, pp: bool) -> str:
    """``"0.5"``, ``"0.5+PP"``, ``"pr"`` or ``"pr+PP"``."""
    return f"{threshold_kind}{'+PP' if pp else ''}"


VARIANTS = [("0.5", False), ("pr", False), ("0.5", True), ("pr", True)]
SUBJECT_COLUMNS = ["subject", "fold", "variant", "threshold", "postprocess", "dsc", "precision",
                   "recall", "specificity", "hd95_mm", "assd_mm", "volume_pred_ml",
                   "volume_ref_ml", "roc_auc", "average_precision"]


def apply_pp(mask: np.ndarray, image: sitk.Image, kind: str) -> np.ndarray:
    """Post-processing of a binary mask: "largest_per_femur" (the deployed rule), "largest"
    (the paper's largest connected component) or "none"."""
    if kind == "largest_per_femur":
        return postprocess.split_femurs(mask, image, split=False)[0] > 0
    if kind == "largest":
        return postprocess.largest_component(mask)
    if kind == "none":
        return mask
    raise FemurSegError(f"unknown postprocess {kind!r} (largest_per_femur, largest, none)")


def fold_segmenter(cfg: dict, fold_dir: Path, device: str = "cpu"):
    """A :class:`~FemurSegLib.inference.Segmenter` running ``fold_dir/best.pt`` with PyTorch,
    built from the same card an export would write."""
    from FemurSegLib.engines import TorchEngine
    from FemurSegLib.inference import Segmenter
    from FemurSegLib.modelfolder import Model
    from FemurSegLib.preprocessing import InputSpec

    from .release import card_for_config

    weights = Path(fold_dir) / "best.pt"
    if not weights.is_file():
        raise FemurSegError(f"{weights} not found: train fold {Path(fold_dir).name[5:]} first")
    card = card_for_config(cfg)
    model = Model(path=Path(fold_dir), card=card, folds=[],
                  input=InputSpec.from_dict(card["input"]))
    engine = TorchEngine(weights, card["architecture"], device)
    return Segmenter(model, [engine], tta=True, split=False)


def _finite_or_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clean(obj):
    """NaN / inf -> null, numpy scalars -> Python, for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return _finite_or_none(obj)


def _variant_stats(rows: Sequence[dict]) -> dict:
    from .report import mean_sd

    out = {}
    for key in SUBJECT_COLUMNS[5:]:
        m, s, n = mean_sd([r[key] for r in rows])
        out[key] = {"mean": m, "sd": s, "n": n}
    return out


def evaluate_run(run_dir, *, data_dir: Optional[str] = None, device: str = "cpu",
                 folds: Optional[Sequence[int]] = None, overwrite: bool = True,
                 progress: bool = True) -> dict:
    """Evaluate ``run_dir``'s folds (all by default); write ``run_dir/evaluation``; return the
    summary."""
    from .cv import read_run
    from .data import load_dataset

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if not run:
        raise FemurSegError(f"{run_dir} is not a run folder (no run.json)")
    cfg = run["config"]
    splits_path = run_dir / "splits.json"
    if not splits_path.is_file():
        raise FemurSegError(f"{splits_path} not found")
    splits = json.loads(splits_path.read_text(encoding="utf-8"))
    todo = list(range(len(splits))) if folds is None else [int(k) for k in folds]
    for k in todo:
        if not 0 <= k < len(splits):
            raise FemurSegError(f"fold {k} does not exist (the run has {len(splits)} folds)")
        if not (run_dir / f"fold_{k}" / "best.pt").is_file():
            raise FemurSegError(f"fold {k} has no best.pt in {run_dir / f'fold_{k}'} "
                                "(train it first, or pass --folds)")
    data_dir = data_dir or run.get("dataset", {}).get("path")
    names = [n for k in todo for n in splits[k]["val"]]
    dataset = load_dataset(data_dir, cfg.get("foreground"), cases=names)
    missing = sorted(set(names) - {c.name for c in dataset.cases})
    if missing:
        raise FemurSegError(f"validation cases missing from {data_dir}: {', '.join(missing)}")
    out_dir = run_dir / "evaluation"
    out_dir.mkdir(parents=True, exist_ok=True)
    pp_kind = cfg.get("postprocess") or "largest_per_femur"
    curve = PooledCurve()
    rows: List[dict] = []
    subjects: List[dict] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".probs.", dir=str(out_dir)) as tmp:
        # pass 1: predict, probability metrics, metrics at 0.5, pooled curve
        for k in todo:
            seg = fold_segmenter(cfg, run_dir / f"fold_{k}", device)
            for name in splits[k]["val"]:
                t0 = time.perf_counter()
                case = dataset.case(name)
                image = images.read_image(case.image_path)
                label = images.read_label(case.label_path, image)
                ref = sitk.GetArrayViewFromImage(label) == dataset.foreground_label
                prob = sitk.GetArrayFromImage(seg.segment(image).probability)
                q = quantise(prob)
                curve.add(q, ref)
                np.save(Path(tmp) / f"{name}.npy", q)
                pm = metrics.evaluate_probabilities(prob, ref)
                subj = {"subject": name, "fold": k, "roc_auc": pm["roc_auc"],
                        "average_precision": pm["average_precision"]}
                subjects.append(subj)
                rows += _mask_rows(subj, prob >= 0.5, ref, image, 0.5, "0.5", pp_kind)
                if progress:
                    log.info("fold %d %s: DSC %.4f at 0.5 (%.0f s)", k, name, rows[-2]["dsc"],
                             time.perf_counter() - t0)
        threshold, p_opt, r_opt = curve.pr_optimal()
        level = int(round(threshold * LEVELS))
        # pass 2: metrics at the PR-optimal threshold
        for subj in subjects:
            case = dataset.case(subj["subject"])
            image = images.read_image(case.image_path)
            label = images.read_label(case.label_path, image)
            ref = sitk.GetArrayViewFromImage(label) == dataset.foreground_label
            q = np.load(Path(tmp) / f"{subj['subject']}.npy")
            rows += _mask_rows(subj, q >= level, ref, image, threshold, "pr", pp_kind)
    summary = _summary(run_dir, run, cfg, rows, todo, curve, threshold, p_opt, r_opt, pp_kind,
                       time.perf_counter() - t_start)
    _write_outputs(out_dir, summary, rows, curve, overwrite)
    return summary


def _mask_rows(subj: dict, mask: np.ndarray, ref: np.ndarray, image: sitk.Image,
               threshold: float, kind: str, pp_kind: str) -> List[dict]:
    spacing = metrics.array_spacing(image)
    out = []
    for pp in (False, True):
        m = apply_pp(mask, image, pp_kind) if pp else mask
        row = {"subject": subj["subject"], "fold": subj["fold"], "variant": variant_key(kind, pp),
               "threshold": threshold, "postprocess": pp_kind if pp else "none",
               **metrics.evaluate_masks(m, ref, spacing),
               "roc_auc": subj["roc_auc"], "average_precision": subj["average_precision"]}
        out.append(row)
    return out


def run_label(cfg: dict) -> str:
    return str(cfg.get("paper_row") or cfg["name"])


def _summary(run_dir, run, cfg, rows, folds, curve, threshold, p_opt, r_opt, pp_kind,
             seconds) -> dict:
    variants = {}
    for kind, pp in VARIANTS:
        key = variant_key(kind, pp)
        sel = [r for r in rows if r["variant"] == key]
        per_fold = {str(k): {m: v["mean"] for m, v in
                             _variant_stats([r for r in sel if r["fold"] == k]).items()}
                    for k in folds}
        variants[key] = {"threshold": threshold if kind == "pr" else 0.5,
                         "postprocess": pp_kind if pp else "none",
                         "metrics": _variant_stats(sel), "per_fold": per_fold}
    return {
        "run": str(Path(run_dir).resolve()),
        "config": cfg["name"],
        "label": run_label(cfg),
        "architecture": cfg["architecture"]["type"],
        "folds": list(folds),
        "subjects": len({r["subject"] for r in rows}),
        "pr_optimal": {"threshold": threshold, "precision": p_opt, "recall": r_opt,
                       "quantisation": f"1/{LEVELS}"},
        "pooled": {"roc_auc": curve.roc_auc(), "average_precision": curve.average_precision()},
        "postprocess": pp_kind,
        "variants": variants,
        "deployed_variant": variant_key("pr", True),
        "seconds": round(seconds, 1),
        "code_version": run.get("code_version"),
    }


def _write_outputs(out_dir: Path, summary: dict, rows: List[dict], curve: PooledCurve,
                   overwrite: bool) -> None:
    label = summary["label"]
    path = out_dir / "per_subject.csv"
    with files.atomic_path(path, overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=SUBJECT_COLUMNS, extrasaction="ignore",
                               lineterminator="\n")
            w.writeheader()
            for r in sorted(rows, key=lambda r: (r["variant"], r["subject"])):
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    table, groups = [], []
    for kind, pp in VARIANTS:
        key = variant_key(kind, pp)
        sel = [r for r in rows if r["variant"] == key]
        name = label + (" + PP" if pp else "")
        table.append(table_row(name, summary["variants"][key]["threshold"], kind, sel))
        short = f"{name}\n@{'PR-opt' if kind == 'pr' else '0.5'}"
        groups.append((short, {k: [r[k] for r in sel] for k, _ in BOX_METRICS}))
    deployed = [r for r in rows if r["variant"] == summary["deployed_variant"]]
    details = ("What the exported model does (PR-optimal threshold "
               f"{summary['pr_optimal']['threshold']:.3f}, PP), per fold and per case:\n\n"
               + fold_table(deployed) + "\n" + case_table(deployed))
    write_tables(table, out_dir, title=f"Cross-validation of {summary['config']} "
                                       f"({summary['subjects']} subjects)", overwrite=overwrite,
                 details=details)
    plot_curves([curve.plot_entry(label, summary["pr_optimal"]["threshold"])],
                out_dir / "roc_pr.png", overwrite=overwrite)
    plot_boxes(groups, out_dir / "boxplots.png", overwrite=overwrite)
    curve.save(out_dir / "curves.npz", overwrite=overwrite)
    files.write_json(_clean(summary), out_dir / "summary.json", overwrite=overwrite)


def card_metrics(summary: dict) -> Dict[str, object]:
    """The model card's ``metrics`` section from an evaluation summary (the deployed variant:
    PR-optimal threshold with post-processing)."""
    v = summary["variants"][summary.get("deployed_variant", "pr+PP")]["metrics"]
    out: Dict[str, object] = {}
    for key, name in [("dsc", "dsc"), ("precision", "precision"), ("recall", "recall"),
                      ("specificity", "specificity"), ("hd95_mm", "hd95_mm"),
                      ("assd_mm", "assd_mm"), ("roc_auc", "roc_auc"),
                      ("average_precision", "average_precision")]:
        out[f"{name}_mean"] = v[key]["mean"]
        out[f"{name}_sd"] = v[key]["sd"]
    out.update({"subjects": summary["subjects"], "folds": len(summary["folds"]),
                "threshold": summary["pr_optimal"]["threshold"],
                "pooled_roc_auc": summary["pooled"]["roc_auc"],
                "pooled_average_precision": summary["pooled"]["average_precision"],
                "evaluation": f"{len(summary['folds'])}-fold cross-validation, each subject "
                              "predicted by the fold that did not train on it, on its original "
                              "image grid, at the PR-optimal threshold with post-processing "
                              f"({summary['postprocess']})"})
    return _clean(out)
