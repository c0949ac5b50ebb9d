"""The module panel (``FemurSeg.py``'s widget) driven without the Slicer application.

No Slicer application runs here, so the Qt side is replaced by small stand-ins: widgets made
from the names and ``SlicerParameterName`` properties of the real ``.ui`` file, a ``QTimer``
that the test ticks, and a parameter node wrapper with the API of Slicer 5.8's
``parameterNodeWrapper`` (``connectGui`` returns no tag there; ``connectParametersToGui`` does).
MRML (the scene, the parameter node's modified events, the observation mixin) is real, from
the ``slicer-core`` wheel. What this cannot show: the real Qt widgets and dialogs, and Slicer's
own wrapper; those need the module's self-test in Slicer.
"""

from __future__ import annotations

import importlib.util
import itertools
import pathlib
import sys
import time
import types
import unittest
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from process_helpers import alive, launcher_processes, pip_stand_in, wait_ended

from slicer_helpers import HAVE_SLICER, MODULE_DIR, SLICER_MARKS

if HAVE_SLICER:
    import slicer
    import slicer.util as slicer_util

pytestmark = SLICER_MARKS


# ----------------------------------------------------------------------------------------------
# Stand-ins for Qt and for Slicer's scripted-module classes


class FakeWidget:
    """A Qt widget reduced to what the module touches: properties, visibility, enabled state."""

    def __init__(self, name: str, properties=None):
        self.objectName = name
        self._properties = dict(properties or {})
        self.visible = True
        self.enabledState = True
        self.enabled = True
        self.text = ""
        self.toolTip = ""
        self.value = 0
        self.connections = {}

    def property(self, name):
        return self._properties.get(name)

    def setVisible(self, visible):
        self.visible = bool(visible)

    def setEnabled(self, enabled):
        self.enabledState = bool(enabled)

    def setStyleSheet(self, sheet):
        self.styleSheet = sheet

    def setValue(self, value):
        self.value = value

    def connect(self, signal, slot):
        self.connections[signal] = slot

    def setMRMLScene(self, scene):
        self.scene = scene


class FakeComboBox(FakeWidget):
    def __init__(self, name, properties=None):
        super().__init__(name, properties)
        self.items = []  # [label, data, tooltip]
        self.currentIndex = -1

    @property
    def count(self):
        return len(self.items)

    def clear(self):
        self.items, self.currentIndex = [], -1

    def addItem(self, label, data=None):
        self.items.append([label, data, None])
        if self.currentIndex < 0:
            self.currentIndex = 0

    def setItemData(self, index, value, role):
        self.items[index][2] = value

    def itemData(self, index, role=None):
        if not 0 <= index < len(self.items):
            return None
        return self.items[index][2] if role is not None else self.items[index][1]

    def findData(self, data):
        return next((i for i, item in enumerate(self.items) if item[1] == data), -1)

    def blockSignals(self, block):
        return False


def ui_from_file() -> SimpleNamespace:
    """One stand-in per widget of the real .ui file, with its SlicerParameterName."""
    widgets = {}
    for element in ET.parse(MODULE_DIR / "Resources/UI/FemurSeg.ui").iter("widget"):
        props = {}
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                props["SlicerParameterName"] = prop.find("string").text
        cls = FakeComboBox if element.get("class") == "QComboBox" else FakeWidget
        widgets[element.get("name")] = cls(element.get("name"), props)
    del widgets["FemurSeg"]  # the top-level widget is not among childWidgetVariables
    return SimpleNamespace(**widgets)


class FakeTimer:
    """qt.QTimer: the test calls tick() where Qt's event loop would fire timeout()."""

    def __init__(self):
        self.active = False
        self.slot = None

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        assert signal == "timeout()"
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def tick(self):
        if self.active:
            self.slot()


class WrapperLog:
    """What the module did with its parameter node wrappers."""

    def __init__(self):
        self.calls = []
        self.tags = itertools.count(100)
        self.values = {}  # id(MRML node) -> {parameter: value}


def make_parameter_node_wrapper(log: WrapperLog):
    """``slicer.parameterNodeWrapper.parameterNodeWrapper`` with Slicer 5.8's GUI API."""

    def parameterNodeWrapper(cls):
        defaults = {}
        for name, annotation in cls.__annotations__.items():
            if hasattr(cls, name):
                defaults[name] = getattr(cls, name)
            else:
                defaults[name] = pathlib.Path() if "Path" in str(annotation) else None

        class Wrapper:
            def __init__(self, parameterNode):
                object.__setattr__(self, "parameterNode", parameterNode)
                log.values.setdefault(id(parameterNode), dict(defaults))

            def __getattr__(self, name):
                values = log.values[id(self.parameterNode)]
                if name in values:
                    return values[name]
                raise AttributeError(name)

            def __setattr__(self, name, value):
                values = log.values[id(self.parameterNode)]
                if name not in values:
                    raise AttributeError(f"no parameter {name!r}")
                if values[name] != value:
                    values[name] = value
                    self.parameterNode.Modified()

            def connectGui(self, gui):  # Slicer 5.8: no tag comes back
                log.calls.append(("connectGui", id(self.parameterNode)))
                return None

            def connectParametersToGui(self, mapping):
                tag = next(log.tags)
                log.calls.append(("connect", id(self.parameterNode), tuple(sorted(mapping)), tag))
                return tag

            def disconnectGui(self, tag):
                log.calls.append(("disconnect", tag))

            def AddObserver(self, event, callback, priority=0.0):
                return self.parameterNode.AddObserver(event, callback, priority)

            def RemoveObserver(self, tag):
                self.parameterNode.RemoveObserver(tag)

        Wrapper.__name__ = cls.__name__
        return Wrapper

    return parameterNodeWrapper


@pytest.fixture
def femurseg(monkeypatch, tmp_path):
    """FemurSeg.py imported with the stand-ins; returns (module, wrapper log, timers)."""
    log = WrapperLog()
    timers = []
    parameter_nodes = {}

    qt = types.ModuleType("qt")
    qt.Qt = SimpleNamespace(ToolTipRole=3)
    qt.QEventLoop = SimpleNamespace(AllEvents=0)

    def make_timer():
        timers.append(FakeTimer())
        return timers[-1]

    qt.QTimer = make_timer

    wrapper_module = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper_module.parameterNodeWrapper = make_parameter_node_wrapper(log)
    wrapper_module.Choice = lambda choices: ("Choice", tuple(choices))
    wrapper_module.WithinRange = lambda low, high: ("WithinRange", low, high)

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):
            scene = slicer.mrmlScene
            if id(scene) not in parameter_nodes:
                parameter_nodes[id(scene)] = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            return parameter_nodes[id(scene)]

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent or SimpleNamespace(isEntered=True)
            self.layout = SimpleNamespace(addWidget=lambda widget: None)

        def setup(self):
            pass

        def resourcePath(self, name):
            return str(MODULE_DIR / "Resources" / name)

    scripted.ScriptedLoadableModule = ScriptedLoadableModule
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    scripted.ScriptedLoadableModuleTest = unittest.TestCase

    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = slicer_util.VTKObservationMixin  # the real one
    ui = ui_from_file()
    util.loadUI = lambda path: FakeWidget("FemurSeg")
    util.childWidgetVariables = lambda widget: ui

    @contextmanager
    def wait_cursor():
        yield

    util.WaitCursor = wait_cursor

    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper_module)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)
    monkeypatch.setitem(sys.modules, "slicer.util", util)
    monkeypatch.setattr(slicer, "util", util, raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    monkeypatch.setattr(slicer, "app", SimpleNamespace(
        temporaryPath=str(tmp_path), defaultScenePath=str(tmp_path),
        processEvents=lambda *args: None), raising=False)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    spec = importlib.util.spec_from_file_location("FemurSeg", MODULE_DIR / "FemurSeg.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "FemurSeg", module)
    spec.loader.exec_module(module)
    return module, log, timers


def model_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    return folder


@pytest.fixture
def widget(femurseg, tmp_path, monkeypatch):
    """The module panel after setup(), with one bundled model listed."""
    module, log, timers = femurseg
    bundled = model_folder(tmp_path / "Models", "femur-t1-coronal")
    card = {"name": "femur-t1-coronal", "version": "0.2.0", "description": "Test card."}
    monkeypatch.setattr(module.FemurSegLogic, "availableModels", staticmethod(
        lambda: [SimpleNamespace(name="femur-t1-coronal", path=bundled, card=card)]))
    panel = module.FemurSegWidget()
    panel.setup()
    yield SimpleNamespace(panel=panel, module=module, log=log, timers=timers, bundled=bundled)
    panel.cleanup()  # as Slicer does on exit: no observer may outlive the panel
    assert panel.Observations == []


# ----------------------------------------------------------------------------------------------
# The tests


def test_gui_is_connected_once_over_module_entries(widget):
    """On Slicer 5.8 and 5.10 each connect/disconnect pair leaves an observer behind (and on
    5.8 connectGui returns no tag to disconnect with): entering the module again must not
    connect again."""
    panel, log = widget.panel, widget.log
    for _ in range(5):
        panel.exit()
        panel.enter()
    connects = [c for c in log.calls if c[0] in ("connect", "connectGui")]
    assert len(connects) == 1 and connects[0][0] == "connect"
    assert [c for c in log.calls if c[0] == "disconnect"] == []
    bound = {w.property("SlicerParameterName") for w in vars(panel.ui).values()
             if w.property("SlicerParameterName")}
    assert set(connects[0][2]) == bound and "stlSmoothing" in bound and "ttaMode" in bound


def test_scene_close_keeps_the_connection_to_the_same_parameter_node(widget, monkeypatch):
    """The parameter node is a singleton that survives the scene's Clear: closing the scene
    must not disconnect and reconnect it (on 5.8 and 5.10 each pair leaks an observer). A
    different MRML node after the close is connected, the old one disconnected by its tag."""
    panel, log = widget.panel, widget.log
    observations = len(panel.Observations)
    for _ in range(5):
        panel.onSceneStartClose(None, None)
        slicer.mrmlScene.Clear(0)
        panel.onSceneEndClose(None, None)
    connects = [c for c in log.calls if c[0] == "connect"]
    assert len(connects) == 1 and [c for c in log.calls if c[0] == "disconnect"] == []
    assert len(panel.Observations) == observations
    other = widget.module.FemurSegParameterNode(
        slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
    monkeypatch.setattr(panel.logic, "getParameterNode", lambda: other)
    panel.onSceneStartClose(None, None)
    panel.onSceneEndClose(None, None)
    assert [c for c in log.calls if c[0] == "disconnect"] == [("disconnect", connects[0][3])]
    assert [c[1] for c in log.calls if c[0] == "connect"] == [connects[0][1],
                                                              id(other.parameterNode)]
    assert len(panel.Observations) == observations


def test_saved_model_that_is_gone_becomes_a_folder_choice(widget, tmp_path):
    """The combo box shows "Model folder..." for a model that is no longer listed: the
    parameter follows (no dead path is kept or sent), and the folder widgets show."""
    panel, module = widget.panel, widget.module
    p = panel._parameterNode
    assert p.model == str(widget.bundled)  # first visit: the default bundled model
    assert not panel.ui.modelFolderButton.visible
    p.model = str(tmp_path / "old-extension" / "femur-t1-coronal")
    assert p.model == ""
    combo = panel.ui.modelComboBox
    assert combo.items[combo.currentIndex][0] == module.MODEL_FOLDER_ITEM
    assert panel.ui.modelFolderButton.visible and panel.ui.modelFolderLabel.visible
    assert panel.ui.statusLabel.text == (f"The model {tmp_path / 'old-extension' / 'femur-t1-coronal'}"
                                         " is no longer installed: choose a model.")
    p.inputVolume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hip")
    with pytest.raises(module.FemurSegError, match=r"^not a FemurSeg model folder \(no "
                                                   r"model\.json\): "):
        module.FemurSegLogic.jobOptions(p)
    # A saved model that is no longer listed but still is a model folder: kept as the folder.
    own = model_folder(tmp_path / "mine", "femur-3d")
    p.model = str(own)
    assert (p.model, str(p.modelFolder)) == ("", str(own))
    assert module.FemurSegLogic.jobOptions(p).model == str(own)


@pytest.fixture
def launcher(tmp_path):
    yield from launcher_processes(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups (Windows: taskkill /T)")
def test_cancel_in_the_panel_ends_the_launcher_and_its_child(widget, launcher, tmp_path):
    panel = widget.panel
    command, pid_files = launcher
    cleaned = []
    job = SimpleNamespace(command=command, env=None, cwd=tmp_path,
                          cleanup=lambda: cleaned.append(all(not alive(int(f.read_text()))
                                                             for f in pid_files[:1])))
    panel._job = job
    panel._startProcess(job)
    assert panel.ui.cancelButton.enabled and not panel.ui.applyButton.enabled
    (timer,) = widget.timers
    deadline = time.monotonic() + 30
    while panel.ui.statusLabel.text != "started" and time.monotonic() < deadline:
        timer.tick()
        time.sleep(0.05)
    assert panel.ui.statusLabel.text == "started" and panel.ui.progressBar.value == 1
    panel.onCancelButton()
    launcher_pid, child_pid = [int(f.read_text()) for f in pid_files]
    assert not alive(launcher_pid)
    assert wait_ended([child_pid], seconds=2.0) == []
    assert cleaned == [True]  # the temporary files went after the launcher had ended
    assert panel.ui.statusLabel.text == "Cancelled."
    assert panel._process is None and not timer.active
    assert panel.ui.applyButton.enabled is False  # no input volume selected
    assert not panel.ui.cancelButton.enabled


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups (Windows: taskkill /T)")
def test_closing_the_scene_cancels_the_run(widget, launcher, tmp_path):
    """The result would load against a volume that is gone: closing the scene ends the run."""
    panel = widget.panel
    command, pid_files = launcher
    cleaned = []
    job = SimpleNamespace(command=command, env=None, cwd=tmp_path,
                          cleanup=lambda: cleaned.append(True))
    panel._job = job
    panel._startProcess(job)
    (timer,) = widget.timers
    deadline = time.monotonic() + 30
    while panel.ui.statusLabel.text != "started" and time.monotonic() < deadline:
        timer.tick()
        time.sleep(0.05)
    assert panel.ui.statusLabel.text == "started"
    panel.onSceneStartClose(None, None)
    launcher_pid, child_pid = [int(f.read_text()) for f in pid_files]
    assert not alive(launcher_pid)
    assert wait_ended([child_pid], seconds=2.0) == []
    assert cleaned == [True] and panel._process is None and not timer.active
    assert panel.ui.statusLabel.text == "Cancelled: the scene was closed."
    assert panel.ui.statusLabel.styleSheet == ""  # not an error: what the user did
    slicer.mrmlScene.Clear(0)
    panel.onSceneEndClose(None, None)
    assert not panel.ui.cancelButton.enabled


class StartedProcess:
    """module.BackgroundProcess in place of the real one: records the command, never ends."""

    commands = []

    def __init__(self, command, env=None, cwd=None):
        self.command = list(command)
        self.lines = []
        StartedProcess.commands.append(self.command)

    def read_lines(self, timeout=0.0):
        return []

    def poll(self):
        return None

    def cancel(self):
        pass


@pytest.fixture
def started(widget, monkeypatch):
    """Apply runs up to the segmentation's start: the commands it would run come back."""
    import numpy as np
    import SimpleITK as sitk

    from FemurSegMRMLLib import volumes

    module = widget.module
    StartedProcess.commands = []
    monkeypatch.setattr(module, "BackgroundProcess", StartedProcess)
    monkeypatch.setattr(module.FemurSegLogic, "pythonExecutable",
                        staticmethod(lambda: sys.executable))
    image = sitk.GetImageFromArray(np.zeros((4, 8, 8), np.int16))
    volume = volumes.image_to_volume_node(image, slicer.mrmlScene, "hip")
    widget.panel._parameterNode.inputVolume = volume
    return StartedProcess.commands


def parsed_cli(command):
    from FemurSegLib.cli import build_parser

    assert command[1:3] == ["-m", "FemurSegLib.cli"]
    return vars(build_parser().parse_args(command[3:]))


def test_apply_with_default_options_runs_what_the_command_line_runs_by_default(
        widget, started, monkeypatch):
    """Default panel options = `femurseg segment INPUT -o OUTPUT --model MODEL`: in particular
    the model card's flip TTA (on for the bundled model, whose accuracy was measured with it),
    not --no-tta. The panel adds only its plumbing: --overwrite (its temporary output) and
    --progress lines (its progress bar)."""
    module = widget.module
    monkeypatch.setattr(module.FemurSegLogic, "startInstallation", lambda self: None)
    monkeypatch.setattr(module.FemurSegLogic, "chooseEngine",
                        lambda self, error=None: ("onnxruntime", None))
    widget.panel.onApplyButton()
    (command,) = started
    panel_args = parsed_cli(command)
    default_args = parsed_cli(command[:3] + ["segment", panel_args["inputs"][0], "-o",
                                             panel_args["output"], "--model",
                                             panel_args["model"]])
    plumbing = {"overwrite": True, "progress": "lines"}
    assert {k: panel_args[k] for k in plumbing} == plumbing
    assert ({k: v for k, v in panel_args.items() if k not in plumbing}
            == {k: v for k, v in default_args.items() if k not in plumbing})
    assert panel_args["tta"] is None and panel_args["model"] == str(widget.bundled)
    assert "--tta" not in command and "--no-tta" not in command


@pytest.mark.parametrize("choice, tta", [("on", True), ("off", False), ("model default", None)])
def test_tta_choice_reaches_the_command(widget, started, monkeypatch, choice, tta):
    module = widget.module
    monkeypatch.setattr(module.FemurSegLogic, "startInstallation", lambda self: None)
    monkeypatch.setattr(module.FemurSegLogic, "chooseEngine",
                        lambda self, error=None: ("onnxruntime", None))
    assert widget.panel._parameterNode.ttaMode == "model default"  # the default
    widget.panel._parameterNode.ttaMode = choice
    widget.panel.onApplyButton()
    (command,) = started
    assert parsed_cli(command)["tta"] is tta


def test_failed_onnxruntime_install_runs_the_pytorch_fallback_and_says_so(widget, started,
                                                                          monkeypatch):
    """The installation raises; the other packages and torch are there: the run starts, and
    the status line (orange) says that the slower PyTorch fallback runs, and why."""
    from FemurSegMRMLLib import install

    module = widget.module
    error = ("cannot install onnxruntime>=1.16: pip found no onnxruntime>=1.16 (without "
             "internet, set FEMURSEG_WHEELS to a folder of wheels; see the README)")

    def failing(self):
        raise module.FemurSegError(error)

    monkeypatch.setattr(module.FemurSegLogic, "startInstallation", failing)
    monkeypatch.setattr(install, "missing_requirements",  # slicerio and scipy are there
                        lambda requirements, version_of=None: ["onnxruntime>=1.16"])
    monkeypatch.setattr(module.FemurSegLogic, "_torchAvailable", staticmethod(lambda: True))
    widget.panel.onApplyButton()
    assert len(started) == 1
    note = f"ONNX Runtime could not be installed: using the slower PyTorch fallback ({error})"
    assert widget.panel.ui.statusLabel.text == f"Starting... {note}."
    assert widget.panel.ui.statusLabel.styleSheet == "color: #e65100;"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups (Windows: taskkill /T)")
def test_apply_installs_in_the_background_and_cancel_ends_pip(widget, launcher, tmp_path,
                                                              monkeypatch):
    """pip waiting for a network that drops packets: Apply returns at once, the timer polls
    pip, Cancel ends it and its child; nothing is segmented."""
    from FemurSegMRMLLib import install

    panel, module = widget.panel, widget.module
    command, pid_files = launcher
    asked = []
    monkeypatch.delenv("FEMURSEG_WHEELS", raising=False)
    monkeypatch.setattr(install, "missing_requirements",
                        lambda requirements, version_of=None: ["onnxruntime>=1.16"])
    monkeypatch.setattr(module.FemurSegLogic, "_packagingModule", staticmethod(lambda: None))
    monkeypatch.setattr(module.FemurSegLogic, "_confirm",
                        staticmethod(lambda text: asked.append(text) or True))
    monkeypatch.setattr(module.FemurSegLogic, "pythonExecutable",
                        staticmethod(lambda: pip_stand_in(tmp_path, command)))
    panel._parameterNode.inputVolume = slicer.mrmlScene.AddNewNodeByClass(
        "vtkMRMLScalarVolumeNode", "hip")
    start = time.monotonic()
    panel.onApplyButton()
    assert time.monotonic() - start < 5.0  # returned while pip hangs
    assert asked == ["FemurSeg needs these Python packages for inference: onnxruntime>=1.16. "
                     "Install them now?"]
    assert panel.ui.statusLabel.text == ("Installing onnxruntime>=1.16 (pip's output is in the "
                                         "Python console)...")
    assert panel.ui.cancelButton.enabled and not panel.ui.applyButton.enabled
    (timer,) = widget.timers
    deadline = time.monotonic() + 30
    while not pid_files[1].exists() and time.monotonic() < deadline:
        timer.tick()
        time.sleep(0.05)
    panel.onCancelButton()
    launcher_pid, child_pid = [int(f.read_text()) for f in pid_files]
    assert not alive(launcher_pid)
    assert wait_ended([child_pid], seconds=2.0) == []
    assert panel.ui.statusLabel.text == "Cancelled."
    assert panel._process is None and panel._installation is None and not timer.active
    assert panel._job is None  # no segmentation was started
    assert panel.ui.applyButton.enabled and not panel.ui.cancelButton.enabled


def test_apply_downloads_a_card_only_model_once_in_the_background(widget, started,
                                                                  monkeypatch, tmp_path):
    """A model folder with its card alone (a repository for the extensions index): Apply
    downloads the files from the release (here a local server) into the model cache, polled
    by the timer, and runs with the cached, verified folder."""
    from release_helpers import Server, card_only_folder

    from FemurSegLib import release

    panel, module = widget.panel, widget.module
    server = Server()
    try:
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(release, "release_url", lambda card, repository_url=None: server.url)
        monkeypatch.setenv("FEMURSEG_MODELS", str(tmp_path / "cache"))
        monkeypatch.setattr(module.FemurSegLogic, "startInstallation", lambda self: None)
        monkeypatch.setattr(module.FemurSegLogic, "chooseEngine",
                            lambda self, error=None: ("onnxruntime", None))
        source = card_only_folder(tmp_path)
        panel._parameterNode.model = ""
        panel._parameterNode.modelFolder = pathlib.Path(source)
        panel.onApplyButton()
        assert panel.ui.statusLabel.text == (f"Downloading the model's files (once) for "
                                             f"{source}...")
        assert panel.ui.cancelButton.enabled and started == []
        (timer,) = widget.timers
        deadline = time.monotonic() + 30
        while not started and time.monotonic() < deadline:
            timer.tick()
            time.sleep(0.02)
        (command,) = started
        assert parsed_cli(command)["model"] == str(tmp_path / "cache" / "femur-t1-coronal")
        assert len(server.requests) == 2
    finally:
        server.close()


def test_a_volume_removed_while_installing_is_not_segmented(widget, started, monkeypatch):
    """Slicer 5.12's package dialog processes events: the input may go meanwhile."""
    module = widget.module

    def install_and_remove(self):
        slicer.mrmlScene.RemoveNode(widget.panel._parameterNode.inputVolume)

    monkeypatch.setattr(module.FemurSegLogic, "startInstallation", install_and_remove)
    monkeypatch.setattr(module.FemurSegLogic, "chooseEngine",
                        lambda self, error=None: ("onnxruntime", None))
    widget.panel.onApplyButton()
    assert started == []
    assert widget.panel.ui.statusLabel.text == ("the input volume is no longer in the scene: "
                                                "select one and retry")


@pytest.mark.parametrize("step", ["chooseEngine", "startModelDownload", "prepareJob"])
@pytest.mark.parametrize("own", [True, False])
def test_a_failing_start_step_ends_the_run_with_one_line(widget, started, monkeypatch, caplog,
                                                         step, own):
    """FemurSeg's own errors show as they are; anything else as 'cannot start the
    segmentation: ...' with its traceback in the log. Nothing runs either way."""
    module = widget.module
    monkeypatch.setattr(module.FemurSegLogic, "startInstallation", lambda self: None)
    monkeypatch.setattr(module.FemurSegLogic, "chooseEngine",
                        lambda self, error=None: ("onnxruntime", None))
    monkeypatch.setattr(module.FemurSegLogic, "startModelDownload",
                        lambda self, model, engine: None)

    def failing(self, *args):
        raise (module.FemurSegError("model folder M has no card") if own
               else OSError("disk full\nsecond line"))

    monkeypatch.setattr(module.FemurSegLogic, step, failing)
    with caplog.at_level("ERROR"):
        widget.panel.onApplyButton()
    assert started == []
    text = widget.panel.ui.statusLabel.text
    if own:
        assert text == "model folder M has no card"
        assert not any(r.exc_info for r in caplog.records)   # no traceback for a known error
    else:
        assert text.startswith("cannot start the segmentation: ") and "\n" not in text
        assert "disk full" in text
        assert any("cannot start the segmentation" in r.getMessage() and r.exc_info
                   for r in caplog.records)
    assert widget.panel.ui.statusLabel.styleSheet == "color: #c62828;"


def test_self_test_without_a_model_says_so_instead_of_failing(femurseg, monkeypatch):
    """Reload and Test calls runTest directly: a skipped test would show as its failure."""
    module = femurseg[0]
    monkeypatch.delenv("FEMURSEG_TEST_MODEL", raising=False)
    monkeypatch.setattr(module.FemurSegLogic, "availableModels", staticmethod(lambda: []))
    test = module.FemurSegTest()
    shown = []
    test.delayDisplay = lambda message, *args, **kwargs: shown.append(message)
    try:
        test.runTest()
    except unittest.SkipTest as exc:  # pytest would count it as a skip; Slicer as a failure
        pytest.fail(f"Reload and Test would show a failure: {exc}")
    assert shown == ["FemurSeg self-test not run: no trained model is installed (set "
                     "FEMURSEG_TEST_MODEL to a model folder and restart Slicer)"]


def test_failed_run_shows_the_clis_one_line_error(widget, tmp_path):
    panel = widget.panel
    script = tmp_path / "cli.py"
    script.write_text("import sys\nprint('PROGRESS 5 reading', flush=True)\n"
                      "sys.stderr.write('error: input image hip.nrrd is blank\\n')\nsys.exit(2)\n")
    job = SimpleNamespace(command=[sys.executable, str(script)], env=None, cwd=tmp_path,
                          cleanup=lambda: None)
    panel._job = job
    panel._startProcess(job)
    (timer,) = widget.timers
    deadline = time.monotonic() + 30
    while panel._process is not None and time.monotonic() < deadline:
        timer.tick()
        time.sleep(0.05)
    assert panel.ui.statusLabel.text == "input image hip.nrrd is blank"
    assert panel.ui.statusLabel.styleSheet == "color: #c62828;"


@pytest.mark.slow
def test_implausible_run_loads_the_result_and_shows_the_warning(widget, tmp_path):
    """The CLI finishes with exit code 3 and a warning line (a model that finds no femur): the
    panel loads the (empty) segmentation and shows the warning in the status line, in orange."""
    import numpy as np
    import SimpleITK as sitk

    from conftest import make_tiny_model
    from FemurSegMRMLLib import job as jobs
    from FemurSegMRMLLib import volumes

    panel = widget.panel
    image = sitk.GetImageFromArray(
        np.random.default_rng(0).integers(0, 1000, (8, 24, 24)).astype(np.int16))
    image.SetSpacing((3.6, 3.6, 5.2))
    volume = volumes.image_to_volume_node(image, slicer.mrmlScene, "hip")
    model = make_tiny_model(tmp_path / "tiny-none", threshold=1.0)  # its softmax stays near 0.5
    job = jobs.prepare_job(volume, python=sys.executable, module_dir=MODULE_DIR,
                           options=jobs.JobOptions(model=str(model), device="cpu"),
                           temp_root=tmp_path)
    panel._job = job
    panel._startProcess(job)
    (timer,) = widget.timers
    deadline = time.monotonic() + 120
    while panel._process is not None and time.monotonic() < deadline:
        timer.tick()
        time.sleep(0.05)
    text = panel.ui.statusLabel.text
    assert text.startswith("Warning: hip.nrrd: no femur found Done in "), text
    assert text.endswith(" s: Right femur 0.0 ml, Left femur 0.0 ml."), text
    assert panel.ui.statusLabel.styleSheet == "color: #e65100;"
    assert slicer.mrmlScene.GetFirstNodeByName("hip femur segmentation") is not None
    assert not job.work_dir.exists()
