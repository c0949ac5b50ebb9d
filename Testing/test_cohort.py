"""`femurseg cohort` on Dask distributed: the same outputs as `segment`, one manifest row per
input, a corrupt input among good ones, resume after an interruption, a killed worker.

The cluster tests run a LocalCluster of 2 worker processes (marked slow); every wait is bounded.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import cohort
from FemurSegLib.batch import CaseOptions
from FemurSegLib.cli import main
from FemurSegLib.errors import InputError, OutputError, OutputExistsError
from FemurSegLib.phantom import write_phantom

from conftest import real_data_dir

DASK_MISSING = "needs Dask: pip install 'femurseg[cohort]' (dask[distributed])"
#: Longest a cluster run may take in these tests before it counts as hung.
RUN_TIMEOUT_S = 240
#: Longest a worker may take to start (or to be restarted by its nanny after a kill): it imports
#: the core and ONNX Runtime, which has taken longer than the 60 s this waited before on 2 cores
#: busy with training (test_killed_worker_case_is_retried_then_failed[0-failed] timed out).
WORKER_START_S = 180


def small_phantom(path: Path, seed: int) -> Path:
    """A coarse phantom (the anatomy of the seed on a 96 x 96 x 14 grid): quick to segment."""
    write_phantom(path, seed=seed, size=(96, 96, 14), spacing=(3.6, 3.6, 5.2))
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort-in")
    return [small_phantom(folder / f"hip{n:02d}_0000.nii.gz", seed=n) for n in (1, 2, 3)]


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("distributed", reason=DASK_MISSING)
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
    c = Client(cluster, timeout="60s")
    c.wait_for_workers(2, timeout=WORKER_START_S)
    yield c
    c.close(timeout=20)
    cluster.close(timeout=30)


def settings_for(outdir: Path, model_dir: Path, **kw) -> cohort.CohortSettings:
    seg = {"tta": False, "threads": 1}
    seg.update(kw.pop("segmenter", {}))
    return cohort.CohortSettings(outdir=outdir, model_dir=model_dir, segmenter=seg, **kw)


def run_bounded(inputs, settings, **kw) -> cohort.CohortResult:
    """run_cohort in a thread with a time-out, so that a hung cluster fails the test."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(cohort.run_cohort, inputs, settings, **kw).result(RUN_TIMEOUT_S)


def rows(outdir: Path) -> dict:
    return {r["case"]: r for r in cohort.read_manifest(outdir / cohort.MANIFEST_CSV)}


def parts_in(folder: Path) -> list:
    return sorted(str(p) for p in folder.rglob("*") if ".part" in p.name)


def same_bytes(a: Path, b: Path) -> bool:
    """The same file contents, but for the time of writing that pynrrd puts in a NRRD header
    (``# on 2026-12-03 09:28:32(GMT).``)."""
    def content(p: Path) -> bytes:
        data = p.read_bytes()
        if data.startswith(b"NRRD"):
            head, sep, rest = data.partition(b"\n\n")
            head = b"\n".join(ln for ln in head.split(b"\n") if not ln.startswith(b"# on "))
            data = head + sep + rest
        return data

    return content(a) == content(b)


def labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


# ----------------------------------------------------------------------------------------------
# Without a cluster


def test_input_list_csv(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "sub" / "cases.csv"
    listing.write_text("Path,case\nscans/a_0000.nii.gz,A\n/abs/b.nrrd,\n", encoding="utf-8")
    items = cohort.expand([listing])
    assert [(it.path, it.case) for it in items] == [
        (tmp_path / "sub" / "scans" / "a_0000.nii.gz", "A"), (Path("/abs/b.nrrd"), None)]


@pytest.mark.parametrize("text, message", [
    ("file,case\nx.nii.gz,x\n", "has no 'path' column (columns: file, case)"),
    ("path\nx.nii.gz\n\"\"\n", "line 3: empty path"),
    ("path,case\nx.nii.gz,../up\n", "line 2: case '../up' is not a plain name (it names the "
                                   "output files)"),
])
def test_input_list_errors(tmp_path, text, message):
    listing = tmp_path / "l.csv"
    listing.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        cohort.expand([listing])
    assert str(err.value) == f"input list {listing} {message}"


@pytest.mark.parametrize("workers, tpw, threads, cores, expected", [
    (None, None, None, 2, (1, 1, 2)),    # 2 cores: one case at a time on both cores
    (None, None, None, 16, (8, 1, 2)),
    (2, 1, None, 2, (2, 1, 1)),          # 2 workers x 1 thread: ONNX Runtime 1 thread each
    (1, 2, None, 2, (1, 2, 1)),
    (None, 2, None, 8, (2, 2, 2)),
    (3, 1, 4, 2, (3, 1, 4)),             # explicit values are kept
])
def test_default_layout_never_oversubscribes(workers, tpw, threads, cores, expected):
    assert cohort.default_layout(workers, tpw, threads, cores) == expected


def test_complete_needs_record_model_and_every_output(tmp_path):
    from FemurSegLib.outputplan import plan_outputs

    plan = plan_outputs([tmp_path / "hip01_0000.nii.gz"], str(tmp_path / "out") + os.sep,
                        probabilities=str(tmp_path / "p"), folders=True)[0]
    assert plan.main == tmp_path / "out" / "hip01.seg.nrrd"  # folder naming for one input
    assert plan.probabilities == tmp_path / "p" / "hip01_probability.nrrd"
    record = {"case": "hip01", "status": "ok", "model": "m", "model_version": "1",
              "outputs": [str(plan.main), str(plan.probabilities)]}
    assert not cohort.complete(record, plan, "m", "1")  # the files do not exist yet
    for p in (plan.main, plan.probabilities):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert cohort.complete(record, plan, "m", "1")
    assert cohort.complete(dict(record, status="warning"), plan, "m", "1")
    assert not cohort.complete(dict(record, status="failed"), plan, "m", "1")
    assert not cohort.complete(record, plan, "m", "2")  # another model version
    assert not cohort.complete(dict(record, outputs=[str(plan.main)]), plan, "m", "1")
    assert not cohort.complete(None, plan, "m", "1")


def test_progress_lines_count_rate_and_time_left(monkeypatch, capsys):
    clock = [100.0]
    monkeypatch.setattr(cohort.time, "perf_counter", lambda: clock[0])
    progress = cohort.CaseProgress("lines")
    clock[0] = 130.0  # the first case of this run (2 were done before) after 30 s
    progress({"case": "a", "status": "ok", "seconds": 2.0, "worker": "w1"}, 3, 10)
    clock[0] = 160.0
    progress({"case": "b", "status": "failed", "seconds": None, "worker": "",
              "input": "/in/b.nii.gz", "message": "input not found: /in/b.nii.gz"}, 4, 10)
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[3/10] a: ok in 2.0 s on w1; 2.0 cases/min, about 4 min left",
                                "[4/10] b: failed; 2.0 cases/min, about 3 min left"]
    assert err == "failed: /in/b.nii.gz: input not found: /in/b.nii.gz\n"


def test_output_must_be_a_folder(tmp_path, scans, tiny_model_dir):
    with pytest.raises(OutputError) as err:
        cohort.prepare(scans, settings_for(tmp_path / "x.seg.nrrd", tiny_model_dir))
    assert str(err.value) == f"a cohort writes into a folder: -o {tmp_path / 'x.seg.nrrd'} " \
                             "is a file name"


def test_existing_output_refused_before_anything_runs(tmp_path, scans, tiny_model_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "hip02.seg.nrrd").write_bytes(b"precious")
    with pytest.raises(OutputExistsError) as err:
        cohort.prepare(scans, settings_for(out, tiny_model_dir))
    assert str(err.value) == f"output exists: {out / 'hip02.seg.nrrd'} (use --overwrite to " \
                             "replace it)"
    assert (out / "hip02.seg.nrrd").read_bytes() == b"precious"


def test_reference_needs_report_and_a_folder(tmp_path, scans, tiny_model_dir):
    with pytest.raises(InputError) as err:
        cohort.prepare(scans, settings_for(tmp_path / "o", tiny_model_dir,
                                           reference=str(tmp_path)))
    assert str(err.value) == "--reference is drawn in the QC report: add --report DIR"
    with pytest.raises(InputError) as err:
        cohort.prepare(scans, settings_for(tmp_path / "o", tiny_model_dir,
                                           reference=str(scans[0]), report=str(tmp_path / "r")))
    assert str(err.value) == ("a cohort needs a folder of reference label maps (paired by case "
                              f"name), and {scans[0]} is not one")


def test_duplicate_case_names_refused(tmp_path, scans, tiny_model_dir):
    listing = tmp_path / "l.csv"
    listing.write_text(f"path,case\n{scans[0]},same\n{scans[1]},same\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"two inputs have the same case name \(same\)"):
        cohort.prepare([listing], settings_for(tmp_path / "out", tiny_model_dir))


# ----------------------------------------------------------------------------------------------
# On a LocalCluster with 2 worker processes


@pytest.mark.slow
def test_same_outputs_as_segment(tmp_path, capsys, scans, tiny_model_dir, client):
    seq, par = tmp_path / "seq", tmp_path / "par"
    code = main(["segment", *map(str, scans), "-o", str(seq / "seg"), "--model",
                 str(tiny_model_dir), "--no-tta", "--threads", "1", "--probabilities",
                 str(seq / "prob"), "--stl", str(seq / "stl"), "--report", str(seq / "report"),
                 "--progress", "none"])
    assert code == 3, capsys.readouterr().err  # the tiny random model's results are implausible
    result = run_bounded(scans, settings_for(par / "seg", tiny_model_dir,
                                             probabilities=str(par / "prob"),
                                             stl=str(par / "stl"), report=str(par / "report")),
                         client=client)
    assert result.counts() == {"ok": 0, "warning": 3, "failed": 0}
    assert result.exit_code() == 3
    for kind in ("seg", "prob", "stl", "report"):
        a = sorted(p.relative_to(seq / kind) for p in (seq / kind).rglob("*") if p.is_file())
        b = sorted(p.relative_to(par / kind) for p in (par / kind).rglob("*")
                   if p.is_file() and cohort.RECORDS_DIR not in p.parts
                   and not p.name.startswith("manifest."))
        assert a == b and a, kind
        for rel in a:
            if rel.suffix == ".png":
                continue  # compared as the segmentation it draws: the label maps below
            assert same_bytes(seq / kind / rel, par / kind / rel), rel
    for scan in scans:
        case = scan.name.split("_")[0]
        np.testing.assert_array_equal(labels(seq / "seg" / f"{case}.seg.nrrd"),
                                      labels(par / "seg" / f"{case}.seg.nrrd"))
    table = rows(par / "seg")
    assert list(table) == ["hip01", "hip02", "hip03"]
    for case, row in table.items():
        assert row["status"] == "warning" and row["exit_code"] == "3"
        assert row["message"].startswith(f"{case}_0000.nii.gz: the segmentation fills ")
        assert row["model"] == "tiny-3d" and row["model_version"] == "0.0.1"
        assert float(row["right_femur_ml"]) + float(row["left_femur_ml"]) == \
            pytest.approx(float(row["femur_ml"]), abs=2e-3)
        assert row["worker"].startswith("tcp://") and float(row["seconds"]) > 0
        assert row["outputs"].split(";")[0] == str(par / "seg" / f"{case}.seg.nrrd")
    manifest = (par / "seg" / cohort.MANIFEST_JSON).read_text(encoding="utf-8")
    import json

    assert [c["case"] for c in json.loads(manifest)["cases"]] == list(table)


@pytest.mark.slow
def test_corrupt_and_missing_inputs_do_not_stop_the_others(tmp_path, scans, tiny_model_dir,
                                                           client):
    corrupt = tmp_path / "broken_0000.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip")
    listing = tmp_path / "cases.csv"
    listing.write_text(f"path\n{scans[0]}\n{corrupt}\nmissing_0000.nii.gz\n{scans[1]}\n",
                       encoding="utf-8")
    out = tmp_path / "out"
    seen = []
    result = run_bounded([listing], settings_for(out, tiny_model_dir), client=client,
                         on_record=lambda r, k, n: seen.append((r["case"], k, n)))
    assert result.exit_code() == 2
    assert result.counts() == {"ok": 0, "warning": 2, "failed": 2}
    assert sorted(c for c, _, _ in seen) == ["broken", "hip01", "hip02", "missing"]
    assert [(k, n) for _, k, n in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    table = rows(out)
    assert list(table) == ["hip01", "broken", "missing", "hip02"]  # input order
    assert table["broken"]["status"] == "failed" and table["broken"]["exit_code"] == "2"
    assert table["broken"]["message"].startswith(f"cannot read input image {corrupt}")
    assert table["missing"]["message"] == f"input not found: {tmp_path / 'missing_0000.nii.gz'}"
    assert table["missing"]["outputs"] == "" and table["missing"]["femur_ml"] == ""
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "hip01.seg.nrrd", "hip02.seg.nrrd", "manifest.csv", "manifest.json"]


@pytest.mark.slow
def test_worker_verifies_the_model(tmp_path, scans, tiny_model_dir, client):
    """The worker loads the model itself and checks every file against the card's SHA-256:
    a model folder altered after the run was planned fails each case with the reason."""
    model = tmp_path / "tiny-3d"
    shutil.copytree(tiny_model_dir, model)
    settings = settings_for(tmp_path / "out", model)
    cohort.prepare(scans[:2], settings)  # planned with the intact folder
    data = bytearray((model / "fold_0.onnx").read_bytes())
    data[-1] ^= 0xFF
    (model / "fold_0.onnx").write_bytes(bytes(data))
    result = run_bounded(scans[:2], settings, client=client)
    assert result.counts() == {"ok": 0, "warning": 0, "failed": 2}
    for row in rows(tmp_path / "out").values():
        assert row["message"] == ("model tiny-3d: fold_0.onnx fails its SHA-256 check "
                                  "(corrupt, truncated or altered file)")
        assert row["worker"].startswith("tcp://") and row["outputs"] == ""
    assert not list((tmp_path / "out").glob("*.seg.nrrd"))


@pytest.mark.slow
def test_interrupted_run_resumes_without_losing_or_redoing_cases(tmp_path, scans,
                                                                 tiny_model_dir):
    """Ctrl-C after the first finished case (a KeyboardInterrupt in the client, as Ctrl-C gives):
    the embedded cluster stops, no partial output is left, the manifest lists what finished;
    the same command again does the rest and leaves the finished cases alone."""
    pytest.importorskip("distributed", reason=DASK_MISSING)
    out = tmp_path / "out"
    settings = settings_for(out, tiny_model_dir, stl=str(out / "stl"), workers=2,
                            threads_per_worker=1)

    def interrupt(record, done, total):
        raise KeyboardInterrupt

    first = run_bounded(scans, settings, on_record=interrupt)
    assert first.interrupted
    assert parts_in(out) == []
    records = {p.stem for p in (out / cohort.RECORDS_DIR).glob("*.json")}
    # the case reported, and any a worker committed before the cluster stopped
    assert set(rows(out)) == {r["case"] for r in first.records} == records
    assert len(records) >= 1
    for scan in scans:  # every case has all its outputs and its record, or none of them
        case = scan.name.split("_")[0]
        has = [(out / f"{case}.seg.nrrd").is_file(), case in records,
               (out / "stl" / case).is_dir()]
        assert has in ([True] * 3, [False] * 3), (case, has)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.seg.nrrd")}
    second = run_bounded(scans, settings)
    assert not second.interrupted
    assert second.skipped == len(records) >= 1
    assert second.counts() == {"ok": 0, "warning": 3, "failed": 0}
    assert list(rows(out)) == ["hip01", "hip02", "hip03"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # finished cases not redone
    third = run_bounded(scans, settings)
    assert third.skipped == 3 and third.exit_code() == 3


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_cleanly(tmp_path, tiny_model_dir):
    """SIGINT to the whole process group (what Ctrl-C in a terminal sends): exit code 130 with
    one error line, no traceback from the workers, no partial output, a manifest of what
    finished; the same command again finishes the rest."""
    pytest.importorskip("distributed", reason=DASK_MISSING)
    import signal
    import subprocess
    import sys

    folder = tmp_path / "in"
    first = small_phantom(folder / "c00_0000.nii.gz", seed=1)
    for n in range(1, 10):
        (folder / f"c{n:02d}_0000.nii.gz").symlink_to(first)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "FemurSegLib.cli", "cohort", str(folder), "-o", str(out),
           "--model", str(tiny_model_dir), "--workers", "2", "--progress", "lines",
           "--stl", str(out / "stl")]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    import threading

    watchdog = threading.Timer(RUN_TIMEOUT_S, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith("[1/10]"):
                os.killpg(proc.pid, signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == ("error: interrupted: the manifest lists the cases that "
                                       "finished; run the same command again to continue")
    assert parts_in(out) == []
    listed = set(rows(out))
    records = {p.stem for p in (out / cohort.RECORDS_DIR).glob("*.json")}
    assert listed == records and listed  # finished on a worker means listed
    assert {p.name.split(".")[0] for p in out.glob("*.seg.nrrd")} == records
    assert {p.name for p in (out / "stl").iterdir()} == records
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert again.returncode == 3, again.stderr
    assert f"({len(records)} of them done by an earlier run)" in again.stdout
    assert len(rows(out)) == 10


def _slow_segment(marker_dir: str):
    """Installed in each worker: Segmenter.segment first writes ``<pid>`` into ``marker_dir``
    and sleeps, so that the test can kill the worker while it holds a case."""
    from FemurSegLib.inference import Segmenter

    original = Segmenter.__dict__.get("_unpatched", Segmenter.segment)
    Segmenter._unpatched = original

    def segment(self, image, progress=None, _original=original, **kwargs):
        Path(marker_dir, str(os.getpid())).write_text("running")
        time.sleep(4)
        return (_original(self, image, **kwargs) if progress is None
                else _original(self, image, progress, **kwargs))

    Segmenter.segment = segment
    return os.getpid()


def _restore_segment():
    from FemurSegLib.inference import Segmenter

    if "_unpatched" in Segmenter.__dict__:
        Segmenter.segment = Segmenter._unpatched
    return os.getpid()


def _kill_first_runner(marker_dir: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(marker_dir.iterdir())
        if found:
            pid = int(found[0].name)
            os.kill(pid, 9)
            return pid
        time.sleep(0.05)
    raise AssertionError("no worker started a case within the time-out")


@pytest.mark.slow
@pytest.mark.parametrize("allowed, status", [(1, "warning"), (0, "failed")])
def test_killed_worker_case_is_retried_then_failed(tmp_path, scans, tiny_model_dir, client,
                                                   allowed, status):
    marker = tmp_path / "running"
    marker.mkdir()
    client.run_on_scheduler(lambda dask_scheduler, n=allowed:
                            setattr(dask_scheduler, "allowed_failures", n))
    client.run(_slow_segment, str(marker))
    out = tmp_path / "out"
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            job = pool.submit(cohort.run_cohort, scans[:1],
                              settings_for(out, tiny_model_dir, retries=allowed), client=client)
            killed = _kill_first_runner(marker)
            result = job.result(RUN_TIMEOUT_S)
    finally:
        client.wait_for_workers(2, timeout=WORKER_START_S)
        client.run(_restore_segment)
        client.run_on_scheduler(lambda dask_scheduler:
                                setattr(dask_scheduler, "allowed_failures", 1))
    row = rows(out)["hip01"]
    assert row["status"] == status, row
    assert f"pid {killed} " not in row["worker"]
    if status == "failed":
        assert row["exit_code"] == "1"
        assert row["message"].startswith("the worker died while segmenting this case, 1 "
                                         "time(s) on different workers")
        assert not (out / "hip01.seg.nrrd").exists()
        assert result.exit_code() == 2
    else:  # run again on the other worker, to the end
        assert (out / "hip01.seg.nrrd").is_file()
        assert result.exit_code() == 3
    assert parts_in(out) == []


@pytest.mark.slow
def test_cli_cohort_summary_exit_code_and_resume(tmp_path, capsys, scans, tiny_model_dir):
    pytest.importorskip("distributed", reason=DASK_MISSING)
    listing = tmp_path / "cases.csv"
    listing.write_text(f"path,case\n{scans[0]},first\n{scans[1]},second\n", encoding="utf-8")
    argv = ["cohort", str(listing), "-o", str(tmp_path / "out"), "--model", str(tiny_model_dir),
            "--workers", "2", "--no-tta", "--progress", "lines"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 3, err
    assert "cluster: 2 worker(s) x 1 thread(s), ONNX Runtime 1 thread(s) per case" in out
    assert out.count("] first: warning in ") == 1 and "[2/2] " in out
    assert out.splitlines()[-1] == ("2 of 2 case(s) done: 0 ok, 2 warning, 0 failed (0 of them "
                                    f"done by an earlier run); manifest: "
                                    f"{tmp_path / 'out' / 'manifest.csv'}")
    assert [ln.split(":")[0] for ln in err.splitlines()] == ["warning", "warning"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.seg.nrrd")) == [
        "first.seg.nrrd", "second.seg.nrrd"]
    code = main(argv)
    out, _ = capsys.readouterr()
    assert code == 3
    assert out.splitlines()[-1].startswith("2 of 2 case(s) done: 0 ok, 2 warning, 0 failed (2 "
                                           "of them done by an earlier run)")


def test_cli_cohort_bad_options(tmp_path, capsys, scans, tiny_model_dir):
    code = main(["cohort", str(scans[0]), "-o", str(tmp_path / "o"), "--workers", "0"])
    assert (code, capsys.readouterr().err) == (2, "error: --workers must be at least 1, not 0\n")


# ----------------------------------------------------------------------------------------------
# The bundled model: label maps voxel for voxel as `segment` writes them


@pytest.mark.slow
def test_bundled_model_same_label_maps_as_segment(tmp_path, capsys, client):
    from FemurSegLib.modelfolder import find_model

    phantom = tmp_path / "in" / "phantom_0000.nii.gz"
    write_phantom(phantom, seed=0)
    inputs = [phantom]
    try:
        inputs.append(real_data_dir() / "imagesTr" / "hip01_0000.nii.gz")
    except pytest.skip.Exception:
        pass  # the phantom alone without the shared data
    code = main(["segment", *map(str, inputs), "-o", str(tmp_path / "seq") + os.sep,
                 "--format", ".nii.gz", "--threads", "1", "--progress", "none", "--quiet"])
    assert code == 0, capsys.readouterr().err
    result = run_bounded(inputs, cohort.CohortSettings(
        outdir=tmp_path / "par", model_dir=find_model(None), fmt=".nii.gz",
        segmenter={"threads": 1}), client=client)
    assert result.counts()["ok"] == len(inputs), result.records
    for p in inputs:
        case = p.name.split("_")[0]
        seq = labels(tmp_path / "seq" / f"{case}.nii.gz")
        assert seq.any()
        np.testing.assert_array_equal(seq, labels(tmp_path / "par" / f"{case}.nii.gz"))
