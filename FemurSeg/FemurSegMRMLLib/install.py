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

numpy, SimpleITK and torch are held at their installed versions by a constraints file. When an
installation fails the message names the package that is missing.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Callable, Iterable, List, Mapping, Optional, Sequence

from FemurSegLib import files
from FemurSegLib.errors import FemurSegError

from .process import child_environment, run_command

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


def install_requirements(requirements: Sequence[str], *, python: str,
                         confirm: Callable[[str], bool],
                         constraints: Optional[str] = None,
                         wheel_folder: Optional[str] = None,
                         packaging_module=None,
                         env: Optional[Mapping[str, str]] = None,
                         on_line: Optional[Callable[[str], None]] = None,
                         version_of: Callable[[str], Optional[str]] = installed_version
                         ) -> bool:
    """Install ``requirements`` into Slicer's Python after ``confirm(question)`` agreed.

    ``python`` is Slicer's ``PythonSlicer``; ``packaging_module`` is ``slicer.packaging`` where
    Slicer has it (5.12 and later), else None; ``wheel_folder`` installs offline from a folder of
    wheels; ``constraints`` is a pip constraints file (:func:`write_pin_constraints`); pip's
    output goes to ``on_line``. Returns False if the user declined, True once every requirement
    is installed; raises :class:`FemurSegError` naming what is missing when it cannot install.
    """
    requirements = list(requirements)
    names = ", ".join(requirements)
    source = f" from the wheel folder {wheel_folder}" if wheel_folder else ""
    if not confirm(f"FemurSeg needs these Python packages for inference: {names}. "
                   f"Install them now{source}?"):
        return False
    if packaging_module is not None and hasattr(packaging_module, "pip_ensure") \
            and not wheel_folder:
        try:
            packaging_module.pip_ensure(requirements, constraints=constraints,
                                        requester="FemurSeg", prompt_install=False,
                                        skip_in_testing=False)
        except Exception as exc:  # RuntimeError, CalledProcessError, OSError: all failures
            raise FemurSegError(f"cannot install {names}: {_one_line(exc)}; see the Python "
                                f"console, or install by hand: {manual_command(requirements)}"
                                ) from None
    else:
        command = pip_install_command(python, requirements, constraints=constraints,
                                      wheel_folder=wheel_folder)
        logging.info("FemurSeg: running " + " ".join(command))
        try:
            run_command(command, env=child_environment() if env is None else env,
                        on_line=on_line, what="pip")
        except FemurSegError as exc:
            raise FemurSegError(_pip_failure(requirements, str(exc), wheel_folder)) from None
    still = missing_requirements(requirements, version_of)
    if still:
        raise FemurSegError(f"cannot install {', '.join(still)}: still missing after pip ran; "
                            f"see the Python console, or install by hand: "
                            f"{manual_command(still, wheel_folder)}")
    return True


def _pip_failure(requirements: Sequence[str], message: str, folder: Optional[str]) -> str:
    """One line for a failed pip run that names the distribution pip could not find."""
    names = ", ".join(requirements)
    match = _NO_DISTRIBUTION_RE.search(message)
    if match and folder:
        return (f"cannot install {names}: the wheel folder {folder} has no wheel for "
                f"{match.group(1)}; add that wheel to the folder and retry")
    if match:
        return (f"cannot install {names}: pip found no {match.group(1)} (without internet, set "
                f"{WHEEL_FOLDER_VARIABLE} to a folder of wheels; see the README)")
    return (f"cannot install {names}: {message}; see the Python console, or install by hand: "
            f"{manual_command(requirements, folder)}")


def ensure_inference_requirements(install: Callable[[List[str]], object],
                                  torch_available: Callable[[], bool],
                                  version_of: Callable[[str], Optional[str]] = installed_version
                                  ) -> str:
    """Install what inference needs if it is missing; return the engine that will run.

    ``install(missing)`` installs a list of requirements (or the user declines);
    ``torch_available()`` says whether the PyTorch fallback can run. Returns ``"onnxruntime"``,
    or ``"torch"`` when ONNX Runtime is still missing but torch is there. Raises
    :class:`FemurSegError` naming the missing packages when inference cannot run.
    """
    missing = missing_requirements(INFERENCE_REQUIREMENTS, version_of)
    if missing:
        install(missing)
        missing = missing_requirements(INFERENCE_REQUIREMENTS, version_of)
    others = [r for r in missing if requirement_name(r) != ONNX_RUNTIME]
    if others:
        one = len(others) == 1
        raise FemurSegError(f"FemurSeg needs the Python package{'' if one else 's'} "
                            f"{', '.join(others)}, which {'is' if one else 'are'} not installed; "
                            f"allow {'its' if one else 'their'} installation and retry")
    if not missing:
        return ONNX_RUNTIME
    if torch_available():
        logging.warning("FemurSeg: ONNX Runtime is not installed: using the PyTorch fallback")
        return "torch"
    raise FemurSegError(
        f"ONNX Runtime ({missing[0]}) is not installed and PyTorch is not available: allow the "
        "installation of onnxruntime, or install the PyTorch extension (Extensions Manager) and "
        "PyTorch with its PyTorch Utils module for the slower fallback")
