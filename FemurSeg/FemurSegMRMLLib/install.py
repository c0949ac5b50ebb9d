"""The Python packages the background process needs beyond what Slicer ships, and installing them.

The checks are pure (installed versions are passed in or read from the package metadata); the
installation uses Slicer's ``slicer.packaging`` / ``slicer.util`` and is only called from the
module logic, never at import.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable, List, Optional

from FemurSegLib.errors import FemurSegError

#: What ``FemurSegLib.cli segment`` needs beyond what Slicer ships (numpy and SimpleITK). scipy is
#: in Slicer too; it is listed so an old Slicer gets it. Never torch: only the fallback uses it.
INFERENCE_REQUIREMENTS = ("onnxruntime>=1.16", "slicerio>=1.0", "scipy>=1.9")

#: Packages the installation must never reinstall or upgrade (pinned by a constraints file).
PINNED_PACKAGES = ("numpy", "SimpleITK", "torch")

#: The one optional requirement: without it the PyTorch fallback runs.
ONNX_RUNTIME = "onnxruntime"


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
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(pin_constraints(packages), encoding="utf-8")
    return str(path)


def install_requirements(requirements: List[str], constraints: str) -> None:
    """Install ``requirements`` into Slicer's Python after asking (Slicer application only).

    ``slicer.packaging.pip_ensure`` where Slicer has it, else ``slicer.util.pip_install`` after a
    confirmation; ``constraints`` is a pip constraints file. A declined installation is logged;
    a failed one raises :class:`FemurSegError`.
    """
    import slicer

    try:
        try:
            packaging = importlib.import_module("slicer.packaging")
        except ImportError:
            packaging = None
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(list(requirements), constraints=constraints,
                                 requester="FemurSeg")
        else:  # Slicer before slicer.packaging
            text = ("FemurSeg needs these Python packages for inference: "
                    + ", ".join(requirements) + ". Install them now?")
            if not slicer.util.confirmOkCancelDisplay(text, windowTitle="FemurSeg"):
                raise RuntimeError("installation declined")
            slicer.util.pip_install(list(requirements) + ["-c", constraints])
    except RuntimeError as exc:  # declined
        logging.warning(f"FemurSeg: Python packages not installed: {exc}")
    except Exception as exc:  # pip failed (e.g. offline or a version conflict)
        raise FemurSegError("installing " + ", ".join(requirements) + " failed ("
                            + " ".join(str(exc).split()) + "); see the Python console") from None


def ensure_inference_requirements(install: Callable[[List[str]], None],
                                  torch_available: Callable[[], bool],
                                  version_of: Callable[[str], Optional[str]] = installed_version
                                  ) -> str:
    """Install what inference needs if it is missing; return the engine that will run.

    ``install(missing)`` installs (or declines to install) a list of requirements;
    ``torch_available()`` says whether the PyTorch fallback can run. Returns ``"onnxruntime"``,
    or ``"torch"`` when ONNX Runtime is still missing but torch is there. Raises
    :class:`FemurSegError` with a clear message when inference cannot run.
    """
    missing = missing_requirements(INFERENCE_REQUIREMENTS, version_of)
    if missing:
        install(missing)
        missing = missing_requirements(INFERENCE_REQUIREMENTS, version_of)
    others = [r for r in missing if requirement_name(r) != ONNX_RUNTIME]
    if others:
        raise FemurSegError("FemurSeg needs the Python packages " + ", ".join(others)
                            + " which are not installed; allow their installation and retry")
    if not missing:
        return ONNX_RUNTIME
    if torch_available():
        logging.warning("FemurSeg: ONNX Runtime is not installed: using the PyTorch fallback")
        return "torch"
    raise FemurSegError(
        "ONNX Runtime is not installed and PyTorch is not available: allow the installation "
        "of onnxruntime, or install the PyTorch extension (Extensions Manager) and PyTorch "
        "with its PyTorch Utils module for the slower fallback")
