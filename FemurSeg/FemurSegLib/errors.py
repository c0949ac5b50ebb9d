"""User-facing errors.

Every problem a user can cause or fix (bad input, bad model folder, an output that exists) is a
:class:`FemurSegError` with a one-line message. The CLI prints ``error: <message>`` and exits with
code 2; the Slicer module shows the message. Anything else is a bug.
"""


#: Exit code of a run that finished but where at least one input gave no femur or an implausible
#: one; each such input gets one line on stderr starting with :data:`WARNING_PREFIX`. Defined
#: here once: the CLI writes them, the Slicer module (FemurSegMRMLLib.process) reads them.
EXIT_IMPLAUSIBLE = 3
WARNING_PREFIX = "warning:"


class FemurSegError(Exception):
    """A problem the user can act on. ``str(err)`` is a single line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class InputError(FemurSegError):
    """An input image or label file is missing, unreadable or unsuitable."""


class ModelError(FemurSegError):
    """A model folder is missing, incomplete, corrupt or tampered with."""


class OutputExistsError(FemurSegError):
    """An output file exists and overwriting was not requested."""


class OutputError(FemurSegError):
    """An output cannot be written: unknown type, a folder that cannot be made or written,
    or an operating-system error while writing (``cannot write PATH: reason``)."""


class Cancelled(FemurSegError):
    """The user cancelled a long-running operation."""


def itk_message(exc: BaseException) -> str:
    """The informative part of an ITK exception, on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__
