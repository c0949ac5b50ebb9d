"""The Slicer module's parts that need neither the application nor MRML.

The background process (Cancel ends the whole process tree that Slicer's ``PythonSlicer``
launcher starts), the installation of the module's Python packages (from PyPI through
``slicer.packaging`` on Slicer 5.12 and later, or with pip from a folder of wheels on offline
machines), the model choice of the panel, and the files the Slicer extensions index checks.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "FemurSeg"
sys.path.insert(0, str(MODULE_DIR))

from FemurSegLib.errors import Cancelled, FemurSegError  # noqa: E402
from FemurSegMRMLLib import install, models, process  # noqa: E402
from process_helpers import alive, launcher_processes, pip_stand_in, wait_ended  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Cancel ends the launcher and the Python it started


@pytest.fixture
def launcher(tmp_path):
    yield from launcher_processes(tmp_path)


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


# ----------------------------------------------------------------------------------------------
# The model choice of the panel


def model_folder(root: Path, name: str) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    return str(folder)


def test_reconcile_model_choice(tmp_path):
    listed = [model_folder(tmp_path / "bundled", "femur-t1-coronal")]
    own = model_folder(tmp_path / "mine", "femur-3d")
    home = str(tmp_path)
    # A listed model stays; a folder choice stays.
    assert models.reconcile_model_choice(listed[0], home, listed) == (listed[0], home)
    assert models.reconcile_model_choice("", own, listed) == ("", own)
    # A saved model that is no longer listed: folder mode ("Model folder..." as the combo box
    # shows), the dead path is dropped; a still valid folder becomes the folder choice.
    dead = str(tmp_path / "old-extension" / "femur-t1-coronal")
    assert models.reconcile_model_choice(dead, home, listed) == ("", home)
    assert models.reconcile_model_choice(own, home, listed) == ("", own)


def test_model_to_run(tmp_path):
    listed = model_folder(tmp_path / "bundled", "femur-t1-coronal")
    own = model_folder(tmp_path / "mine", "femur-3d")
    assert models.model_to_run(listed, str(tmp_path)) == listed
    assert models.model_to_run("", own) == own
    with pytest.raises(FemurSegError, match=r"^not a FemurSeg model folder \(no model\.json\): "):
        models.model_to_run("", str(tmp_path))
    with pytest.raises(FemurSegError, match=r"^choose a model folder \(no bundled model is "
                                            r"selected\)$"):
        models.model_to_run("", None)
    with pytest.raises(FemurSegError, match=r"^the model .*gone is no longer installed: choose "
                                            r"a model$"):
        models.model_to_run(str(tmp_path / "gone"), own)


# ----------------------------------------------------------------------------------------------
# The extensions index: FemurSeg.json and LICENSE

#: Keys of Slicer's extension catalog entry schema v1.0.1 (Slicer v5.8.0 and v5.10.0:
#: Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json, "additionalProperties": false).
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type",
                "build_dependencies", "build_subdirectory", "enabled", "tier"}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


def test_extension_description_json_for_the_index():
    entry = json.loads((REPO / "FemurSeg.json").read_text(encoding="utf-8"))
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_KEYS
    assert entry["$schema"] == ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                                "slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["category"] == "Segmentation"
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["build_subdirectory"] == "."
    assert entry["scm_revision"] == "main"
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    # The repository is not public yet: the URL is a marked placeholder, the same as CMake's.
    assert entry["scm_url"] == "https://github.com/OWNER/SlicerFemurSeg"
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(FemurSeg)" in cmake
    assert not (REPO / "FemurSeg.s4ext").exists()  # Slicer 5.6 (.s4ext index) is not supported


def cmake_literal(text: str, name: str):
    """The value of ``set(NAME "...")`` as written (no CMake expansion: the index's checker
    reads the file as text), or None."""
    import re

    match = re.search(rf'^\s*set\(\s*{name}\s+"([^"]*)"\s*\)', text, re.M)
    return match.group(1) if match else None


def test_description_passes_the_extensions_index_rules():
    """The rules of Slicer/ExtensionsIndex scripts/check_description_files.py that can be
    checked here: the icon and screenshot addresses are literal http(s) URLs (read without
    CMake), at least one screenshot, the repository name starts with "Slicer" while the
    extension name (the .json file and project()) does not, a licence file in the root."""
    from urllib.parse import urlsplit

    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    icon = cmake_literal(cmake, "EXTENSION_ICONURL")
    assert icon == ("https://raw.githubusercontent.com/OWNER/SlicerFemurSeg/main/Resources/"
                    "Icons/FemurSeg.png")
    assert (REPO / urlsplit(icon).path.split("/main/", 1)[1]).is_file()  # the file it names
    screenshots = (cmake_literal(cmake, "EXTENSION_SCREENSHOTURLS") or "").split()
    assert screenshots == ["https://raw.githubusercontent.com/OWNER/SlicerFemurSeg/main/"
                           "Resources/Screenshots/FemurSeg.png"]
    for url in [icon] + screenshots + [cmake_literal(cmake, "EXTENSION_HOMEPAGE")]:
        assert url.startswith("https://") and "${" not in url, url
    entry = json.loads((REPO / "FemurSeg.json").read_bytes())
    assert b"\r" not in (REPO / "FemurSeg.json").read_bytes()  # LF line endings only
    repository = urlsplit(entry["scm_url"]).path.strip("/").split("/")[-1]
    assert repository.startswith("Slicer") and repository == "SlicerFemurSeg"
    assert not "FemurSeg".lower().startswith("slicer")
    assert "project(FemurSeg)" in cmake  # = the description file's name, FemurSeg.json
    assert (REPO / "LICENSE").is_file()
    # How to make the screenshot is in the README, under the path the URL names.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "Resources/Screenshots/FemurSeg.png" in readme


def test_the_package_carries_this_repositorys_licence():
    """UseSlicer.cmake (v5.8.0, v5.10.0) puts Slicer's licence in the package unless
    EXTENSION_LICENSE_FILE is set before include(${Slicer_USE_FILE})."""
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    licence = cmake.index("set(EXTENSION_LICENSE_FILE ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE)")
    assert licence < cmake.index("include(${Slicer_USE_FILE})")


def test_one_repository_placeholder_everywhere():
    """Every address of the project names the same placeholder repository, OWNER/SlicerFemurSeg
    (the help text takes it from FemurSegLib.release): replacing OWNER is one search."""
    import re

    from FemurSegLib import release

    files = [REPO / "CMakeLists.txt", REPO / "FemurSeg.json", MODULE_DIR / "FemurSeg.py",
             MODULE_DIR / "FemurSegLib" / "release.py", REPO / "README.md"]
    found = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        for repo in re.findall(r"(?:github\.com|githubusercontent\.com)/([\w.-]+/[\w.-]+)", text):
            if repo.split("/")[0] != "Slicer":  # Slicer's own schema and repositories
                found.setdefault(repo.rstrip("."), set()).add(path.name)
    assert set(found) == {release.REPOSITORY}, found
    assert release.REPOSITORY == "OWNER/SlicerFemurSeg"
    module = (MODULE_DIR / "FemurSeg.py").read_text(encoding="utf-8")
    assert "github.com" not in module and '.format(url=REPOSITORY_URL)' in module


def test_license_is_the_apache_license():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    for section in range(1, 10):  # all nine sections of the terms
        assert f"\n   {section}. " in text, section
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "Apache-2.0" in pyproject


def test_module_code_is_python_3_9_syntax():
    """Slicer 5.8 runs Python 3.9: the module, its adapter and the core parse as 3.9 code."""
    import ast

    sources = sorted(MODULE_DIR.rglob("*.py"))
    assert len(sources) > 20
    for path in sources:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
