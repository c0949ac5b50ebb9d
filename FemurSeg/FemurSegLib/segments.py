"""Segment descriptions shared by the CLI outputs, the model card and the Slicer module.

A :class:`SegmentSpec` says what one label value of an output label map means: its name, colour
and DICOM/SNOMED CT terminology (in the dict form slicerio uses; each code is
``[scheme, value, meaning]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

# SNOMED CT codes (coding scheme "SCT") as in 3D Slicer's terminology context that holds
# them: the DICOM master list (SegmentationCategoryTypeModifier-DICOM-Master.json in Slicer 5.8
# and 5.10: Femur 71341001 in category Anatomical Structure 123037004, laterality Right/Left as
# its modifiers). Slicer's "General Anatomy" list has no Femur.
CATEGORY_ANATOMICAL_STRUCTURE = ["SCT", "123037004", "Anatomical Structure"]
TYPE_FEMUR = ["SCT", "71341001", "Femur"]
MODIFIER_RIGHT = ["SCT", "24028007", "Right"]
MODIFIER_LEFT = ["SCT", "7771000", "Left"]
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"

#: Default colours (RGB in 0..1): Slicer's "bone" colour for one "Femur" segment; for the two
#: sides two clearly different hues that stay apart with colour-vision deficiencies (Okabe-Ito
#: orange and sky blue), so that a report or a 3D view never leaves the side in doubt.
FEMUR_COLOR = (0.945, 0.839, 0.569)
RIGHT_FEMUR_COLOR = (0.902, 0.624, 0.0)
LEFT_FEMUR_COLOR = (0.337, 0.706, 0.914)

#: Label values of the output label maps: the same in every image.
RIGHT_FEMUR, LEFT_FEMUR = 1, 2


@dataclass(frozen=True)
class SegmentSpec:
    value: int
    name: str
    color: Tuple[float, float, float] = FEMUR_COLOR
    terminology: Dict[str, object] = field(default_factory=dict)

    @property
    def segment_id(self) -> str:
        return self.name.replace(" ", "_")

    def to_dict(self) -> dict:
        return {"value": self.value, "name": self.name, "color": list(self.color),
                "terminology": self.terminology}

    @classmethod
    def from_dict(cls, d: dict) -> "SegmentSpec":
        return cls(value=int(d["value"]), name=str(d["name"]),
                   color=tuple(float(c) for c in d.get("color", FEMUR_COLOR)),
                   terminology=dict(d.get("terminology") or {}))


def femur_terminology(side: Optional[str] = None) -> dict:
    """Terminology of a femur, optionally with laterality ``"right"`` or ``"left"``."""
    term = {"contextName": TERMINOLOGY_CONTEXT,
            "category": list(CATEGORY_ANATOMICAL_STRUCTURE),
            "type": list(TYPE_FEMUR)}
    if side is not None:
        side = side.lower()
        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', not {side!r}")
        term["typeModifier"] = list(MODIFIER_RIGHT if side == "right" else MODIFIER_LEFT)
    return term


def femur_segments(split: bool, base_color: Sequence[float] = FEMUR_COLOR) -> List[SegmentSpec]:
    """Segments of a femur label map: 1 = Right femur and 2 = Left femur (always both, even when
    one hip is out of view or nothing was found), or with ``split=False`` 1 = Femur."""
    if not split:
        return [SegmentSpec(1, "Femur", tuple(base_color), femur_terminology())]
    return [SegmentSpec(RIGHT_FEMUR, "Right femur", RIGHT_FEMUR_COLOR, femur_terminology("right")),
            SegmentSpec(LEFT_FEMUR, "Left femur", LEFT_FEMUR_COLOR, femur_terminology("left"))]
