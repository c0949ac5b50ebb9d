"""The Python packages the background process needs beyond what Slicer ships, and installing them.

Nothing here runs at import, and nothing needs Qt: the Slicer pieces (the confirmation dialog,
``slicer.packaging`` where Slicer has it, the ``PythonSlicer`` path) are passed in by the module
logic, so every path is tested without the application.

Installation, after the user agreed:

* from a folder of wheels (offline machines: ``$FEMURSEG_WHEELS``): ``PythonSlicer -m pip install
  --no-index --find-links DIR ...``, whatever the Slicer version;
* Slicer 5.12 and later: ``slicer.packaging.pip_ensure`` (progress dialog, restart prompt), told
  not to skip in testing mode so the module's self-test gets its packages;
* Slicer 5.8 and 5.10 (no ``slicer.packaging``): ``PythonSlicer -m pip install ...``, as their
  ``slicer.util.pip_install`` does, with the output logged.

pip runs in a :class:`.process.BackgroundProcess` (:class:`PipInstallation`): the module panel
polls it from a timer, so Slicer stays responsive however long pip waits for a network that
drops packets, and *Cancel* ends it. The required packages are installed first and ONNX Runtime
in a run of its own (:func:`install_steps`): when only ONNX Runtime cannot be installed, the
PyTorch fallback can still run (:func:`choose_engine`).

numpy, SimpleITK and torch are held at their installed versions by a constraints file. When an
installation fails the message names the package that is missing, and, whatever the Slicer
version, says how to install without internet (``$FEMURSEG_WHEELS``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Callable, Iterable, List, Mapping, Optional, Sequence, Tuple

from FemurSegLib import files
from FemurSegLib.errors import FemurSegError

from .process import BackgroundProcess, child_environment, error_message

#: What ``FemurSegLib.cli segment`` needs beyond what Slicer ships (numpy and SimpleITK). scipy is
#: in Slicer too; it is listed so an old Slicer gets it. Never torch: only the fallback uses it.
INFERENCE_REQUIREMENTS = ("onnxruntime>=1.16", "slicerio>=1.0", "scipy>=1.9")

#: Packages the installation must never reinstall or upgrade (pinned by a constraints file).
PINNED_PACKAGES = ("numpy", "SimpleITK", "torch")

#: The one optional requirement: without it the PyTorch fallback runs.
ONNX_RUNTIME = "onnxruntime"

#: Modules (import names) that Slicer 5.8 and 5.10 provide and the adapter may import: the
#: application's own (slicer, vtk, qt, ctk) and the Python packages its SuperBuild installs
#: (SuperBuild/External_python-numpy, -scipy, -pythonqt-requirements (packaging) and SimpleITK).
#: Everything else the adapter imports must be in INFERENCE_REQUIREMENTS (a test checks this).
SLICER_PYTHON_PACKAGES = ("slicer", "vtk", "vtkmodules", "qt", "ctk", "numpy", "scipy",
                          "SimpleITK", "packaging")

#: Environment variable naming a folder of wheels to install from, without internet.
WHEEL_FOLDER_VARIABLE = "FEMURSEG_WHEELS"

_NO_DISTRIBUTION_RE = re.compile(r"No matching distribution found for\s+(\S+)")

#: What every failure to install from the internet adds: how to install without it.
OFFLINE_HINT = (f"without internet, set {WHEEL_FOLDER_VARIABLE} to a folder of wheels; see the "
                "README")


def requirement_name(requirement: str) -> str:
    """``"onnxruntime>=1.16"`` -> ``"onnxruntime"`` (the distribution name, as written)."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def installed_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name``, or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_requirements(requirements: Iterable[str],
                         version_of: Callable[[str], Optional[str]] = installed_version
                         ) -> List[str]:
    """The requirements that are not installed, or installed in a version that does not fit."""
    from packaging.requirements import Requirement
    from packaging.version import InvalidVersion

    missing = []
    for text in requirements:
        req = Requirement(text)
        version = version_of(req.name)
        try:
            ok = version is not None and req.specifier.contains(version, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            missing.append(text)
    return missing


def pin_constraints(packages: Iterable[str] = PINNED_PACKAGES,
                    version_of: Callable[[str], Optional[str]] = installed_version) -> str:
    """pip constraints that hold the installed packages at their versions (absent ones are
    skipped: pip installs nothing because of a constraint)."""
    lines = [f"{name}=={version_of(name)}" for name in packages if version_of(name)]
    return "".join(line + "\n" for line in lines)


def write_pin_constraints(path: os.PathLike, packages: Iterable[str] = PINNED_PACKAGES) -> str:
    """Write :func:`pin_constraints` to ``path`` (replacing it); return the path as a string."""
    return str(files.write_text(pin_constraints(packages), path, overwrite=True))


def wheel_folder(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The folder of wheels named by ``$FEMURSEG_WHEELS``, or None (install from PyPI)."""
    folder = (os.environ if environ is None else environ).get(WHEEL_FOLDER_VARIABLE, "").strip()
    if not folder:
        return None
    if not os.path.isdir(folder):
        raise FemurSegError(f"{WHEEL_FOLDER_VARIABLE} is not a folder: {folder}")
    return folder


def pip_install_command(python: str, requirements: Sequence[str], *,
                        constraints: Optional[str] = None,
                        wheel_folder: Optional[str] = None) -> List[str]:
    """``python -m pip install ...``; with a wheel folder, offline (``--no-index``)."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    if wheel_folder:
        command += ["--no-index", "--find-links", str(wheel_folder)]
    command += list(requirements)
    if constraints:
        command += ["-c", str(constraints)]
    return command


def manual_command(requirements: Sequence[str], wheel_folder: Optional[str] = None) -> str:
    """The command an administrator runs to install ``requirements`` by hand."""
    offline = f"--no-index --find-links {wheel_folder} " if wheel_folder else ""
    return f"PythonSlicer -m pip install {offline}{' '.join(requirements)}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def install_steps(requirements: Sequence[str]) -> List[List[str]]:
    """The pip runs for ``requirements``: the required ones together, then ONNX Runtime alone.

    In one run a failure to get ONNX Runtime (no wheel for this platform, no network) would
    leave every requirement uninstalled, and with it the PyTorch fallback, which needs the
    others.
    """
    required = [r for r in requirements if requirement_name(r) != ONNX_RUNTIME]
    optional = [r for r in requirements if requirement_name(r) == ONNX_RUNTIME]
    return [step for step in (required, optional) if step]


def _is_optional(step: Sequence[str]) -> bool:
    return all(requirement_name(r) == ONNX_RUNTIME for r in step)


class PipInstallation:
    """pip runs (:func:`install_steps`) one after the other, each in a
    :class:`.process.BackgroundProcess`; nothing blocks.

    Call :meth:`poll` (from a timer, or in a loop) until it returns True; it raises
    :class:`FemurSegError` with one line naming the package when a run of required packages
    fails. A failed ONNX Runtime run is not an error here: its message is kept in
    :attr:`failure` and the PyTorch fallback decides (:func:`choose_engine`). :meth:`cancel` ends
    the running pip with every process it started.
    """

    def __init__(self, requirements: Sequence[str], *, python: str,
                 constraints: Optional[str] = None, wheel_folder: Optional[str] = None,
                 env: Optional[Mapping[str, str]] = None) -> None:
        self.requirements = list(requirements)
        self.wheel_folder = wheel_folder
        self.failure: Optional[str] = None
        self._env = child_environment() if env is None else dict(env)
        self._pending = [(step, pip_install_command(python, step, constraints=constraints,
                                                    wheel_folder=wheel_folder))
                         for step in install_steps(self.requirements)]
        self._step: List[str] = []
        self._process: Optional[BackgroundProcess] = None
        self._lines: List[str] = []

    def poll(self) -> bool:
        """Start the next run when none is running; True once every run has ended."""
        if self._process is not None:
            returncode = self._process.poll()
            self._lines += self._process.read_lines()
            if returncode is None:
                return False
            process, self._process = self._process, None
            if returncode != 0:
                message = _pip_failure(self._step, error_message(process.lines, returncode,
                                                                  "pip"), self.wheel_folder)
                if not _is_optional(self._step):
                    self._pending = []
                    raise FemurSegError(message)
                self.failure = message
        if not self._pending:
            return True
        self._step, command = self._pending.pop(0)
        logging.info("FemurSeg: running " + " ".join(command))
        try:
            self._process = BackgroundProcess(command, env=self._env)
        except FemurSegError as exc:  # no PythonSlicer: nothing else can run either
            self._pending = []
            raise FemurSegError(_pip_failure(self._step, str(exc), self.wheel_folder,
                                             offline_hint=False)) from None
        return False

    def take_lines(self) -> List[str]:
        """pip's output since the last call."""
        lines, self._lines = self._lines, []
        return lines

    @property
    def running(self) -> bool:
        return self._process is not None

    def cancel(self) -> None:
        """End the running pip (and what it started); run nothing more."""
        self._pending = []
        if self._process is not None:
            self._process.cancel()
            self._lines += self._process.read_lines()
            self._process = None


def uses_packaging(packaging_module, wheel_folder: Optional[str] = None) -> bool:
    """True where ``slicer.packaging`` installs (Slicer 5.12+, and no folder of wheels given)."""
    return packaging_module is not None and hasattr(packaging_module, "pip_ensure") \
        and not wheel_folder


def confirmation_text(requirements: Sequence[str], wheel_folder: Optional[str] = None) -> str:
    """The question asked before installing."""
    source = f" from the wheel folder {wheel_folder}" if wheel_folder else ""
    return (f"FemurSeg needs these Python packages for inference: {', '.join(requirements)}. "
            f"Install them now{source}?")


def packaging_install(requirements: Sequence[str], packaging_module, *,
                      constraints: Optional[str] = None) -> Optional[str]:
    """Install through ``slicer.packaging.pip_ensure`` (Slicer 5.12+: its progress dialog keeps
    Slicer responsive), step by step (:func:`install_steps`). Returns the one-line message of a
    failed ONNX Runtime step (None if all went in); raises :class:`FemurSegError` when a
    required step fails. Every message gives the offline hint, as pip's own failures do."""
    failure = None
    for step in install_steps(requirements):
        try:
            packaging_module.pip_ensure(step, constraints=constraints, requester="FemurSeg",
                                        prompt_install=False, skip_in_testing=False)
        except Exception as exc:  # RuntimeError, CalledProcessError, OSError: all failures
            message = (f"cannot install {', '.join(step)}: {_one_line(exc)} ({OFFLINE_HINT}); "
                       f"see the Python console, or install by hand: {manual_command(step)}")
            if not _is_optional(step):
                raise FemurSegError(message) from None
            failure = message
    return failure


def install_requirements(requirements: Sequence[str], *, python: str,
                         confirm: Callable[[str], bool],
                         constraints: Optional[str] = None,
                         wheel_folder: Optional[str] = None,
                         packaging_module=None,
                         env: Optional[Mapping[str, str]] = None,
                         on_line: Optional[Callable[[str], None]] = None,
                         version_of: Callable[[str], Optional[str]] = installed_version,
                         poll_seconds: float = 0.1) -> bool:
    """Install ``requirements`` into Slicer's Python after ``confirm(question)`` agreed.

    ``python`` is Slicer's ``PythonSlicer``; ``packaging_module`` is ``slicer.packaging`` where
    Slicer has it (5.12 and later), else None; ``wheel_folder`` installs offline from a folder of
    wheels; ``constraints`` is a pip constraints file (:func:`write_pin_constraints`); pip's
    output goes to ``on_line``. Returns False if the user declined, True once every requirement
    is installed; raises :class:`FemurSegError` naming what is missing when it cannot install
    (after installing the others when only ONNX Runtime fails: see :func:`install_steps`).

    This waits for pip (the module logic's ``process``, the self-test); the module panel runs
    :class:`PipInstallation` from its timer instead.
    """
    requirements = list(requirements)
    if not confirm(confirmation_text(requirements, wheel_folder)):
        return False
    failure = None
    if uses_packaging(packaging_module, wheel_folder):
        failure = packaging_install(requirements, packaging_module, constraints=constraints)
    else:
        installation = PipInstallation(requirements, python=python, constraints=constraints,
                                       wheel_folder=wheel_folder, env=env)
        while True:
            done = installation.poll()
            for line in installation.take_lines():
                if on_line is not None:
                    on_line(line)
            if done:
                break
            time.sleep(poll_seconds)
        failure = installation.failure
    if failure is not None:
        raise FemurSegError(failure)
    still = missing_requirements(requirements, version_of)
    if still:
        raise FemurSegError(f"cannot install {', '.join(still)}: still missing after pip ran; "
                            f"see the Python console, or install by hand: "
                            f"{manual_command(still, wheel_folder)}")
    return True


def _pip_failure(requirements: Sequence[str], message: str, folder: Optional[str],
                 offline_hint: bool = True) -> str:
    """One line for a failed pip run that names the distribution pip could not find."""
    names = ", ".join(requirements)
    match = _NO_DISTRIBUTION_RE.search(message)
    if match and folder:
        return (f"cannot install {names}: the wheel folder {folder} has no wheel for "
                f"{match.group(1)}; add that wheel to the folder and retry")
    if match:
        return f"cannot install {names}: pip found no {match.group(1)} ({OFFLINE_HINT})"
    hint = f" ({OFFLINE_HINT})" if offline_hint and not folder else ""
    return (f"cannot install {names}: {message}{hint}; see the Python console, or install by "
            f"hand: {manual_command(requirements, folder)}")


def choose_engine(torch_available: Callable[[], bool], install_error: Optional[str] = None,
                  version_of: Callable[[str], Optional[str]] = installed_version
                  ) -> Tuple[str, Optional[str]]:
    """The engine that will run after the installation, and a note for the status line.

    ``install_error`` is the one-line message of a failed installation (None: it went in, was
    declined, or nothing was missing). Returns ``("onnxruntime", None)``, or ``("torch", note)``
    when ONNX Runtime is missing but the other requirements are there and torch is
    (``torch_available()``); raises :class:`FemurSegError` naming what is missing otherwise.
    """
    missing = missing_requirements(INFERENCE_REQUIREMENTS, version_of)
    others = [r for r in missing if requirement_name(r) != ONNX_RUNTIME]
    if others:
        if install_error:
            raise FemurSegError(install_error)
        one = len(others) == 1
        raise FemurSegError(f"FemurSeg needs the Python package{'' if one else 's'} "
                            f"{', '.join(others)}, which {'is' if one else 'are'} not installed; "
                            f"allow {'its' if one else 'their'} installation and retry")
    if not missing:
        return ONNX_RUNTIME, None
    if torch_available():
        if install_error:
            return "torch", ("ONNX Runtime could not be installed: using the slower PyTorch "
                             f"fallback ({install_error})")
        return "torch", "ONNX Runtime is not installed: using the slower PyTorch fallback"
    if install_error:
        raise FemurSegError(f"{install_error}; PyTorch is not available for the slower "
                            "fallback either (install the PyTorch extension and PyTorch with its "
                            "PyTorch Utils module)")
    raise FemurSegError(
        f"ONNX Runtime ({missing[0]}) is not installed and PyTorch is not available: allow the "
        "installation of onnxruntime, or install the PyTorch extension (Extensions Manager) and "
        "PyTorch with its PyTorch Utils module for the slower fallback")


def ensure_inference_requirements(install: Callable[[List[str]], object],
                                  torch_available: Callable[[], bool],
                                  version_of: Callable[[str], Optional[str]] = installed_version,
                                  on_note: Optional[Callable[[str], None]] = None) -> str:
    """Install what inference needs if it is missing; return the engine that will run.

    ``install(missing)`` installs a list of requirements (or the user declines; a
    :class:`FemurSegError` it raises is a failed installation); ``torch_available()`` says
    whether the PyTorch fallback can run. Returns ``"onnxruntime"``, or ``"torch"`` when ONNX
    Runtime is still missing but torch is there: then the note of :func:`choose_engine` is
    logged and given to ``on_note``. Raises :class:`FemurSegError` naming the missing packages
    when inference cannot run.
    """
    missing = missing_requirements(INFERENCE_REQUIREMENTS, version_of)
    install_error = None
    if missing:
        try:
            install(missing)
        except FemurSegError as exc:
            install_error = str(exc)
    engine, note = choose_engine(torch_available, install_error, version_of)
    if note:
        logging.warning(f"FemurSeg: {note}")
        if on_note is not None:
            on_note(note)
    return engine
