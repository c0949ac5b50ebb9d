"""``femurseg-train export``: a cross-validated run -> one model folder with all folds as an
ensemble; or a run of one network trained on every case (``fit --fold all``) -> a model folder
with that network, described by the cross-validation of its recipe.

The card is :func:`.cards.run_card` (config, data description, CV metrics from ``evaluate``,
the PR-optimal threshold, training wall time and hardware, command lines, code version) with the
``plausibility`` section of the run's training data (:func:`plausibility_for_run`). After
the folder is written (each fold's ``.pt`` and ``.onnx``, see
:func:`.modelwriter.write_model_folder`), a
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
from FemurSegLib.files import replace_folder, write_json
from FemurSegLib.modelfolder import CARD_NAME, read_card

from .cards import run_card
from .modelwriter import write_model_folder

log = logging.getLogger("femurseg.train")

PHANTOM_SIZE = (48, 48, 12)          # (i, j, k) voxels
PHANTOM_SPACING = (3.6, 3.6, 5.2)    # mm


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
               card_extra: Optional[dict] = None, cv_run=None) -> Path:
    """Write ``model_dir`` from ``run_dir``; return its path.

    A cross-validation run (needs ``evaluate``) gives an ensemble of every evaluated fold's
    ``best.pt``. A run that trained one network on every case (``fit --fold all``) gives that
    one network; it has no validation cases, so the card's metrics and threshold come from
    ``cv_run``, an evaluated cross-validation of the same recipe (same network, input,
    classes and inference settings; the training length may differ).

    The card is :func:`.cards.run_card`: the config's inference settings (the same the
    evaluation used), the evaluation's threshold and metrics, and ``card_extra`` notes. An
    evaluation of weights that changed since (``cv --resume`` after ``evaluate``) is refused.
    """
    import torch

    from FemurSegLib.networks import build_network

    from .cv import code_version, read_run
    from .report import read_summary
    from .train import ALL_CASES

    run_dir, out = Path(run_dir), Path(model_dir)
    run = read_run(run_dir)
    if not run:
        raise FemurSegError(f"{run_dir} is not a run folder (no run.json)")
    if out.exists() and not overwrite:
        raise FemurSegError(f"output exists: {out} (use --overwrite to replace it)")
    cfg = run["config"]
    all_cases = ALL_CASES in run.get("folds", {}) or (run_dir / f"fold_{ALL_CASES}").is_dir()
    if all_cases and ALL_CASES not in run.get("folds", {}):
        history = run_dir / f"fold_{ALL_CASES}" / "history.csv"
        done = max(len(history.read_text(encoding="utf-8").splitlines()) - 1, 0) \
            if history.is_file() else 0
        raise FemurSegError(f"the network trained on all cases in {run_dir} has not finished "
                            f"({done} of {cfg['max_epochs']} epochs): continue it with "
                            f"femurseg-train fit {cfg['name']} --fold all --run-dir {run_dir} "
                            "--resume, then export")
    if all_cases:
        if cv_run is None:
            raise FemurSegError(
                f"{run_dir} holds one network trained on all cases (fit --fold all), which has "
                "no validation cases: pass --cv-run CV_RUN, an evaluated cross-validation of the "
                "same recipe, for the card's metrics and threshold")
        cv = read_run(Path(cv_run))
        if not cv:
            raise FemurSegError(f"{cv_run} is not a run folder (no run.json)")
        check_same_recipe(cfg, cv["config"])
        summary = read_summary(Path(cv_run))
        check_evaluation_current(Path(cv_run), summary)
        weights = {0: run_dir / f"fold_{ALL_CASES}" / "best.pt"}
    else:
        if cv_run is not None:
            raise FemurSegError(f"--cv-run is for a run trained on all cases (fit --fold all); "
                                f"{run_dir} is a cross-validation run with its own evaluation")
        summary = read_summary(run_dir)
        check_evaluation_current(run_dir, summary)
        weights = {int(k): run_dir / f"fold_{k}" / "best.pt" for k in summary["folds"]}
    nets = {}
    for k, path in sorted(weights.items()):
        if not path.is_file():
            raise FemurSegError(f"{path} not found")
        net = build_network(cfg["architecture"])
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        nets[k] = net.eval()
    card = run_card(run, summary, name=name, version=version, license=license,
                    command=command, code_version=code_version(), card_extra=card_extra,
                    cv_run=cv if all_cases else None)
    card["plausibility"] = plausibility_for_run(run)
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
        replace_folder(staged, out, overwrite=overwrite)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    log.info("exported %d network(s) of %s to %s (phantom ONNX/torch difference %.1e)",
             len(nets), run_dir, out, diff)
    return out


#: what must be the same in a network trained on all cases and the cross-validation whose
#: metrics and threshold its card reports (the training length and its schedule may differ)
RECIPE_KEYS = ("architecture", "input", "patch_size", "loss", "classes", "foreground",
               "unlabelled_ends", "augment", "postprocess", "inference")


def check_same_recipe(cfg: dict, cv_cfg: dict) -> None:
    """Refuse a cross-validation of another recipe than ``cfg``'s, naming what differs.

    The inference settings' ``roi`` cascade is not compared: it only applies to an ensemble
    (the first fold finds the femurs, the others look there), never to one network, and the
    cross-validation predicts every subject with one fold."""
    def recipe(c: dict) -> dict:
        out = {k: c.get(k) for k in RECIPE_KEYS}
        out["inference"] = {k: v for k, v in (out["inference"] or {}).items() if k != "roi"}
        return out

    mine, theirs = recipe(cfg), recipe(cv_cfg)
    differ = [k for k in RECIPE_KEYS if mine[k] != theirs[k]]
    if differ:
        raise FemurSegError(f"the cross-validation run (config {cv_cfg.get('name')}) is not of "
                            f"the recipe of config {cfg.get('name')}: {', '.join(differ)} "
                            "differ")


def check_evaluation_current(run_dir: Path, summary: dict) -> None:
    """Refuse an evaluation that is not of the weights now in ``run_dir``: each fold's
    ``best.pt`` must have the SHA-256 the evaluation recorded (an evaluation written before
    checksums were recorded must at least be newer than every fold's weights)."""
    from FemurSegLib.modelfolder import sha256_of

    recorded = summary.get("weights_sha256")
    evaluated = run_dir / "evaluation" / "summary.json"
    for k in summary["folds"]:
        weights = run_dir / f"fold_{k}" / "best.pt"
        if not weights.is_file():
            raise FemurSegError(f"{weights} not found")
        if recorded is not None:
            stale = sha256_of(weights) != recorded.get(str(k))
        else:
            stale = weights.stat().st_mtime > evaluated.stat().st_mtime
        if stale:
            raise FemurSegError(f"the evaluation in {run_dir / 'evaluation'} is not of fold {k}'s "
                                f"current weights ({weights} changed after it was evaluated, e.g. "
                                f"by cv --resume): run femurseg-train evaluate {run_dir} first")


def plausibility_for_run(run: dict) -> dict:
    """The card's ``plausibility`` section (see :mod:`FemurSegLib.plausibility`) from the run's
    training data: every case's image preprocessed as the card's input section says, and the
    per-femur volumes of its label map."""
    from FemurSegLib.plausibility import training_section
    from FemurSegLib.preprocessing import InputSpec

    from .data import load_dataset

    ds = run.get("dataset") or {}
    path = ds.get("path")
    if not path or not Path(path).is_dir():
        raise FemurSegError(f"training data not found at {path}: export computes the card's "
                            "plausibility section (femur volumes, intensity fingerprint) from it")
    fg = ds.get("foreground_label")
    dataset = load_dataset(path, None if fg is None else str(fg), check=False)
    return training_section(
        [(c.image_path, c.label_path) for c in dataset.cases],
        InputSpec.from_dict(run["config"]["input"]), dataset.foreground_label,
        source=f"{len(dataset.cases)} training cases of {Path(path).name} (label "
               f"{dataset.foreground_label}), femurseg-train export")
