"""One input of ``femurseg segment``: checked, segmented and written all or nothing.

``femurseg segment`` (one process, one input after another) and ``femurseg cohort`` (a Dask
cluster, :mod:`FemurSegLib.cohort`) both call these functions, so that both write the same
outputs for the same input:

- :func:`check_input`: an input exists and has a known format (before any model is loaded);
- :func:`choose_series`: the DICOM series of a DICOM folder, and the refusal of DICOM outputs of
  an input that is not one;
- :func:`segment_case`: segment one input with a loaded :class:`~FemurSegLib.inference.Segmenter`
  and write every planned output of it through one :class:`~FemurSegLib.outputplan.Staging`
  (all or nothing); returns a :class:`CaseOutcome` (volumes, warnings, files written).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import InputError


@dataclass(frozen=True)
class CaseOptions:
    """The options of ``segment`` that act on one input's outputs (picklable: a cohort sends
    them to its workers)."""

    overwrite: bool = False
    reference_label: int = 1
    stl_smoothing: float = 0.5
    report_view: str = "femurs"  # what each report tile shows (montage.write_report's view)


@dataclass
class CaseOutcome:
    """What one input gave: the femur volumes (segment name -> ml), the threshold, the
    plausibility problems and their likely cause (``warning`` is the one warning line, without
    the ``warning:`` prefix, or None), the files written and the seconds it took."""

    case: str
    source: str
    volumes_ml: Dict[str, float]
    threshold: float
    problems: List[str]
    cause: Optional[str]
    warning: Optional[str]
    written: List[str] = field(default_factory=list)
    stl_files: int = 0
    seconds: float = 0.0


def check_input(path: Path) -> None:
    """Refuse an input that does not exist or has an unknown format (one ``InputError``)."""
    from . import images

    if not path.exists():
        raise InputError(f"input not found: {path}")
    if not path.is_dir() and images.image_suffix(path) is None:
        raise InputError(f"unknown input format: {path.name} (expected .nii.gz, .nii, .nrrd, "
                         ".mha, .mhd or a DICOM folder)")


def dicom_outputs(plan) -> list:
    from .outputplan import DICOM_SUFFIX, known_suffix

    return [p for p in (plan.main, plan.dicom_seg, plan.probabilities)
            if p is not None and known_suffix(p, [DICOM_SUFFIX])]


def choose_series(plan, series: Optional[str], say: Callable[[str], None] = lambda m: None):
    """The chosen DICOM series of ``plan.source`` (None when it is not a DICOM folder); refuses
    two DICOM outputs that are one file and DICOM outputs of an input that is not DICOM."""
    from . import dicom

    src = plan.source
    outputs = dicom_outputs(plan)
    if len(set(outputs)) < len(outputs):
        raise InputError(f"two DICOM outputs are the same file: {outputs[-1]}")
    if not src.is_dir():
        if outputs:
            raise InputError(f"{outputs[0].name}: a DICOM Segmentation needs a DICOM "
                             f"series as input, and {src.name} is not a DICOM folder")
        return None
    scan = dicom.find_series(src)
    for note in scan.notes:
        say(f"note: {src.name}: {note}")
    return dicom.choose_series(scan, series)


def dicom_plan(plans, series: Optional[str], say: Callable[[str], None] = lambda m: None
               ) -> list:
    """The chosen series of every input (see :func:`choose_series`; the first problem raises);
    also refuses ``--series`` without DICOM input, and DICOM outputs without the ``dicom``
    extra."""
    from . import dicomseg

    chosen = [choose_series(plan, series, say) for plan in plans]
    if series is not None and not any(chosen):
        raise InputError("--series chooses a DICOM series, but no input is a DICOM folder")
    if any(c is not None and dicom_outputs(plan) for plan, c in zip(plans, chosen)):
        dicomseg.require()
    return chosen


def read_input(src: Path, series):
    """The input image (of its chosen DICOM series, if any), validated."""
    from . import dicom, images

    if series is None:
        image = images.read_image(src, what="input image")
    else:
        image = dicom.read_series(series)
        images.validate_image(image, what=f"input image {src.name} ({series.name})")
    images.refuse_label_map(image, src)
    return image


def volumes_ml(image, result) -> Dict[str, float]:
    """Segment name -> volume in ml of ``result``'s label map."""
    import numpy as np
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(result.labelmap)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    return {s.name: float(np.count_nonzero(arr == s.value) * voxel_ml) for s in result.segments}


def segment_case(segmenter, plan, series=None, options: CaseOptions = CaseOptions(), *,
                 progress=None,
                 extra: Sequence[Tuple[Path, Callable[[CaseOutcome, Path], None]]] = ()
                 ) -> CaseOutcome:
    """Segment ``plan.source`` (``series``: its chosen DICOM series) and write all its planned
    outputs, or none of them. ``extra``: further files ``(path, write(outcome, tmp))`` staged
    and committed together with the outputs (a cohort's per-case record)."""
    import SimpleITK as sitk

    from . import images, montage, outputplan
    from .plausibility import warning_line

    src = plan.source
    t0 = time.perf_counter()
    image = read_input(src, series)
    reference = None
    if plan.reference is not None:
        ref = images.read_label(plan.reference, image, what="reference")
        reference = sitk.GetArrayFromImage(ref) == options.reference_label
        if not reference.any():
            raise InputError(f"reference {plan.reference.name} has no voxel with label "
                             f"{options.reference_label}")
    keep = {"keep_passes": True} if plan.report_dir is not None else {}
    result = segmenter.segment(image, progress=progress, **keep) if progress is not None else \
        segmenter.segment(image, **keep)
    problems, cause = segmenter.plausibility(image, result)
    outcome = CaseOutcome(case=plan.case, source=str(src), volumes_ml=volumes_ml(image, result),
                          threshold=float(result.threshold), problems=list(problems),
                          cause=cause,
                          warning=warning_line(src.name, problems, cause) if problems else None)
    produced = outputplan.Produced(image=image, result=result, source_name=src.name,
                                   reference=reference, series=series)
    if series is not None:
        from .dicomseg import Creator

        produced.creator = Creator(segmenter.model.name,
                                   str(segmenter.model.card.get("version", "")))
        produced.probability_segment = segmenter.model.segments(False)[0]
    main_writer = outputplan.MAIN_WRITERS[outputplan.known_suffix(plan.main,
                                                                  outputplan.MAIN_WRITERS)]
    with outputplan.Staging(options.overwrite) as staging:
        staging.write(plan.main, lambda tmp: main_writer(produced, tmp))
        if plan.dicom_seg is not None:
            staging.write(plan.dicom_seg, lambda tmp: outputplan.DICOM_SEG_WRITERS[
                outputplan.DICOM_SUFFIX](produced, tmp))
        if plan.probabilities is not None:
            writer = outputplan.PROBABILITY_WRITERS[outputplan.known_suffix(
                plan.probabilities, outputplan.PROBABILITY_WRITERS)]
            staging.write(plan.probabilities, lambda tmp: writer(produced, tmp))
        if plan.stl_dir is not None:
            from .writers import write_stl

            stl = staging.write_folder(plan.stl_dir, lambda tmp: write_stl(
                result.labelmap, result.segments, tmp, sigma_voxels=options.stl_smoothing))
            outcome.stl_files = len(stl)
        if plan.report_dir is not None:
            staging.write_folder(plan.report_dir, lambda tmp: montage.write_report(
                image, result.labelmap, result.segments, tmp, title=src.name,
                reference=reference, view=options.report_view,
                probability=sitk.GetArrayViewFromImage(result.probability),
                passes=None if result.flipped_probability is None else (
                    result.plain_probability, result.flipped_probability),
                threshold=float(result.threshold)))
        outcome.written = [str(t) for t in staging.targets()]
        outcome.seconds = time.perf_counter() - t0
        for path, write in extra:
            staging.write(path, lambda tmp, write=write: write(outcome, tmp))
        written = staging.commit()
    outcome.written = [str(w) for w in written if all(w != p for p, _ in extra)]
    outcome.seconds = time.perf_counter() - t0
    return outcome
