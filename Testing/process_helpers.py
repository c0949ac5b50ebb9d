"""Processes in tests: is a pid still running, and a stand-in for Slicer's PythonSlicer launcher."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has ended)."""
    if Path("/proc/self").exists():  # Linux: the state letter after the command name
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_ended(pids, seconds: float = 5.0) -> list:
    """The pids still running after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def launcher_processes(tmp_path: Path):
    """A stand-in for Slicer's ``PythonSlicer``: a launcher process that starts the real Python
    as its child and waits for it, forwarding nothing. The child prints one progress line and
    sleeps. Yields (command, (launcher pid file, child pid file)); kills any survivor after (use
    it as a fixture: ``yield from launcher_processes(tmp_path)``)."""
    child = tmp_path / "python_real.py"
    child.write_text(textwrap.dedent("""
        import os, sys, time
        open(sys.argv[1], "w").write(str(os.getpid()))
        print("PROGRESS 1 started", flush=True)
        time.sleep(120)
    """))
    wrapper = tmp_path / "launcher.py"
    wrapper.write_text(textwrap.dedent("""
        import os, subprocess, sys
        open(sys.argv[1], "w").write(str(os.getpid()))
        sys.exit(subprocess.call([sys.executable] + sys.argv[2:]))
    """))
    pid_files = (tmp_path / "launcher.pid", tmp_path / "child.pid")
    command = [sys.executable, str(wrapper), str(pid_files[0]), str(child), str(pid_files[1])]
    yield command, pid_files
    for path in pid_files:  # never leave a sleeping test process behind
        if path.exists() and alive(int(path.read_text())):
            os.kill(int(path.read_text()), signal.SIGKILL)


def pip_stand_in(tmp_path: Path, launcher_command) -> str:
    """An executable in place of PythonSlicer: ``<it> -m pip install ...`` starts the launcher
    stand-in, whose child prints one line and hangs (pip waiting for a network that drops
    packets)."""
    script = tmp_path / "PythonSlicer"
    script.write_text("#!/bin/sh\nexec " + " ".join(f"'{c}'" for c in launcher_command)
                      + ' "$@"\n')
    script.chmod(0o755)
    return str(script)
