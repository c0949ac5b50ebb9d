"""Dataset fingerprint and a plan (spacing, patch size, pooling, normalisation) a person can edit.

``femurseg-train plan DATASET -o PLAN.json`` reads every case once and writes::

    {"dataset": ..., "fingerprint": {spacings, sizes, intensity percentiles, foreground volume},
     "plan": {"orientation", "spacing", "patch_size", "pooling", "normalisation", ...},
     "notes": [how each value was chosen]}

A config uses the plan with ``--plan PLAN.json``: the plan fills ``input.spacing``,
``patch_size`` and ``architecture.pooling`` where the config leaves them null (see
:func:`apply_plan`); values a config sets are never changed.

The rules are deliberately simple (nnU-Net-like): the target spacing is the median spacing; an
axis is pooled at a level only while it is at most twice as coarse as the finest axis; the patch
keeps at most ``patch_voxels`` voxels, is about equally long in millimetres on every axis, never
larger than the median image, and is a multiple of the pooling divisor.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from FemurSegLib import files, images
from FemurSegLib.errors import FemurSegError
from FemurSegLib.preprocessing import reorient

from .data import load_dataset

# spacing axes are (i, j, k) as InputSpec uses; sizes, pooling and patches are in array order
# [k, j, i]
DEFAULT_PATCH_VOXELS = 16 * 160 * 160
DEFAULT_LEVELS = 5
PERCENTILES = (0.5, 1.0, 50.0, 99.0, 99.5)


def _stats(values: Sequence[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"median": float(np.median(a)), "min": float(a.min()), "max": float(a.max())}


def _axis_stats(rows: Sequence[Sequence[float]]) -> dict:
    a = np.asarray(rows, dtype=float)
    return {"median": [float(v) for v in np.median(a, axis=0)],
            "min": [float(v) for v in a.min(axis=0)], "max": [float(v) for v in a.max(axis=0)]}


def choose_orientation(coarsest_axes: Sequence[str]) -> str:
    """``LIP`` (slices stacked front to back) unless most cases are thickest head to foot.

    Both choices keep array axis i (the last) left-right, which the flip augmentation and
    test-time flips assume. ``coarsest_axes`` holds "LR", "AP" or "SI" per case.
    """
    votes = {a: list(coarsest_axes).count(a) for a in ("LR", "AP", "SI")}
    return "LPI" if votes["SI"] > max(votes["AP"], votes["LR"]) else "LIP"


def _coarsest_anatomical_axis(image: sitk.Image) -> str:
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    axis = int(np.argmax(image.GetSpacing()))
    return ("LR", "AP", "SI")[int(np.argmax(np.abs(direction[:, axis])))]


def fingerprint(dataset_dir, foreground: Optional[str] = None, orientation: str = "LIP") -> dict:
    """Spacings and sizes (on the canonical ``orientation``), intensities, foreground volumes."""
    ds = load_dataset(dataset_dir, foreground)
    spacings, sizes, coarsest, fg_ml, pcts, fg_means, fg_sds = [], [], [], [], [], [], []
    for case in ds.cases:
        image = images.read_image(case.image_path)
        label = images.read_label(case.label_path, image)
        coarsest.append(_coarsest_anatomical_axis(image))
        canon = reorient(image, orientation)
        spacings.append(canon.GetSpacing())
        sizes.append(tuple(reversed(canon.GetSize())))
        arr = sitk.GetArrayViewFromImage(image).astype(np.float32)
        fg = sitk.GetArrayViewFromImage(label) == ds.foreground_label
        fg_ml.append(float(fg.sum()) * float(np.prod(image.GetSpacing())) / 1000.0)
        pcts.append(np.percentile(arr, PERCENTILES))
        fg_means.append(float(arr[fg].mean()))
        fg_sds.append(float(arr[fg].std()))
    p = np.median(np.asarray(pcts), axis=0)
    return {
        "cases": len(ds.cases),
        "foreground_label": ds.foreground_label,
        "orientation": orientation,
        "spacing_ijk_mm": _axis_stats(spacings),
        "size_kji": _axis_stats(sizes),
        "coarsest_axis": {a: coarsest.count(a) for a in ("LR", "AP", "SI") if a in coarsest},
        "intensity_percentiles_median": {f"p{q:g}": float(v) for q, v in zip(PERCENTILES, p)},
        "foreground_intensity": {"mean": _stats(fg_means), "sd": _stats(fg_sds)},
        "foreground_volume_ml": _stats(fg_ml),
    }


def plan_pooling(spacing_kji: Sequence[float], levels: int) -> List[List[int]]:
    """Pooling factors per level transition, array order: pool an axis while it is at most twice
    as coarse as the finest axis (so 5 mm slices are pooled only once pixels are comparable)."""
    current = [float(s) for s in spacing_kji]
    pools = []
    for _ in range(levels - 1):
        finest = min(current)
        p = [2 if s <= 2 * finest + 1e-6 else 1 for s in current]
        current = [s * f for s, f in zip(current, p)]
        pools.append(p)
    return pools


def divisor_of(pooling: Sequence[Sequence[int]]) -> List[int]:
    d = [1, 1, 1]
    for p in pooling:
        d = [a * int(b) for a, b in zip(d, p)]
    return d


def plan_patch(median_shape: Sequence[int], spacing_kji: Sequence[float],
               divisor: Sequence[int], max_voxels: int = DEFAULT_PATCH_VOXELS) -> List[int]:
    """A patch of at most ``max_voxels``: shrink the physically longest axis until it fits, then
    round each axis down to a multiple of ``divisor`` (at least one divisor)."""
    shape = [int(max(s, d)) for s, d in zip(median_shape, divisor)]
    sp = [float(s) for s in spacing_kji]
    while int(np.prod(shape)) > max_voxels:
        extents = [n * s if n > d else -1.0 for n, s, d in zip(shape, sp, divisor)]
        axis = int(np.argmax(extents))
        if extents[axis] < 0:
            break
        shape[axis] -= 1
    return [max(d, (n // d) * d) for n, d in zip(shape, divisor)]


def make_plan(fp: dict, *, levels: int = DEFAULT_LEVELS,
              patch_voxels: int = DEFAULT_PATCH_VOXELS) -> dict:
    """The plan section from a fingerprint (see the module docstring for the rules)."""
    spacing_ijk = fp["spacing_ijk_mm"]["median"]
    spacing_kji = list(reversed(spacing_ijk))
    # the median shape at the target spacing (the same as at the own spacing for uniform data)
    median_shape = [int(round(n)) for n in fp["size_kji"]["median"]]
    pooling = plan_pooling(spacing_kji, levels)
    patch = plan_patch(median_shape, spacing_kji, divisor_of(pooling), patch_voxels)
    orientation = choose_orientation(
        [a for a, n in fp.get("coarsest_axis", {}).items() for _ in range(n)])
    return {
        "orientation": orientation,
        "spacing": [round(s, 4) for s in spacing_ijk],
        "median_shape": median_shape,
        "patch_size": patch,
        "pooling": pooling,
        "pooling_levels": levels,
        "normalisation": {"method": "percentile", "percentiles": [0.5, 99.5]},
    }


NOTES = [
    "spacing is (i, j, k) in mm on the canonical orientation; median_shape, patch_size and "
    "pooling are in array order [slice k, row j, column i]",
    "spacing: the median voxel spacing of the dataset",
    "pooling: one entry per level transition for up to pooling_levels levels; a network with "
    "fewer levels uses the first entries. An axis is pooled while it is at most twice as coarse "
    "as the finest axis",
    "patch_size: at most the voxel budget, about equally long in mm per axis, a multiple of the "
    "pooling divisor, never larger than the median image",
    "normalisation: clip to the 0.5/99.5 percentiles of each image and scale to [0, 1] "
    "(MR intensities have no absolute scale)",
    "a config uses this plan with --plan: only values the config leaves null are filled",
]


def write_plan(dataset_dir, out, *, foreground: Optional[str] = None,
               levels: int = DEFAULT_LEVELS, patch_voxels: int = DEFAULT_PATCH_VOXELS,
               overwrite: bool = False) -> dict:
    """Fingerprint ``dataset_dir`` and write the plan JSON to ``out``; return it."""
    files.check_writable(out, overwrite)
    fp = fingerprint(dataset_dir, foreground)
    doc = {"dataset": str(Path(dataset_dir).resolve()), "fingerprint": fp,
           "plan": make_plan(fp, levels=levels, patch_voxels=patch_voxels), "notes": NOTES}
    files.write_json(doc, out, overwrite=overwrite)
    return doc


def read_plan(path) -> dict:
    """The ``plan`` section of a plan file (a bare plan section is accepted too)."""
    p = Path(path)
    if not p.is_file():
        raise FemurSegError(f"plan not found: {p}")
    doc = files.read_json(p, "plan")
    plan = doc.get("plan", doc)
    if not isinstance(plan, dict) or not {"spacing", "patch_size", "pooling"} <= set(plan):
        raise FemurSegError(f"plan {p} lacks spacing, patch_size or pooling")
    return plan


def apply_plan(cfg: dict, plan: Dict) -> dict:
    """A copy of ``cfg`` with the plan filling ``input.spacing``, ``input.normalisation``,
    ``patch_size`` and (3D) ``architecture.pooling`` where they are null.

    For a 2D network a null ``patch_size`` becomes the smallest valid input whose output tile
    is at least a third of the larger in-plane size (nine tiles then cover a slice).
    """
    from FemurSegLib.networks import build_network

    cfg = copy.deepcopy(cfg)
    used = {}
    inp = cfg.setdefault("input", {})
    if inp.get("spacing") is None:
        inp["spacing"] = list(plan["spacing"])
        used["spacing"] = inp["spacing"]
        if plan.get("orientation"):
            inp["orientation"] = plan["orientation"]
    if inp.get("normalisation") is None and plan.get("normalisation"):
        inp["normalisation"] = dict(plan["normalisation"])
        used["normalisation"] = inp["normalisation"]
    arch = cfg["architecture"]
    if arch.get("type") == "UNet3D":
        levels = int(arch.get("levels", 4))
        if arch.get("pooling") is None:
            if len(plan["pooling"]) < levels - 1:
                raise FemurSegError(f"the plan has pooling for {len(plan['pooling']) + 1} levels, "
                                    f"the config needs {levels}")
            arch["pooling"] = [list(p) for p in plan["pooling"][: levels - 1]]
            used["pooling"] = arch["pooling"]
        if cfg.get("patch_size") is None:
            divisor = divisor_of(arch["pooling"])
            cfg["patch_size"] = [max(d, (int(n) // d) * d)
                                 for n, d in zip(plan["patch_size"], divisor)]
            used["patch_size"] = cfg["patch_size"]
    elif cfg.get("patch_size") is None:
        shape = plan.get("median_shape") or plan["patch_size"]
        net = build_network(arch)
        cfg["patch_size"] = int(net.valid_input_size(int(np.ceil(max(shape[1:]) / 3.0))))
        used["patch_size"] = cfg["patch_size"]
    cfg["plan_used"] = used
    return cfg
