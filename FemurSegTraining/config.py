"""Training configurations: one JSON file per configuration (``FemurSegTraining/configs/``).

The paper's Table 2 rows are ``paper_3d_f32l4`` ... ``paper_2d_f64l3``; anything else (other
losses, augmentation, capacities, resolutions) is a separately named config and never changes
the paper's ones. A config names every hyper-parameter; unknown keys are an error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

from FemurSegLib.errors import FemurSegError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DEFAULTS = {
    "name": None,
    "description": "",
    "paper_row": None,            # e.g. "3D F32L4" for the Table 2 rows
    "dataset": None,              # default dataset folder (overridden by --data)
    "foreground": "femur",        # label name (or value) of the foreground
    "architecture": None,
    "input": {"orientation": "LIP", "spacing": None,
              "normalisation": {"method": "percentile", "percentiles": [0.5, 99.5]}},
    "patch_size": None,           # 3D: [D, H, W] training patch; 2D: input edge length
    "batch_size": 1,
    "loss": "weighted_ce",
    "optimizer": {"name": "adam", "lr": 5e-5, "weight_decay": 0.0},
    # None: constant learning rate (the paper). {"constant_epochs": C, "decay_epochs": D}: the
    # optimizer's lr for epochs < C, then a cosine decay over D epochs (see lr_at_epoch)
    "lr_schedule": None,
    "augment": {"flip_lr": True, "intensity": False, "synthetic_contrast": False},
    "foreground_oversample": 0.33,
    "patches_per_epoch": None,    # None: one patch per training case
    "max_epochs": 200,
    "min_epochs": 30,
    "patience": 10,
    "min_delta": 1e-4,
    "folds": 4,
    "seed": 0,
    "inference": {"patch_size": None, "overlap": 0.5, "tta_flip_axes": [[2]]},
    "postprocess": "largest_per_femur",
    "num_workers": 0,
}


def load_config(name_or_path: str, overrides: Optional[dict] = None,
                plan: Optional[str] = None) -> dict:
    """A config by file path or by name in ``configs/``, completed with defaults and checked.

    ``plan`` (a file written by ``femurseg-train plan``) fills the input spacing, patch size and
    pooling where the config leaves them null (:func:`FemurSegTraining.plan.apply_plan`).
    """
    p = Path(name_or_path)
    if not p.is_file():
        p = CONFIG_DIR / f"{name_or_path}.json"
    if not p.is_file():
        names = sorted(q.stem for q in CONFIG_DIR.glob("*.json"))
        raise FemurSegError(f"unknown config {name_or_path!r} (known: {', '.join(names)})")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise FemurSegError(f"config {p} is not valid JSON: {exc}") from None
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise FemurSegError(f"config {p.name}: unknown keys {', '.join(sorted(unknown))}")
    cfg = copy.deepcopy(DEFAULTS)
    for k, v in raw.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    for k, v in (overrides or {}).items():
        cfg[k] = v
    cfg["name"] = cfg["name"] or p.stem
    if not cfg["architecture"]:
        raise FemurSegError(f"config {p.name} has no architecture")
    if cfg["architecture"].get("type") not in ("UNet3D", "UNet2D"):
        raise FemurSegError(f"config {p.name}: architecture type must be UNet3D or UNet2D")
    if plan is not None:
        from .plan import apply_plan, read_plan

        cfg = apply_plan(cfg, read_plan(plan))
        cfg["plan_file"] = str(plan)
    check_lr_schedule(cfg.get("lr_schedule"), p.name)
    if cfg["patch_size"] is None:
        raise FemurSegError(f"config {p.name} has no patch_size (set it, or pass --plan PLAN.json)")
    cfg["config_file"] = str(p)
    return cfg


def check_lr_schedule(schedule, where: str = "config") -> None:
    if schedule is None:
        return
    if (not isinstance(schedule, dict) or set(schedule) != {"constant_epochs", "decay_epochs"}
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in schedule.values())):
        raise FemurSegError(f"{where}: lr_schedule must be null or "
                            '{"constant_epochs": C, "decay_epochs": D} with integers >= 0')


def lr_at_epoch(cfg: dict, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): the optimizer's ``lr`` while ``epoch`` < C, then
    ``lr * (1 + cos(pi * (epoch - C + 1) / (D + 1))) / 2`` for the D decay epochs, and the last
    decayed value after them. A pure function of the epoch, so resumed runs stay exact."""
    import math

    lr = float(cfg["optimizer"]["lr"])
    schedule = cfg.get("lr_schedule")
    if not schedule:
        return lr
    c, d = int(schedule["constant_epochs"]), int(schedule["decay_epochs"])
    if epoch < c or d == 0:
        return lr
    k = min(epoch - c + 1, d)
    return lr * 0.5 * (1.0 + math.cos(math.pi * k / (d + 1)))


def is_2d(cfg: dict) -> bool:
    return cfg["architecture"]["type"] == "UNet2D"
