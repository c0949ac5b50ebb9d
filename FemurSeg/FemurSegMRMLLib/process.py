"""The background process: run a command, follow its ``PROGRESS`` lines, give one-line errors.

The command line prints ``PROGRESS <percent> <message>`` lines (``--progress lines``) and, when
it fails, one line ``error: <message>``; this module turns those into callbacks and exceptions.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from FemurSegLib.errors import Cancelled, FemurSegError

ProgressCallback = Callable[[float, str], None]

_PROGRESS_RE = re.compile(r"^PROGRESS\s+([-+]?\d+(?:\.\d*)?)\s*(.*)$")
_ERROR_PREFIX = "error:"


def parse_progress_line(line: str) -> Optional[Tuple[float, str]]:
    """``"PROGRESS 42 predicting"`` -> ``(42.0, "predicting")``; None for any other line.

    The percentage is clamped to 0..100.
    """
    match = _PROGRESS_RE.match(line.strip())
    if not match:
        return None
    return min(100.0, max(0.0, float(match.group(1)))), match.group(2).strip()


def error_message(lines: Sequence[str], returncode: Optional[int]) -> str:
    """The one-line message for a failed run of the CLI.

    The CLI's own ``error: <message>`` line wins (the last one, if several); otherwise the exit
    status (``returncode`` None: the process crashed) and the last line of output that is not a
    progress line (e.g. an unexpected traceback's final line) are reported.
    """
    for line in reversed(lines):
        text = line.strip()
        if text.lower().startswith(_ERROR_PREFIX):
            message = text[len(_ERROR_PREFIX):].strip()
            if message:
                return message
    if returncode is None:
        head = "segmentation process crashed"
    elif returncode < 0:
        head = f"segmentation process was terminated by signal {-returncode}"
    else:
        head = f"segmentation process failed with exit code {returncode}"
    others = [ln.strip() for ln in lines if ln.strip() and parse_progress_line(ln) is None]
    return f"{head}: {others[-1]}" if others else head


class LineBuffer:
    """Split a stream that arrives in arbitrary chunks (e.g. from ``QProcess``) into lines."""

    def __init__(self) -> None:
        self._partial = ""
        self.lines: List[str] = []

    def feed(self, chunk: str) -> List[str]:
        """Add ``chunk``; return the lines it completed (also appended to :attr:`lines`)."""
        text = (self._partial + chunk).replace("\r\n", "\n").replace("\r", "\n")
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)
        return complete

    def close(self) -> List[str]:
        """Flush a last line without a newline."""
        rest, self._partial = self._partial, ""
        if rest:
            self.lines.append(rest)
            return [rest]
        return []


def run_command(command: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[os.PathLike] = None,
                on_progress: Optional[ProgressCallback] = None,
                on_line: Optional[Callable[[str], None]] = None,
                is_cancelled: Optional[Callable[[], bool]] = None,
                poll_seconds: float = 0.1) -> List[str]:
    """Run the CLI in a subprocess (no Qt), reporting ``PROGRESS`` lines as they arrive.

    Returns all output lines. Raises :class:`FemurSegError` with the CLI's one-line message when
    it fails, and :class:`Cancelled` (after killing the process) when ``is_cancelled()`` turns
    true.
    """
    try:
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=None if env is None else dict(env),
                                cwd=None if cwd is None else str(cwd), text=True,
                                encoding="utf-8", errors="replace", bufsize=1)
    except OSError as exc:
        raise FemurSegError(f"cannot start {command[0]}: {exc.strerror or exc}") from None
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def _reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.rstrip("\r\n"))
        lines.put(None)

    thread = threading.Thread(target=_reader, daemon=True)
    thread.start()
    output: List[str] = []
    finished = False
    while not finished:
        if is_cancelled is not None and is_cancelled():
            proc.kill()
            proc.wait()
            thread.join(timeout=5)
            raise Cancelled("segmentation cancelled")
        try:
            line = lines.get(timeout=poll_seconds)
        except queue.Empty:
            continue
        if line is None:
            finished = True
            continue
        output.append(line)
        if on_line is not None:
            on_line(line)
        progress = parse_progress_line(line)
        if progress is not None and on_progress is not None:
            on_progress(*progress)
    returncode = proc.wait()
    thread.join(timeout=5)
    if returncode != 0:
        raise FemurSegError(error_message(output, returncode))
    return output
