"""Robustness of a cross-validated run to other contrasts: every fold segments contrast-changed
copies (:mod:`.contrast`) of its own validation cases through the product's inference path, at
the run's PR-optimal threshold with the card's post-processing, exactly as ``evaluate`` scores
the unchanged cases.

Writes ``RUN_DIR/evaluation/robustness.md``, ``robustness.csv``, ``robustness.json`` and
``robustness.png``: per contrast the mean +- sd of DSC (all slices and labelled slices) and HD95,
the worst case, the difference to the unchanged cases, and box plots of both DSCs.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import SimpleITK as sitk

from FemurSegLib import files, images, metrics, postprocess
from FemurSegLib.errors import FemurSegError

from .contrast import CONTRASTS, contrast_copy
from .report import mean_sd, plot_boxes, read_summary

log = logging.getLogger("femurseg.train")

COLUMNS = ["subject", "fold", "contrast", "dsc", "dsc_labelled_slices", "hd95_mm",
           "volume_pred_ml", "volume_ref_ml"]


def case_seed(name: str) -> int:
    """A seed from a case name (stable across runs and machines)."""
    return int.from_bytes(name.encode("utf-8"), "little") % (2 ** 31)


def robustness_run(run_dir, *, contrasts: Sequence[str] = tuple(CONTRASTS),
                   data_dir: Optional[str] = None, device: str = "cpu",
                   overwrite: bool = True, progress: bool = True) -> dict:
    from .cv import read_run
    from .data import load_dataset
    from .evaluate import fold_segmenter

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    if not run:
        raise FemurSegError(f"{run_dir} is not a run folder (no run.json)")
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown:
        raise FemurSegError(f"unknown contrast {', '.join(unknown)} (known: "
                            f"{', '.join(CONTRASTS)})")
    summary = read_summary(run_dir)
    threshold = float(summary["pr_optimal"]["threshold"])
    cfg = run["config"]
    splits = files.read_json(run_dir / "splits.json", "splits", kind=list)
    folds = [int(k) for k in summary["folds"]]
    names = [n for k in folds for n in splits[k]["val"]]
    dataset = load_dataset(data_dir or run.get("dataset", {}).get("path"), cfg.get("foreground"),
                           cases=names)
    rows: List[dict] = []
    t_start = time.perf_counter()
    for k in folds:
        seg = fold_segmenter(cfg, run_dir / f"fold_{k}", device)
        rule = seg.model.inference.postprocess
        for name in splits[k]["val"]:
            case = dataset.case(name)
            image = images.read_image(case.image_path)
            label = images.read_label(case.label_path, image)
            ref = sitk.GetArrayViewFromImage(label) == dataset.foreground_label
            spacing = metrics.array_spacing(image)
            for kind in contrasts:
                t0 = time.perf_counter()
                changed = contrast_copy(image, kind, case_seed(name))
                prob = sitk.GetArrayFromImage(seg.segment(changed).probability)
                mask = postprocess.label_probability(prob, image, threshold, rule,
                                                     split=False)[0] > 0
                m = metrics.evaluate_masks(mask, ref, spacing)
                rows.append({"subject": name, "fold": k, "contrast": kind,
                             **{c: m[c] for c in COLUMNS[3:]}})
                if progress:
                    log.info("fold %d %s %s: DSC %.4f (%.0f s)", k, name, kind, m["dsc"],
                             time.perf_counter() - t0)
    baseline = _baseline(run_dir)
    subjects = sorted({r["subject"] for r in rows})
    result = {"run": str(run_dir.resolve()), "config": cfg["name"], "threshold": threshold,
              "postprocess": rule, "contrasts": list(contrasts),
              "seconds": round(time.perf_counter() - t_start, 1),
              "table": _table(rows, baseline, contrasts), "rows": rows,
              "baseline_rows": [baseline[s] for s in subjects if s in baseline]}
    out = run_dir / "evaluation"
    _write(out, result, overwrite)
    return result


def _baseline(run_dir: Path) -> Dict[str, Dict[str, float]]:
    """The unchanged cases' deployed-variant metrics from ``per_subject.csv``."""
    from .report import read_per_subject

    return {r["subject"]: r for r in read_per_subject(run_dir) if r["variant"] == "pr+PP"}


def _table(rows: List[dict], baseline: Dict[str, dict], contrasts: Sequence[str]) -> List[dict]:
    subjects = sorted({r["subject"] for r in rows})
    out = []
    unchanged = [baseline[s] for s in subjects if s in baseline]
    groups = [("unchanged", unchanged)] + [(c, [r for r in rows if r["contrast"] == c])
                                           for c in contrasts]
    base_dsc = mean_sd([r["dsc"] for r in unchanged])[0] if unchanged else float("nan")
    for name, sel in groups:
        entry = {"contrast": name, "n": len(sel)}
        for key in ("dsc", "dsc_labelled_slices", "hd95_mm"):
            m, s, _ = mean_sd([r.get(key, float("nan")) for r in sel])
            entry[f"{key}_mean"], entry[f"{key}_sd"] = m, s
        dscs = [(r["dsc"], r["subject"]) for r in sel]
        entry["worst"] = min(dscs) if dscs else (float("nan"), "")
        entry["dsc_change"] = entry["dsc_mean"] - base_dsc
        out.append(entry)
    return out


def markdown(result: dict) -> str:
    lines = [f"Contrast robustness of {result['config']} (cross-validation: each case "
             f"segmented by its own fold; threshold {result['threshold']:.3f}, "
             f"post-processing {result['postprocess']})", "",
             "| Contrast | Cases | DSC | DSC (labelled slices) | HD95 mm | Worst DSC | "
             "Change of mean DSC |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for e in result["table"]:
        worst, who = e["worst"]
        lines.append(f"| {e['contrast']} | {e['n']} | {e['dsc_mean']:.3f} ± {e['dsc_sd']:.3f} | "
                     f"{e['dsc_labelled_slices_mean']:.3f} ± {e['dsc_labelled_slices_sd']:.3f} | "
                     f"{e['hd95_mm_mean']:.1f} ± {e['hd95_mm_sd']:.1f} | {worst:.3f} ({who}) | "
                     f"{e['dsc_change']:+.3f} |")
    return "\n".join(lines) + "\n"


def _write(out: Path, result: dict, overwrite: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(markdown(result), out / "robustness.md", overwrite=overwrite)
    with files.atomic_path(out / "robustness.csv", overwrite) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
            w.writeheader()
            for r in result["rows"]:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                            for k, v in r.items()})
    files.write_json(result, out / "robustness.json", overwrite=overwrite)
    groups = [("unchanged", {k: [r.get(k) for r in result["baseline_rows"]] for k in
                             ("dsc", "dsc_labelled_slices")})]
    groups += [(c, {k: [r[k] for r in result["rows"] if r["contrast"] == c] for k in
                    ("dsc", "dsc_labelled_slices")}) for c in result["contrasts"]]
    plot_boxes(groups, out / "robustness.png", overwrite=overwrite,
               metrics=[("dsc", "DSC"), ("dsc_labelled_slices", "DSC (labelled slices)")])


def robust_enough(result: dict, minimum: float = 0.90, within: float = 0.03) -> Dict[str, bool]:
    """Per contrast: mean DSC >= ``minimum`` and within ``within`` of the unchanged cases."""
    return {e["contrast"]: bool(e["dsc_mean"] >= minimum and e["dsc_change"] >= -within)
            for e in result["table"] if e["contrast"] != "unchanged"}


__all__ = ["robustness_run", "markdown", "robust_enough", "case_seed", "COLUMNS"]
