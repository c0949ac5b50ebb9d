"""Cross-validation runs: a run folder holds everything needed to evaluate and export.

::

    RUN_DIR/
        run.json        config, dataset, command lines, code version, hardware, per-fold results
        splits.json     the stratified folds (reused when present)
        fold_K/         checkpoint.pt (every epoch), best.pt, history.csv
        fold_all/       the same for one network trained on every case (fit --fold all)
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional


from FemurSegLib.errors import FemurSegError
from FemurSegLib.files import read_json, write_json
from FemurSegLib.preprocessing import InputSpec

from .config import config_differences, foreground_index
from .data import Dataset, TargetSpec, foreground_value, load_dataset, preprocess_case
from .splits import check_splits, load_or_make_splits

log = logging.getLogger("femurseg.train")


def code_version() -> str:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, " \
           f"{torch.get_num_threads()} torch threads"


def read_run(run_dir: Path) -> dict:
    p = Path(run_dir) / "run.json"
    return read_json(p, "run") if p.is_file() else {}


def save_run(run_dir: Path, run: dict) -> None:
    write_json(run, Path(run_dir) / "run.json", overwrite=True)


def check_same_config(run: dict, cfg: dict, run_dir: Path) -> None:
    """Refuse to train ``cfg`` in a run folder that holds a run of another config (resumed or
    further folds), listing the differences (:func:`.config.config_differences`: where the
    config file lies does not count)."""
    stored = run.get("config")
    if not stored:
        return
    differences = config_differences(stored, cfg)
    if differences:
        raise FemurSegError(
            f"{run_dir} holds a run of config {stored.get('name')!r} that differs from the given "
            f"config {cfg.get('name')!r} (stored -> given): {'; '.join(differences)}. Use the "
            "run's own config, or another run folder")


def target_spec(cfg: dict, dataset: Dataset) -> TargetSpec:
    """The training class map's rules for ``cfg`` on ``dataset`` (class names to label values)."""
    values = [0]
    for name in cfg.get("classes") or [cfg.get("foreground") or "femur"]:
        values.append(foreground_value({"labels": dataset.labels}, str(name)))
    ends = cfg.get("unlabelled_ends") or {}
    return TargetSpec(classes=tuple(values), foreground_index=foreground_index(cfg),
                      end_slices=int(ends.get("slices", 0)),
                      end_margin_mm=float(ends.get("margin_mm", 10.0)))


def prepare_run(cfg: dict, data_dir: Optional[str], run_dir: Path, cache_dir: Optional[Path]):
    """Load and validate the dataset, preprocess (cached) and make or reuse the splits."""
    data_dir = data_dir or cfg.get("dataset")
    if not data_dir:
        raise FemurSegError("no dataset: pass --data DATASET_DIR (nnU-Net raw layout)")
    dataset = load_dataset(data_dir, cfg.get("foreground"))
    spec = InputSpec.from_dict(cfg["input"])
    targets = target_spec(cfg, dataset)
    cache = Path(cache_dir) if cache_dir else Path(run_dir) / "cache"
    cases = {}
    for c in dataset.cases:
        cases[c.name] = preprocess_case(c, spec, dataset.foreground_label, cache, targets)
    names = [c.name for c in dataset.cases]
    strata = [float(cases[n].target.sum()) for n in names]  # femur volume on the network grid
    splits = load_or_make_splits(Path(run_dir) / "splits.json", names, strata,
                                 int(cfg["folds"]), int(cfg["seed"]))
    check_splits(splits, names)
    return dataset, cases, splits


def run_cv(cfg: dict, run_dir: Path, *, data_dir: Optional[str] = None,
           folds: Optional[List[int]] = None, resume: bool = False,
           max_epochs: Optional[int] = None, device: str = "cpu", progress: bool = True,
           cache_dir: Optional[Path] = None, command: Optional[str] = None,
           time_budget: Optional[float] = None) -> dict:
    """Train ``folds`` (all by default) one after the other; ``time_budget`` (seconds, all
    folds together, counted from this call) is shared out as it goes: each fold gets an equal
    share of what is left when it starts (see :func:`.train.fit`), so the time spent preparing
    the data and a fold that passed its share are taken from the folds after it."""
    from .distributed import barrier, world
    from .train import ALL_CASES, fit

    started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_same_config(read_run(run_dir), cfg, run_dir)  # before the data is read and cached
    main = world()[0] == 0
    if main:  # rank 0 validates, caches and splits first; the other ranks then read the results
        dataset, cases, splits = prepare_run(cfg, data_dir, run_dir, cache_dir)
    barrier()
    if not main:
        dataset, cases, splits = prepare_run(cfg, data_dir, run_dir, cache_dir)
    run = read_run(run_dir)
    run.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    run["config"] = cfg
    run["dataset"] = {"path": str(Path(dataset.root).resolve()), "cases": len(dataset.cases),
                      "foreground_label": dataset.foreground_label, "labels": dataset.labels}
    run.setdefault("commands", []).append(
        command or " ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
    run["code_version"] = code_version()
    run["hardware"] = hardware(device)
    if world()[1] > 1:
        run["hardware"] += f"; {world()[1]} processes with DistributedDataParallel"
    run.setdefault("folds", {})
    if main:
        save_run(run_dir, run)
    if int(cfg.get("num_workers") or 0) > 0 and main:
        log.warning("num_workers is ignored: patches are sampled in the training process, "
                    "which keeps a resumed run identical to an uninterrupted one")
    todo = folds if folds is not None else list(range(len(splits)))
    for i, k in enumerate(todo):
        if k == ALL_CASES:  # one network on every case, nothing held out
            split = {"train": sorted(cases), "val": []}
        elif not 0 <= int(k) < len(splits):
            raise FemurSegError(f"fold {k} does not exist (the run has {len(splits)} folds)")
        else:
            split = splits[k]
        log.info("fold %s: %d training, %d validation cases", k, len(split["train"]),
                 len(split["val"]))
        result = fit(cfg, k, [cases[n] for n in split["train"]], [cases[n] for n in split["val"]],
                     run_dir, resume=resume, max_epochs=max_epochs, device=device,
                     progress=progress,
                     time_budget=None if time_budget is None else max(
                         0.0, time_budget - (time.perf_counter() - started)) / (len(todo) - i))
        if not main:
            continue
        run = read_run(run_dir)
        run["folds"][str(k)] = {"epochs": result.epochs, "best_epoch": result.best_epoch,
                                "best_val_dsc": result.best_metric,
                                "stopped_early": result.stopped_early,
                                "seconds": round(result.seconds, 1),
                                "train": split["train"], "val": split["val"]}
        save_run(run_dir, run)
    return read_run(run_dir)
