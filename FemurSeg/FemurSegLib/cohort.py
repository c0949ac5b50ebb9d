"""``femurseg cohort``: a whole cohort on a Dask cluster, resumable, with one manifest row per case.

The inputs (files, folders of images, DICOM folders, CSV lists with a ``path`` column and an
optional ``case`` column) are planned and checked exactly as ``femurseg segment`` plans and checks
a batch (:mod:`FemurSegLib.outputplan`, :mod:`FemurSegLib.batch`), before any model runs. Each case
is then one Dask task that calls :func:`FemurSegLib.batch.segment_case`, the function ``segment``
calls, on a worker that loaded and verified the model once (:func:`worker_segmenter`).

The engine is ``dask.distributed``: an embedded :class:`~distributed.LocalCluster` (worker
processes) by default, or an existing cluster (``scheduler="tcp://HOST:PORT"``); the workers
must see the inputs and the output folder at the same paths. Dask is imported only here.

Nothing is lost:

- each case's outputs are written all or nothing, and with them, in the same staging, its record
  ``OUTDIR/.femurseg-cohort/<case>.json`` (so a record exists exactly when the outputs are
  complete); a failed case gets a record with the reason and no outputs;
- ``OUTDIR/manifest.csv`` gets one row as soon as a case finishes (appended and flushed) and is
  rewritten in input order, with ``manifest.json``, when the run ends or is interrupted;
- rerunning the same command skips every case whose record says ``ok`` or ``warning`` with the
  same model and whose outputs all exist; failed and unfinished cases run again;
- a worker that dies mid-case (killed, out of memory, a lost machine) has its case rescheduled by
  the Dask scheduler on another worker, at most ``retries`` times
  (``distributed.scheduler.allowed-failures``), then the case is ``failed`` with that reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import batch, files, outputplan
from .errors import FemurSegError, InputError, OutputError

#: Where the per-case records live (inside the output folder).
RECORDS_DIR = ".femurseg-cohort"
MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
#: Columns of the manifest, in order.
COLUMNS = ("case", "input", "status", "exit_code", "meaning", "message", "right_femur_ml",
           "left_femur_ml", "femur_ml", "model", "model_version", "seconds", "worker", "outputs")
#: What each status's exit code means (the code ``femurseg segment`` gives for that input alone).
MEANINGS = {0: "success: a plausible result",
            3: "finished with a warning: no femur or an implausible one",
            2: "bad input, bad model or an output that cannot be written",
            1: "internal error or the worker died"}
STATUS_CODES = {"ok": 0, "warning": 3}
#: Exit codes of a cohort run.
EXIT_FAILED, EXIT_WARNED = 2, 3
#: Default number of times a case is rescheduled after its worker died.
DEFAULT_RETRIES = 2


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass
class CohortInput:
    path: Path
    case: Optional[str] = None  # from a CSV's case column


def read_list(csv_path: Path) -> List[CohortInput]:
    """The inputs of a CSV file with a ``path`` column and an optional ``case`` column; relative
    paths are relative to the CSV file's folder."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read input list {csv_path}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    names = [n.strip().lower() for n in (reader.fieldnames or [])]
    if "path" not in names:
        raise InputError(f"input list {csv_path} has no 'path' column (columns: "
                         f"{', '.join(reader.fieldnames or []) or 'none'})")
    out = []
    for n, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row.get("path"):
            raise InputError(f"input list {csv_path} line {n}: empty path")
        case = row.get("case") or None
        if case is not None and (case in (".", "..") or Path(case).name != case
                                 or "\\" in case):
            raise InputError(f"input list {csv_path} line {n}: case {case!r} is not a plain "
                             "name (it names the output files)")
        p = Path(row["path"])
        out.append(CohortInput(p if p.is_absolute() else csv_path.parent / p, case))
    return out


def expand(inputs: Sequence[os.PathLike]) -> List[CohortInput]:
    """Files, folders of images (expanded as ``segment`` expands them) and CSV lists."""
    from .images import expand_inputs

    out: List[CohortInput] = []
    for item in inputs:
        p = Path(item)
        if p.suffix.lower() == ".csv" and p.is_file():
            out += read_list(p)
        else:
            out += [CohortInput(q) for q in expand_inputs([p])]
    if not out:
        raise InputError("no inputs (the folders and lists given hold no image)")
    return out


# ----------------------------------------------------------------------------------------------
# Records and the manifest


def record_path(outdir: Path, case: str) -> Path:
    return outdir / RECORDS_DIR / f"{case}.json"


def make_record(plan, status: str, *, message: str = "", outcome=None, model: str = "",
                version: str = "", worker: str = "", exit_code: Optional[int] = None) -> dict:
    code = STATUS_CODES.get(status, 2) if exit_code is None else exit_code
    vols = outcome.volumes_ml if outcome is not None else {}
    row = {"case": plan.case, "input": str(plan.source), "status": status, "exit_code": code,
           "meaning": MEANINGS[code], "message": message,
           "right_femur_ml": _ml(vols.get("Right femur")),
           "left_femur_ml": _ml(vols.get("Left femur")),
           "femur_ml": _ml(sum(vols.values())) if vols else None,
           "model": model, "model_version": version,
           "seconds": round(outcome.seconds, 3) if outcome is not None else None,
           "worker": worker, "outputs": list(outcome.written) if outcome is not None else []}
    return row


def _ml(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(float(value), 3)


def write_record(record: dict, path: Path) -> None:
    """One record file (atomic; replaces an older record of the same case)."""
    files.write_json(record, path, overwrite=True)


def read_record(path: Path) -> Optional[dict]:
    try:
        data = files.read_json(path, "case record")
    except FemurSegError:
        return None  # unreadable: the case runs again
    return data if data.get("case") else None


def csv_row(record: dict) -> List[str]:
    out = []
    for k in COLUMNS:
        v = record.get(k)
        out.append(";".join(v) if isinstance(v, list) else "" if v is None else str(v))
    return out


def manifest_text(records: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in records:
        writer.writerow(csv_row(r))
    return buffer.getvalue()


def read_manifest(path: Path) -> List[dict]:
    """The rows of a ``manifest.csv`` (as strings)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class Manifest:
    """``manifest.csv``: the finished rows of earlier runs, then one row appended (and flushed)
    as each case finishes; :meth:`close` rewrites it in input order with ``manifest.json``."""

    def __init__(self, outdir: Path, order: Sequence[str], records: Dict[str, dict]):
        self.outdir = outdir
        self.order = list(order)
        self.records = dict(records)
        self._write_all()
        self._file = open(outdir / MANIFEST_CSV, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\n")

    def add(self, record: dict) -> None:
        self.records[record["case"]] = record
        self._writer.writerow(csv_row(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def ordered(self) -> List[dict]:
        return [self.records[c] for c in self.order if c in self.records]

    def _write_all(self) -> None:
        rows = self.ordered()
        files.write_text(manifest_text(rows), self.outdir / MANIFEST_CSV, overwrite=True)
        files.write_json({"columns": list(COLUMNS), "cases": rows},
                         self.outdir / MANIFEST_JSON, overwrite=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._write_all()


def complete(record: Optional[dict], plan, model: str, version: str) -> bool:
    """True when ``record`` says the case finished (ok or warning) with this model and every
    output that ``plan`` asks for exists."""
    if not record or record.get("status") not in STATUS_CODES:
        return False
    if record.get("model") != model or str(record.get("model_version")) != str(version):
        return False
    outputs = {str(p) for p in record.get("outputs") or []}
    wanted = [plan.main, plan.dicom_seg, plan.probabilities] + \
        ([plan.report_dir / n for n in outputplan.REPORT_FILES] if plan.report_dir else [])
    if any(p is not None and str(p) not in outputs for p in wanted):
        return False
    if plan.stl_dir is not None and not plan.stl_dir.is_dir():
        return False
    return all(Path(p).is_file() for p in outputs)


# ----------------------------------------------------------------------------------------------
# On a worker


_SEGMENTERS: Dict[tuple, object] = {}
_SEGMENTERS_LOCK = threading.Lock()


def worker_segmenter(model_dir: str, settings: Tuple[Tuple[str, object], ...]):
    """The segmenter of this worker process for ``model_dir`` and ``settings``, loaded once
    (model files verified against the card's SHA-256 here, on this worker) and then shared by
    the worker's threads."""
    from .inference import Segmenter

    key = (model_dir, settings)
    with _SEGMENTERS_LOCK:
        segmenter = _SEGMENTERS.get(key)
        if segmenter is None:
            kwargs = dict(settings)
            if kwargs.get("folds") is not None:
                kwargs["folds"] = list(kwargs["folds"])
            segmenter = Segmenter.from_folder(model_dir, **kwargs)
            _SEGMENTERS[key] = segmenter
    return segmenter


def worker_name() -> str:
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = "local"
    return f"{address} (pid {os.getpid()} on {socket.gethostname()})"


def run_case(task: dict) -> dict:
    """One case on a worker: segment and write it (outputs and record together) and return its
    record. Bad input and internal errors become a ``failed`` record; nothing raises."""
    plan, worker = task["plan"], worker_name()
    model, version = task["model"], task["version"]
    try:
        segmenter = worker_segmenter(task["model_dir"], task["settings"])

        def record_writer(outcome, tmp: Path) -> None:
            status = "warning" if outcome.warning else "ok"
            rec = make_record(plan, status, message=outcome.warning or "", outcome=outcome,
                              model=model, version=version, worker=worker)
            tmp.write_text(json.dumps(files.json_ready(rec), indent=2) + "\n", encoding="utf-8")

        outcome = batch.segment_case(segmenter, plan, task["series"], task["options"],
                                     extra=[(task["record"], record_writer)])
        return make_record(plan, "warning" if outcome.warning else "ok",
                           message=outcome.warning or "", outcome=outcome, model=model,
                           version=version, worker=worker)
    except FemurSegError as exc:
        return make_record(plan, "failed", message=str(exc), model=model, version=version,
                           worker=worker, exit_code=exc.exit_code)
    except MemoryError:
        return make_record(plan, "failed", message="out of memory on the worker",
                           model=model, version=version, worker=worker, exit_code=1)
    except Exception as exc:  # an internal error: one line in the manifest
        msg = " ".join(str(exc).split()) or type(exc).__name__
        return make_record(plan, "failed", message=f"internal error ({type(exc).__name__}: "
                           f"{msg})", model=model, version=version, worker=worker, exit_code=1)


# ----------------------------------------------------------------------------------------------
# The client


@dataclass
class CohortSettings:
    """Everything a cohort run needs besides its inputs (see ``femurseg cohort --help``)."""

    outdir: Path
    model_dir: Path
    segmenter: Dict[str, object] = field(default_factory=dict)  # Segmenter.from_folder kwargs
    options: batch.CaseOptions = batch.CaseOptions()
    fmt: Optional[str] = None
    probabilities: Optional[str] = None
    stl: Optional[str] = None
    report: Optional[str] = None
    reference: Optional[str] = None
    dicom_seg: Optional[str] = None
    series: Optional[str] = None
    split: bool = True
    workers: Optional[int] = None
    threads_per_worker: Optional[int] = None
    scheduler: Optional[str] = None
    retries: int = DEFAULT_RETRIES
    dashboard: bool = False


@dataclass
class CohortResult:
    records: List[dict]
    skipped: int
    total: int = 0
    interrupted: bool = False
    dashboard: Optional[str] = None

    def counts(self) -> Dict[str, int]:
        out = {"ok": 0, "warning": 0, "failed": 0}
        for r in self.records:
            out[r["status"]] += 1
        return out

    def exit_code(self) -> int:
        counts = self.counts()
        return EXIT_FAILED if counts["failed"] else EXIT_WARNED if counts["warning"] else 0


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def default_layout(workers: Optional[int], threads_per_worker: Optional[int],
                   onnx_threads: Optional[int], cores: int) -> Tuple[int, int, int]:
    """``(workers, threads per worker, ONNX Runtime threads per case)``: by default one worker
    (one case at a time) per two cores, each case running ONNX Runtime on two threads, so that
    workers x threads x ONNX threads never exceeds the cores."""
    tpw = threads_per_worker or 1
    n = workers or max(1, cores // (2 * tpw))
    ort = onnx_threads or max(1, cores // (n * tpw))
    return n, tpw, ort


def remove_stale(plan) -> None:
    """Remove what a killed worker left of ``plan``'s staging (temporary ``.part`` files and
    folders beside the targets; final files are never touched)."""
    for target in plan.targets():
        folder = target.parent
        if folder.is_dir():
            for p in folder.glob(f".{target.name}.*.part*"):
                p.unlink(missing_ok=True)
    for folder in (plan.stl_dir, plan.report_dir):
        if folder is not None and folder.is_dir():
            for p in folder.glob(".femurseg-*.part"):
                shutil.rmtree(p, ignore_errors=True)
            if not any(folder.iterdir()):  # made by the staging for files never committed
                folder.rmdir()


def _model_identity(model_dir: Path) -> Tuple[str, str]:
    from .modelfolder import read_card

    card = read_card(model_dir)
    return str(card.get("name") or model_dir.name), str(card.get("version", ""))


def prepare(inputs: Sequence[os.PathLike], settings: CohortSettings, say=lambda m: None):
    """Plan every case, find what earlier runs finished, refuse output problems before anything
    runs. Returns ``(plans, done records, failed records, tasks)``."""
    from .segments import femur_segments

    outdir = settings.outdir
    if outdir.is_file() or outputplan.known_suffix(outdir, outputplan.MAIN_WRITERS):
        raise OutputError(f"a cohort writes into a folder: -o {outdir} is a file name")
    if settings.reference:
        if not settings.report:
            raise InputError("--reference is drawn in the QC report: add --report DIR")
        if not Path(settings.reference).is_dir():
            raise InputError(f"a cohort needs a folder of reference label maps (paired by case "
                             f"name), and {settings.reference} is not one")
    items = expand(inputs)
    from .images import case_name

    cases = [it.case or case_name(it.path) for it in items]
    plans = outputplan.plan_outputs(
        [it.path for it in items], str(outdir) + os.sep, fmt=settings.fmt,
        probabilities=settings.probabilities, stl=settings.stl, report=settings.report,
        reference=None, dicom_seg=settings.dicom_seg,
        stl_names=[s.segment_id for s in femur_segments(settings.split)], cases=cases,
        folders=True)
    model, version = _model_identity(settings.model_dir)
    done, failed, todo = {}, {}, []
    for plan in plans:
        record = read_record(record_path(outdir, plan.case))
        if complete(record, plan, model, version):
            done[plan.case] = record
            continue
        try:
            batch.check_input(plan.source)
            if settings.reference:
                plan.reference = outputplan._reference_in(Path(settings.reference), plan.case)
            series = batch.choose_series(plan, settings.series, say)
        except FemurSegError as exc:
            failed[plan.case] = make_record(plan, "failed", message=str(exc), model=model,
                                            version=version, exit_code=exc.exit_code)
            continue
        todo.append((plan, series))
    if settings.series is not None and not any(s for _, s in todo) and todo:
        raise InputError("--series chooses a DICOM series, but no input is a DICOM folder")
    if any(s is not None and batch.dicom_outputs(p) for p, s in todo):
        from . import dicomseg

        dicomseg.require()
    for plan, _ in todo:
        remove_stale(plan)
        record_path(outdir, plan.case).unlink(missing_ok=True)  # an old failed record
    outputplan.check_outputs([p for p, _ in todo], settings.options.overwrite)
    outputplan.check_target(outdir / RECORDS_DIR / ".probe.json", True)
    tasks = [{"plan": plan, "series": series, "options": settings.options,
              "model_dir": str(settings.model_dir), "settings": tuple(sorted(
                  settings.segmenter.items())), "model": model, "version": version,
              "record": record_path(outdir, plan.case)} for plan, series in todo]
    return plans, done, failed, tasks


def _client(settings: CohortSettings, threads: int):
    """A Dask client: to ``settings.scheduler``, or to a new LocalCluster of worker processes."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    if not logging.getLogger("femurseg").isEnabledFor(logging.DEBUG):
        logging.getLogger("distributed").setLevel(logging.WARNING)  # not its INFO chatter

    if settings.scheduler:
        try:
            return Client(settings.scheduler, timeout="30s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler {settings.scheduler}: "
                             f"{' '.join(str(exc).split())}") from None
    with dask.config.set({"distributed.scheduler.allowed-failures": int(settings.retries)}), \
            _workers_ignore_ctrl_c():
        cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=threads,
                               processes=True, dashboard_address=":0")
    return Client(cluster), cluster


class _workers_ignore_ctrl_c:
    """Start the worker processes with SIGINT ignored (inherited by every process they start):
    Ctrl-C in a terminal reaches the whole process group, and only the client is to act on it
    (cancel, stop the cluster, write the manifest). Main thread only; elsewhere a no-op."""

    def __enter__(self):
        import signal

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def run_cohort(inputs: Sequence[os.PathLike], settings: CohortSettings, *,
               client=None, on_record: Callable[[dict, int, int], None] = lambda r, k, n: None,
               say: Callable[[str], None] = lambda m: None) -> CohortResult:
    """Segment every input on Dask workers (``client``: an existing ``distributed.Client``;
    default: see :func:`_client`). ``on_record(record, cases done, total)`` is called as each
    case finishes. Ctrl-C (``KeyboardInterrupt``) cancels the cases not finished, leaves no
    partial output and writes the manifest of what finished; the result says ``interrupted``."""
    try:
        from distributed import as_completed
    except ImportError:
        raise InputError("femurseg cohort needs Dask: pip install 'femurseg[cohort]' "
                         "(dask[distributed])") from None
    plans, done, failed, tasks = prepare(inputs, settings, say)
    settings.outdir.mkdir(parents=True, exist_ok=True)
    (settings.outdir / RECORDS_DIR).mkdir(exist_ok=True)
    order = [p.case for p in plans]
    for record in failed.values():
        write_record(record, record_path(settings.outdir, record["case"]))
    manifest = Manifest(settings.outdir, order, {**done, **failed})
    total, finished = len(plans), len(done)
    result = CohortResult(records=[], skipped=len(done), total=total)
    for record in failed.values():
        finished += 1
        on_record(record, finished, total)
    own_client, cluster, futures = client is None, None, []
    by_key = {}
    try:
        if tasks:
            if own_client:
                client, cluster = _client(settings, settings.threads_per_worker or 1)
            result.dashboard = getattr(client, "dashboard_link", None)
            if settings.dashboard:
                say(f"Dask dashboard: {result.dashboard or 'none (install bokeh)'}")
            token = os.urandom(4).hex()
            for n, task in enumerate(tasks):
                future = client.submit(run_case, task, key=f"femurseg-{n}-{task['plan'].case}"
                                       f"-{token}", pure=False, retries=0)
                futures.append(future)
                by_key[future.key] = task
            for future in as_completed(futures):
                task = by_key[future.key]
                if future.status == "finished":
                    record = future.result()
                else:  # the scheduler gave up on it: its worker died retries + 1 times
                    record = make_record(
                        task["plan"], "failed", model=task["model"], version=task["version"],
                        exit_code=1, message=_lost_message(future, settings.retries))
                if record["status"] == "failed":  # no outputs, so the worker wrote no record
                    write_record(record, task["record"])
                future.release()
                manifest.add(record)
                finished += 1
                on_record(record, finished, total)
    except KeyboardInterrupt:
        result.interrupted = True
        if futures:
            client.cancel(futures, force=True)
    finally:
        if own_client and client is not None:
            try:
                client.close(timeout=10)
            finally:
                if cluster is not None:
                    cluster.close(timeout=20)
        for task in tasks:
            if task["plan"].case in manifest.records:
                continue
            record = read_record(task["record"])  # finished on its worker, not yet reported
            if complete(record, task["plan"], task["model"], task["version"]):
                manifest.records[record["case"]] = record
            elif cluster is not None:  # the embedded workers are gone: so goes what they staged
                remove_stale(task["plan"])
        manifest.close()
    result.records = manifest.ordered()
    return result


def _lost_message(future, retries: int) -> str:
    try:
        exc = future.exception(timeout=5)
    except Exception as err:  # noqa: BLE001 - the reason is only reported
        exc = err
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if type(exc).__name__ == "KilledWorker":
        return (f"the worker died while segmenting this case, {retries + 1} time(s) on "
                f"different workers (out of memory or killed?); dask: {reason}")
    return f"the case was lost on the cluster ({type(exc).__name__}: {reason})"


# ----------------------------------------------------------------------------------------------
# Progress over cases


class CaseProgress:
    """Cases done / total with the rate and the time left: a tqdm bar on a terminal, one plain
    line per case otherwise (``mode="lines"``), or nothing (``"none"``); warning and failure lines
    go to stderr in every mode."""

    def __init__(self, mode: str = "auto", stream=None):
        import sys

        self.stream = stream or sys.stderr
        self.mode = mode
        if mode == "auto":
            self.mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "lines"
        self.bar = None
        self.t0 = time.perf_counter()
        self.first = None  # cases done when this run started counting

    def __call__(self, record: dict, done: int, total: int) -> None:
        import sys

        if self.first is None:
            self.first = done - 1
        ran = done - self.first
        elapsed = max(time.perf_counter() - self.t0, 1e-6)
        rate = ran / elapsed * 60.0
        left = (total - done) / (ran / elapsed) if ran else float("nan")
        note = None
        if record["status"] == "warning":
            note = f"warning: {record['message']}"
        elif record["status"] == "failed":
            note = f"failed: {record['input']}: {record['message']}"
        if self.mode == "bar":
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done - 1, unit="case", file=self.stream,
                                dynamic_ncols=True, smoothing=0.1)
            if note:
                self.bar.write(note, file=self.stream)
            self.bar.update(1)
            return
        if note:
            sys.stderr.write(note + "\n")
            sys.stderr.flush()
        if self.mode == "lines":
            seconds = record.get("seconds")
            print(f"[{done}/{total}] {record['case']}: {record['status']}"
                  + (f" in {seconds:.1f} s" if seconds is not None else "")
                  + (f" on {record['worker']}" if record.get("worker") else "")
                  + f"; {rate:.1f} cases/min, about {_duration(left)} left", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    if seconds != seconds:  # NaN: no rate yet
        return "? min"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
