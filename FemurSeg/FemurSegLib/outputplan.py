"""The outputs of ``femurseg segment``: named, checked before the model runs, written all or
nothing per input.

1. :func:`plan_outputs` resolves every requested output of every input (the main output, the
   probability map, STL surfaces, the report) from the command line's paths:

   - with one input a path is a *file* when it ends in a known suffix, a *folder* when it exists as
     one or ends in a path separator, and otherwise an error listing the known suffixes;
   - with several inputs paths are folders, and the files in them are named by case
     (:func:`FemurSegLib.images.case_name`: ``hip01_0000.nii.gz`` -> ``hip01.seg.nrrd``), so that
     they pair with label files by case name.

2. :func:`check_outputs` checks every file that may be written, before any model is loaded: not
   an existing file (unless ``overwrite``), not a folder, and the nearest existing parent is a
   folder in which a file can be created (tried, not guessed from permission bits).

3. :class:`~FemurSegLib.files.Staging` (in the atomic-write module, re-exported here) writes
   the outputs of one input under temporary names beside their targets and renames them all
   into place only when every one of them is complete; a failure removes the
   temporary files (and the folders it made) and leaves existing files untouched. Any
   ``OSError`` while writing becomes :class:`~FemurSegLib.errors.OutputError` ``cannot write
   PATH: reason``.

A new kind of main output (for example DICOM) is one entry in :data:`MAIN_WRITERS`: its suffix
and a function ``writer(produced, path)`` that writes one file at ``path``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import InputError, OutputError, OutputExistsError
from .files import Staging, _can_create_in, _ending, check_output  # noqa: F401  (in files)


@dataclass
class Produced:
    """What one input produced, for the writers: the input image, the segmentation result
    (:class:`FemurSegLib.inference.Result`) and the input's name (recorded in the outputs);
    for DICOM outputs the source series, the creator (model name and version) and the segment
    a probability map describes."""

    image: object
    result: object
    source_name: str
    reference: Optional[object] = None  # reference label map for the report, if any
    series: Optional[object] = None  # FemurSegLib.dicom.Series of a DICOM input
    creator: Optional[object] = None  # FemurSegLib.dicomseg.Creator
    probability_segment: Optional[object] = None  # SegmentSpec of the femur probability


def _write_seg_nrrd(produced: Produced, path: Path) -> None:
    from .writers import write_seg_nrrd

    write_seg_nrrd(produced.result.labelmap, produced.result.segments, path,
                   reference_name=produced.source_name)


def _write_labelmap(produced: Produced, path: Path) -> None:
    from .writers import write_labelmap

    write_labelmap(produced.result.labelmap, path)


def _write_probability(produced: Produced, path: Path) -> None:
    from .writers import write_probability

    write_probability(produced.result.probability, path)


def _write_dicom_seg(produced: Produced, path: Path) -> None:
    from .dicomseg import write_dicom_seg

    write_dicom_seg(produced.result.labelmap, produced.result.segments, produced.series, path,
                    creator=produced.creator)


def _write_dicom_probability(produced: Produced, path: Path) -> None:
    from .dicomseg import write_dicom_probability

    write_dicom_probability(produced.result.probability, produced.probability_segment,
                            produced.series, path, creator=produced.creator)


#: Suffix of DICOM outputs (:mod:`FemurSegLib.dicomseg`; they need a DICOM series as input).
DICOM_SUFFIX = ".dcm"

#: Main output kinds: file suffix -> writer. The first is the default in an output folder.
MAIN_WRITERS: Dict[str, Callable[[Produced, Path], None]] = {
    ".seg.nrrd": _write_seg_nrrd,
    ".nii.gz": _write_labelmap,
    ".nii": _write_labelmap,
    ".nrrd": _write_labelmap,
    ".mha": _write_labelmap,
    DICOM_SUFFIX: _write_dicom_seg,   # a DICOM Segmentation (BINARY) of a DICOM input
}

#: Probability map kinds: file suffix -> writer. The first is used in a folder.
PROBABILITY_WRITERS: Dict[str, Callable[[Produced, Path], None]] = {
    ".nrrd": _write_probability,
    ".nii.gz": _write_probability,
    ".nii": _write_probability,
    ".mha": _write_probability,
    DICOM_SUFFIX: _write_dicom_probability,  # a FRACTIONAL DICOM Segmentation
}

#: ``--dicom-seg`` (a DICOM Segmentation besides the main output).
DICOM_SEG_WRITERS: Dict[str, Callable[[Produced, Path], None]] = {DICOM_SUFFIX: _write_dicom_seg}

#: Files of ``--report DIR``.
REPORT_FILES = ("report.png", "volumes.json")


def known_suffix(path: os.PathLike, suffixes: Sequence[str]) -> Optional[str]:
    """The suffix of ``suffixes`` that ``path``'s name ends with (longest match), or None."""
    name = Path(path).name.lower()
    for suffix in sorted(suffixes, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def _names_a_folder(text: str) -> bool:
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(text.endswith(s) for s in seps) or Path(text).is_dir()


def resolve(text: str, suffixes: Sequence[str], n_inputs: int, what: str) -> Tuple[str, Path]:
    """``("file", path)`` or ``("folder", path)`` for a path given on the command line.

    One input: a known suffix makes a file, an existing folder or a trailing separator a folder,
    anything else is an :class:`OutputError` that lists the known suffixes. Several inputs: a
    folder (an existing file, or a name with a known suffix, is an error).
    """
    path = Path(text)
    if _names_a_folder(text):
        return "folder", path
    suffix = known_suffix(path, suffixes)
    if n_inputs == 1:
        if suffix is not None:
            return "file", path
        raise OutputError(f"{what} {text}: not a known file type ({', '.join(suffixes)}) and not "
                          f"an existing folder (end a new folder's name with {os.sep})")
    if suffix is not None or path.is_file():
        raise OutputError(f"{n_inputs} inputs need a {what} folder, not the file {text}")
    return "folder", path


@dataclass
class InputPlan:
    """Where the outputs of one input go (None: not requested)."""

    source: Path
    case: str
    main: Path
    probabilities: Optional[Path] = None
    stl_dir: Optional[Path] = None
    report_dir: Optional[Path] = None
    reference: Optional[Path] = None
    dicom_seg: Optional[Path] = None
    stl_names: List[str] = field(default_factory=list)

    def targets(self) -> List[Path]:
        """Every file this input may write (STL: one per possible segment)."""
        out = [self.main]
        if self.dicom_seg is not None:
            out.append(self.dicom_seg)
        if self.probabilities is not None:
            out.append(self.probabilities)
        if self.stl_dir is not None:
            out += [self.stl_dir / f"{n}.stl" for n in self.stl_names]
        if self.report_dir is not None:
            out += [self.report_dir / n for n in REPORT_FILES]
        return out


def plan_outputs(inputs: Sequence[Path], output: str, *, fmt: Optional[str] = None,
                 probabilities: Optional[str] = None, stl: Optional[str] = None,
                 report: Optional[str] = None, reference: Optional[str] = None,
                 dicom_seg: Optional[str] = None, stl_names: Sequence[str] = (),
                 cases: Optional[Sequence[str]] = None, folders: bool = False
                 ) -> List[InputPlan]:
    """Resolve the outputs of every input (see the module docstring for the naming rules).
    ``cases``: the case names (default: :func:`~FemurSegLib.images.case_name` of each input);
    ``folders``: name the outputs as for several inputs even when there is one (a cohort)."""
    from .images import case_name

    cases = list(cases) if cases is not None else [case_name(p) for p in inputs]
    n = max(len(inputs), 2) if folders else len(inputs)
    if n > 1 and len(set(cases)) != len(cases):
        twice = sorted({c for c in cases if cases.count(c) > 1})
        raise InputError(f"two inputs have the same case name ({', '.join(twice)}); segment "
                         "them into different folders")
    if fmt is not None and fmt not in MAIN_WRITERS:
        raise OutputError(f"unknown output format {fmt} (use {', '.join(MAIN_WRITERS)})")
    kind, main = resolve(output, list(MAIN_WRITERS), n, "output")
    if kind == "file" and fmt is not None and known_suffix(main, MAIN_WRITERS) != fmt:
        raise OutputError(f"--format {fmt} does not match the output file {main.name}")
    prob = resolve(probabilities, list(PROBABILITY_WRITERS), n, "probability map") \
        if probabilities else None
    seg = None
    if dicom_seg:
        if n == 1 and not _names_a_folder(dicom_seg) and \
                known_suffix(dicom_seg, DICOM_SEG_WRITERS) is None:
            raise OutputError(f"--dicom-seg writes a DICOM file ending in {DICOM_SUFFIX}, not "
                              f"{dicom_seg}")
        seg = resolve(dicom_seg, list(DICOM_SEG_WRITERS), n, "DICOM Segmentation")
    for option, text in (("--stl", stl), ("--report", report)):
        if text and Path(text).is_file():
            raise OutputError(f"{option} {text}: a file, not a folder")
    ref_kind = None
    if reference and not report:
        raise InputError("--reference is drawn in the QC report: add --report DIR")
    if reference:
        ref = Path(reference)
        if not ref.exists():
            raise InputError(f"reference not found: {ref}")
        ref_kind = "folder" if ref.is_dir() else "file"
        if n > 1 and ref_kind == "file":
            raise InputError(f"{n} inputs need a folder of reference label maps, not the file "
                             f"{ref}")
    plans = []
    for src, case in zip(inputs, cases):
        plan = InputPlan(source=src, case=case,
                         main=main if kind == "file" else
                         main / f"{case}{fmt or next(iter(MAIN_WRITERS))}",
                         stl_names=list(stl_names))
        if prob is not None:
            plan.probabilities = prob[1] if prob[0] == "file" else \
                prob[1] / f"{case}_probability{next(iter(PROBABILITY_WRITERS))}"
        if seg is not None:
            plan.dicom_seg = seg[1] if seg[0] == "file" else seg[1] / f"{case}{DICOM_SUFFIX}"
        if stl:
            plan.stl_dir = Path(stl) if n == 1 else Path(stl) / case
        if report:
            plan.report_dir = Path(report) if n == 1 else Path(report) / case
        if reference:
            plan.reference = Path(reference) if ref_kind == "file" else \
                _reference_in(Path(reference), case)
        plans.append(plan)
    return plans


def _reference_in(folder: Path, case: str) -> Path:
    """The label map of ``case`` in ``folder`` (``<case>.<image ending>``)."""
    from .images import IMAGE_SUFFIXES, case_name, image_suffix

    found = sorted(p for p in folder.iterdir() if p.is_file() and image_suffix(p)
                   and case_name(p) == case)
    if not found:
        raise InputError(f"no reference label map for {case} in {folder} (expected "
                         f"{case}{IMAGE_SUFFIXES[1]} or another image ending)")
    if len(found) > 1:
        raise InputError(f"several reference label maps for {case} in {folder}: "
                         f"{', '.join(p.name for p in found)}")
    return found[0]


# ----------------------------------------------------------------------------------------------
# Checks before the model runs


#: the one writable-output check (files.check_output); check_target is its name here
check_target = check_output


def check_outputs(plans: Sequence[InputPlan], overwrite: bool) -> None:
    """Check every planned file of every input (see :func:`check_target`); also refuse a file
    planned twice or an output that is one of the inputs."""
    seen: Dict[Path, Path] = {}
    sources = {p.source.absolute() for p in plans}
    for plan in plans:
        for target in plan.targets():
            key = target.absolute()
            if key in seen:
                raise OutputError(f"two outputs are the same file: {target}")
            if key in sources:
                raise OutputError(f"output {target} is an input")
            seen[key] = target
            check_target(target, overwrite)
