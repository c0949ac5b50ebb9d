"""Datasets in nnU-Net raw layout, validated up front, preprocessed once and cached.

A dataset folder holds ``imagesTr/<case>_0000.<ext>``, ``labelsTr/<case>.<ext>`` and
``dataset.json`` (``labels``: name -> value). Every problem (missing label file, grids that
differ, unreadable file, foreground label absent) is reported with the case name before any
training starts (:func:`load_dataset` raises one :class:`DatasetError` listing them all).

Cases are preprocessed with exactly the inference code (:func:`FemurSegLib.preprocessing.prepare`
and :func:`prepare_label`) and cached as ``.npz`` keyed by the input spec.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from FemurSegLib import io
from FemurSegLib.errors import FemurSegError, InputError
from FemurSegLib.preprocessing import InputSpec, prepare, prepare_label


class DatasetError(FemurSegError):
    """Problems found in a training dataset (one line per problem, joined with '; ')."""


@dataclass
class Case:
    name: str
    image_path: Path
    label_path: Path


@dataclass
class Dataset:
    root: Path
    cases: List[Case]
    labels: Dict[str, int]
    foreground_label: int

    def case(self, name: str) -> Case:
        for c in self.cases:
            if c.name == name:
                return c
        raise KeyError(name)


def read_dataset_json(root: Path) -> dict:
    path = root / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{root} is not a dataset in nnU-Net raw layout (no dataset.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None


def foreground_value(meta: dict, foreground: Optional[str]) -> int:
    labels = {str(k).lower(): int(v) for k, v in (meta.get("labels") or {}).items()}
    if foreground is None:
        foreground = "femur"
    if foreground.isdigit():
        return int(foreground)
    if foreground.lower() not in labels:
        raise DatasetError(f"dataset has no label named {foreground!r} "
                           f"(labels: {', '.join(labels) or 'none'})")
    return labels[foreground.lower()]


def find_cases(root: Path, ending: str) -> List[Case]:
    images = sorted((root / "imagesTr").glob(f"*_0000{ending}"))
    cases = []
    for img in images:
        name = img.name[: -len(f"_0000{ending}")]
        cases.append(Case(name, img, root / "labelsTr" / f"{name}{ending}"))
    return cases


def load_dataset(root, foreground: Optional[str] = None, *, check: bool = True,
                 cases: Optional[Sequence[str]] = None) -> Dataset:
    """Read and (with ``check``) validate every case's files before any training."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    meta = read_dataset_json(root)
    ending = meta.get("file_ending", ".nii.gz")
    fg = foreground_value(meta, foreground)
    found = find_cases(root, ending)
    if cases is not None:
        wanted = set(cases)
        found = [c for c in found if c.name in wanted]
    if not found:
        raise DatasetError(f"no training images ({root}/imagesTr/*_0000{ending})")
    if check:
        problems = []
        for c in found:
            problem = check_case(c, fg)
            if problem:
                problems.append(f"{c.name}: {problem}")
        if problems:
            raise DatasetError(f"{len(problems)} case(s) unusable: " + "; ".join(problems))
    labels = {str(k): int(v) for k, v in (meta.get("labels") or {}).items()}
    return Dataset(root=root, cases=found, labels=labels, foreground_label=fg)


def check_case(case: Case, foreground: int) -> str:
    """Empty string if the case is usable, else what is wrong with it."""
    if not case.label_path.is_file():
        return f"label file missing ({case.label_path.name})"
    try:
        image = io.read_image(case.image_path, what="image")
        label = io.read_label(case.label_path, image, what="label map")
    except InputError as exc:
        return str(exc)
    except RuntimeError as exc:
        return f"unreadable ({str(exc).splitlines()[-1]})"
    if not np.any(sitk.GetArrayViewFromImage(label) == foreground):
        return f"foreground label {foreground} absent from the label map"
    return ""


# ----------------------------------------------------------------------------------------------
# Preprocessed cache


def spec_key(spec: InputSpec) -> str:
    blob = json.dumps(spec.to_dict(), sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


@dataclass
class Preprocessed:
    name: str
    image: np.ndarray   # float32 [D, H, W], normalised, on the network grid
    target: np.ndarray  # uint8 [D, H, W], 1 = foreground


def preprocess_case(case: Case, spec: InputSpec, foreground: int,
                    cache_dir: Optional[Path] = None) -> Preprocessed:
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / spec_key(spec) / f"{case.name}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                return Preprocessed(case.name, z["image"], z["target"])
    image = io.read_image(case.image_path)
    label = io.read_label(case.label_path, image)
    fg = sitk.Cast(sitk.Equal(label, foreground), sitk.sitkUInt8)
    prep = prepare(image, spec)
    target = sitk.GetArrayFromImage(prepare_label(fg, spec)).astype(np.uint8)
    if target.shape != prep.array.shape:
        raise DatasetError(f"{case.name}: label and image grids differ after preprocessing")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".part.npz")
        np.savez(tmp, image=prep.array, target=target)
        tmp.replace(cache)
    return Preprocessed(case.name, prep.array, target)
