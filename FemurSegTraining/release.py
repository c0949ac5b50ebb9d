"""A cross-validated run -> one model folder with all folds as an ensemble.

The card is filled from the run (config, data description, CV metrics from ``evaluate``, the
PR-optimal threshold, training wall time and hardware, command lines, code version). After the
folder is written (each fold's ``.pt`` and ``.onnx``, see :func:`export.write_model_folder`), a
small phantom is segmented through the full inference path with ONNX Runtime and with PyTorch;
the probabilities must agree to ``atol`` or nothing is exported.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from FemurSegLib.errors import FemurSegError
from FemurSegLib.files import write_json
from FemurSegLib.modelfolder import CARD_NAME, read_card

log = logging.getLogger("femurseg.train")

PHANTOM_SIZE = (48, 48, 12)          # (i, j, k) voxels
PHANTOM_SPACING = (3.6, 3.6, 5.2)    # mm


def card_for_config(cfg: dict, *, threshold: Optional[float] = None, name: Optional[str] = None,
                    version: str = "0.0.0", description: Optional[str] = None,
                    training: Optional[dict] = None, metrics: Optional[dict] = None) -> dict:
    """A model card for a training config (fold entries are added by the writer)."""
    from .export import make_card
    from .train import inference_geometry

    inference = inference_geometry(cfg)
    inference["threshold"] = threshold
    inference["postprocess"] = cfg.get("postprocess", "largest_per_femur")
    return make_card(name=name or cfg["name"], version=version,
                     description=description if description is not None else cfg["description"],
                     architecture=cfg["architecture"], input_spec=dict(cfg["input"]),
                     inference=inference, training=training, metrics=metrics)


def phantom_image() -> sitk.Image:
    """The small phantom of the export check."""
    from FemurSegLib.phantom import make_phantom

    return make_phantom(0, size=PHANTOM_SIZE, spacing=PHANTOM_SPACING).image


def onnx_torch_phantom_difference(model_dir: Path, image: Optional[sitk.Image] = None) -> float:
    """Largest difference of the femur probabilities of ONNX Runtime and PyTorch, over the whole
    inference path (preprocessing, tiling, fold ensemble, mapping back to the input grid)."""
    from FemurSegLib.inference import Segmenter

    image = image if image is not None else phantom_image()
    probs = []
    for engine in ("onnx", "torch"):
        seg = Segmenter.from_folder(model_dir, device="cpu", engine=engine)
        probs.append(sitk.GetArrayFromImage(seg.segment(image).probability))
    return float(np.abs(probs[0] - probs[1]).max())


def export_run(run_dir, model_dir, *, name: Optional[str] = None, version: str = "1.0.0",
               half: bool = False, overwrite: bool = False, atol: float = 1e-4,
               license: str = "Apache-2.0", command: Optional[str] = None,
               card_extra: Optional[dict] = None) -> Path:
    """Write ``model_dir`` from ``run_dir`` (every fold's ``best.pt``; needs ``evaluate``).

    ``card_extra`` (see :func:`merge_card_extra`) adds what the run cannot know: ``notes`` for
    the card and ``inference`` settings chosen after training (e.g. the ROI cascade).
    """
    import torch

    from FemurSegLib.networks import build_network

    from .cv import code_version, read_run
    from .evaluate import card_metrics
    from .export import write_model_folder
    from .report import read_summary

    run_dir, out = Path(run_dir), Path(model_dir)
    run = read_run(run_dir)
    if not run:
        raise FemurSegError(f"{run_dir} is not a run folder (no run.json)")
    if out.exists() and not overwrite:
        raise FemurSegError(f"output exists: {out} (use --overwrite to replace it)")
    cfg = run["config"]
    summary = read_summary(run_dir)
    folds = sorted(int(k) for k in summary["folds"])
    nets = {}
    for k in folds:
        weights = run_dir / f"fold_{k}" / "best.pt"
        if not weights.is_file():
            raise FemurSegError(f"{weights} not found")
        net = build_network(cfg["architecture"])
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        nets[k] = net.eval()
    fold_info = run.get("folds", {})
    seconds = sum(float(fold_info.get(str(k), {}).get("seconds", 0.0)) for k in folds)
    ds = run.get("dataset", {})
    training = {
        "config": cfg,
        "data": {"path": ds.get("path"), "cases": ds.get("cases"),
                 "foreground_label": ds.get("foreground_label"), "labels": ds.get("labels"),
                 "description": _data_description(ds.get("path"))},
        "folds": {str(k): {kk: fold_info.get(str(k), {}).get(kk) for kk in
                           ("epochs", "best_epoch", "best_val_dsc", "stopped_early", "seconds")}
                  for k in folds},
        "wall_time_hours": round(seconds / 3600.0, 3),
        "hardware": run.get("hardware"),
        "commands": list(run.get("commands", [])) + ([command] if command else []),
        "code_version": run.get("code_version"),
        "export_code_version": code_version(),
        "run_created": run.get("created"),
    }
    metrics = card_metrics(summary)
    card = card_for_config(cfg, threshold=metrics["threshold"], name=name or cfg["name"],
                           version=version, training=training, metrics=metrics,
                           description=_card_description(cfg, metrics))
    card["license"] = license
    if card_extra:
        card = merge_card_extra(card, card_extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging_root = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=str(out.parent)))
    try:
        staged = write_model_folder(staging_root / out.name, card, nets,
                                    half_precision_weights=half, atol=atol)
        diff = onnx_torch_phantom_difference(staged)
        if not diff <= atol:
            raise FemurSegError(f"ONNX Runtime and PyTorch differ by {diff:.2e} on the phantom "
                                f"(> {atol:.0e}); not exporting")
        card = read_card(staged)
        card["export_checks"]["phantom_onnx_vs_torch_max_abs_diff"] = diff
        card["export_checks"]["phantom"] = {"size": list(PHANTOM_SIZE),
                                            "spacing": list(PHANTOM_SPACING), "seed": 0}
        write_json(card, staged / CARD_NAME, overwrite=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    log.info("exported %d fold(s) of %s to %s (phantom ONNX/torch difference %.1e)",
             len(nets), run_dir, out, diff)
    return out


CARD_EXTRA_KEYS = {"notes", "inference", "intended_use", "description"}
INFERENCE_EXTRA_KEYS = {"roi", "tta_on_cpu", "tta_flip_axes", "overlap", "patch_size"}


def merge_card_extra(card: dict, extra: dict) -> dict:
    """``card`` with ``extra`` merged in: ``notes`` (list of strings), ``inference`` (only the
    settings in :data:`INFERENCE_EXTRA_KEYS`: the threshold and geometry come from the run),
    ``intended_use`` and ``description``. Unknown keys are an error."""
    if not isinstance(extra, dict):
        raise FemurSegError("card extra must be a JSON object")
    unknown = set(extra) - CARD_EXTRA_KEYS
    if unknown:
        raise FemurSegError(f"card extra: unknown keys {', '.join(sorted(unknown))} "
                            f"(allowed: {', '.join(sorted(CARD_EXTRA_KEYS))})")
    card = dict(card)
    if "notes" in extra:
        notes = extra["notes"]
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise FemurSegError("card extra: notes must be a list of strings")
        card["notes"] = list(notes)
    inf = extra.get("inference", {})
    bad = set(inf) - INFERENCE_EXTRA_KEYS
    if bad:
        raise FemurSegError(f"card extra: inference keys {', '.join(sorted(bad))} cannot be set "
                            f"(allowed: {', '.join(sorted(INFERENCE_EXTRA_KEYS))})")
    card["inference"] = {**card["inference"], **inf}
    for key in ("intended_use", "description"):
        if key in extra:
            if not isinstance(extra[key], str) or not extra[key].strip():
                raise FemurSegError(f"card extra: {key} must be a non-empty string")
            card[key] = extra[key]
    return card


def read_card_extra(path) -> dict:
    """A card-extra JSON file, with a one-line error when it cannot be read."""
    import json

    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FemurSegError(f"cannot read card extra {p}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise FemurSegError(f"card extra {p} is not valid JSON: {exc}") from None


def _data_description(path: Optional[str]) -> Optional[str]:
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


def _card_description(cfg: dict, metrics: dict) -> str:
    dsc = metrics.get("dsc_mean")
    cv = (f" Cross-validated DSC {dsc:.3f} +- {metrics.get('dsc_sd'):.3f} over "
          f"{metrics.get('subjects')} subjects." if isinstance(dsc, float) else "")
    return f"{cfg['architecture']['type']} trained with config {cfg['name']}.{cv} " \
           f"{cfg.get('description', '')}".strip()
