"""Training configurations: one JSON file per configuration (``FemurSegTraining/configs/``).

The paper's Table 2 rows are ``paper_3d_f32l4`` ... ``paper_2d_f64l3``; anything else (other
losses, augmentation, capacities, resolutions) is a separately named config and never changes
the paper's ones. A config names every hyper-parameter; unknown keys are an error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import List, Optional

from FemurSegLib.errors import FemurSegError
from FemurSegLib.files import read_json

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: inference settings a config may choose (the rest of the card's inference section follows
#: from the network, the evaluation and ``postprocess``; see FemurSegTraining.cards)
CONFIG_INFERENCE_KEYS = {"patch_size", "overlap", "tta_flip_axes", "batch_size", "tta_on_cpu",
                         "tta_on_gpu", "roi", "fill_slice_gaps"}

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
    # dataset label names of the output channels after background, e.g. ["femur", "ilium",
    # "spine", "sacrum"]; None: the foreground alone (two classes)
    "classes": None,
    # {"slices": S, "margin_mm": M}: ignore the S slices past each femur's last labelled
    # (posterior) slice within M mm of its footprint (FemurSegTraining.data.unlabelled_end_zone)
    "unlabelled_ends": None,
    # which epoch's weights a fold keeps: "best" validation DSC (the paper's early stopping) or
    # "last" (no choice on the validation cases: unbiased cross-validation)
    "select": "best",
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
    raw = read_json(p, "config")
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
    if cfg["architecture"].get("type") not in ("UNet3D", "UNet2D", "UNet25D"):
        raise FemurSegError(f"config {p.name}: architecture type must be UNet3D, UNet2D or "
                            "UNet25D")
    check_sections(cfg, f"config {p.name}")
    robust = (cfg.get("augment") or {}).get("robust_intensity", False)
    if not (isinstance(robust, bool) or (isinstance(robust, (int, float)) and 0 <= robust <= 1)):
        raise FemurSegError(f"config {p.name}: augment.robust_intensity must be true, false or a "
                            f"probability in [0, 1], not {robust!r}")
    try:
        from .augment import robust_options

        robust_options(cfg.get("augment") or {})
    except ValueError as e:
        raise FemurSegError(f"config {p.name}: {e}") from None
    if cfg["select"] not in ("best", "last"):
        raise FemurSegError(f"config {p.name}: select must be \"best\" or \"last\"")
    classes = cfg["classes"]
    if classes is not None and (not isinstance(classes, list) or not classes
                                or len(classes) + 1 != int(cfg["architecture"].get("num_classes", 2))):
        raise FemurSegError(f"config {p.name}: classes must list num_classes - 1 label names")
    if plan is not None:
        from .plan import apply_plan, read_plan

        cfg = apply_plan(cfg, read_plan(plan))
        cfg["plan_file"] = str(plan)
    check_lr_schedule(cfg.get("lr_schedule"), p.name)
    bad = set(cfg.get("inference") or {}) - CONFIG_INFERENCE_KEYS
    if bad:
        raise FemurSegError(f"config {p.name}: inference keys {', '.join(sorted(bad))} cannot "
                            f"be set (allowed: {', '.join(sorted(CONFIG_INFERENCE_KEYS))})")
    if cfg["patch_size"] is None:
        raise FemurSegError(f"config {p.name} has no patch_size (set it, or pass --plan PLAN.json)")
    cfg["config_file"] = str(p)
    return cfg


#: keys that say where a config was read from, not what it trains: a run started from another
#: checkout (another folder) resumes all the same
PROVENANCE_KEYS = ("config_file", "plan_file")
_ABSENT = object()


def config_differences(stored: dict, given: dict) -> List[str]:
    """What differs between a run's stored config and the ``given`` one, one item per setting
    (``KEY: STORED -> GIVEN``, nested keys joined by dots), without :data:`PROVENANCE_KEYS`.
    A key either config lacks counts as its default (:data:`DEFAULTS`, merged as
    :func:`load_config` merges them), so that a setting added to the code later does not make
    older runs differ."""
    out: List[str] = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}{k}.")
        elif a != b:
            show = lambda v: "(absent)" if v is _ABSENT else json.dumps(v)  # noqa: E731
            out.append(f"{prefix[:-1]}: {show(a)} -> {show(b)}")

    def completed(cfg: dict) -> dict:  # the defaults under it, merged as load_config does
        out = {k: v for k, v in cfg.items() if k not in PROVENANCE_KEYS}
        for k, v in DEFAULTS.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = {**v, **out[k]}
            else:
                out.setdefault(k, v)
        return out

    walk(completed(stored), completed(given), "")
    return out


def check_sections(cfg: dict, where: str) -> None:
    """Validate what the model card will be built from, when the config is read (not after the
    first epoch): the architecture, the input section (normalisation percentiles included) and
    the inference settings with the post-processing rule, with the card's own checks
    (:mod:`FemurSegLib.specs`). One line naming the config and the key on anything wrong."""
    from FemurSegLib.specs import ArchitectureSpec, InferenceSpec, InputSpec

    ArchitectureSpec.from_dict(cfg["architecture"], f"{where}: architecture")
    InputSpec.from_dict(cfg["input"], f"{where}: input")
    settings = cfg.get("inference") or {}
    if not isinstance(settings, dict):
        raise FemurSegError(f"{where}: inference must be a JSON object")
    InferenceSpec.from_dict({**{k: v for k, v in settings.items() if k in CONFIG_INFERENCE_KEYS},
                             "postprocess": cfg.get("postprocess")}, f"{where}: inference")


def check_lr_schedule(schedule, where: str = "config") -> None:
    if schedule is None:
        return
    ok = isinstance(schedule, dict) and (
        (set(schedule) == {"constant_epochs", "decay_epochs"}
         and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                 for v in schedule.values()))
        or (set(schedule) == {"poly_exponent"} and isinstance(schedule["poly_exponent"], (int, float))
            and not isinstance(schedule["poly_exponent"], bool) and schedule["poly_exponent"] > 0))
    if not ok:
        raise FemurSegError(f"{where}: lr_schedule must be null, "
                            '{"constant_epochs": C, "decay_epochs": D} with integers >= 0, or '
                            '{"poly_exponent": E} with E > 0')


def lr_at_epoch(cfg: dict, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based), a pure function of the epoch so that resumed runs
    stay exact.

    Cosine: the optimizer's ``lr`` while ``epoch`` < C, then
    ``lr * (1 + cos(pi * (epoch - C + 1) / (D + 1))) / 2`` for the D decay epochs, and the last
    decayed value after them. Poly (nnU-Net): ``lr * (1 - epoch / max_epochs) ** E``.
    """
    import math

    lr = float(cfg["optimizer"]["lr"])
    schedule = cfg.get("lr_schedule")
    if not schedule:
        return lr
    if "poly_exponent" in schedule:
        total = max(int(cfg["max_epochs"]), 1)
        return lr * max(0.0, 1.0 - min(epoch, total) / total) ** float(schedule["poly_exponent"])
    c, d = int(schedule["constant_epochs"]), int(schedule["decay_epochs"])
    if epoch < c or d == 0:
        return lr
    k = min(epoch - c + 1, d)
    return lr * 0.5 * (1.0 + math.cos(math.pi * k / (d + 1)))


def is_2d(cfg: dict) -> bool:
    """The paper's unpadded 2D U-Net (nine tiles per slice)."""
    return cfg["architecture"]["type"] == "UNet2D"


def is_25d(cfg: dict) -> bool:
    """A padded 2.5D U-Net (adjacent slices in, whole slices predicted)."""
    return cfg["architecture"]["type"] == "UNet25D"


def foreground_index(cfg: dict) -> int:
    """Output channel of the femur: 1 (two classes), or 1 + its place in ``classes``."""
    classes = cfg.get("classes")
    if not classes:
        return 1
    fg = str(cfg.get("foreground") or "femur").lower()
    names = [str(c).lower() for c in classes]
    if fg not in names:
        raise FemurSegError(f"config {cfg.get('name')}: foreground {fg!r} is not in classes "
                            f"{classes}")
    return 1 + names.index(fg)
