"""Model cards from training: the one place that turns a config, a run, an evaluation and a
card-extra file into the card that :mod:`FemurSegLib.modelfolder` reads.

The card's ``inference`` section is a :class:`FemurSegLib.specs.InferenceSpec` built by
:func:`inference_spec` from the config's ``inference`` settings and the network's geometry;
evaluation (:mod:`.evaluate`) runs the product's path with exactly that spec, so the
cross-validated numbers are what ``femurseg segment`` does. The threshold comes from the
evaluation (the PR-optimal point); a card-extra file adds only notes, the intended use and the
description.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from FemurSegLib.errors import FemurSegError
from FemurSegLib.files import json_ready, read_json
from FemurSegLib.modelfolder import FORMAT_VERSION
from FemurSegLib.specs import InferenceSpec, InputSpec

from .config import CONFIG_INFERENCE_KEYS, foreground_index, is_2d

#: what a card-extra file may add
CARD_EXTRA_KEYS = {"notes", "intended_use", "description"}

INTENDED_USE = ("Research use only: segmentation of the proximal femur in hip MR images for "
                "research (e.g. finite-element analysis). Not a medical device; review every mask.")


def inference_spec(cfg: dict, net=None, threshold: Optional[float] = None) -> InferenceSpec:
    """The card's inference settings for ``cfg``: its ``inference`` section (only the keys of
    :data:`CONFIG_INFERENCE_KEYS`), the network's geometry (3D/2.5D divisor, 2D tile sizes),
    the femur's output channel, the post-processing rule and ``threshold``."""
    from FemurSegLib.networks import build_network

    where = f"config {cfg.get('name')}: inference"
    settings = dict(cfg.get("inference") or {})
    unknown = set(settings) - CONFIG_INFERENCE_KEYS
    if unknown:
        raise FemurSegError(f"{where}: unknown keys {', '.join(sorted(unknown))} (known: "
                            f"{', '.join(sorted(CONFIG_INFERENCE_KEYS))})")
    net = net if net is not None else build_network(cfg["architecture"])
    if is_2d(cfg):
        size = int(cfg["patch_size"])
        settings.update(input_size=size, output_size=net.output_size(size))
    else:
        settings["divisor"] = list(net.divisor)
    settings["foreground_channels"] = [foreground_index(cfg)]
    settings["postprocess"] = cfg.get("postprocess", "largest_per_femur")
    settings["threshold"] = threshold
    return InferenceSpec.from_dict(settings, where)


def make_card(*, name: str, version: str, description: str, architecture: dict,
              input_spec: dict, inference: dict, labels: Optional[list] = None,
              training: Optional[dict] = None, metrics: Optional[dict] = None,
              license: str = "Apache-2.0", intended_use: str = INTENDED_USE) -> dict:
    """A model card with every field the contract names (fold entries are added on export).
    The ``input`` and ``inference`` sections are validated as the reader will."""
    from FemurSegLib.segments import femur_segments

    input_dict = InputSpec.from_dict(dict(input_spec), "card input").to_dict()
    inference_dict = InferenceSpec.from_dict(dict(inference), "card inference").to_dict()
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "description": description,
        "architecture": dict(architecture),
        "input": input_dict,
        "inference": inference_dict,
        "labels": labels if labels is not None else
        [{"value": 0, "name": "Background"}] + [s.to_dict() for s in femur_segments(False)],
        "training": training or {},
        "metrics": metrics or {},
        "license": license,
        "intended_use": intended_use,
        "folds": [],
    }


def card_for_config(cfg: dict, *, threshold: Optional[float] = None, name: Optional[str] = None,
                    version: str = "0.0.0", description: Optional[str] = None,
                    training: Optional[dict] = None, metrics: Optional[dict] = None) -> dict:
    """A model card for a training config (fold entries are added by the writer)."""
    return make_card(name=name or cfg["name"], version=version,
                     description=description if description is not None else cfg["description"],
                     architecture=cfg["architecture"], input_spec=dict(cfg["input"]),
                     inference=inference_spec(cfg, threshold=threshold).to_dict(),
                     training=training, metrics=metrics)


def card_metrics(summary: dict) -> dict:
    """The card's ``metrics`` section from an evaluation summary (the deployed variant: the
    PR-optimal threshold with the card's post-processing)."""
    v = summary["variants"][summary.get("deployed_variant", "pr+PP")]["metrics"]
    out: dict = {}
    for key in ("dsc", "dsc_labelled_slices", "precision", "recall", "specificity", "hd95_mm",
                "assd_mm", "roc_auc", "average_precision"):
        if key in v:
            out[f"{key}_mean"] = v[key]["mean"]
            out[f"{key}_sd"] = v[key]["sd"]
    out.update({"subjects": summary["subjects"], "folds": len(summary["folds"]),
                "threshold": summary["pr_optimal"]["threshold"],
                "pooled_roc_auc": summary["pooled"]["roc_auc"],
                "pooled_average_precision": summary["pooled"]["average_precision"],
                "evaluation": f"{len(summary['folds'])}-fold cross-validation, "
                              + how_evaluated(summary)})
    if summary.get("differences"):
        out["differences_from_product"] = list(summary["differences"])
    return json_ready(out)


def how_evaluated(summary: dict) -> str:
    """How each subject of an evaluation was predicted and scored."""
    return ("each subject predicted by the fold that did not train on it through the product's "
            "inference path with this card's settings, on its original image grid, at the "
            f"PR-optimal threshold with post-processing ({summary['postprocess']})")


def training_section(run: dict, folds, *, command: Optional[str] = None,
                     code_version: Optional[str] = None) -> dict:
    """The card's ``training`` section from a run (``run.json``) and the exported folds."""
    fold_info = run.get("folds", {})
    seconds = sum(float(fold_info.get(str(k), {}).get("seconds", 0.0)) for k in folds)
    ds = run.get("dataset", {})
    return {
        "config": run["config"],
        "data": {"path": ds.get("path"), "cases": ds.get("cases"),
                 "foreground_label": ds.get("foreground_label"), "labels": ds.get("labels"),
                 "description": data_description(ds.get("path"))},
        "folds": {str(k): {kk: fold_info.get(str(k), {}).get(kk) for kk in
                           ("epochs", "best_epoch", "best_val_dsc", "stopped_early", "seconds",
                            "train", "val")}
                  for k in folds},
        "wall_time_hours": round(seconds / 3600.0, 3),
        "hardware": run.get("hardware"),
        "commands": list(run.get("commands", [])) + ([command] if command else []),
        "code_version": run.get("code_version"),
        "export_code_version": code_version,
        "run_created": run.get("created"),
    }


def run_card(run: dict, summary: dict, *, name: Optional[str] = None, version: str = "1.0.0",
             license: str = "Apache-2.0", command: Optional[str] = None,
             code_version: Optional[str] = None, card_extra: Optional[dict] = None,
             cv_run: Optional[dict] = None) -> dict:
    """The card of an exported run: config, training, evaluation metrics and threshold, and the
    card-extra notes.

    ``cv_run`` (the ``run.json`` of the cross-validation that ``summary`` evaluates) for a run
    of one network trained on every case: the card's metrics are that recipe's cross-validation,
    said so in ``metrics.evaluation``, and ``training.cross_validation`` describes its folds."""
    cfg = run["config"]
    metrics = card_metrics(summary)
    if cv_run is None:
        folds = sorted(int(k) for k in summary["folds"])
    else:
        folds = ["all"]
        cases = run.get("dataset", {}).get("cases")
        cv_cfg = cv_run["config"]
        metrics["evaluation"] = (
            f"the recipe's {len(summary['folds'])}-fold cross-validation (config "
            f"{cv_cfg['name']}, {cv_cfg['max_epochs']} epochs per fold), "
            + how_evaluated(summary) + f". The shipped network (config {cfg['name']}, {cfg['max_epochs']} epochs) was "
            f"trained on all {cases} cases, so it has no held-out evaluation of its own")
    training = training_section(run, folds, command=command, code_version=code_version)
    if cv_run is not None:
        training["cross_validation"] = training_section(cv_run, sorted(int(k) for k in
                                                                      summary["folds"]))
        training["cross_validation"].pop("export_code_version", None)
    card = card_for_config(cfg, threshold=metrics["threshold"], name=name or cfg["name"],
                           version=version, metrics=metrics, training=training,
                           description=card_description(cfg, metrics, all_cases=cv_run is not None))
    card["license"] = license
    if card_extra:
        card = merge_card_extra(card, card_extra)
    return card


def merge_card_extra(card: dict, extra: dict) -> dict:
    """``card`` with ``extra`` merged in: ``notes`` (a list of strings), ``intended_use`` and
    ``description``. Unknown keys are an error; inference settings belong in the config, where
    evaluation sees them too."""
    if not isinstance(extra, dict):
        raise FemurSegError("card extra must be a JSON object")
    unknown = set(extra) - CARD_EXTRA_KEYS
    if unknown:
        hint = (" (inference settings go into the config's inference section, so that "
                "evaluation uses them too)" if "inference" in unknown else "")
        raise FemurSegError(f"card extra: unknown keys {', '.join(sorted(unknown))} "
                            f"(allowed: {', '.join(sorted(CARD_EXTRA_KEYS))}){hint}")
    card = dict(card)
    if "notes" in extra:
        notes = extra["notes"]
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise FemurSegError("card extra: notes must be a list of strings")
        card["notes"] = list(notes)
    for key in ("intended_use", "description"):
        if key in extra:
            if not isinstance(extra[key], str) or not extra[key].strip():
                raise FemurSegError(f"card extra: {key} must be a non-empty string")
            card[key] = extra[key]
    return card


def read_card_extra(path) -> dict:
    """A card-extra JSON file, with a one-line error when it cannot be read."""
    return read_json(path, "card extra")


def data_description(path: Optional[str]) -> Optional[str]:
    """The first paragraph of the dataset's README (if any), else None."""
    if not path:
        return None
    for name in ("README.md", "README.txt", "README"):
        p = Path(path) / name
        if p.is_file():
            text = p.read_text(encoding="utf-8", errors="replace").strip().split("\n\n")
            body = [t for t in text if not t.lstrip().startswith("#")]
            para = " ".join((body[0] if body else text[0]).split())[:1000]
            if para.endswith(":") and ". " in para:  # drop a sentence introducing a block
                para = para[:para.rindex(". ") + 1]
            return para
    return None


def card_description(cfg: dict, metrics: dict, all_cases: bool = False) -> str:
    dsc = metrics.get("dsc_mean")
    what = "cross-validated" if not all_cases else "the recipe's cross-validated"
    cv = (f" {what[0].upper() + what[1:]} DSC {dsc:.3f} +- {metrics.get('dsc_sd'):.3f} over "
          f"{metrics.get('subjects')} subjects." if isinstance(dsc, float) else "")
    trained = "one network trained on all cases with" if all_cases else "trained with"
    return f"{cfg['architecture']['type']} {trained} config {cfg['name']}.{cv} " \
           f"{cfg.get('description', '')}".strip()
