"""What a model is, what it expects and how it is run: the typed ``architecture``, ``input`` and
``inference`` sections of a model card (and of a training config).

:class:`ArchitectureSpec` (network type and its required parameters),
:class:`InputSpec` (orientation, spacing, normalisation) and :class:`InferenceSpec` (window and
tile geometry, test-time augmentation, the region-of-interest cascade, threshold and
post-processing) are frozen dataclasses, read once and validated loudly when a card is read
(:func:`FemurSegLib.modelfolder.read_card`), and the one source for the segmenter, training-time
validation, evaluation, export and the Slicer adapter. Training builds them from its config
(:mod:`FemurSegTraining.cards`); no other code reads the card's dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional, Tuple

from .errors import ModelError

DEFAULT_ORIENTATION = "LIP"

#: post-processing rules of the binary mask (see :func:`FemurSegLib.postprocess.apply_rule`)
POSTPROCESS_RULES = ("largest_per_femur", "largest", "none")

Triple = Tuple[int, int, int]


def _fail(where: str, message: str):
    raise ModelError(f"{where}: {message}")


def _check_keys(d: object, allowed, where: str) -> dict:
    if not isinstance(d, dict):
        _fail(where, f"must be a JSON object, not {type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        _fail(where, f"unknown keys {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    return d


def _int(v, where: str, minimum: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < minimum:
        _fail(where, f"must be an integer >= {minimum}, not {v!r}")
    return int(v)


def _float(v, where: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= float(v) <= hi:
        _fail(where, f"must be a number in [{lo:g}, {hi:g}], not {v!r}")
    return float(v)


def _bool(v, where: str) -> bool:
    if not isinstance(v, bool):
        _fail(where, f"must be true or false, not {v!r}")
    return v


def _ints(v, where: str, n: Optional[int] = None, minimum: int = 0) -> tuple:
    if not isinstance(v, (list, tuple)) or (n is not None and len(v) != n):
        _fail(where, f"must be a list of {n if n is not None else ''} integers, not {v!r}")
    return tuple(_int(x, where, minimum) for x in v)


#: network types and the parameters each takes beyond :data:`ARCHITECTURE_REQUIRED`
ARCHITECTURE_TYPES = {"UNet3D": ("norm", "bias_init", "pooling"), "UNet2D": ("norm", "bias_init"),
                      "UNet25D": ("norm", "bias_init", "max_features", "deep_supervision")}
ARCHITECTURE_REQUIRED = ("type", "in_channels", "num_classes", "features", "levels")
NORMS = ("none", "batch", "instance")


@dataclass(frozen=True)
class ArchitectureSpec:
    """What the network is: the ``architecture`` section of a card or config, checked (a
    missing or unknown key, a wrong type or value is a :class:`ModelError` naming it, never a
    ``KeyError`` later). :meth:`to_dict` gives the parameters for
    :func:`FemurSegLib.networks.build_network`."""

    type: str
    in_channels: int
    num_classes: int
    features: int
    levels: int
    norm: Optional[str] = None             # None: the network type's default
    bias_init: Optional[float] = None
    pooling: Optional[Tuple[Triple, ...]] = None   # UNet3D
    max_features: Optional[int] = None     # UNet25D
    deep_supervision: Optional[int] = None  # UNet25D: auxiliary heads in training (0 or None: none)

    @classmethod
    def from_dict(cls, d: dict, where: str = "architecture") -> "ArchitectureSpec":
        if not isinstance(d, dict):
            _fail(where, f"must be a JSON object, not {type(d).__name__}")
        kind = d.get("type")
        if kind not in ARCHITECTURE_TYPES:
            _fail(f"{where}.type", f"must be one of {', '.join(ARCHITECTURE_TYPES)}, not {kind!r}")
        _check_keys(d, set(ARCHITECTURE_REQUIRED) | set(ARCHITECTURE_TYPES[kind]),
                    f"{where} ({kind})")
        missing = [k for k in ARCHITECTURE_REQUIRED if k not in d]
        if missing:
            _fail(where, f"missing keys {', '.join(missing)}")
        norm = d.get("norm")
        if norm is not None and norm not in NORMS:
            _fail(f"{where}.norm", f"must be one of {', '.join(NORMS)}, not {norm!r}")
        bias = d.get("bias_init")
        pooling = d.get("pooling")
        if pooling is not None:
            if not isinstance(pooling, (list, tuple)):
                _fail(f"{where}.pooling", f"must be a list of [k, j, i] factors, not {pooling!r}")
            pooling = tuple(_ints(f, f"{where}.pooling", 3, 1) for f in pooling)
        max_features = d.get("max_features")
        deep = d.get("deep_supervision")
        levels = _int(d["levels"], f"{where}.levels", 2)
        if deep is not None and not (isinstance(deep, int) and not isinstance(deep, bool)
                                     and 0 <= deep <= levels - 2):
            _fail(f"{where}.deep_supervision", f"must be an integer in [0, levels - 2 = "
                                               f"{levels - 2}], not {deep!r}")
        if pooling is not None and len(pooling) != levels - 1:
            _fail(f"{where}.pooling", f"must have levels - 1 = {levels - 1} entries, not "
                                      f"{len(pooling)}")
        return cls(type=kind, in_channels=_int(d["in_channels"], f"{where}.in_channels", 1),
                   num_classes=_int(d["num_classes"], f"{where}.num_classes", 2),
                   features=_int(d["features"], f"{where}.features", 1), levels=levels,
                   norm=norm,
                   bias_init=None if bias is None else _float(bias, f"{where}.bias_init",
                                                              -1e6, 1e6),
                   pooling=pooling,
                   max_features=None if max_features is None else _int(
                       max_features, f"{where}.max_features", 1),
                   deep_supervision=deep)

    def to_dict(self) -> dict:
        out = {"type": self.type, "in_channels": self.in_channels,
               "num_classes": self.num_classes, "features": self.features,
               "levels": self.levels}
        for k in ("norm", "bias_init", "max_features", "deep_supervision"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.pooling is not None:
            out["pooling"] = [list(f) for f in self.pooling]
        return out


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: the ``input`` section of its card."""

    orientation: str = DEFAULT_ORIENTATION
    #: voxel spacing (i, j, k) in mm on the canonical grid; None keeps the input's spacing
    spacing: Optional[Tuple[float, float, float]] = None
    normalisation: dict = field(default_factory=lambda: {"method": "percentile",
                                                         "percentiles": [0.5, 99.5]})

    @classmethod
    def from_dict(cls, d: dict, where: str = "input") -> "InputSpec":
        _check_keys(d, {"orientation", "spacing", "normalisation"}, where)
        orientation = str(d.get("orientation", DEFAULT_ORIENTATION)).upper()
        pairs = [set(orientation) & set(p) for p in ("LR", "AP", "SI")]
        if len(orientation) != 3 or any(len(p) != 1 for p in pairs):
            _fail(f"{where}.orientation", f"{orientation!r} is not a three-letter code with one "
                                          "of L/R, A/P and S/I, such as LIP")
        spacing = d.get("spacing")
        if spacing is not None:
            if not isinstance(spacing, (list, tuple)) or len(spacing) != 3 or not all(
                    isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0
                    for s in spacing):
                _fail(f"{where}.spacing", f"must be null or three positive numbers, not {spacing!r}")
            spacing = tuple(float(s) for s in spacing)
        norm = d.get("normalisation") or cls().normalisation
        _check_keys(norm, {"method", "percentiles"}, f"{where}.normalisation")
        if norm.get("method", "percentile") not in ("percentile", "zscore"):
            _fail(f"{where}.normalisation.method", "must be percentile or zscore")
        if norm.get("method", "percentile") == "percentile":
            pct = norm.get("percentiles", [0.5, 99.5])
            if not (isinstance(pct, (list, tuple)) and len(pct) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in pct)
                    and 0 <= pct[0] < pct[1] <= 100):
                _fail(f"{where}.normalisation.percentiles",
                      f"must be two numbers 0 <= low < high <= 100, not {pct!r}")
        return cls(orientation=orientation, spacing=spacing, normalisation=dict(norm))

    def to_dict(self) -> dict:
        return {"orientation": self.orientation,
                "spacing": list(self.spacing) if self.spacing else None,
                "normalisation": self.normalisation}


@dataclass(frozen=True)
class RoiSpec:
    """The region-of-interest cascade: the first fold runs on the whole volume, the others only
    in the box around its probability above ``threshold``, grown by ``margin`` voxels
    ([slices, rows, columns] on the network grid)."""

    threshold: float = 0.05
    margin: Triple = (2, 16, 16)

    @classmethod
    def from_dict(cls, d: dict, where: str = "inference.roi") -> "RoiSpec":
        _check_keys(d, {"threshold", "margin"}, where)
        return cls(threshold=_float(d.get("threshold", 0.05), f"{where}.threshold", 0.0, 1.0),
                   margin=_ints(d.get("margin", [2, 16, 16]), f"{where}.margin", 3))

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "margin": list(self.margin)}


@dataclass(frozen=True)
class InferenceSpec:
    """How a model is run: the ``inference`` section of its card.

    Geometry: ``patch_size`` (3D sliding window; None runs the whole volume), ``overlap`` of the
    windows, ``divisor`` (input sizes must be multiples of it per [slice, row, column] axis),
    ``batch_size`` (windows or slices per network call), ``input_size``/``output_size`` (tiles
    of the unpadded 2D U-Net). Ensemble: ``tta_flip_axes`` (array axes flipped for test-time
    augmentation), ``tta_on_cpu``/``tta_on_gpu`` (whether flips are on by default on each kind
    of device), ``roi`` (the cascade, None for none). Output: ``foreground_channels`` (the
    network outputs summed into the femur probability), ``threshold`` (of the binary mask; None
    means 0.5) and ``postprocess`` (one of :data:`POSTPROCESS_RULES`). ``fill_slice_gaps``: close
    one-slice gaps of the probability along the network grid's slice axis before it is mapped
    back, in pieces of at least this many mm² of a slice (0: every gap voxel; None, the
    default: off; :func:`FemurSegLib.postprocess.fill_slice_gaps`).
    """

    patch_size: Optional[Triple] = None
    overlap: float = 0.5
    divisor: Triple = (1, 1, 1)
    batch_size: int = 1
    input_size: Optional[int] = None
    output_size: Optional[int] = None
    tta_flip_axes: Tuple[Tuple[int, ...], ...] = ((2,),)
    tta_on_cpu: bool = False
    tta_on_gpu: bool = True
    roi: Optional[RoiSpec] = None
    foreground_channels: Tuple[int, ...] = (1,)
    threshold: Optional[float] = None
    postprocess: str = "largest_per_femur"
    fill_slice_gaps: Optional[float] = None

    @classmethod
    def keys(cls) -> set:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "inference") -> "InferenceSpec":
        _check_keys(d, cls.keys(), where)
        default = cls()
        patch = d.get("patch_size")
        axes = d.get("tta_flip_axes", [[2]])
        if not isinstance(axes, (list, tuple)):
            _fail(f"{where}.tta_flip_axes", f"must be a list of axis lists, not {axes!r}")
        flips = tuple(_ints(a if isinstance(a, (list, tuple)) else [a],
                            f"{where}.tta_flip_axes") for a in axes)
        if any(ax > 2 for a in flips for ax in a):
            _fail(f"{where}.tta_flip_axes", f"axes must be 0, 1 or 2, not {axes!r}")
        roi = d.get("roi")
        rule = d.get("postprocess", default.postprocess)
        if rule not in POSTPROCESS_RULES:
            _fail(f"{where}.postprocess", f"must be one of {', '.join(POSTPROCESS_RULES)}, "
                                          f"not {rule!r}")
        threshold = d.get("threshold")
        size_in, size_out = d.get("input_size"), d.get("output_size")
        if (size_in is None) != (size_out is None):
            _fail(where, "input_size and output_size go together (2D tiles)")
        channels = _ints(d.get("foreground_channels", [1]), f"{where}.foreground_channels",
                         None, 1)
        if not channels:
            _fail(f"{where}.foreground_channels", "must name at least one output channel")
        return cls(
            patch_size=None if patch is None else _ints(patch, f"{where}.patch_size", 3, 1),
            overlap=_float(d.get("overlap", default.overlap), f"{where}.overlap", 0.0, 0.95),
            divisor=_ints(d.get("divisor", list(default.divisor)), f"{where}.divisor", 3, 1),
            batch_size=_int(d.get("batch_size", default.batch_size), f"{where}.batch_size", 1),
            input_size=None if size_in is None else _int(size_in, f"{where}.input_size", 1),
            output_size=None if size_out is None else _int(size_out, f"{where}.output_size", 1),
            tta_flip_axes=flips,
            tta_on_cpu=_bool(d.get("tta_on_cpu", default.tta_on_cpu), f"{where}.tta_on_cpu"),
            tta_on_gpu=_bool(d.get("tta_on_gpu", default.tta_on_gpu), f"{where}.tta_on_gpu"),
            roi=None if roi is None else RoiSpec.from_dict(roi, f"{where}.roi"),
            foreground_channels=channels,
            threshold=None if threshold is None else _float(threshold, f"{where}.threshold",
                                                            0.0, 1.0),
            postprocess=rule,
            fill_slice_gaps=None if d.get("fill_slice_gaps") is None else _float(
                d["fill_slice_gaps"], f"{where}.fill_slice_gaps", 0.0, 1e6),
        )

    def to_dict(self) -> dict:
        """The card's section; ``fill_slice_gaps`` only when on (cards written before it stay
        as they were)."""
        extra = {} if self.fill_slice_gaps is None else {"fill_slice_gaps": self.fill_slice_gaps}
        return {"patch_size": None if self.patch_size is None else list(self.patch_size),
                "overlap": self.overlap, "divisor": list(self.divisor),
                "batch_size": self.batch_size, "input_size": self.input_size,
                "output_size": self.output_size,
                "tta_flip_axes": [list(a) for a in self.tta_flip_axes],
                "tta_on_cpu": self.tta_on_cpu, "tta_on_gpu": self.tta_on_gpu,
                "roi": None if self.roi is None else self.roi.to_dict(),
                "foreground_channels": list(self.foreground_channels),
                "threshold": self.threshold, "postprocess": self.postprocess, **extra}

    @property
    def mask_threshold(self) -> float:
        """The threshold of the binary mask: the card's (PR-optimal) value, else 0.5."""
        return 0.5 if self.threshold is None else float(self.threshold)

    def tta_default(self, device: str) -> bool:
        """Flip test-time augmentation when nothing says otherwise, on ``device``."""
        return self.tta_on_cpu if device == "cpu" else self.tta_on_gpu

    def differences(self, other: "InferenceSpec") -> list:
        """``"field: mine != other's"`` for every field that differs (for evaluation headers)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]
