"""The ``femurseg`` command line.

Exit codes: 0 success (every result plausible); 3 finished, but at least one input gave no
femur or an implausible one (one line ``warning: INPUT: ...`` on stderr for each, naming what is
wrong and the likely cause where one is known); 2 bad usage, bad input, bad model, an output
that exists or cannot be written (one line ``error: ...`` on stderr, no traceback); 1 an
unexpected internal error (one line, and the traceback only with ``--debug``). Errors map to
their codes in :mod:`FemurSegLib.commandline`. The ``segment`` path never imports torch unless
the PyTorch fallback engine is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from .commandline import LowerCaseLevels, VersionAction, global_options
from .commandline import Parser as _Parser
from .commandline import run
from .errors import EXIT_IMPLAUSIBLE, WARNING_PREFIX, InputError
from .files import json_ready
from .outputplan import MAIN_WRITERS

log = logging.getLogger("femurseg")


# ----------------------------------------------------------------------------------------------
# Progress reporting


class _Progress:
    """A tqdm bar on stderr, machine-readable ``PROGRESS <percent> <message>`` lines, or nothing."""

    def __init__(self, mode: str, label: str):
        self.mode = mode
        self.label = label
        self.bar = None
        self.last = -1
        if mode == "bar":
            try:
                from tqdm import tqdm
                # disable=None: no bar when stderr is not a terminal (logs, pipes)
                self.bar = tqdm(total=100, desc=label, leave=False, disable=None,
                                bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}")
            except ImportError:  # pragma: no cover - tqdm is a dependency
                self.mode = "none"

    def __call__(self, fraction: float, message: str) -> None:
        pct = int(round(100 * max(0.0, min(1.0, fraction))))
        if self.mode == "lines":
            if pct != self.last:
                sys.stderr.write(f"PROGRESS {pct} {self.label}: {message}\n")
                sys.stderr.flush()
        elif self.bar is not None:
            self.bar.n = pct
            self.bar.set_description_str(f"{self.label} [{message}]", refresh=False)
            self.bar.refresh()
        self.last = pct

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


# ----------------------------------------------------------------------------------------------
# segment


def _warn(message: str) -> None:
    """One warning line on stderr (the Slicer module shows lines with this prefix)."""
    sys.stderr.write(f"{WARNING_PREFIX} {message}\n")
    sys.stderr.flush()


def cmd_segment(args) -> int:
    from . import batch, images, outputplan
    from .inference import Segmenter
    from .modelfolder import find_model
    from .segments import femur_segments

    inputs = images.expand_inputs(args.inputs)
    for p in inputs:
        batch.check_input(p)
    # every output is resolved and checked before the model is loaded or run
    plans = outputplan.plan_outputs(
        inputs, args.output, fmt=args.format, probabilities=args.probabilities, stl=args.stl,
        report=args.report, reference=args.reference, dicom_seg=args.dicom_seg,
        stl_names=[s.segment_id for s in femur_segments(not args.no_split)])
    series = batch.dicom_plan(plans, args.series, lambda m: _say(args, m))
    outputplan.check_outputs(plans, args.overwrite)
    folds = parse_folds(args.folds)
    model_dir = find_model(args.model)
    t0 = time.perf_counter()
    segmenter = Segmenter.from_folder(model_dir, device=args.device, engine=args.engine,
                                      folds=folds, tta=args.tta, split=not args.no_split,
                                      dense=args.dense,
                                      threads=args.threads)
    _say(args, f"model {segmenter.model.name} ({len(segmenter.engines)} fold(s), "
               f"{segmenter.engines[0].name} on {segmenter.engines[0].device}, flip TTA "
               f"{'on' if segmenter.tta else 'off'}) loaded in "
               f"{time.perf_counter() - t0:.1f} s")
    implausible = 0
    for plan, chosen in zip(plans, series):
        implausible += not _segment_one(args, segmenter, plan, chosen)
    if implausible and len(plans) > 1:
        _say(args, f"{implausible} of {len(plans)} inputs gave no femur or an implausible one "
                   "(see the warnings)")
    return EXIT_IMPLAUSIBLE if implausible else 0


def parse_folds(text: Optional[str]) -> Optional[list]:
    """``--folds 0,2`` as ``[0, 2]`` (None: every fold)."""
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--folds takes comma-separated fold numbers, not {text!r}") from None


def case_options(args):
    """The options of ``segment`` that act on each input's outputs."""
    from .batch import CaseOptions

    return CaseOptions(overwrite=args.overwrite, reference_label=args.reference_label,
                       stl_smoothing=args.stl_smoothing, report_view=args.report_view)


def _segment_one(args, segmenter, plan, series=None) -> bool:
    """Segment one input (``series``: its chosen DICOM series, if any) and write all its
    outputs (or none); True when the result is plausible, else a warning line is printed."""
    from .batch import segment_case

    progress = _Progress("none" if args.quiet and args.progress != "lines" else args.progress,
                         plan.case)
    try:
        outcome = segment_case(segmenter, plan, series, case_options(args), progress=progress)
    finally:
        progress.close()
    vols = ", ".join(f"{name} {ml:.1f} ml" for name, ml in outcome.volumes_ml.items())
    shown = [w for w in outcome.written
             if plan.stl_dir is None or Path(w).parent != plan.stl_dir]
    if plan.stl_dir is not None:
        shown.append(f"{outcome.stl_files} STL file(s) in {plan.stl_dir}" if outcome.stl_files
                     else f"no STL file (no femur voxels) in {plan.stl_dir}")
    _say(args, f"{plan.source.name}: {vols} (threshold {outcome.threshold:.2f}) -> "
               f"{', '.join(shown)} [{outcome.seconds:.1f} s]")
    if outcome.warning:
        _warn(outcome.warning)
    return outcome.warning is None


def cmd_cohort(args) -> int:
    from . import cohort
    from .modelfolder import find_model

    for value, name in ((args.workers, "--workers"),
                        (args.threads_per_worker, "--threads-per-worker"),
                        (args.threads, "--threads")):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, not {value}")
    if args.retries < 0:
        raise InputError(f"--retries must be 0 or more, not {args.retries}")
    workers, tpw, onnx_threads = cohort.default_layout(args.workers, args.threads_per_worker,
                                                       args.threads, cohort.machine_cores())
    folds = parse_folds(args.folds)
    settings = cohort.CohortSettings(
        outdir=Path(args.output), model_dir=find_model(args.model),
        segmenter={"device": args.device, "engine": args.engine, "tta": args.tta,
                   "folds": tuple(folds) if folds else None, "split": not args.no_split,
                   "dense": args.dense, "threads": onnx_threads},
        options=case_options(args), fmt=args.format, probabilities=args.probabilities,
        stl=args.stl, report=args.report, reference=args.reference, dicom_seg=args.dicom_seg,
        series=args.series, split=not args.no_split,
        workers=None if args.scheduler else workers, threads_per_worker=tpw,
        scheduler=args.scheduler, retries=args.retries, dashboard=args.verbose)
    if not args.scheduler:
        _say(args, f"cluster: {workers} worker(s) x {tpw} thread(s), ONNX Runtime "
                   f"{onnx_threads} thread(s) per case")
    progress = cohort.CaseProgress("none" if args.quiet else args.progress)
    try:
        result = cohort.run_cohort(args.inputs, settings, on_record=progress,
                                   say=lambda m: _say(args, m))
    finally:
        progress.close()
    counts = result.counts()
    manifest = settings.outdir / cohort.MANIFEST_CSV
    print(f"{len(result.records)} of {result.total} case(s) done: {counts['ok']} ok, "
          f"{counts['warning']} warning, {counts['failed']} failed ({result.skipped} of them "
          f"done by an earlier run); manifest: {manifest}", flush=True)
    if result.interrupted:
        raise KeyboardInterrupt
    return result.exit_code()


def cmd_dicom_series(args) -> int:
    from .dicom import find_series, series_table

    print(series_table(find_series(args.folder)))
    return 0


# ----------------------------------------------------------------------------------------------
# other commands


def cmd_models(args) -> int:
    from .modelfolder import (bundled_models_dir, describe, installed_models_dir, list_models,
                              model_choices)

    models = list_models()
    if args.json:
        print(json.dumps([{"name": m.name, "path": str(m.path), "source": m.source,
                           "card": m.card} for m in models], indent=2))
        return 0
    if not models:
        print(f"no models installed (bundled: {bundled_models_dir()}; installed: "
              f"{installed_models_dir()})")
        return 0
    for m in models:
        print(f"[{m.source}] {m.path}")
        print(describe(m.card))
        print("  use: " + " or ".join(f"--model {c}" for c in model_choices(m)))
        print()
    return 0


#: Columns of `femurseg evaluate` (metrics of FemurSegLib.metrics.evaluate_masks).
METRIC_COLUMNS = ("dsc", "precision", "recall", "specificity", "hd95_mm", "assd_mm",
                  "volume_pred_ml", "volume_ref_ml")
FEMURS = ("both", "right", "left")


def _evaluate_pair(prediction: Path, reference: Path, args) -> dict:
    """Metrics of one prediction against its reference: both femurs together, and each femur
    on its side of the reference (FemurSegLib.postprocess.side_regions)."""
    import SimpleITK as sitk

    from . import images
    from .metrics import evaluate_masks
    from .postprocess import side_regions

    ref_img = images.read_image(reference, what="reference", allow_constant=True)
    pred_img = images.read_image(prediction, what="prediction", allow_constant=True)
    mismatch = images.grid_mismatch(pred_img, ref_img)
    if mismatch:
        raise InputError(f"prediction {prediction.name} and reference {reference.name} are on "
                         f"different grids: {mismatch}")
    ref = sitk.GetArrayViewFromImage(ref_img) == args.label
    if not ref.any():
        raise InputError(f"reference {reference.name} has no voxel with label {args.label}")
    pred_arr = sitk.GetArrayViewFromImage(pred_img)
    pred = pred_arr == args.pred_label if args.pred_label is not None else pred_arr > 0
    spacing = tuple(reversed(ref_img.GetSpacing()))  # array axis order
    femurs = {"both": evaluate_masks(pred, ref, spacing)}
    for side, region in side_regions(ref, ref_img).items():
        femurs[side] = evaluate_masks(pred & region, ref & region, spacing)
    return {"case": images.case_name(prediction), "prediction": str(prediction),
            "reference": str(reference), "label": args.label, **femurs["both"],
            **{side: femurs[side] for side in ("right", "left") if side in femurs}}


def _pairs(pred_dir: Path, ref_dir: Path):
    """Prediction and reference files paired by case name, and the unpaired ones."""
    from . import images

    def by_case(folder: Path, what: str) -> dict:
        found = {}
        for p in sorted(folder.iterdir()):
            if p.is_file() and images.image_suffix(p):
                case = images.case_name(p)
                if case in found:
                    raise InputError(f"two {what} files of case {case} in {folder}: "
                                     f"{found[case].name}, {p.name}")
                found[case] = p
        return found

    preds, refs = by_case(pred_dir, "prediction"), by_case(ref_dir, "reference")
    paired = [(preds[c], refs[c]) for c in sorted(set(preds) & set(refs))]
    return paired, sorted(set(preds) - set(refs)), sorted(set(refs) - set(preds))


def _rows(result: dict):
    for femur in FEMURS:
        metrics = result if femur == "both" else result.get(femur)
        if metrics is not None:
            # NaN and infinity as null: strict JSON and empty CSV cells
            yield femur, {k: json_ready(metrics[k]) for k in METRIC_COLUMNS}


def _summary(results: list) -> dict:
    """Mean and sd of each metric per femur over the cases (:func:`metrics.mean_sd`; null
    where undefined: no value, or the sd of one)."""
    from .metrics import mean_sd

    out = {}
    for femur in FEMURS:
        rows = [dict(_rows(r)).get(femur) for r in results]
        rows = [r for r in rows if r is not None]
        if rows:
            out[femur] = {"cases": len(rows)}
            for k in METRIC_COLUMNS:
                mean, sd, _ = mean_sd([r[k] for r in rows])
                out[femur][k] = json_ready({"mean": mean, "sd": sd})
    return out


def cmd_evaluate(args) -> int:
    import csv
    import io

    from . import files

    pred_path, ref_path = Path(args.prediction), Path(args.reference)
    for p, what in ((pred_path, "prediction"), (ref_path, "reference")):
        if not p.exists():
            raise InputError(f"{what} not found: {p}")
    folders = pred_path.is_dir() and not _is_dicom_series(pred_path)
    if folders != (ref_path.is_dir() and not _is_dicom_series(ref_path)):
        raise InputError("give two files or two folders (pairs by case name), not one of each")
    for out in (args.json, args.csv):
        if out:
            files.check_writable(out, args.overwrite)
    unpaired = {"predictions": [], "references": []}
    if folders:
        pairs, unpaired["predictions"], unpaired["references"] = _pairs(pred_path, ref_path)
        if not pairs:
            raise InputError(f"no case has both a prediction in {pred_path} and a reference in "
                             f"{ref_path} (files pair by case name: hip01.seg.nrrd with "
                             "hip01.nii.gz)")
    else:
        pairs = [(pred_path, ref_path)]
    results = [_evaluate_pair(p, r, args) for p, r in pairs]
    for what, cases in unpaired.items():
        if cases:
            print(f"unpaired {what} (left out): {', '.join(cases)}")
    header = f"{'case':<16} {'femur':<6}" + "".join(f" {k:>14}" for k in METRIC_COLUMNS)
    print(header)
    for result in results:
        for femur, row in _rows(result):
            print(f"{result['case']:<16} {femur:<6}" + "".join(
                f" {'-' if v is None else format(v, '.4f'):>14}" for v in row.values()))
    summary = _summary(results) if folders else None
    if summary:
        for femur, stats in summary.items():
            print(f"{'mean':<16} {femur:<6}" + "".join(
                f" {'-' if stats[k]['mean'] is None else format(stats[k]['mean'], '.4f'):>14}"
                for k in METRIC_COLUMNS))
    if args.json:
        strict = json_ready(results)
        data = strict[0] if not folders else {"cases": strict, "unpaired": unpaired,
                                              "summary": summary}
        files.write_json(data, args.json, overwrite=args.overwrite)
    if args.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["case", "femur", *METRIC_COLUMNS, "prediction", "reference"])
        for result in results:
            for femur, row in _rows(result):
                writer.writerow([result["case"], femur,
                                 *("" if v is None else repr(v) for v in row.values()),
                                 result["prediction"], result["reference"]])
        files.write_text(buffer.getvalue(), args.csv, overwrite=args.overwrite)
    return 0


def _is_dicom_series(folder: Path) -> bool:
    """A folder without image files (read as a DICOM series), not a folder of cases."""
    from . import images

    return not any(p.is_file() and images.image_suffix(p) for p in folder.iterdir())


def cmd_phantom(args) -> int:
    from .phantom import write_phantom

    write_phantom(args.output, args.labels, seed=args.seed, overwrite=args.overwrite)
    _say(args, f"phantom (seed {args.seed}) -> {args.output}"
               + (f", labels -> {args.labels}" if args.labels else ""))
    return 0


# ----------------------------------------------------------------------------------------------


def version_text() -> str:
    """``femurseg VERSION`` and the default model (name, version, folder) or that it is missing."""
    from . import __version__
    from .errors import ModelError
    from .modelfolder import DEFAULT_MODEL, find_model, read_card

    try:
        folder = find_model(None)
        card = read_card(folder)
    except ModelError:
        return f"femurseg {__version__}\ndefault model: {DEFAULT_MODEL} (not installed)"
    return (f"femurseg {__version__}\ndefault model: {card['name']} "
            f"{card.get('version', '')} ({folder})")


def model_options(s) -> None:
    """Which model runs where, and how: the options of every command that runs the model
    (``segment``, ``cohort``, ``review``)."""
    s.add_argument("--model", metavar="NAME|DIR", help="a model's name (as `femurseg models` "
                   "lists it) or the name of its folder, installed or bundled, or the path of "
                   "a model folder (default: the bundled default model)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the network runs: auto (a CUDA GPU when usable, else the CPU), "
                        "cpu, cuda, or mps (Apple GPU, through the PyTorch engine)")
    s.add_argument("--engine", default="auto", choices=["auto", "onnx", "torch"],
                   help="ONNX Runtime (default) or the PyTorch fallback")
    s.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime")
    tta = s.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None,
                     help="average with the left-right flipped volume (default: on a GPU; on "
                          "the CPU only if the model card says it pays)")
    tta.add_argument("--no-tta", dest="tta", action="store_false",
                     help="no left-right flip test-time augmentation")


def stl_smoothing_option(s) -> None:
    """``--stl-smoothing`` of every command that writes STL surfaces."""
    s.add_argument("--stl-smoothing", type=float, default=0.5, metavar="S",
                   help="surface smoothing in voxels (0 = none; default 0.5)")


def segment_options(s) -> None:
    """The options of ``segment`` that ``cohort`` shares: output kinds, model and engine."""
    s.add_argument("--format", choices=list(MAIN_WRITERS), help="file type written into an "
                   "output folder (default .seg.nrrd)")
    model_options(s)
    s.add_argument("--probabilities", metavar="PATH|DIR", help="also write the femur "
                   "probability map (float32, input grid; x.dcm: a FRACTIONAL DICOM Segmentation)")
    s.add_argument("--series", metavar="NUMBER|UID", help="the DICOM series to segment (Series "
                   "Number or Series Instance UID; default: the largest; see dicom-series)")
    s.add_argument("--dicom-seg", metavar="PATH|DIR", help="also write a DICOM Segmentation of "
                   "a DICOM input (.dcm)")
    s.add_argument("--stl", metavar="DIR", help="also write one STL surface per segment (LPS mm)")
    stl_smoothing_option(s)
    s.add_argument("--report", metavar="DIR", help="write a PNG montage (every slice with femur) "
                   "and the segment volumes")
    s.add_argument("--report-view", choices=["femurs", "full"], default="femurs",
                   help="what each report tile shows: the femurs' bounding box plus 15 mm, the "
                        "same in every tile (default), or the full field of view")
    s.add_argument("--reference", metavar="MASK|DIR", help="reference label map drawn as an "
                   "outline in the report (several inputs: a folder, paired by case name)")
    s.add_argument("--reference-label", type=int, default=1, metavar="N",
                   help="femur label value in the reference (default 1)")
    s.add_argument("--no-split", action="store_true", help="one 'Femur' segment (label 1) "
                   "instead of 1 = right femur, 2 = left femur")
    s.add_argument("--folds", metavar="0,1,2,3", help="use only these folds of the ensemble")
    s.add_argument("--dense", action="store_true", help="run every fold on the whole volume "
                   "(no region-of-interest cascade; slower, for comparisons)")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="femurseg", description="Segment the proximal femur in hip MR images.")
    p.add_argument("--version", action=VersionAction, text=version_text)
    global_options(p, "--debug", "--verbose")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("segment", help="segment one or more MR volumes")
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image file (.nii.gz, .nii, .nrrd, .mha, .mhd), DICOM folder, or folder of images")
    s.add_argument("-o", "--output", required=True, metavar="OUTPUT|DIR/",
                   help="output file for one input (.seg.nrrd, .nii.gz, .nii, .nrrd, .mha, or "
                        ".dcm: a DICOM Segmentation of a DICOM input), or a folder (an existing "
                        "one, or a name ending in /); files in a folder are named by case "
                        "(hip01_0000.nii.gz -> hip01.seg.nrrd)")
    segment_options(s)
    s.add_argument("--quiet", action="store_true", help="print nothing but warnings and errors")
    s.add_argument("--progress", default="bar", choices=["bar", "lines", "none"],
                   help="progress display: a bar, 'PROGRESS <pct> <msg>' lines on stderr, or none")
    s.set_defaults(func=cmd_segment)

    c = sub.add_parser("cohort", help="segment a cohort on a Dask cluster (resumable, with a "
                       "manifest)", description="Segment many inputs on Dask workers (an "
                       "embedded local cluster, or --scheduler). Outputs are named as with a "
                       "batch segment; OUTDIR/manifest.csv and manifest.json get one row per "
                       "input. Rerunning the same command skips the cases already done. Exit "
                       "code 2 if any input failed, 3 if any only warned, else 0. Needs "
                       "femurseg[cohort].")
    c.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, DICOM folder, folder "
                   "of images, or a CSV list with a 'path' column (and optionally 'case'; "
                   "relative paths are relative to the CSV file)")
    c.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                   help="output folder (segmentations named by case, the manifest)")
    segment_options(c)
    c.add_argument("--workers", type=int, metavar="N", help="worker processes of the embedded "
                   "cluster (default: one per 2 cores)")
    c.add_argument("--threads-per-worker", type=int, metavar="M", help="cases run at once in "
                   "each worker (default 1); ONNX Runtime threads per case default to "
                   "cores / (N x M)")
    c.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="use this running Dask "
                   "scheduler and its workers instead of an embedded cluster (they must see "
                   "the inputs and OUTDIR at the same paths)")
    c.add_argument("--retries", type=int, default=2, metavar="N", help="run a case again on "
                   "another worker at most N times when its worker dies (default 2)")
    c.add_argument("--quiet", action="store_true", help="print nothing but warnings, failures "
                   "and the summary")
    c.add_argument("--progress", default="auto", choices=["auto", "bar", "lines", "none"],
                   help="a bar over cases on a terminal, else one line per case (auto)")
    c.set_defaults(func=cmd_cohort, interrupted="interrupted: the manifest lists the cases "
                   "that finished; run the same command again to continue")

    d = sub.add_parser("dicom-series", help="list the DICOM image series under a folder")
    d.add_argument("folder", metavar="DIR", help="a folder searched with its subfolders (a "
                   "study or archive export)")
    d.set_defaults(func=cmd_dicom_series)

    m = sub.add_parser("models", help="list installed and bundled models with their cards")
    m.add_argument("--json", action="store_true", help="print the cards as JSON")
    m.set_defaults(func=cmd_models)

    e = sub.add_parser("evaluate", help="compare segmentations with references: both femurs "
                       "together and each femur")
    e.add_argument("prediction", metavar="PRED", help="a segmentation, or a folder of them")
    e.add_argument("reference", metavar="REF", help="a reference label map, or a folder of them "
                   "(paired with the predictions by case name)")
    e.add_argument("--label", type=int, default=1, help="reference label of the femur (default 1)")
    e.add_argument("--pred-label", type=int, default=None,
                   help="prediction label (default: every non-zero label)")
    e.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    e.add_argument("--csv", metavar="OUT", help="also write the metrics as CSV (one row per "
                   "case and femur)")
    e.add_argument("--overwrite", action="store_true", help="replace existing --json/--csv files")
    e.set_defaults(func=cmd_evaluate)

    ph = sub.add_parser("phantom", help="write a synthetic hip MR phantom")
    ph.add_argument("output", metavar="OUT", help="the image file to write (.nii.gz, .nii, "
                    ".nrrd, .mha)")
    ph.add_argument("--labels", metavar="OUT", help="also write its ground-truth label map")
    ph.add_argument("--seed", type=int, default=0, help="anatomy and noise of the phantom "
                    "(default 0, the one of make demo)")
    ph.add_argument("--overwrite", action="store_true", help="replace existing files")
    ph.add_argument("--quiet", action="store_true", help="print nothing but errors")
    ph.set_defaults(func=cmd_phantom)
    for register in _added_commands():
        register(sub)
    for command in sub.choices.values():  # also after the command: femurseg segment ... --verbose
        global_options(command, "--debug", "--verbose", top=False)
    return p


#: Entry-point group through which other packages add commands to ``femurseg`` (the review app
#: of the ``[review]`` extra adds ``femurseg review``); the core never imports them itself.
COMMANDS_GROUP = "femurseg.commands"


def _added_commands() -> list:
    """The ``register(subparsers)`` functions of the installed ``femurseg.commands`` entry
    points, by name (a broken one is logged and left out: it never breaks ``femurseg``)."""
    from importlib.metadata import entry_points

    try:
        found = entry_points(group=COMMANDS_GROUP)
    except TypeError:  # Python 3.9
        found = entry_points().get(COMMANDS_GROUP, [])
    loaded = {}
    for ep in sorted(found, key=lambda e: e.name):
        if ep.name in loaded:
            continue
        try:
            loaded[ep.name] = ep.load()
        except Exception as exc:  # pragma: no cover - depends on the installation
            log.debug("femurseg command %s not loaded: %s", ep.name, exc)
    return list(loaded.values())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(LowerCaseLevels())
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        handlers=[handler])
    return run(args.func, args, interrupted=getattr(args, "interrupted", "interrupted"))


if __name__ == "__main__":
    sys.exit(main())
