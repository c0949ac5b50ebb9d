"""What a review works on, without the web server: the image, the segmentation under review,
the slices to check, and the one output folder it saves into.

Everything here is checked before the server starts (a broken or mismatched segmentation, an
output that exists, an output that would replace the model's original file), so a bad command
line gives one ``error:`` line and no server. Saving goes through the core's writers
(:func:`FemurSegLib.writers.write_seg_nrrd`, :func:`~FemurSegLib.writers.write_stl`) inside one
:class:`FemurSegLib.outputplan.Staging`: all files of a save appear together or none does.
No path ever comes from the browser: the output folder and the file names are fixed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import SimpleITK as sitk

from FemurSegLib import files, images
from FemurSegLib.errors import InputError, OutputExistsError
from FemurSegLib.montage import coronal_axes
from FemurSegLib.segments import SegmentSpec, femur_segments
from FemurSegLib.uncertainty import SliceToCheck, slices_to_check

#: Names inside the output folder (the STL files are named by segment, as `femurseg segment`).
SEGMENTATION_NAME = "{case}.seg.nrrd"
STL_FOLDER = "stl"
VOLUMES_NAME = "volumes.json"


@dataclass
class ReviewSession:
    image_path: Path
    image: sitk.Image
    output_dir: Path
    segmentation_path: Optional[Path] = None
    labelmap: Optional[sitk.Image] = None          # the segmentation under review (uint8)
    segments: List[SegmentSpec] = field(default_factory=list)
    probability: Optional[np.ndarray] = None       # [k, j, i] femur probability, if known
    plain: Optional[np.ndarray] = None             # the test-time passes' own probabilities,
    flipped: Optional[np.ndarray] = None           # when the model ran with flip TTA
    threshold: float = 0.5                         # the model's mask threshold
    warnings: List[str] = field(default_factory=list)
    overwrite: bool = False
    stl_smoothing: float = 0.5
    saves: int = 0                                 # saves done in this session

    @property
    def case(self) -> str:
        return files.case_name(self.image_path)

    @property
    def targets(self) -> dict:
        """The files a save writes (fixed at start; never chosen by the browser)."""
        return {"segmentation": self.output_dir / SEGMENTATION_NAME.format(case=self.case),
                "stl": self.output_dir / STL_FOLDER,
                "volumes": self.output_dir / VOLUMES_NAME}

    @property
    def coronal_array_axis(self) -> int:
        """The ``[k, j, i]`` array axis whose index picks a coronal slice."""
        return 2 - coronal_axes(self.image.GetDirection())["AP"]

    @property
    def slice_letter(self) -> str:
        return "ijk"[coronal_axes(self.image.GetDirection())["AP"]]

    def slices_to_check(self) -> List[SliceToCheck]:
        if self.probability is None:
            return []
        return slices_to_check(self.probability, self.coronal_array_axis, flipped=self.flipped,
                               plain=self.plain, threshold=self.threshold)

    def slice_point_lps(self, index: int) -> np.ndarray:
        """LPS position of the centre of coronal slice ``index`` (voxel indices)."""
        point = [(s - 1) / 2.0 for s in self.image.GetSize()]
        point[coronal_axes(self.image.GetDirection())["AP"]] = float(index)
        return (images.ijk_to_lps(self.image) @ np.array(point + [1.0]))[:3]

    # ------------------------------------------------------------------------------------------

    def use_result(self, labelmap: sitk.Image, segments, probability: Optional[np.ndarray],
                   warnings: List[str], *, plain: Optional[np.ndarray] = None,
                   flipped: Optional[np.ndarray] = None, threshold: float = 0.5) -> None:
        """Take the model's result (``Segmenter.segment`` run from the page); ``plain`` and
        ``flipped`` (the test-time passes' own probabilities, of which ``probability`` is the
        mean) and the model's ``threshold`` make the slices where the passes disagree count as
        uncertain too."""
        self.labelmap = labelmap
        self.segments = list(segments)
        self.probability = None if probability is None else np.asarray(probability)
        self.plain = None if plain is None else np.asarray(plain)
        self.flipped = None if flipped is None else np.asarray(flipped)
        self.threshold = float(threshold)
        self.warnings = list(warnings)

    def save(self, labels: np.ndarray) -> List[Path]:
        """Write the corrected label map (``[k, j, i]``, values of :attr:`segments`) with its
        segment names, colours and terminology on exactly the image grid, the STL surfaces and
        the volumes; all or nothing. Later saves of the session replace its own earlier ones."""
        from FemurSegLib import outputplan
        from FemurSegLib.writers import segment_volumes, write_seg_nrrd, write_stl

        labels = np.asarray(labels)
        expected = tuple(reversed(self.image.GetSize()))
        if labels.shape != expected:
            raise InputError(f"edited label map shape {labels.shape} is not the image grid "
                             f"{expected}")
        labelmap = images.array_to_image(labels.astype(np.uint8), self.image)
        targets = self.targets
        replace = self.overwrite or self.saves > 0
        with outputplan.Staging(replace) as staging:
            staging.write(targets["segmentation"], lambda tmp: write_seg_nrrd(
                labelmap, self.segments, tmp, overwrite=True,
                reference_name=self.image_path.name))
            staging.write_folder(targets["stl"], lambda tmp: write_stl(
                labelmap, self.segments, tmp, sigma_voxels=self.stl_smoothing))
            staging.write(targets["volumes"], lambda tmp: files.write_json(
                {"image": self.image_path.name, "reviewed": True,
                 "segments": segment_volumes(labelmap, self.segments)}, tmp, overwrite=True))
            written = staging.commit()
        for spec in self.segments:  # a segment emptied since an earlier save: no stale surface
            stale = targets["stl"] / f"{spec.segment_id}.stl"
            if replace and stale not in written and stale.is_file():
                stale.unlink()
        self.saves += 1
        self.labelmap = labelmap
        return written


def read_segmentation(path: Path, image: sitk.Image):
    """The label map (on exactly ``image``'s grid) and segment specs of a ``.seg.nrrd``."""
    import slicerio

    if files.image_suffix(path) != ".seg.nrrd":
        raise InputError(f"segmentation must be a .seg.nrrd file: {path.name}")
    try:
        header = slicerio.read_segmentation(str(path), skip_voxels=True)
    except Exception as exc:  # slicerio raises plain exceptions on broken headers
        raise InputError(f"cannot read segmentation {path.name}: "
                         f"{' '.join(str(exc).split()) or type(exc).__name__}") from None
    labelmap = images.read_label(path, image, what="segmentation")
    if labelmap.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"segmentation {path.name} has several layers (overlapping segments); "
                         "the review edits single-layer segmentations")
    specs = []
    for s in header.get("segments", []):
        if "labelValue" not in s or "name" not in s:
            raise InputError(f"segmentation {path.name}: segment {s.get('id', '?')} has no "
                             "label value or name")
        specs.append(SegmentSpec(value=int(s["labelValue"]), name=str(s["name"]),
                                 color=tuple(float(c) for c in s.get("color", (1, 1, 0))),
                                 terminology=dict(s.get("terminology") or {})))
    if not specs:
        raise InputError(f"segmentation {path.name} has no segments")
    from FemurSegLib.writers import check_labelmap

    check_labelmap(sitk.Cast(labelmap, sitk.sitkUInt8) if labelmap.GetPixelID() !=
                   sitk.sitkUInt8 else labelmap, specs)
    return sitk.Cast(labelmap, sitk.sitkUInt8), specs


def open_session(image_path, segmentation_path=None, *, output_dir=None, probabilities=None,
                 overwrite: bool = False, stl_smoothing: float = 0.5) -> ReviewSession:
    """Read and check everything a review needs; raise one :class:`InputError` otherwise.

    The default output folder is ``<case>_review`` beside the segmentation (or the image).
    An output that exists is refused unless ``overwrite``; the segmentation under review is
    never a save target unless ``overwrite`` (the model's original output stays as it was)."""
    image_path = Path(image_path)
    if not image_path.exists():
        raise InputError(f"image not found: {image_path}")
    if image_path.is_dir():
        raise InputError(f"the review reads an image file, not a folder: {image_path}")
    image = images.read_image(image_path, what="image")
    seg_path = Path(segmentation_path) if segmentation_path else None
    labelmap, segments = None, []
    if seg_path is not None:
        if not seg_path.is_file():
            raise InputError(f"segmentation not found: {seg_path}")
        labelmap, segments = read_segmentation(seg_path, image)
    probability = None
    if probabilities:
        prob_image = images.read_image(Path(probabilities), what="probability map",
                                       allow_constant=True)
        mismatch = images.grid_mismatch(prob_image, image)
        if mismatch:
            raise InputError(f"probability map {Path(probabilities).name} is not on the image "
                             f"grid: {mismatch}")
        probability = sitk.GetArrayFromImage(prob_image).astype(np.float32)
        if probability.min() < -1e-6 or probability.max() > 1 + 1e-6:
            raise InputError(f"probability map {Path(probabilities).name} has values outside "
                             "0..1")
    base = (seg_path or image_path)
    out = Path(output_dir) if output_dir else base.parent / f"{files.case_name(base)}_review"
    session = ReviewSession(image_path=image_path, image=image, output_dir=out,
                            segmentation_path=seg_path, labelmap=labelmap,
                            segments=segments or femur_segments(True), probability=probability,
                            overwrite=overwrite, stl_smoothing=stl_smoothing)
    check_targets(session)
    return session


def check_targets(session: ReviewSession) -> None:
    if session.output_dir.exists() and not session.output_dir.is_dir():
        raise InputError(f"output folder is a file: {session.output_dir}")
    originals = {p.resolve() for p in (session.segmentation_path, session.image_path) if p}
    for target in session.targets.values():
        if target.resolve() in originals and not session.overwrite:
            raise OutputExistsError(f"saving would replace the original {target} (choose "
                                    "another --output folder, or --overwrite)")
        if target.resolve() == session.image_path.resolve():
            raise InputError(f"saving would replace the image {target}")
        if target.exists() and not session.overwrite:
            raise OutputExistsError(f"output exists: {target} (use --overwrite to replace it)")

