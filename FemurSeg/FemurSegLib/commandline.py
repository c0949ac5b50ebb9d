"""What both command lines (``femurseg`` and ``femurseg-train``) share: an argument parser with
one-line errors, and the one mapping from exceptions to messages and exit codes.

Exit codes: 0 success; 2 bad usage, bad input, bad model or an output that exists (one line
``error: ...`` on stderr, no traceback); 1 an unexpected internal error (one line, and the
traceback only with ``--debug``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from .errors import FemurSegError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


class VersionAction(argparse.Action):
    """``--version`` that prints ``text()``, computed only when asked for (it may read files)."""

    def __init__(self, option_strings, dest, text: Callable[[], str], **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and exit", **kwargs)
        self.text = text

    def __call__(self, parser, namespace, values, option_string=None):
        print(self.text())
        parser.exit()


def global_options(parser: argparse.ArgumentParser, *names: str, top: bool = True) -> None:
    """``--debug`` (tracebacks of internal errors) and ``--verbose`` (log details), wherever they
    are given: before the command (``top``, defaults False) and after it (each command's parser,
    ``top=False``: no default, so the value given before the command stays)."""
    helps = {"--debug": "show tracebacks of internal errors", "--verbose": "log details"}
    for name in names:
        if top:
            parser.add_argument(name, action="store_true", help=helps[name])
        else:
            parser.add_argument(name, action="store_true", default=argparse.SUPPRESS,
                                help=helps[name])


class LowerCaseLevels(logging.Formatter):
    """``warning: message``, ``info: message``: the one style of the command lines' messages.
    ``clock``: each line starts with the time (``HH:MM:SS``) and info lines carry no level
    (the training log: one line per epoch)."""

    def __init__(self, clock: bool = False):
        super().__init__(datefmt="%H:%M:%S")
        self.clock = clock

    def format(self, record: logging.LogRecord) -> str:
        level = "" if self.clock and record.levelno == logging.INFO else \
            f"{record.levelname.lower()}: "
        line = level + record.getMessage()
        return f"{self.formatTime(record, self.datefmt)} {line}" if self.clock else line


def run(func: Callable[[argparse.Namespace], int], args: argparse.Namespace, *,
        interrupted: str = "interrupted") -> int:
    """``func(args)`` with every exception turned into one ``error:`` line and an exit code
    (``args.debug`` re-raises internal errors with their traceback). ``interrupted`` is the
    message for Ctrl-C (e.g. how to resume)."""
    try:
        return int(func(args) or 0)
    except FemurSegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"error: {interrupted}\n")
        return 130
    except BrokenPipeError:  # e.g. `femurseg evaluate ... | head`: not an error worth a message
        try:
            sys.stdout = open(os.devnull, "w", encoding="utf-8")
        except OSError:
            pass
        return 0
    except MemoryError:
        sys.stderr.write("error: out of memory (try --no-tta, fewer --folds, or a smaller image)\n")
        return 1
    except Exception as exc:  # an internal error: one line unless --debug
        if getattr(args, "debug", False):
            raise
        msg = " ".join(str(exc).split()) or type(exc).__name__
        sys.stderr.write(f"error: internal error ({type(exc).__name__}: {msg}); "
                         "rerun with --debug for details\n")
        return 1
