"""Cross-validated evaluation of a run, per subject on each subject's original image grid.

For every fold, ``best.pt`` predicts that fold's validation cases through the core inference
path (:class:`FemurSegLib.inference.Segmenter`: preprocessing, network, probabilities mapped back
onto the input grid). Per subject: DSC, precision, recall, specificity, HD95, ASSD
(:mod:`FemurSegLib.metrics`) at threshold 0.5 and at the PR-optimal threshold, each without and
with post-processing ("PP"), plus ROC AUC and average precision of the probabilities. The
PR-optimal threshold is the point of the precision-recall curve of all subjects' voxels pooled
that is nearest to (1, 1) (:mod:`.curves`). The segmenter of each fold is built from the card
an export writes, so test-time augmentation, post-processing and thresholds are those of
``femurseg segment``; the summary names what still differs (one fold per subject instead of the
ensemble).

Writes ``RUN_DIR/evaluation/``: ``per_subject.csv``, ``table.md``, ``table.csv``,
``roc_pr.png`` (Fig. 3), ``boxplots.png`` (Fig. 4), ``curves.npz`` and ``summary.json``.
"""

from __future__ import annotations

import csv
import logging
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from FemurSegLib import files, images, metrics, postprocess
from FemurSegLib.errors import FemurSegError
from FemurSegLib.modelfolder import sha256_of

from .cards import card_for_config
from .curves import LEVELS, PooledCurve, quantise
from .report import (BOX_METRICS, VARIANTS, variant_key, case_table, fold_table, plot_boxes, plot_curves,
                     table_row, write_tables)

log = logging.getLogger("femurseg.train")

# ----------------------------------------------------------------------------------------------


SUBJECT_COLUMNS = ["subject", "fold", "variant", "threshold", "postprocess", "dsc",
                   "dsc_labelled_slices", "precision",
                   "recall", "specificity", "hd95_mm", "assd_mm", "volume_pred_ml",
                   "volume_ref_ml", "roc_auc", "average_precision"]


def fold_segmenter(cfg: dict, fold_dir: Path, device: str = "cpu"):
    """A :class:`~FemurSegLib.inference.Segmenter` running ``fold_dir/best.pt`` with PyTorch,
    on the card an export would write (:func:`.cards.card_for_config`): the same
    preprocessing, network geometry, test-time augmentation default and post-processing rule
    as ``femurseg segment``."""
    from FemurSegLib.engines import TorchEngine
    from FemurSegLib.inference import Segmenter
    from FemurSegLib.modelfolder import Model

    weights = Path(fold_dir) / "best.pt"
    if not weights.is_file():
        raise FemurSegError(f"{weights} not found: train fold {Path(fold_dir).name[5:]} first")
    card = card_for_config(cfg)
    model = Model.from_card(card, Path(fold_dir), where=f"config {cfg['name']}")
    engine = TorchEngine(weights, card["architecture"], device)
    return Segmenter(model, [engine], split=False)


def product_differences(cfg: dict, folds: int) -> List[str]:
    """How this evaluation differs from ``femurseg segment`` with the exported card, whose
    model holds the ``folds`` networks evaluated (one network: the product path itself)."""
    diffs = []
    if folds > 1:
        diffs.append(f"each subject is predicted by its own fold; the exported model averages "
                     f"all {folds} folds")
        if (cfg.get("inference") or {}).get("roi"):
            diffs[-1] += " with the ROI cascade"
    return diffs


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
    splits = files.read_json(splits_path, "splits", kind=list)
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
    curve = PooledCurve()
    spec = None
    rows: List[dict] = []
    subjects: List[dict] = []
    weights_sha256: dict = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".probs.", dir=str(out_dir)) as tmp:
        # pass 1: predict, probability metrics, metrics at 0.5, pooled curve
        for k in todo:
            # which weights this evaluation describes (export refuses it once they change)
            weights_sha256[str(k)] = sha256_of(run_dir / f"fold_{k}" / "best.pt")
            seg = fold_segmenter(cfg, run_dir / f"fold_{k}", device)
            spec, tta = seg.model.inference, seg.tta
            pp_kind = spec.postprocess
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
                rows += _mask_rows(subj, prob, 0.5, ref, image, 0.5, "0.5", pp_kind)
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
            rows += _mask_rows(subj, q, level, ref, image, threshold, "pr", pp_kind)
    summary = _summary(run_dir, run, cfg, rows, todo, curve, threshold, p_opt, r_opt, pp_kind,
                       time.perf_counter() - t_start)
    summary["inference"] = {**spec.to_dict(), "threshold": threshold, "tta": tta,
                            "device": device}
    # the export holds the evaluated folds (summary["folds"]), not every fold of the split
    summary["differences"] = product_differences(cfg, len(todo))
    summary["weights_sha256"] = weights_sha256
    _write_outputs(out_dir, summary, rows, curve, overwrite)
    return summary


def _mask_rows(subj: dict, scores: np.ndarray, cut, ref: np.ndarray, image: sitk.Image,
               threshold: float, kind: str, pp_kind: str) -> List[dict]:
    """Mask metrics without and with post-processing of ``scores >= cut`` (probabilities and
    0.5, or quantised scores and the level of ``threshold``), labelled as the product labels."""
    spacing = metrics.array_spacing(image)
    out = []
    for pp in (False, True):
        m = postprocess.label_probability(scores, image, cut, pp_kind if pp else "none",
                                          split=False)[0] > 0
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
    how = (f"the product's inference path with the exported card's settings (flip TTA "
           f"{'on' if summary['inference']['tta'] else 'off'} on {summary['inference']['device']}, "
           f"post-processing {summary['postprocess']})")
    if summary.get("differences"):
        how += "; differences from `femurseg segment`: " + "; ".join(summary["differences"])
    write_tables(table, out_dir, title=f"Cross-validation of {summary['config']} "
                                       f"({summary['subjects']} subjects), {how}",
                 overwrite=overwrite, details=details)
    plot_curves([curve.plot_entry(label, summary["pr_optimal"]["threshold"])],
                out_dir / "roc_pr.png", overwrite=overwrite)
    plot_boxes(groups, out_dir / "boxplots.png", overwrite=overwrite)
    curve.save(out_dir / "curves.npz", overwrite=overwrite)
    files.write_json(summary, out_dir / "summary.json", overwrite=overwrite)
