"""FemurSegMRMLLib.process (needs no slicer-core): the background process, its progress lines,
one-line errors and warnings, and Cancel ending the whole process tree that Slicer's
``PythonSlicer`` launcher starts."""

from __future__ import annotations

import os
import sys
import time

import pytest

from process_helpers import alive, wait_ended  # noqa: E402
from FemurSegLib.errors import Cancelled, FemurSegError  # noqa: E402
from slicer_helpers import (_script, launcher, process)  # noqa: F401,E402


# ----------------------------------------------------------------------------------------------
# Progress, errors and warnings of the command line


@pytest.mark.parametrize("line, expected", [
    ("PROGRESS 42 hip: fold 1/2", (42.0, "hip: fold 1/2")),
    ("PROGRESS 0 hip: preprocessing", (0.0, "hip: preprocessing")),
    ("PROGRESS 100", (100.0, "")),
    ("  PROGRESS 7.5   a  b \n", (7.5, "a  b")),
    ("PROGRESS 150 over", (100.0, "over")),
    ("PROGRESS -3 under", (0.0, "under")),
    ("progress 5 lower case", None),
    ("PROGRESS abc", None),
    ("PROGRESSIVE 5", None),
    ("error: input is blank", None),
    ("", None),
])
def test_parse_progress_line(line, expected):
    assert process.parse_progress_line(line) == expected


@pytest.mark.parametrize("lines, code, expected", [
    (["PROGRESS 0 x", "error: input image hip.nrrd is blank: every voxel has the value 0"], 2,
     "input image hip.nrrd is blank: every voxel has the value 0"),
    (["error: first", "PROGRESS 5 y", "Error: second one"], 2, "second one"),
    (["PROGRESS 10 x", "Traceback (most recent call last):", '  File "x.py", line 1',
      "ValueError: boom", "PROGRESS 11 late"], 1,
     "segmentation process failed with exit code 1: ValueError: boom"),
    (["PROGRESS 10 x"], 1, "segmentation process failed with exit code 1"),
    ([], -9, "segmentation process was terminated by signal 9"),
    (["PROGRESS 40 x", "Segmentation fault"], None,
     "segmentation process crashed: Segmentation fault"),
    (["error:"], 2, "segmentation process failed with exit code 2: error:"),
])
def test_error_message(lines, code, expected):
    assert process.error_message(lines, code) == expected


def test_run_command_reports_progress_and_output(tmp_path):
    cmd = _script(tmp_path, """
        import sys
        print("hello on stdout", flush=True)
        for p in (0, 50, 100):
            sys.stderr.write(f"PROGRESS {p} step {p}\\n"); sys.stderr.flush()
    """)
    seen = []
    out = process.run_command(cmd, on_progress=lambda p, m: seen.append((p, m)))
    assert seen == [(0.0, "step 0"), (50.0, "step 50"), (100.0, "step 100")]
    assert out[0] == "hello on stdout" and len(out) == 4


def test_run_command_raises_the_one_line_error(tmp_path):
    cmd = _script(tmp_path, """
        import sys
        sys.stderr.write("PROGRESS 3 reading\\nerror: model folder not found: /nope\\n")
        sys.exit(2)
    """)
    with pytest.raises(FemurSegError) as caught:
        process.run_command(cmd)
    assert str(caught.value) == "model folder not found: /nope"


@pytest.mark.parametrize("lines, expected", [
    (["PROGRESS 90 x", "warning: hip.nrrd: no femur found", "hip.nrrd: Right femur 0.0 ml"],
     ["hip.nrrd: no femur found"]),
    (["Warning: a: x; likely cause: y", "warning:", "warning: b: z"], ["a: x; likely cause: y",
                                                                      "b: z"]),
    (["error: nope", "PROGRESS 1 warning: not one"], []),
])
def test_warning_lines(lines, expected):
    assert process.warning_lines(lines) == expected


def test_run_command_accepts_a_finished_run_with_warnings_only_when_asked(tmp_path):
    """Exit code 3: the CLI finished but a result is implausible; the segmentation passes it as
    success and gets the output, anything else (pip) still fails on it."""
    cmd = _script(tmp_path, """
        import sys
        sys.stderr.write("PROGRESS 100 done\\nwarning: hip.nrrd: no femur found\\n")
        sys.exit(3)
    """)
    output = process.run_command(cmd, ok_codes=(0, process.WARNING_EXIT_CODE))
    assert process.warning_lines(output) == ["hip.nrrd: no femur found"]
    with pytest.raises(FemurSegError, match="^segmentation process failed with exit code 3: "
                                            "warning: hip.nrrd: no femur found$"):
        process.run_command(cmd)


def test_run_command_cannot_start(tmp_path):
    with pytest.raises(FemurSegError, match=r"^cannot start .*no-such-python"):
        process.run_command([str(tmp_path / "no-such-python"), "-V"])


# ----------------------------------------------------------------------------------------------
# Cancel ends the launcher and the Python it started


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups (Windows: taskkill /T)")
def test_run_command_cancel_ends_the_launcher_and_its_child(launcher):
    command, pid_files = launcher
    seen = []
    with pytest.raises(Cancelled, match="^segmentation cancelled$"):
        process.run_command(command, on_progress=lambda p, m: seen.append(p),
                            is_cancelled=lambda: bool(seen))
    pids = [int(p.read_text()) for p in pid_files]
    assert wait_ended(pids) == [], "still running after Cancel: " + ", ".join(map(str, pids))


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups (Windows: taskkill /T)")
def test_background_process_cancel_ends_the_tree(launcher):
    """What the widget runs (polled by a QTimer): cancel() returns once the launcher has ended
    and the child has closed its output (it is exiting), so the job's temporary folder can go."""
    command, pid_files = launcher
    proc = process.BackgroundProcess(command)
    deadline = time.monotonic() + 30
    lines = []
    while not lines and time.monotonic() < deadline:
        lines += proc.read_lines()
        time.sleep(0.05)
    assert lines == ["PROGRESS 1 started"] and proc.poll() is None
    proc.cancel()
    launcher_pid, child_pid = [int(p.read_text()) for p in pid_files]
    assert not alive(launcher_pid)
    assert wait_ended([child_pid], seconds=2.0) == []
    assert proc.poll() is not None and proc.poll() != 0


def test_background_process_reports_lines_and_exit_status(tmp_path):
    script = tmp_path / "cli.py"
    script.write_text("import sys\nprint('PROGRESS 50 half', flush=True)\n"
                      "sys.stderr.write('error: no femur\\n')\nsys.exit(2)\n")
    proc = process.BackgroundProcess([sys.executable, str(script)])
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() == 2
    assert proc.read_lines() == ["PROGRESS 50 half", "error: no femur"] == proc.lines
    assert proc.read_lines() == []
    assert process.error_message(proc.lines, proc.poll()) == "no femur"


def test_background_process_cannot_start(tmp_path):
    with pytest.raises(FemurSegError, match=r"^cannot start .*no-such-python: "):
        process.BackgroundProcess([str(tmp_path / "no-such-python"), "-V"])


def test_child_environment_sets_utf8_and_unbuffered_output():
    env = process.child_environment({"PATH": "/bin", "PYTHONIOENCODING": "latin-1"})
    assert env == {"PATH": "/bin", "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1"}
