"""FemurSegMRMLLib.install (needs no slicer-core): the Python packages inference needs, and
their installation (from PyPI through ``slicer.packaging`` on Slicer 5.12 and later, or with
pip from a folder of wheels on offline machines)."""

from __future__ import annotations

import os
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from process_helpers import alive, pip_stand_in, wait_ended  # noqa: E402
from FemurSegLib.errors import FemurSegError  # noqa: E402
from slicer_helpers import (install, launcher, process, slicer)  # noqa: F401,E402


# ----------------------------------------------------------------------------------------------
# What is missing


@pytest.mark.parametrize("installed, missing", [
    ({"onnxruntime": "1.20.1", "slicerio": "1.4.0", "scipy": "1.13.0"}, []),
    ({"slicerio": "1.4.0", "scipy": "1.13.0"}, ["onnxruntime>=1.16"]),
    ({"onnxruntime": "1.15.0", "slicerio": "0.9", "scipy": "1.13.0"},
     ["onnxruntime>=1.16", "slicerio>=1.0"]),
    ({}, ["onnxruntime>=1.16", "slicerio>=1.0", "scipy>=1.9"]),
])
def test_missing_requirements(installed, missing):
    assert install.missing_requirements(install.INFERENCE_REQUIREMENTS, installed.get) == missing
    assert not any(install.requirement_name(r) in ("torch", "SimpleITK", "numpy")
                   for r in install.INFERENCE_REQUIREMENTS)


def test_pin_constraints_hold_installed_packages():
    versions = {"numpy": "1.26.4", "SimpleITK": "2.4.0"}
    assert install.pin_constraints(("numpy", "SimpleITK", "torch"), versions.get) \
        == "numpy==1.26.4\nSimpleITK==2.4.0\n"


# ----------------------------------------------------------------------------------------------
# Installing the Python packages


def make_wheel(folder: Path, name: str, version: str = "1.0", requires=()) -> Path:
    """A minimal pure-Python wheel (one module) that pip can install."""
    module = name.replace("-", "_")
    dist_info = f"{module}-{version}.dist-info"
    files = {
        f"{module}.py": "VALUE = 1\n",
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\n"
                                 f"Name: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: femurseg-test\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist_info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{dist_info}/RECORD,,\n"
    path = folder / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, text in files.items():
            whl.writestr(member, text)
    return path


def pip_env(target: Path) -> dict:
    """pip installs into ``target`` (never into the test's environment), and stays offline."""
    env = process.child_environment()
    env.update({"PIP_TARGET": str(target), "PIP_NO_INPUT": "1", "PIP_NO_CACHE_DIR": "1"})
    return env


def versions_in(folder: Path):
    def version_of(name: str):
        for dist in metadata.distributions(path=[str(folder)]):
            if dist.metadata["Name"].lower().replace("_", "-") == name.lower().replace("_", "-"):
                return dist.version
        return None
    return version_of


@pytest.mark.slow
def test_install_from_a_folder_of_wheels(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "femurseg-probe", "1.2")
    target = tmp_path / "site"
    asked = []
    installed = install.install_requirements(
        ["femurseg-probe>=1.0"], python=sys.executable, wheel_folder=str(wheels),
        confirm=lambda text: asked.append(text) or True, env=pip_env(target),
        version_of=versions_in(target))
    assert installed is True
    assert (target / "femurseg_probe.py").is_file()
    assert asked == [f"FemurSeg needs these Python packages for inference: femurseg-probe>=1.0. "
                     f"Install them now from the wheel folder {wheels}?"]


@pytest.mark.slow
def test_install_from_wheels_names_the_missing_dependency(tmp_path):
    """Offline: the folder lacks a wheel that a requirement needs; the message names it."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "femurseg-probe", "1.0", requires=["femurseg-absent-dependency>=2"])
    target = tmp_path / "site"
    with pytest.raises(FemurSegError) as caught:
        install.install_requirements(["femurseg-probe>=1.0"], python=sys.executable,
                                     wheel_folder=str(wheels), confirm=lambda text: True,
                                     env=pip_env(target), version_of=versions_in(target))
    assert str(caught.value) == (
        f"cannot install femurseg-probe>=1.0: the wheel folder {wheels} has no wheel for "
        "femurseg-absent-dependency>=2; add that wheel to the folder and retry")
    assert not target.exists() or not any(target.iterdir())


def test_install_with_a_missing_python_says_so(tmp_path):
    """A missing PythonSlicer is an error that says so, not an installation 'declined'."""
    missing = str(tmp_path / "bin" / "PythonSlicer")
    with pytest.raises(FemurSegError, match=r"^cannot install onnxruntime>=1.16: cannot start "
                                            r".*PythonSlicer: No such file or directory; see "):
        install.install_requirements(["onnxruntime>=1.16"], python=missing,
                                     confirm=lambda text: True, version_of=lambda name: None)


class FakePackaging:
    """``slicer.packaging`` of Slicer 5.12+: pip_ensure with the keywords of its signature."""

    def __init__(self, error=None):
        self.calls = []
        self.error = error

    def pip_ensure(self, requirements, constraints=None, skip_packages=None, prompt_install=True,
                   prompt_restart=True, requester=None, skip_in_testing=True, show_progress=True):
        self.calls.append(dict(requirements=requirements, constraints=constraints,
                               prompt_install=prompt_install, requester=requester,
                               skip_in_testing=skip_in_testing))
        if self.error is not None:
            raise self.error


def test_install_through_slicer_packaging_even_in_testing_mode(tmp_path):
    """Slicer 5.12+ skips pip_ensure in testing mode unless told not to: the self-test needs the
    packages, so FemurSeg says skip_in_testing=False (and asks the user itself)."""
    fake = FakePackaging()
    constraints = str(tmp_path / "c.txt")
    done = install.install_requirements(["onnxruntime>=1.16"], python="/x/PythonSlicer",
                                        constraints=constraints, confirm=lambda text: True,
                                        packaging_module=fake,
                                        version_of=lambda name: "1.20.0")
    assert done is True
    assert fake.calls == [dict(requirements=["onnxruntime>=1.16"], constraints=constraints,
                               prompt_install=False, requester="FemurSeg",
                               skip_in_testing=False)]


def test_install_declined_installs_nothing():
    fake = FakePackaging()
    assert install.install_requirements(["onnxruntime>=1.16"], python="/x/PythonSlicer",
                                        confirm=lambda text: False,
                                        packaging_module=fake) is False
    assert fake.calls == []


@pytest.mark.parametrize("error, message", [
    (RuntimeError("PythonSlicer executable not found"),
     "cannot install onnxruntime>=1.16: PythonSlicer executable not found (without internet, "
     "set FEMURSEG_WHEELS to a folder of wheels; see the README); see the Python console, or "
     "install by hand: PythonSlicer -m pip install onnxruntime>=1.16"),
    (OSError("network is unreachable"),
     "cannot install onnxruntime>=1.16: network is unreachable (without internet, set "
     "FEMURSEG_WHEELS to a folder of wheels; see the README); see the Python console, or "
     "install by hand: PythonSlicer -m pip install onnxruntime>=1.16"),
])
def test_install_failure_through_slicer_packaging_names_the_package(error, message):
    """Slicer 5.12+ (slicer.packaging): the same offline hint as pip's own failures on 5.8."""
    with pytest.raises(FemurSegError) as caught:
        install.install_requirements(["onnxruntime>=1.16"], python="/x/PythonSlicer",
                                     confirm=lambda text: True,
                                     packaging_module=FakePackaging(error),
                                     version_of=lambda name: None)
    assert str(caught.value) == message


def test_install_steps_put_onnxruntime_in_a_run_of_its_own():
    assert install.install_steps(list(install.INFERENCE_REQUIREMENTS)) == [
        ["slicerio>=1.0", "scipy>=1.9"], ["onnxruntime>=1.16"]]
    assert install.install_steps(["onnxruntime>=1.16"]) == [["onnxruntime>=1.16"]]
    assert install.install_steps(["slicerio>=1.0"]) == [["slicerio>=1.0"]]


def test_slicer_packaging_installs_the_others_when_onnxruntime_fails():
    """Slicer 5.12+: pip_ensure for the required packages, then for ONNX Runtime alone; its
    failure comes after the others went in (the PyTorch fallback needs them)."""
    class Packaging(FakePackaging):
        def pip_ensure(self, requirements, **kwargs):
            super().pip_ensure(requirements, **kwargs)
            if requirements == ["onnxruntime>=1.16"]:
                raise RuntimeError("no wheel for this platform")

    fake = Packaging()
    with pytest.raises(FemurSegError, match=r"^cannot install onnxruntime>=1\.16: no wheel for "
                                            r"this platform \(without internet, set "):
        install.install_requirements(["onnxruntime>=1.16", "slicerio>=1.0"], python="/x/Py",
                                     confirm=lambda text: True, packaging_module=fake,
                                     version_of=lambda name: None)
    assert [c["requirements"] for c in fake.calls] == [["slicerio>=1.0"], ["onnxruntime>=1.16"]]


def test_wheel_folder_offline_installs_the_others_when_onnxruntime_fails(tmp_path):
    """pip from a folder of wheels that has no ONNX Runtime: the required package is installed
    (one run of its own), then the ONNX Runtime run fails with the one-line message."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "femurseg-probe", "1.2")
    target = tmp_path / "site"
    with pytest.raises(FemurSegError) as caught:
        install.install_requirements(["onnxruntime>=1.16", "femurseg-probe>=1.0"],
                                     python=sys.executable, wheel_folder=str(wheels),
                                     confirm=lambda text: True, env=pip_env(target),
                                     version_of=versions_in(target))
    assert str(caught.value) == (f"cannot install onnxruntime>=1.16: the wheel folder {wheels} "
                                 "has no wheel for onnxruntime>=1.16; add that wheel to the "
                                 "folder and retry")
    assert (target / "femurseg_probe.py").is_file()


FALLBACK_INSTALL_ERROR = ("cannot install onnxruntime>=1.16: pip found no onnxruntime>=1.16 "
                          "(without internet, set FEMURSEG_WHEELS to a folder of wheels; see "
                          "the README)")


def test_failed_onnxruntime_install_falls_back_to_torch():
    """The installation raises (pip found no ONNX Runtime); the others are there and so is
    torch: the PyTorch fallback runs, and the note for the status line says why."""
    versions = {"slicerio": "1.4.0", "scipy": "1.13.1"}
    requested, notes = [], []

    def failing_install(missing):
        requested.append(list(missing))
        raise FemurSegError(FALLBACK_INSTALL_ERROR)

    assert install.ensure_inference_requirements(failing_install, lambda: True, versions.get,
                                                 on_note=notes.append) == "torch"
    assert requested == [["onnxruntime>=1.16"]]
    assert notes == ["ONNX Runtime could not be installed: using the slower PyTorch fallback ("
                     + FALLBACK_INSTALL_ERROR + ")"]
    # Without torch: the installation's message, and that the fallback cannot run either.
    with pytest.raises(FemurSegError) as caught:
        install.ensure_inference_requirements(failing_install, lambda: False, versions.get)
    assert str(caught.value) == (FALLBACK_INSTALL_ERROR + "; PyTorch is not available for the "
                                 "slower fallback either (install the PyTorch extension and "
                                 "PyTorch with its PyTorch Utils module)")
    # A required package that failed: its message, torch or not.
    with pytest.raises(FemurSegError, match=r"^cannot install slicerio>=1\.0: boom$"):
        install.ensure_inference_requirements(
            lambda missing: (_ for _ in ()).throw(FemurSegError("cannot install slicerio>=1.0: "
                                                               "boom")),
            lambda: True, {"scipy": "1.13.1"}.get)


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups (Windows: taskkill /T)")
def test_pip_installation_never_blocks_and_cancel_ends_pip(launcher, tmp_path):
    """What the panel polls from its timer: each poll returns at once while pip hangs, pip's
    output arrives, and cancel() ends pip with the process it started."""
    command, pid_files = launcher
    installation = install.PipInstallation(list(install.INFERENCE_REQUIREMENTS),
                                           python=pip_stand_in(tmp_path, command))
    lines, slowest = [], 0.0
    deadline = time.monotonic() + 30
    while not lines and time.monotonic() < deadline:
        start = time.monotonic()
        assert installation.poll() is False
        slowest = max(slowest, time.monotonic() - start)
        lines += installation.take_lines()
        time.sleep(0.05)
    assert lines == ["PROGRESS 1 started"] and installation.running
    assert slowest < 1.0  # a poll starts or checks a process, it never waits for pip
    installation.cancel()
    launcher_pid, child_pid = [int(p.read_text()) for p in pid_files]
    assert not alive(launcher_pid)
    assert wait_ended([child_pid], seconds=2.0) == []
    assert installation.poll() is True  # nothing more runs after Cancel
    assert not installation.running


def test_wheel_folder_comes_from_the_environment(tmp_path):
    assert install.wheel_folder({}) is None
    assert install.wheel_folder({"FEMURSEG_WHEELS": str(tmp_path)}) == str(tmp_path)
    with pytest.raises(FemurSegError, match=r"^FEMURSEG_WHEELS is not a folder: .*nowhere$"):
        install.wheel_folder({"FEMURSEG_WHEELS": str(tmp_path / "nowhere")})


@pytest.mark.parametrize("installed, after_install, torch, result", [
    ({"onnxruntime": "1.20.1", "slicerio": "1.4.0", "scipy": "1.13.1"}, {}, False, "onnxruntime"),
    ({"slicerio": "1.4.0", "scipy": "1.13.1"}, {"onnxruntime": "1.19.2"}, False, "onnxruntime"),
    ({"slicerio": "1.4.0", "scipy": "1.13.1"}, {}, True, "torch"),
    ({"slicerio": "1.4.0", "scipy": "1.13.1"}, {}, False,
     "ONNX Runtime (onnxruntime>=1.16) is not installed and PyTorch is not available: allow the "
     "installation of onnxruntime, or install the PyTorch extension (Extensions Manager) and "
     "PyTorch with its PyTorch Utils module for the slower fallback"),
    ({"onnxruntime": "1.20.1", "scipy": "1.13.1"}, {}, True,
     "FemurSeg needs the Python package slicerio>=1.0, which is not installed; allow its "
     "installation and retry"),
    ({"scipy": "1.13.1"}, {}, False,
     "FemurSeg needs the Python package slicerio>=1.0, which is not installed; allow its "
     "installation and retry"),
])
def test_ensure_inference_requirements(installed, after_install, torch, result):
    versions = dict(installed)
    requested = []

    def do_install(missing):
        requested.append(list(missing))
        versions.update(after_install)

    if result in ("onnxruntime", "torch"):
        assert install.ensure_inference_requirements(do_install, lambda: torch, versions.get) \
            == result
    else:
        with pytest.raises(FemurSegError) as caught:
            install.ensure_inference_requirements(do_install, lambda: torch, versions.get)
        assert str(caught.value) == result
    expected = install.missing_requirements(install.INFERENCE_REQUIREMENTS, installed.get)
    assert requested == ([expected] if expected else [])
