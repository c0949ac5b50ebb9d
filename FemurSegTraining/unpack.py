"""``femurseg-train unpack``: a run folder again from an exported cross-validation ensemble.

An exported model's card keeps what its run folder held (the config, the dataset, every fold's
training and validation cases, seconds and commands), and the model folder keeps every fold's
weights. Unpacking writes ``run.json``, ``splits.json`` and ``fold_K/best.pt`` (each verified
against the card's SHA-256) so that the cross-validation can be evaluated again (``evaluate``,
``robustness``) or describe a network of the same recipe trained on all cases (``export
--cv-run``) after the original run folder is gone. Nothing is trained; the checkpoints needed to
resume training are not in a model folder, so an unpacked run cannot be resumed.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from pathlib import Path

from FemurSegLib.errors import FemurSegError
from FemurSegLib.files import write_json
from FemurSegLib.modelfolder import load_model


def unpack_model(model_dir, run_dir, *, command: str = "") -> Path:
    """Write the run folder ``run_dir`` (which must not exist) from ``model_dir``."""
    model = load_model(model_dir, need="weights")
    card = model.card
    training = card.get("training") or {}
    folds = training.get("folds") or {}
    numbered = sorted(int(k) for k in folds if str(k).isdigit())
    if not training.get("config") or not numbered or any(
            not folds[str(k)].get("val") for k in numbered):
        raise FemurSegError(f"model {card['name']} is not a cross-validation ensemble whose card "
                            "lists every fold's training and validation cases; cannot unpack it")
    exported = sorted(f.fold for f in model.folds)
    if exported != numbered:
        raise FemurSegError(f"model {card['name']} has the networks of folds {exported} but its "
                            f"card describes folds {numbered}")
    run_dir = Path(run_dir)
    if run_dir.exists():
        raise FemurSegError(f"output exists: {run_dir} (unpack into a new folder)")
    ds = training.get("data") or {}
    run = {
        "created": training.get("run_created"),
        "config": training["config"],
        "dataset": {k: ds.get(k) for k in ("path", "cases", "foreground_label", "labels")},
        "commands": list(training.get("commands") or []) + ([command] if command else []),
        "code_version": training.get("code_version"),
        "hardware": training.get("hardware"),
        "folds": {str(k): {kk: v for kk, v in folds[str(k)].items()} for k in numbered},
        "unpacked_from": {"model": card["name"], "version": card.get("version"),
                          "path": str(Path(model_dir).resolve()),
                          "date": _dt.datetime.now(_dt.timezone.utc).isoformat(
                              timespec="seconds")},
    }
    splits = [{"train": list(folds[str(k)]["train"]), "val": list(folds[str(k)]["val"])}
              for k in numbered]
    staging = run_dir.parent / f".{run_dir.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for f in model.folds:
            (staging / f"fold_{f.fold}").mkdir(parents=True)
            shutil.copyfile(f.weights, staging / f"fold_{f.fold}" / "best.pt")
        write_json(splits, staging / "splits.json")
        write_json(run, staging / "run.json")
        staging.rename(run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return run_dir
