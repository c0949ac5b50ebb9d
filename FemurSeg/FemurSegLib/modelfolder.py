"""The model-folder contract: a trained model is a folder that fully describes itself.

::

    MODEL_DIR/
        model.json     the model card (REQUIRED_FIELDS; its input and inference sections are
                       FemurSegLib.specs; README "Model folders" describes every field)
        fold_0.pt      PyTorch state dict (training, and the inference fallback)
        fold_0.onnx    the inference graph (input "image" [N, C, D, H, W] -> "probabilities")
        fold_1.pt ...

Every weights file's SHA-256 is on the card, and :func:`load_model` refuses a folder whose files
are missing, truncated or altered. Bundled models live in ``Resources/Models/<name>/``; models
installed by the user in ``$FEMURSEG_MODELS`` or ``~/.femurseg/models/<name>/``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .errors import ModelError
from .files import read_json
from .specs import ArchitectureSpec, InferenceSpec, InputSpec
from .segments import SegmentSpec, femur_segments

CARD_NAME = "model.json"
FORMAT_VERSION = 1
#: name of the model used when none is given
DEFAULT_MODEL = "femur-t1-coronal"

REQUIRED_FIELDS = ("format_version", "name", "version", "architecture", "input", "inference",
                   "labels", "folds")


def sha256_of(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@dataclass
class FoldFiles:
    fold: int
    weights: Optional[Path]
    onnx: Optional[Path]


@dataclass
class Model:
    """A verified model folder with its typed ``input`` and ``inference`` settings."""

    path: Path
    card: dict
    folds: List[FoldFiles]
    input: InputSpec = field(default_factory=InputSpec)
    inference: InferenceSpec = field(default_factory=InferenceSpec)

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def architecture(self) -> dict:
        return dict(self.card["architecture"])

    @property
    def threshold(self) -> float:
        """Probability threshold of the binary mask: the card's PR-optimal point, else 0.5."""
        return self.inference.mask_threshold

    @property
    def plausibility(self) -> Optional[dict]:
        """The card's ``plausibility`` section (training volumes and intensity fingerprint;
        see :mod:`FemurSegLib.plausibility`), or None."""
        return self.card.get("plausibility")

    @property
    def foreground_segments(self) -> List[SegmentSpec]:
        return [SegmentSpec.from_dict(d) for d in self.card["labels"] if int(d["value"]) != 0]

    def segments(self, split: bool) -> List[SegmentSpec]:
        """Output segments: the card's femur label, or right/left femur when split."""
        fg = self.foreground_segments
        color = fg[0].color if fg else None
        return femur_segments(split, color) if color else femur_segments(split)

    @classmethod
    def from_card(cls, card: dict, path: Path, folds: Optional[List[FoldFiles]] = None,
                  where: str = "model card") -> "Model":
        """A model from a card (validated: :func:`card_specs`), e.g. one training builds."""
        spec_in, spec_inf = card_specs(card, where)
        return cls(path=Path(path), card=card, folds=list(folds or []), input=spec_in,
                   inference=spec_inf)


def card_specs(card: dict, where: str = "model card"):
    """The card's ``input`` and ``inference`` sections as validated specs (:class:`ModelError`
    with the card and the field on anything wrong); its ``architecture`` is checked too
    (:class:`~FemurSegLib.specs.ArchitectureSpec`: a missing key is named here, not a
    ``KeyError`` when the network is built)."""
    ArchitectureSpec.from_dict(card.get("architecture"), f"{where}: architecture")
    return (InputSpec.from_dict(card["input"], f"{where}: input"),
            InferenceSpec.from_dict(card.get("inference") or {}, f"{where}: inference"))


@dataclass
class ModelInfo:
    name: str
    path: Path
    card: dict
    source: str  # "bundled" or "installed"


# ----------------------------------------------------------------------------------------------


def read_card(model_dir: os.PathLike) -> dict:
    """The card of a model folder, checked: required fields, format version, folds, and the
    ``input`` and ``inference`` sections (:func:`card_specs`)."""
    d = Path(model_dir)
    card_path = d / CARD_NAME
    if not d.is_dir():
        raise ModelError(f"model folder not found: {d}")
    if not card_path.is_file():
        raise ModelError(f"not a model folder (no {CARD_NAME}): {d}")
    card = read_json(card_path, "model card", ModelError)
    missing = [k for k in REQUIRED_FIELDS if k not in card]
    if missing:
        raise ModelError(f"model card {card_path} lacks {', '.join(missing)}")
    if int(card["format_version"]) > FORMAT_VERSION:
        raise ModelError(f"model card {card_path} has format {card['format_version']}; this "
                         f"FemurSeg reads format {FORMAT_VERSION} (update FemurSeg)")
    if not card["folds"]:
        raise ModelError(f"model card {card_path} lists no folds")
    card_specs(card, f"model card {card_path}")
    if "plausibility" in card:
        from .plausibility import validate_section

        try:
            validate_section(card["plausibility"])
        except ValueError as exc:
            raise ModelError(f"model card {card_path}: invalid plausibility section: "
                             f"{exc}") from None
    return card


def _verified(model_dir: Path, fold: dict, key: str, required: bool) -> Optional[Path]:
    name = fold.get(key)
    if not name:
        if required:
            raise ModelError(f"model {model_dir.name}: fold {fold.get('fold')} has no {key} file")
        return None
    path = model_dir / name
    if path.resolve().parent != model_dir.resolve():
        raise ModelError(f"model {model_dir.name}: file {name} is outside the model folder")
    if not path.is_file():
        if required:
            raise ModelError(f"model {model_dir.name}: missing file {name}")
        return None
    expected = (fold.get(f"{key}_sha256") or "").lower()
    if not expected:
        raise ModelError(f"model {model_dir.name}: no SHA-256 for {name} on the card")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(f"model {model_dir.name}: {name} fails its SHA-256 check (corrupt, "
                         "truncated or altered file)")
    return path


def load_model(model_dir: os.PathLike, *, folds: Optional[List[int]] = None,
               need: str = "onnx") -> Model:
    """Read and verify a model folder.

    ``need`` is "onnx" (ONNX graphs required), "weights" (PyTorch weights required) or "any"
    (at least one of the two per fold). Only the files that will be used are required, but every
    file present for a selected fold is checked against its SHA-256.
    """
    d = Path(model_dir)
    card = read_card(d)
    available = [int(f["fold"]) for f in card["folds"]]
    if folds is not None:
        unknown = [k for k in folds if k not in available]
        if unknown:
            raise ModelError(f"model {card['name']} has folds {available}, not {unknown}")
    out = []
    for f in card["folds"]:
        k = int(f["fold"])
        if folds is not None and k not in folds:
            continue
        onnx = _verified(d, f, "onnx", need == "onnx")
        weights = _verified(d, f, "weights", need == "weights")
        if need == "any" and onnx is None and weights is None:
            raise ModelError(f"model {card['name']}: fold {k} has neither ONNX nor weights file")
        out.append(FoldFiles(k, weights, onnx))
    return Model.from_card(card, d, out, f"model card {d / CARD_NAME}")


# ----------------------------------------------------------------------------------------------
# Where models are


def bundled_models_dir() -> Path:
    """``Resources/Models`` of the source tree, the copy installed beside the Slicer module, or
    the one a non-editable ``pip install .`` puts inside the package (``bundled_models``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent.parent / "Resources" / "Models",   # source tree
                      here.parent / "Resources" / "Models",          # Slicer module install
                      here / "bundled_models"):                      # pip install . (a wheel)
        if candidate.is_dir():
            return candidate
    return here.parent.parent / "Resources" / "Models"


def installed_models_dir() -> Path:
    env = os.environ.get("FEMURSEG_MODELS")
    return Path(env) if env else Path.home() / ".femurseg" / "models"


def _model_folders() -> List[ModelInfo]:
    """Every readable model folder: installed ones first, then bundled, each sorted by name."""
    out = []
    for source, root in (("installed", installed_models_dir()), ("bundled", bundled_models_dir())):
        if not root.is_dir():
            continue
        for d in sorted(p for p in root.iterdir() if (p / CARD_NAME).is_file()):
            try:
                card = read_card(d)
            except ModelError:
                continue
            out.append(ModelInfo(name=str(card["name"]), path=d, card=card, source=source))
    return out


def list_models() -> List[ModelInfo]:
    """Installed models first (they may override bundled ones of the same name), then bundled."""
    seen = set()
    out = []
    for info in _model_folders():
        if info.name not in seen:
            seen.add(info.name)
            out.append(info)
    return out


def model_choices(info: ModelInfo) -> List[str]:
    """What ``--model`` accepts for ``info``: its card's name, and its folder's name if other."""
    return [info.name] + ([info.path.name] if info.path.name != info.name else [])


def find_model(name_or_dir: Optional[str] = None) -> Path:
    """A model folder from ``--model``: the path of a model folder, or a NAME looked up among
    the installed models (``$FEMURSEG_MODELS``), then the bundled ones, where the first folder
    whose card is named NAME or which is itself named NAME is taken (default:
    :data:`DEFAULT_MODEL`). Exported models are named by ``--name`` (default: the config's name)
    and live in folders of any name: both names work."""
    if name_or_dir and (os.sep in name_or_dir or "/" in name_or_dir or Path(name_or_dir).is_dir()):
        d = Path(name_or_dir)
        if not d.is_dir():
            raise ModelError(f"model folder not found: {d}")
        return d
    name = name_or_dir or DEFAULT_MODEL
    folders = _model_folders()
    for info in folders:
        if name in (info.name, info.path.name):
            return info.path
    if not name_or_dir:
        raise ModelError("no trained model is installed: the default model "
                         f"'{DEFAULT_MODEL}' is not in {bundled_models_dir()} nor in "
                         f"{installed_models_dir()}; pass --model DIR (or train one with "
                         "femurseg-train)")
    accepted = "; ".join(f"{' or '.join(model_choices(info))} ({info.source})"
                         for info in folders) or f"none in {installed_models_dir()}"
    raise ModelError(f"unknown model '{name}': --model takes a model's name or its folder's name "
                     f"({accepted}), or the path of a model folder")


def describe(card: dict) -> str:
    """A short human-readable summary of a card (for `femurseg models`)."""
    arch = card.get("architecture", {})
    metrics = card.get("metrics", {}) or {}
    lines = [f"{card.get('name')} {card.get('version', '')}".strip(),
             f"  {card.get('description', '')}".rstrip(),
             f"  architecture: {arch.get('type')} F{arch.get('features')} L{arch.get('levels')}, "
             f"{len(card.get('folds', []))} fold(s)"]
    dsc = metrics.get("dsc_mean")
    if dsc is not None:
        lines.append(f"  cross-validated DSC: {dsc:.3f} +- {metrics.get('dsc_sd', float('nan')):.3f}")
    if card.get("intended_use"):
        lines.append(f"  intended use: {card['intended_use']}")
    return "\n".join(line for line in lines if line.strip())
