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

from FemurSegLib import files, images
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
    return files.read_json(path, "dataset description", DatasetError)


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
        image = images.read_image(case.image_path, what="image")
        label = images.read_label(case.label_path, image, what="label map")
    except InputError as exc:
        return str(exc)
    except RuntimeError as exc:
        return f"unreadable ({str(exc).splitlines()[-1]})"
    if not np.any(sitk.GetArrayViewFromImage(label) == foreground):
        return f"foreground label {foreground} absent from the label map"
    return ""


# ----------------------------------------------------------------------------------------------
# Preprocessed cache

#: Bump when preprocessing or training targets change: the cache key includes it, so a change of
#: normalisation, resampling or target rules never silently reuses old cached arrays.
PREPROCESSING_VERSION = 2

#: Value of voxels that no loss sees (see :func:`unlabelled_end_zone`).
IGNORE = 255


@dataclass(frozen=True)
class TargetSpec:
    """What a training case's class map holds.

    ``classes``: dataset label values of the network's output channels, background first (e.g.
    femur, ilium, spine, sacrum: the neighbouring bones teach the acetabulum boundary; the
    product still outputs femurs). ``foreground_index``: the channel of the femur.
    ``end_slices``/``end_margin_mm``: the unlabelled-end rule of :func:`unlabelled_end_zone`
    (0 slices: off).
    """

    classes: tuple = (0, 1)
    foreground_index: int = 1
    end_slices: int = 0
    end_margin_mm: float = 10.0

    def key(self) -> dict:
        return {"classes": list(self.classes), "foreground_index": self.foreground_index,
                "end_slices": self.end_slices, "end_margin_mm": self.end_margin_mm}


def spec_key(spec: InputSpec, targets: Optional[TargetSpec] = None) -> str:
    key = {"input": spec.to_dict(), "version": PREPROCESSING_VERSION,
           "targets": (targets or TargetSpec()).key()}
    blob = json.dumps(key, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


@dataclass
class Preprocessed:
    name: str
    image: np.ndarray   # float32 [D, H, W], normalised, on the network grid
    target: np.ndarray  # uint8 [D, H, W], 1 = foreground (femur)
    #: uint8 [D, H, W] class map the loss sees: channel indices of TargetSpec.classes, and
    #: IGNORE where no loss applies; None means ``target`` itself (two classes)
    classes: Optional[np.ndarray] = None

    @property
    def training_target(self) -> np.ndarray:
        return self.target if self.classes is None else self.classes


def unlabelled_end_zone(femur: np.ndarray, spacing_mm: Sequence[float], slices: int,
                        margin_mm: float) -> np.ndarray:
    """Voxels beyond the posterior end of each femur's labelled slices, where annotators
    sometimes stopped labelling before the bone ends (the last one or two slices of the
    greater trochanter).

    ``femur`` is a boolean ``[k, j, i]`` array on the canonical grid (LIP: k toward posterior),
    ``spacing_mm`` the (k, j, i) voxel size. Each femur (the two halves of the i axis, split at
    the centre between the two femurs' columns) is followed for ``slices`` slices past its last
    labelled slice, within its footprint on that slice grown by ``margin_mm`` in-plane. The
    returned mask marks where the loss is ignored: a correct prediction there is never punished
    and a copied omission never taught.
    """
    femur = np.asarray(femur, dtype=bool)
    zone = np.zeros(femur.shape, dtype=bool)
    if slices <= 0 or not femur.any():
        return zone
    cols = np.nonzero(femur.any(axis=(0, 1)))[0]
    cut = femur.shape[2] // 2
    if len(cols):  # split between the two femurs: the widest gap of labelled columns
        gaps = np.diff(cols)
        if len(gaps) and gaps.max() > 1:
            g = int(np.argmax(gaps))
            cut = int(cols[g] + gaps[g] // 2 + 1)
    radius = [max(1, int(round(margin_mm / float(s)))) for s in spacing_mm[1:]]
    yy, xx = np.ogrid[-radius[0]:radius[0] + 1, -radius[1]:radius[1] + 1]
    disk = (yy / radius[0]) ** 2 + (xx / radius[1]) ** 2 <= 1.0
    for cols_sl in (slice(0, cut), slice(cut, femur.shape[2])):
        side = np.zeros_like(femur)
        side[:, :, cols_sl] = femur[:, :, cols_sl]
        zs = np.nonzero(side.any(axis=(1, 2)))[0]
        if not len(zs):
            continue
        last = int(zs.max())
        if last + 1 >= femur.shape[0]:
            continue
        foot = _dilate2d(side[last], disk)
        foot[:, :cols_sl.start] = False
        if cols_sl.stop < femur.shape[2]:
            foot[:, cols_sl.stop:] = False
        for z in range(last + 1, min(last + 1 + slices, femur.shape[0])):
            zone[z] |= foot
    return zone


def _dilate2d(mask: np.ndarray, disk: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, structure=disk)


def class_map(label: np.ndarray, targets: TargetSpec, spacing_mm: Sequence[float]
              ) -> np.ndarray:
    """The training class map of a label map on the network grid (see :class:`TargetSpec`):
    channel indices, other labels as background, IGNORE in the unlabelled-end zone where no
    other class is labelled."""
    out = np.zeros(label.shape, dtype=np.uint8)
    for index, value in enumerate(targets.classes):
        if index:
            out[label == value] = index
    femur = out == targets.foreground_index
    zone = unlabelled_end_zone(femur, spacing_mm, targets.end_slices, targets.end_margin_mm)
    out[zone & (out == 0)] = IGNORE
    return out


def preprocess_case(case: Case, spec: InputSpec, foreground: int,
                    cache_dir: Optional[Path] = None,
                    targets: Optional[TargetSpec] = None) -> Preprocessed:
    """A case on the network grid with exactly the inference preprocessing, cached as ``.npz``
    under a key of the input spec, the target rules and :data:`PREPROCESSING_VERSION`."""
    multi = targets is not None and (len(targets.classes) > 2 or targets.end_slices > 0)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / spec_key(spec, targets) / f"{case.name}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                return Preprocessed(case.name, z["image"], z["target"],
                                    z["classes"] if "classes" in z.files else None)
    image = images.read_image(case.image_path)
    label = images.read_label(case.label_path, image)
    prep = prepare(image, spec)
    if multi:  # every label resampled at once (label-safe), so classes never overlap
        grid_label = sitk.GetArrayFromImage(prepare_label(label, spec))
        spacing = tuple(reversed(prep.grid.GetSpacing()))
        classes = class_map(grid_label, targets, spacing)
        target = (classes == targets.foreground_index).astype(np.uint8)
    else:
        fg = sitk.Cast(sitk.Equal(label, foreground), sitk.sitkUInt8)
        target = sitk.GetArrayFromImage(prepare_label(fg, spec)).astype(np.uint8)
        classes = None
    if target.shape != prep.array.shape:
        raise DatasetError(f"{case.name}: label and image grids differ after preprocessing")
    if cache is not None:
        arrays = {"image": prep.array, "target": target}
        if classes is not None:
            arrays["classes"] = classes
        with files.atomic_path(cache, overwrite=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    return Preprocessed(case.name, prep.array, target, classes)
