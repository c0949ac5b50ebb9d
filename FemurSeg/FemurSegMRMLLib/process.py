"""The background process: run a command, follow its ``PROGRESS`` lines, give one-line errors,
and end the whole process tree on Cancel.

The command line prints ``PROGRESS <percent> <message>`` lines (``--progress lines``) and, when
it fails, one line ``error: <message>``; this module turns those into callbacks and exceptions.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from FemurSegLib.errors import EXIT_IMPLAUSIBLE, WARNING_PREFIX, Cancelled, FemurSegError

ProgressCallback = Callable[[float, str], None]

_PROGRESS_RE = re.compile(r"^PROGRESS\s+([-+]?\d+(?:\.\d*)?)\s*(.*)$")
_ERROR_PREFIX = "error:"
#: The CLI's warning lines (an implausible result: no femur, an odd volume, ...) start with
#: WARNING_PREFIX, and such a run ends with WARNING_EXIT_CODE: finished, the results are there to
#: load (both defined once, in FemurSegLib.errors).
WARNING_EXIT_CODE = EXIT_IMPLAUSIBLE


def parse_progress_line(line: str) -> Optional[Tuple[float, str]]:
    """``"PROGRESS 42 predicting"`` -> ``(42.0, "predicting")``; None for any other line.

    The percentage is clamped to 0..100.
    """
    match = _PROGRESS_RE.match(line.strip())
    if not match:
        return None
    return min(100.0, max(0.0, float(match.group(1)))), match.group(2).strip()


def warning_lines(lines: Sequence[str]) -> List[str]:
    """The messages of the CLI's ``warning: ...`` lines, in order (one per implausible input)."""
    out = []
    for line in lines:
        text = line.strip()
        if text.lower().startswith(WARNING_PREFIX) and text[len(WARNING_PREFIX):].strip():
            out.append(text[len(WARNING_PREFIX):].strip())
    return out


def error_message(lines: Sequence[str], returncode: Optional[int],
                  what: str = "segmentation process") -> str:
    """The one-line message for a failed run of the CLI (or of ``what``, e.g. pip).

    The CLI's own ``error: <message>`` line wins (the last one, if several; pip's ``ERROR:``
    lines too); otherwise the exit status (``returncode`` None: the process crashed) and the last
    line of output that is not a progress line (e.g. an unexpected traceback's final line) are
    reported.
    """
    for line in reversed(lines):
        text = line.strip()
        if text.lower().startswith(_ERROR_PREFIX):
            message = text[len(_ERROR_PREFIX):].strip()
            if message:
                return message
    if returncode is None:
        head = f"{what} crashed"
    elif returncode < 0:
        head = f"{what} was terminated by signal {-returncode}"
    else:
        head = f"{what} failed with exit code {returncode}"
    others = [ln.strip() for ln in lines if ln.strip() and parse_progress_line(ln) is None]
    return f"{head}: {others[-1]}" if others else head


def child_environment(base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment of a background Python process: ``base`` (default: this process's) with
    UTF-8 output whatever the console's code page (``PYTHONIOENCODING``; a Windows console would
    garble non-ASCII messages and file names otherwise) and unbuffered output, so that progress
    lines arrive as they are printed."""
    env = dict(os.environ if base is None else base)
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def end_process_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process it started, and wait for ``proc``.

    Slicer's ``PythonSlicer`` is a launcher that runs the real Python as its child: killing the
    launcher alone leaves the child computing. :class:`BackgroundProcess` starts the command in
    a new session (POSIX: its own process group), so the whole group is killed; on Windows
    ``taskkill /T`` ends the tree.
    """
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        if proc.poll() is None:
            proc.kill()
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # the group has ended already
            pass
    proc.wait()


class BackgroundProcess:
    """A command running in the background, its output read line by line by a thread.

    Nothing blocks: the widget polls :meth:`read_lines` and :meth:`poll` from a timer, and
    :func:`run_command` does the same in a loop. stdout and stderr are merged and decoded as
    UTF-8 (see :func:`child_environment`). :meth:`cancel` ends the whole process tree.
    """

    def __init__(self, command: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                 cwd: Optional[os.PathLike] = None) -> None:
        self.command = [str(c) for c in command]
        self.lines: List[str] = []
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue()
        self._eof = False
        if os.name == "nt":
            group = {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
        else:
            group = {"start_new_session": True}
        try:
            self._proc = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=None if env is None else dict(env),
                cwd=None if cwd is None else str(cwd), text=True, encoding="utf-8",
                errors="replace", bufsize=1, **group)
        except OSError as exc:
            raise FemurSegError(f"cannot start {self.command[0]}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._queue.put(raw.rstrip("\r\n"))
        self._queue.put(None)

    def read_lines(self, timeout: float = 0.0) -> List[str]:
        """The lines that arrived since the last call (waits up to ``timeout`` for the first)."""
        new: List[str] = []
        while not self._eof:
            try:
                if timeout and not new:
                    line = self._queue.get(timeout=timeout)
                else:
                    line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
            else:
                new.append(line)
        self.lines.extend(new)
        return new

    @property
    def output_ended(self) -> bool:
        """True once all output has been read (the process may still be exiting)."""
        return self._eof

    def poll(self) -> Optional[int]:
        """The exit status once the process has ended and closed its output, else None.

        Lines not yet taken with :meth:`read_lines` stay there to be read.
        """
        if self._thread.is_alive() or self._proc.poll() is None:
            return None
        return self._proc.returncode

    def cancel(self) -> None:
        """End the process and every process it started.

        Returns when the launcher has ended and every process has closed the output pipe, i.e.
        each is in its last moment of exit (memory, files and the GPU released), so the job's
        temporary folder can be removed."""
        end_process_tree(self._proc)
        self._thread.join(timeout=5)
        self.read_lines()


def run_command(command: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[os.PathLike] = None,
                on_progress: Optional[ProgressCallback] = None,
                on_line: Optional[Callable[[str], None]] = None,
                is_cancelled: Optional[Callable[[], bool]] = None,
                poll_seconds: float = 0.1, what: str = "segmentation process",
                ok_codes: Sequence[int] = (0,)) -> List[str]:
    """Run the CLI in a :class:`BackgroundProcess` and wait, reporting ``PROGRESS`` lines.

    Returns all output lines when the exit code is one of ``ok_codes`` (the segmentation passes
    ``(0, WARNING_EXIT_CODE)``: finished, maybe with warnings). Raises :class:`FemurSegError` with the CLI's one-line message when
    it fails (see :func:`error_message`; ``what`` names the process), and :class:`Cancelled`
    (after ending the whole process tree) when ``is_cancelled()`` turns true.
    """
    proc = BackgroundProcess(command, env=env, cwd=cwd)

    def take(lines: List[str]) -> None:
        for line in lines:
            if on_line is not None:
                on_line(line)
            progress = parse_progress_line(line)
            if progress is not None and on_progress is not None:
                on_progress(*progress)

    while True:
        if is_cancelled is not None and is_cancelled():
            proc.cancel()
            raise Cancelled("segmentation cancelled")
        take(proc.read_lines(timeout=poll_seconds))
        returncode = proc.poll()
        if returncode is not None:
            take(proc.read_lines())
            break
        if proc.output_ended:  # output closed, exit not yet seen: do not spin
            time.sleep(poll_seconds)
    if returncode not in ok_codes:
        raise FemurSegError(error_message(proc.lines, returncode, what))
    return proc.lines
