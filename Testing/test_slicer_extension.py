"""The extension's files on real MRML (slicer-core): CMake lists, metadata, the widget and its
.ui file, the module logic, and what the adapter needs from Slicer 5.8 and later."""

from __future__ import annotations

import ast
import json
import py_compile
import re
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import writers  # noqa: E402
from slicer_helpers import (ellipsoids, install, make_image, MODULE_DIR, process, REPO, scene,
                            SIZE, slicer, SLICER_MARKS, stl, volume, volumes, write_seg)  # noqa: F401,E402

pytestmark = SLICER_MARKS


# ----------------------------------------------------------------------------------------------
# Extension files: CMake lists, the widget and its .ui file


def cmake_list(text: str, name: str) -> list:
    match = re.search(rf"set\({name}\b(.*?)\)", text, re.S)
    assert match, f"set({name} ...) not found"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def test_cmake_lists_every_python_file_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = [s.replace("${MODULE_NAME}", "FemurSeg") for s in cmake_list(text, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", "FemurSeg")
                 for s in cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    models = cmake_list(text, "MODULE_BUNDLED_MODEL_FILES")

    def files(root: Path, pattern: str) -> list:
        return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern)
                      if p.is_file() and "__pycache__" not in p.parts
                      and not p.name.startswith("."))

    on_disk_scripts = (["FemurSeg.py"] + files(MODULE_DIR, "FemurSegLib/**/*.py")
                       + files(MODULE_DIR, "FemurSegMRMLLib/**/*.py"))
    assert sorted(scripts) == sorted(on_disk_scripts), (
        "FemurSeg/CMakeLists.txt MODULE_PYTHON_SCRIPTS must list exactly the module's Python "
        f"files: add {sorted(set(on_disk_scripts) - set(scripts))}, "
        f"remove {sorted(set(scripts) - set(on_disk_scripts))}")
    on_disk_resources = files(MODULE_DIR, "Resources/**/*")
    assert sorted(resources) == on_disk_resources, (
        "FemurSeg/CMakeLists.txt MODULE_PYTHON_RESOURCES must list exactly FemurSeg/Resources: "
        f"add {sorted(set(on_disk_resources) - set(resources))}, "
        f"remove {sorted(set(resources) - set(on_disk_resources))}")
    on_disk_models = files(REPO / "Resources" / "Models", "**/*")
    assert sorted(models) == on_disk_models, (
        "FemurSeg/CMakeLists.txt MODULE_BUNDLED_MODEL_FILES must list every file under "
        f"Resources/Models: add {sorted(set(on_disk_models) - set(models))}, "
        f"remove {sorted(set(models) - set(on_disk_models))}")
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_extension_metadata():
    root = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_CATEGORY "Segmentation"\)', root)
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', root)
    assert re.search(r'set\(EXTENSION_SCREENSHOTURLS "https://\S+\.png"\)', root)
    assert "add_subdirectory(FemurSeg)" in root
    import json
    index_entry = json.loads((REPO / "FemurSeg.json").read_text(encoding="utf-8"))
    assert index_entry["build_dependencies"] == ["PyTorch"]
    assert index_entry["category"] == "Segmentation"
    from PIL import Image
    for icon in (MODULE_DIR / "Resources/Icons/FemurSeg.png", REPO / "Resources/Icons/FemurSeg.png"):
        with Image.open(icon) as im:
            assert im.size == (128, 128)


def test_module_compiles_and_matches_its_ui(tmp_path):
    source = MODULE_DIR / "FemurSeg.py"
    py_compile.compile(str(source), cfile=str(tmp_path / "FemurSeg.pyc"), doraise=True)
    for path in sorted((MODULE_DIR / "FemurSegMRMLLib").glob("*.py")):
        py_compile.compile(str(path), cfile=str(tmp_path / f"{path.stem}.pyc"), doraise=True)
    code = source.read_text(encoding="utf-8")
    ui = ET.parse(MODULE_DIR / "Resources/UI/FemurSeg.ui")
    widgets = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"\bui\.(\w+)", code))
    assert used and used <= widgets, f"widgets used but missing in the .ui: {used - widgets}"

    # Every SlicerParameterName of the .ui is a field of the parameter node, with a matching type.
    tree = ast.parse(code)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FemurSegParameterNode"]
    fields = {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}
    bound = {}
    for w in ui.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = w.get("class")
    assert set(bound) <= set(fields), f"unknown parameters in the .ui: {set(bound) - set(fields)}"
    widget_for_type = {"vtkMRMLScalarVolumeNode": "qMRMLNodeComboBox", "bool": "QCheckBox",
                       "pathlib.Path": "ctkDirectoryButton"}
    for name, widget_class in bound.items():
        annotation = fields[name]
        if annotation.startswith("Annotated[str, Choice"):
            assert widget_class == "QComboBox", name
        elif annotation.startswith("Annotated[float, WithinRange"):
            assert widget_class == "ctkSliderWidget", name
        else:
            assert widget_for_type[annotation] == widget_class, name
    # The pip code lives in FemurSegMRMLLib.install, and runs only when called (never at import).
    assert "pip_" not in code
    install_code = (MODULE_DIR / "FemurSegMRMLLib" / "install.py").read_text(encoding="utf-8")
    assert "pip_ensure(" in install_code
    module_level = [n for n in ast.parse(install_code).body
                    if not isinstance(n, (ast.ClassDef, ast.FunctionDef))]
    calls = [ast.unparse(c.func) for n in module_level for c in ast.walk(n)
             if isinstance(c, ast.Call)]
    assert not [c for c in calls if "pip" in c or "install" in c], calls


def test_logic_process_runs_the_adapters_segment_volume():
    """FemurSegLogic.process calls job.segment_volume instead of repeating its steps."""
    tree = ast.parse((MODULE_DIR / "FemurSeg.py").read_text(encoding="utf-8"))
    (logic,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FemurSegLogic"]
    (method,) = [n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "process"]
    called = {n.func.id if isinstance(n.func, ast.Name) else n.func.attr
              for n in ast.walk(method) if isinstance(n, ast.Call)
              and isinstance(n.func, (ast.Name, ast.Attribute))}
    assert "segment_volume" in called
    assert not called & {"run_command", "prepare_job", "finish_job", "prepareJob", "finishJob"}


@pytest.mark.slow
def test_importing_the_adapter_changes_nothing_in_slicer(tmp_path):
    """No import-time side effects: the converter rules are registered on first use."""
    script = tmp_path / "fresh.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(MODULE_DIR)!r})
        import slicer
        factory = slicer.vtkSegmentationConverterFactory.GetInstance()
        import FemurSegMRMLLib
        from FemurSegMRMLLib import install, job, models, process, scene, stl, volumes
        print("after import:", len(factory.GetConverterRules()))
        scene.register_segmentation_converter_rules()
        print("after first use:", len(factory.GetConverterRules()))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["after import: 0", "after first use: 4"]


# ----------------------------------------------------------------------------------------------
# Issue 12: what a check against Slicer 5.8 and 5.10's sources found


@pytest.mark.slow
def test_adapter_needs_only_what_slicer_ships_and_the_declared_requirements(volume, tmp_path):
    """STL export (and the rest of the adapter) with scikit-image, torch, matplotlib and tqdm
    unimportable, as in Slicer 5.8/5.10 after the first Apply; every third-party module the
    adapter's code imports is one Slicer ships or one the module installs."""
    write_seg(tmp_path / "s.seg.nrrd", ellipsoids(), True, volumes.volume_node_to_image(volume))
    volumes.write_volume_node(volume, tmp_path / "hip.nrrd")
    prob = np.linspace(0, 1, int(np.prod(SIZE)), dtype=np.float32).reshape(SIZE[::-1])
    writers.write_probability(make_image(prob), tmp_path / "p.nrrd")
    script = tmp_path / "adapter_in_slicer.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        MODULE_DIR = {str(MODULE_DIR)!r}
        BLOCKED = {{"torch", "skimage", "matplotlib", "tqdm"}}
        imported = set()

        class Watch:
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                frame = sys._getframe(1)
                while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
                    frame = frame.f_back
                if frame is not None and frame.f_code.co_filename.startswith(MODULE_DIR):
                    imported.add(top)
                if top in BLOCKED:
                    raise ImportError(f"{{name}} is not in Slicer")
                return None

        sys.meta_path.insert(0, Watch())
        sys.path.insert(0, MODULE_DIR)
        import SimpleITK as sitk
        import slicer
        from FemurSegLib import modelfolder
        from FemurSegMRMLLib import install, models, scene, stl, volumes
        mrml = slicer.vtkMRMLScene()
        vol = volumes.image_to_volume_node(sitk.ReadImage({str(tmp_path / "hip.nrrd")!r}), mrml,
                                           "hip")
        seg = scene.load_segmentation({str(tmp_path / "s.seg.nrrd")!r}, mrml, vol)
        scene.load_probability_map({str(tmp_path / "p.nrrd")!r}, mrml, vol)
        written = stl.export_stl(seg, {str(tmp_path / "stl")!r})
        models.model_choices(modelfolder.list_models())
        install.missing_requirements(install.INFERENCE_REQUIREMENTS)
        print(json.dumps({{"stl": [str(p) for p in written], "imported": sorted(imported)}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.splitlines()[-1])
    assert [Path(p).name for p in out["stl"]] == ["hip_femur_segmentation_Right_femur.stl",
                                                  "hip_femur_segmentation_Left_femur.stl"]
    third_party = {name for name in out["imported"]
                   if name not in sys.stdlib_module_names and not name.startswith("FemurSeg")}
    declared = {install.requirement_name(r) for r in install.INFERENCE_REQUIREMENTS}
    assert third_party and third_party <= set(install.SLICER_PYTHON_PACKAGES) | declared, (
        third_party - set(install.SLICER_PYTHON_PACKAGES) - declared)
    assert "skimage" not in install.SLICER_PYTHON_PACKAGES


#: Slicer APIs the module must not call because Slicer 5.8 lacks them (from Slicer's sources:
#: vtkSegment::GetTerminology/SetTerminology/HasTerminology are new in 5.10; slicer.packaging is
#: new in 5.12 and may only be used behind a check).
NOT_IN_SLICER_5_8 = {"GetTerminology", "SetTerminology", "HasTerminology"}


def test_module_and_self_test_call_no_api_missing_in_slicer_5_8():
    sources = [MODULE_DIR / "FemurSeg.py"] + sorted((MODULE_DIR / "FemurSegMRMLLib").glob("*.py"))
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        called = {n.func.attr for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not called & NOT_IN_SLICER_5_8, (path.name, called & NOT_IN_SLICER_5_8)
        text = path.read_text(encoding="utf-8")
        assert "import slicer.packaging" not in text and "from slicer.packaging" not in text, \
            path.name  # only importlib behind a check, see install.py
