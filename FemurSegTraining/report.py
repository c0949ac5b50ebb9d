"""Tables in the layout of Table 2 of Deniz et al. (2018) and the figures 3 and 4, as files.

A table row is a configuration (e.g. "3D F32L4", "2D F64L4 + PP") with the threshold used and
DSC, precision, recall, specificity, ROC AUC and average precision as mean +- sd over subjects.
:func:`combine_runs` puts several evaluated run folders into one table and one set of figures.
"""

from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from FemurSegLib import files
from FemurSegLib.errors import FemurSegError
from FemurSegLib.metrics import mean_sd  # noqa: F401  (the one helper; evaluate, robustness)

#: (key in the per-subject rows, column title)
TABLE_METRICS = [("dsc", "DSC"), ("dsc_labelled_slices", "DSC (labelled slices)"),
                 ("precision", "Precision"), ("recall", "Recall"),
                 ("specificity", "Specificity"), ("roc_auc", "AUC"),
                 ("average_precision", "AP")]
BOX_METRICS = [("dsc", "DSC"), ("precision", "Precision"), ("recall", "Recall")]


def variant_key(threshold_kind: str, pp: bool) -> str:
    """``"0.5"``, ``"0.5+PP"``, ``"pr"`` or ``"pr+PP"``."""
    return f"{threshold_kind}{'+PP' if pp else ''}"


VARIANTS = [("0.5", False), ("pr", False), ("0.5", True), ("pr", True)]

def table_row(label: str, threshold: float, threshold_kind: str,
              subjects: Sequence[dict]) -> dict:
    """One table row: ``{"configuration", "threshold", "<metric>_mean", "<metric>_sd", ...}``."""
    row = {"configuration": label, "threshold": float(threshold),
           "threshold_kind": threshold_kind, "subjects": len(subjects)}
    for key, _ in TABLE_METRICS:
        m, s, _n = mean_sd([r.get(key) for r in subjects])
        row[f"{key}_mean"], row[f"{key}_sd"] = m, s
    return row


def _fmt(m: float, s: float, digits: int = 3) -> str:
    """"mean ± sd" with ``digits`` decimals, or "n/a" without a mean."""
    return "n/a" if not np.isfinite(m) else f"{_num(m, digits)} ± {_num(s, digits)}"


def _num(v, digits: int) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def markdown_table(rows: Sequence[dict], title: str = "") -> str:
    head = ["Configuration", "Threshold"] + [t for _, t in TABLE_METRICS]
    lines = [f"{title}\n" if title else ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * len(TABLE_METRICS)) + "|")
    for r in rows:
        thr = f"{r['threshold']:.3f}" + (" (PR-optimal)" if r["threshold_kind"] == "pr" else "")
        cells = [r["configuration"], thr] + [_fmt(r[f"{k}_mean"], r[f"{k}_sd"])
                                             for k, _ in TABLE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Mean ± sd over subjects, each on its original image grid. AUC and AP come from "
                 "the probabilities (before thresholding and PP); PP keeps the largest connected "
                 "component per femur. The PR-optimal threshold is the point of the pooled "
                 "precision-recall curve nearest to (1, 1). DSC (labelled slices) counts only "
                 "the slices that carry a reference femur label (annotators sometimes left the "
                 "last slices of a femur unlabelled).")
    return "\n".join(lines).lstrip("\n") + "\n"


def csv_text(rows: Sequence[dict]) -> str:
    cols = ["configuration", "threshold", "threshold_kind", "subjects"] + [
        f"{k}_{s}" for k, _ in TABLE_METRICS for s in ("mean", "sd")]
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: (f"{r[c]:.6f}" if isinstance(r[c], float) else r[c]) for c in cols})
    return buf.getvalue()


DETAIL_METRICS = [("dsc", "DSC", 3), ("dsc_labelled_slices", "DSC (labelled slices)", 3),
                  ("precision", "Precision", 3), ("recall", "Recall", 3),
                  ("hd95_mm", "HD95 mm", 1), ("assd_mm", "ASSD mm", 2)]


def fold_table(subjects: Sequence[dict]) -> str:
    """Markdown: one row per fold (its validation cases, mean ± sd of each metric), then all."""
    folds = sorted({int(r["fold"]) for r in subjects})
    head = ["Fold", "Validation cases"] + [t for _, t, _ in DETAIL_METRICS]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * len(DETAIL_METRICS)) + "|"]
    groups = [(str(k), [r for r in subjects if int(r["fold"]) == k]) for k in folds]
    groups.append(("all", list(subjects)))
    for name, sel in groups:
        cases = ", ".join(sorted(r["subject"] for r in sel)) if name != "all" else str(len(sel))
        cells = [_fmt(*mean_sd([r.get(key) for r in sel])[:2], digits)
                 for key, _, digits in DETAIL_METRICS]
        lines.append("| " + " | ".join([name, cases] + cells) + " |")
    return "\n".join(lines) + "\n"


def case_table(subjects: Sequence[dict]) -> str:
    """Markdown: one row per case with its fold, metrics and predicted / reference volume."""
    head = ["Case", "Fold"] + [t for _, t, _ in DETAIL_METRICS] + [
        "Volume ml (predicted / reference)"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(DETAIL_METRICS) + 1)) + "|"]
    for r in sorted(subjects, key=lambda r: r["subject"]):
        cells = [r["subject"], str(int(r["fold"]))] + [_num(r.get(k), d) for k, _, d in DETAIL_METRICS]
        cells.append(f"{_num(r.get('volume_pred_ml'), 0)} / {_num(r.get('volume_ref_ml'), 0)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def comparison_tables(columns: Sequence[Tuple[str, Sequence[dict]]]) -> str:
    """Markdown: DSC per fold and per case side by side for several configurations (rows of
    Table 2), each a (label, per-subject rows) pair over the same subjects and folds."""
    labels = [c for c, _ in columns]
    by_case = [{r["subject"]: r for r in rows} for _, rows in columns]
    cases = sorted(set().union(*[set(b) for b in by_case]))
    fold_of = {}
    for b in by_case:
        for name, r in b.items():
            fold_of.setdefault(name, int(r["fold"]))
    folds = sorted(set(fold_of.values()))
    out = ["DSC per fold (mean ± sd over its validation cases):", "",
           "| Fold | " + " | ".join(labels) + " |",
           "|---|" + "---:|" * len(labels)]
    for k in folds + ["all"]:
        cells = [_fmt(*mean_sd([r["dsc"] for n, r in b.items()
                                if k == "all" or fold_of[n] == k])[:2]) for b in by_case]
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    out += ["", "DSC per case:", "", "| Case | Fold | " + " | ".join(labels) + " |",
            "|---|---|" + "---:|" * len(labels)]
    for name in cases:
        cells = [_num(b[name]["dsc"], 3) if name in b else "n/a" for b in by_case]
        out.append(f"| {name} | {fold_of[name]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_tables(rows: Sequence[dict], out_dir: Path, *, title: str = "",
                 overwrite: bool = False, details: str = "") -> None:
    """``table.md`` (Table 2 rows, then ``details``) and ``table.csv`` in ``out_dir``."""
    text = markdown_table(rows, title) + (f"\n{details}" if details else "")
    files.write_text(text, Path(out_dir) / "table.md", overwrite=overwrite)
    files.write_text(csv_text(rows), Path(out_dir) / "table.csv", overwrite=overwrite)


# ----------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: Sequence[dict], path: Path, *, overwrite: bool = False) -> Path:
    """ROC and precision-recall curves side by side (the paper's Fig. 3).

    Each entry: ``{"label", "fpr", "tpr", "precision", "recall", "auc", "ap",
    "points": [(name, precision, recall), ...]}``.
    """
    plt = _pyplot()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 5))
    for c in curves:
        line, = ax_roc.plot(c["fpr"], c["tpr"], lw=1.5, label=f"{c['label']} (AUC {c['auc']:.3f})")
        ax_pr.plot(c["recall"], c["precision"], lw=1.5, color=line.get_color(),
                   label=f"{c['label']} (AP {c['ap']:.3f})")
        for name, p, r in c.get("points", []):
            is_opt = "PR" in name
            ax_pr.plot([r], [p], "o" if is_opt else "s", color=line.get_color(), ms=6,
                       mfc=line.get_color() if is_opt else "none")
            ax_pr.annotate(name, (r, p), textcoords="offset points", fontsize=8,
                           xytext=(6, -14) if is_opt else (-28, 8))
    ax_roc.set(xlabel="False positive rate", ylabel="True positive rate (recall)",
               title="ROC (voxels pooled over subjects)", xlim=(0, 1), ylim=(0, 1.01))
    ax_roc.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    inset = ax_roc.inset_axes([0.45, 0.12, 0.5, 0.45])
    for c in curves:
        inset.plot(c["fpr"], c["tpr"], lw=1.2)
    inset.set(xlim=(0, 0.02), ylim=(0.8, 1.0), title="FPR < 0.02", xticks=[0, 0.01, 0.02])
    inset.tick_params(labelsize=7)
    inset.title.set_fontsize(8)
    ax_pr.set(xlabel="Recall", ylabel="Precision", title="Precision-recall (pooled)",
              xlim=(0, 1.01), ylim=(0, 1.01))
    zoom = ax_pr.inset_axes([0.12, 0.12, 0.45, 0.45])
    for c in curves:
        zoom.plot(c["recall"], c["precision"], lw=1.2)
        for name, p, r in c.get("points", []):
            zoom.plot([r], [p], "o" if "PR" in name else "s", ms=4, mfc="none", color="k")
    zoom.set(xlim=(0.8, 1.0), ylim=(0.8, 1.0), title="near (1, 1)")
    zoom.tick_params(labelsize=7)
    zoom.title.set_fontsize(8)
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    return _save(plt, fig, path, overwrite)


def _save(plt, fig, path: Path, overwrite: bool) -> Path:
    """Lay out, write atomically (refusing an existing file unless ``overwrite``) and close."""
    fig.tight_layout()
    with files.atomic_path(path, overwrite) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_boxes(groups: Sequence[Tuple[str, Dict[str, Sequence[float]]]], path: Path, *,
               overwrite: bool = False,
               metrics: Sequence[Tuple[str, str]] = tuple(BOX_METRICS)) -> Path:
    """Box plots of ``metrics`` (default DSC, precision and recall) per configuration (the
    paper's Fig. 4), one panel per metric, every subject as a dot."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 + 1.4 * len(groups) * 1.5, 4.8),
                             sharey=False)
    labels = [g[0] for g in groups]
    for ax, (key, title) in zip(np.atleast_1d(axes), metrics):
        data = [[v for v in g[1].get(key, []) if v is not None and np.isfinite(v)]
                for g in groups]
        ax.boxplot(data, showmeans=True)
        for i, d in enumerate(data, start=1):
            ax.plot(np.full(len(d), i) + np.linspace(-0.08, 0.08, len(d)) if d else [], d, ".",
                    color="k", alpha=0.4, ms=4)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path, overwrite)


# ----------------------------------------------------------------------------------------------
# Several runs -> one Table 2


def read_summary(run_dir: Path) -> dict:
    p = Path(run_dir) / "evaluation" / "summary.json"
    if not p.is_file():
        raise FemurSegError(f"{run_dir} has no evaluation (run: femurseg-train evaluate {run_dir})")
    return files.read_json(p, "evaluation summary")


def read_per_subject(run_dir: Path) -> List[dict]:
    p = Path(run_dir) / "evaluation" / "per_subject.csv"
    with open(p, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k not in ("subject", "variant", "postprocess"):
                try:
                    r[k] = float(v) if v != "" else math.nan
                except ValueError:
                    pass
    return rows


def combine_runs(run_dirs: Sequence[Path], out_dir: Path, *, threshold: str = "pr",
                 pp: Optional[str] = None, overwrite: bool = False) -> List[dict]:
    """One Table 2 (and Figs. 3 and 4) from several evaluated runs.

    ``threshold`` is "pr" (the PR-optimal threshold of each run) or "0.5". ``pp`` chooses the
    rows: None as the paper (3D rows without PP, 2D rows without and with PP), "both" or "none".
    """
    from .curves import PooledCurve

    if threshold not in ("pr", "0.5"):
        raise FemurSegError(f"threshold must be 'pr' or '0.5', not {threshold!r}")
    out_dir = Path(out_dir)
    rows, curves, groups, columns = [], [], [], []
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        per_subject = read_per_subject(run_dir)
        label = summary["label"]
        is_2d = summary.get("architecture") == "UNet2D"
        paper_rows = [False, True] if is_2d else [False]
        with_pp = {"both": [False, True], "none": [False]}.get(pp, paper_rows)
        for use_pp in with_pp:
            key = variant_key(threshold, use_pp)
            v = summary["variants"][key]
            subjects = [r for r in per_subject if r["variant"] == key]
            row_label = label + (" + PP" if use_pp else "")
            rows.append(table_row(row_label, v["threshold"], threshold, subjects))
            columns.append((row_label, subjects))
            groups.append((row_label, {k: [r[k] for r in subjects] for k, _ in BOX_METRICS}))
        curve = PooledCurve.load(Path(run_dir) / "evaluation" / "curves.npz")
        curves.append(curve.plot_entry(label, summary["pr_optimal"]["threshold"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    thr = "PR-optimal threshold of each row" if threshold == "pr" else "threshold 0.5"
    write_tables(rows, out_dir, title="Table 2 (reproduced)", overwrite=overwrite,
                 details=f"At the {thr}.\n\n" + comparison_tables(columns))
    plot_curves(curves, out_dir / "roc_pr.png", overwrite=overwrite)
    plot_boxes(groups, out_dir / "boxplots.png", overwrite=overwrite)
    return rows
