"""FemurSeg: automatic segmentation of the proximal femur in hip MRI (3D Slicer scripted module).

Thin by design: the segmentation itself is the pure core ``FemurSegLib`` run as a command line in
a background process (``PythonSlicer -m FemurSegLib.cli segment ...``), and everything that
touches the MRML scene without Qt, and the installation of the Python packages, is in the
package ``FemurSegMRMLLib`` (tested with the ``slicer-core`` wheel). This file holds what needs
the Slicer application: the module description, the widget (Qt, the parameter node, the timer
that follows the background process), the dialogs and the self-test.

Supported: Slicer 5.8 and 5.10 (checked call by call against their sources), and later releases
(``slicer.packaging`` of 5.12 is used where present).
"""

import dataclasses
import importlib
import logging
import os
import pathlib
import shutil
import sys
import time
from typing import Annotated, Callable, List, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from FemurSegLib import release
from FemurSegLib.errors import FemurSegError
from FemurSegLib.release import REPOSITORY_URL
from FemurSegMRMLLib import install, models, scene, volumes
from FemurSegMRMLLib.job import (DEVICES, TTA_CHOICES, JobOptions, finish_job, prepare_job,
                                 segment_volume, tta_option)
from FemurSegMRMLLib.process import (WARNING_EXIT_CODE, BackgroundProcess, error_message,
                                     parse_progress_line, warning_lines)
from FemurSegMRMLLib.stl import DEFAULT_STL_SIGMA_VOXELS

#: The folder of this file; FemurSegLib sits in it (and the CLI process gets it on PYTHONPATH).
MODULE_DIR = os.path.dirname(os.path.abspath(__file__))

#: Combo box entry that lets the user pick a model folder.
MODEL_FOLDER_ITEM = "Model folder..."

#: The panel's default flip TTA choice: the model card's (what ``femurseg segment`` does).
DEFAULT_TTA_CHOICE = "model default"

#: The Qt property of the .ui's widgets that names their parameter (the parameter node wrapper's
#: ``SlicerParameterNamePropertyName``).
PARAMETER_NAME_PROPERTY = "SlicerParameterName"


#
# FemurSeg
#


class FemurSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "FemurSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["FemurSeg contributors"]
        self.parent.helpText = """
Automatic segmentation of the proximal femur (head, neck, trochanters, upper shaft) in hip MR
volumes with U-Nets, giving an editable segmentation with SNOMED CT terminology, an optional
probability map and STL surfaces for finite-element work.
<br><br>
<b>For research use only. This is not a medical device</b> and has not been cleared or approved
for clinical use: check every result.
<br><br>
See the <a href="{url}#3d-slicer">documentation</a>.
""".format(url=REPOSITORY_URL)
        self.parent.acknowledgementText = """
The method follows Deniz CM, Xiang S, Hallyburton RS, Welbeck A, Babb JS, Honig S, Cho K,
Chang G. <i>Segmentation of the Proximal Femur from MR Images using Deep Convolutional Neural
Networks.</i> Scientific Reports 8, 16485 (2018), doi:10.1038/s41598-018-34817-6.
Built on 3D Slicer, SimpleITK, ONNX Runtime and slicerio.
"""


#
# Parameter node
#


@parameterNodeWrapper
class FemurSegParameterNode:
    """What the user chose in the module panel (saved with the scene).

    inputVolume - the MR volume to segment.
    model - folder of the bundled model chosen in the model list; "" when a folder is chosen.
    modelFolder - a model folder of the user's own (used when ``model`` is "").
    device - "auto", "cpu" or "gpu".
    ttaMode - flip test-time augmentation: "model default" (the card's choice, as the command
        line without --tta/--no-tta), "on" or "off" (``FemurSegMRMLLib.job.TTA_CHOICES``).
    probabilityMap, splitSides - probability map, right/left femur.
    surfaceSmoothing - Slicer's closed-surface smoothing factor (0..1) of the 3D view.
    stlSmoothing - Gaussian smoothing of the exported STL surfaces, in voxels (the CLI's
        ``--stl-smoothing``).
    exportStl, stlFolder, overwriteStl - STL export of the femur surfaces.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = ""
    modelFolder: pathlib.Path
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    # A new name (the old "tta" was a bool, off by default): a scene saved then gets the
    # model's default, never a value the choice does not know.
    ttaMode: Annotated[str, Choice(list(TTA_CHOICES))] = DEFAULT_TTA_CHOICE
    probabilityMap: bool = False
    splitSides: bool = True
    surfaceSmoothing: Annotated[float, WithinRange(0.0, 1.0)] = scene.DEFAULT_SURFACE_SMOOTHING
    stlSmoothing: Annotated[float, WithinRange(0.0, 3.0)] = DEFAULT_STL_SIGMA_VOXELS
    exportStl: bool = False
    stlFolder: pathlib.Path
    overwriteStl: bool = False


def _pathOrNone(path) -> Optional[str]:
    """A parameter-node path as a string, or None when unset ("" or ".")."""
    text = str(path) if path is not None else ""
    return text if text not in ("", ".") else None


#
# FemurSegWidget
#


class FemurSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._process = None  # what runs (Cancel ends it): a BackgroundProcess, a
        #                       PipInstallation or a ModelDownload
        self._installation = None  # the running PipInstallation (pip before the first run)
        self._download = None  # the running ModelDownload (a model folder with only its card)
        self._timer = None  # polls it
        self._volume = None  # the input volume and options of the Apply that runs
        self._options = None
        self._engineNote = None  # the PyTorch fallback's note for the status line
        self._defaultModel = ""
        self._listedModels: List[str] = []
        self._noBundledModel = True
        self._job = None
        self._starting = False
        self._startTime = 0.0

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FemurSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FemurSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.progressBar.setVisible(False)

        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.onCancelButton()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        """Nothing to undo: the GUI stays connected to the parameter node while the module is
        hidden. On Slicer 5.8 and 5.10 every ``connectGui``/``disconnectGui`` pair leaves an
        observer on the parameter node (fixed in 5.12), so the GUI is connected once per
        parameter node instead of on every entry (see :meth:`setParameterNode`)."""

    def onSceneStartClose(self, caller, event) -> None:
        """A run ends with the scene: its result would load against a volume that is gone.

        The GUI stays connected to the parameter node: it is a singleton that survives the
        scene's ``Clear``, and on Slicer 5.8 and 5.10 each disconnect/connect pair would leave
        one more observer on it (see :meth:`exit`); :meth:`onSceneEndClose` keeps the
        connection when the parameter node is the same MRML node."""
        if self._process is not None:
            self._cancel("Cancelled: the scene was closed.")

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode
        p = self._parameterNode
        if not p.model and not _pathOrNone(p.modelFolder) and self._defaultModel:
            p.model = self._defaultModel  # first visit: the default bundled model
        if not _pathOrNone(p.stlFolder):
            p.stlFolder = pathlib.Path(self.logic.defaultOutputFolder())
        if not _pathOrNone(p.modelFolder):
            p.modelFolder = pathlib.Path(self.logic.defaultOutputFolder())
        self._updateGui()

    def setParameterNode(self, inputParameterNode: Optional[FemurSegParameterNode]) -> None:
        """Connect the GUI to ``inputParameterNode`` (once: the same MRML node keeps its
        connection, see :meth:`exit`)."""
        if (self._parameterNode is not None and inputParameterNode is not None
                and self._parameterNode.parameterNode is inputParameterNode.parameterNode):
            return
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._connectGui(self._parameterNode)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _connectGui(self, parameterNode) -> int:
        """Connect the .ui's widgets (those with a ``SlicerParameterName``) to ``parameterNode``.

        The same as ``parameterNode.connectGui(self.ui)``, but through
        ``connectParametersToGui``, which returns the tag for ``disconnectGui`` on every
        supported Slicer: ``connectGui`` of Slicer 5.8 returns None, so it could never be
        disconnected.
        """
        mapping = {}
        for widget in vars(self.ui).values():
            name = widget.property(PARAMETER_NAME_PROPERTY)
            if name:
                mapping[name] = widget
        return parameterNode.connectParametersToGui(mapping)

    # -- model list ------------------------------------------------------------------------------

    def populateModels(self) -> None:
        """Fill the model list from the bundled and installed model cards."""
        combo = self.ui.modelComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        try:
            choices = models.model_choices(self.logic.availableModels())
        except FemurSegError as exc:
            choices = []
            self._setStatus(f"Cannot list models: {exc}", error=True)
        for label, value, tooltip in choices:
            combo.addItem(label, value)
            combo.setItemData(combo.count - 1, tooltip, qt.Qt.ToolTipRole)
        combo.addItem(MODEL_FOLDER_ITEM, "")
        combo.blockSignals(wasBlocked)
        self._listedModels = [value for _, value, _ in choices]
        self._noBundledModel = not choices
        from FemurSegLib.modelfolder import DEFAULT_MODEL

        defaults = [value for label, value, _ in choices if label.split(" ")[0] == DEFAULT_MODEL]
        self._defaultModel = (defaults or [value for _, value, _ in choices] or [""])[0]

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode is None or index < 0:
            return
        self._parameterNode.model = self.ui.modelComboBox.itemData(index) or ""

    def _updateGui(self, caller=None, event=None) -> None:
        """Reflect the parameter node in what the parameter wrapper does not connect."""
        p = self._parameterNode
        if p is None:
            return
        model, folder = models.reconcile_model_choice(p.model, _pathOrNone(p.modelFolder),
                                                      self._listedModels)
        if model != p.model:  # the saved model is no longer listed: a folder choice instead
            self._setStatus(f"The model {p.model} is no longer installed: choose a model.",
                            error=True)
            p.model = model
            if folder != _pathOrNone(p.modelFolder):
                p.modelFolder = pathlib.Path(folder)
        combo = self.ui.modelComboBox
        index = combo.findData(p.model) if p.model else combo.count - 1
        if combo.currentIndex != index:
            wasBlocked = combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(wasBlocked)
        folderMode = not p.model
        self.ui.modelFolderLabel.setVisible(folderMode)
        self.ui.modelFolderButton.setVisible(folderMode)
        if self._noBundledModel:
            self.ui.modelInfoLabel.text = (
                "No trained model is installed with this extension yet: choose a model folder "
                "(model.json with its weights).")
        else:
            self.ui.modelInfoLabel.text = combo.itemData(combo.currentIndex, qt.Qt.ToolTipRole) or ""
        self.ui.stlFolderLabel.setEnabled(p.exportStl)
        self.ui.stlFolderButton.setEnabled(p.exportStl)
        self.ui.stlSmoothingLabel.setEnabled(p.exportStl)
        self.ui.stlSmoothingSliderWidget.setEnabled(p.exportStl)
        self.ui.overwriteStlCheckBox.setEnabled(p.exportStl)
        running = self._process is not None
        self.ui.applyButton.enabled = bool(p.inputVolume) and not running
        self.ui.applyButton.toolTip = ("Segment the femur in the input volume (runs in the background)"
                                       if p.inputVolume else "Select an input volume")
        self.ui.cancelButton.enabled = running

    # -- running ---------------------------------------------------------------------------------

    def _setStatus(self, text: str, error: bool = False, log: bool = True,
                   warning: bool = False) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c62828;" if error else
                                          "color: #e65100;" if warning else "")
        if text and log:
            (logging.error if error else logging.warning if warning else logging.info)(
                f"FemurSeg: {text}")

    def onApplyButton(self) -> None:
        """Check the options, install missing packages (pip in the background, polled like the
        segmentation), write the input and start the CLI in a background process."""
        if self._process is not None or self._starting:
            return
        self._setStatus("")
        self._engineNote = None
        try:
            self._options = self.logic.jobOptions(self._parameterNode)
        except FemurSegError as exc:
            self._setStatus(str(exc), error=True)
            return
        self._volume = self._parameterNode.inputVolume
        self._starting = True  # Slicer 5.12's package dialog processes events: no second Apply
        try:
            installation = self.logic.startInstallation()
        except FemurSegError as exc:  # installing failed: the PyTorch fallback may still run
            self._afterInstallation(str(exc))
            return
        except Exception as exc:  # a bug or an OS problem: keep the details in the log
            logging.exception("FemurSeg: cannot install the Python packages")
            self._setStatus(f"cannot install the Python packages: {_oneLine(exc)}", error=True)
            return
        finally:
            self._starting = False
        if installation is None:  # nothing missing, declined, or installed by slicer.packaging
            self._afterInstallation(None)
            return
        self._installation = installation
        self._process = installation  # Cancel ends pip
        self._startTimer()
        self._setStatus(f"Installing {', '.join(installation.requirements)} (pip's output is in "
                        "the Python console)...")
        self._updateGui()

    def _pollInstallation(self) -> None:
        """Timer tick while pip runs: log its output; when it has ended, start the run."""
        installation = self._installation
        error = None
        try:
            done = installation.poll()
        except FemurSegError as exc:
            done, error = True, str(exc)
        for line in installation.take_lines():
            _logPipLine(line, processEvents=False)
        if not done:
            return
        self._stopTimer()
        self._installation = None
        self._process = None
        self._afterInstallation(error or installation.failure)

    def _afterInstallation(self, installError: Optional[str]) -> None:
        """Choose the engine (the PyTorch fallback when only ONNX Runtime is missing and torch is
        there); download the model's files if its folder holds only the card; then run."""
        def chooseAndDownload():
            engine, self._engineNote = self.logic.chooseEngine(installError)
            if self._engineNote:
                logging.warning(f"FemurSeg: {self._engineNote}")
            return self.logic.startModelDownload(self._options.model, engine)

        started, download = self._startStep(chooseAndDownload)
        if not started:
            return
        if download is None:
            self._startSegmentation()
            return
        self._download = download
        self._process = download  # Cancel stops the download
        self._startTimer()
        self._setStatus(f"Downloading the model's files (once) for {self._options.model}...")
        self._updateGui()

    def _pollDownload(self) -> None:
        """Timer tick while the model downloads: when it is in the cache, run with it."""
        try:
            folder = self._download.poll()
        except FemurSegError as exc:
            self._finish(error_text=str(exc))
            return
        if folder is None:
            return
        self._stopTimer()
        self._download = None
        self._process = None
        self._options = dataclasses.replace(self._options, model=folder)
        self._startSegmentation()

    def _startSegmentation(self) -> None:
        """Write the input volume and start the command line."""
        if self._volume is None or self._volume.GetScene() is not slicer.mrmlScene:
            # removed (or the scene closed) while Slicer 5.12's package dialog was open
            self._finish(error_text="the input volume is no longer in the scene: select one "
                                    "and retry")
            return
        def prepare():
            with slicer.util.WaitCursor():
                return self.logic.prepareJob(self._volume, self._options)

        started, job = self._startStep(prepare)
        if not started:
            return
        self._job = job
        self._startProcess(self._job)

    def _startStep(self, step):
        """Run one step of starting a segmentation: ``(True, its result)``, or ``(False, None)``
        once a failure has ended the run with one line (FemurSeg's own errors as they are; for
        a bug or an OS problem the details go to the log)."""
        try:
            return True, step()
        except FemurSegError as exc:
            self._finish(error_text=str(exc))
        except Exception as exc:
            logging.exception("FemurSeg: cannot start the segmentation")
            self._finish(error_text=f"cannot start the segmentation: {_oneLine(exc)}")
        return False, None

    def _startTimer(self) -> None:
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _stopTimer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = None

    def _startProcess(self, job) -> None:
        """Start ``job``'s command (its own process group: Cancel ends the launcher and the
        Python it starts) and poll it from a timer, so Slicer stays responsive."""
        logging.info("FemurSeg: running " + " ".join(job.command))
        self._startTime = time.time()
        try:
            self._process = BackgroundProcess(job.command, env=job.env, cwd=job.cwd)
        except FemurSegError as exc:
            self._finish(error_text=str(exc))
            return
        self._startTimer()
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setVisible(True)
        if self._engineNote:
            self._setStatus(f"Starting... {self._engineNote}.", warning=True, log=False)
        else:
            self._setStatus("Starting...")
        self._updateGui()

    def _showOutput(self, lines: List[str]) -> None:
        for line in lines:
            progress = parse_progress_line(line)
            if progress is not None:
                percent, message = progress
                self.ui.progressBar.setValue(int(round(percent)))
                if self._engineNote:
                    message += " (PyTorch fallback)"
                self._setStatus(message, log=False, warning=bool(self._engineNote))
            elif line.strip():
                logging.info(f"FemurSeg CLI: {line}")

    def _poll(self) -> None:
        """Timer tick: show new output; when the process has ended, load the result."""
        if self._installation is not None:
            self._pollInstallation()
            return
        if self._download is not None:
            self._pollDownload()
            return
        proc = self._process
        if proc is None:
            return
        self._showOutput(proc.read_lines())
        returncode = proc.poll()
        if returncode is None:
            return
        self._showOutput(proc.read_lines())
        if returncode not in (0, WARNING_EXIT_CODE):  # 3: finished, with warnings
            self._finish(error_text=error_message(proc.lines, returncode))
            return
        try:
            with slicer.util.WaitCursor():
                result = self.logic.finishJob(self._job, warning_lines(proc.lines))
        except FemurSegError as exc:
            self._finish(error_text=str(exc))
            return
        except Exception as exc:
            logging.exception("FemurSeg: cannot load the result")
            self._finish(error_text=f"cannot load the result: {_oneLine(exc)}")
            return
        self._finish(result=result)

    def _finish(self, result=None, error_text: Optional[str] = None) -> None:
        self._stopTimer()
        if self._job is not None:
            self._job.cleanup()
        self._job = None
        self._process = None
        self._installation = None
        self._download = None
        self._volume = None
        self.ui.progressBar.setVisible(False)
        if error_text is not None:
            self._setStatus(error_text, error=not error_text.startswith("Cancelled"))
        else:
            text = self.logic.summary(result, time.time() - self._startTime)
            if self._engineNote:
                text += f" {self._engineNote}."
            self._setStatus(text, warning=bool(result.warnings or self._engineNote))
        self._updateGui()

    def _cancel(self, text: str) -> None:
        if self._process is not None:
            self._setStatus("Cancelling...")
            self._process.cancel()  # returns when the whole process tree has ended
            self._finish(error_text=text)

    def onCancelButton(self) -> None:
        """End the background process (pip, or the segmentation) and every process it started
        (``PythonSlicer`` is a launcher that runs the real Python as its child), then remove its
        temporary files."""
        self._cancel("Cancelled.")


def _oneLine(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _logPipLine(line: str, processEvents: bool = True) -> None:
    """pip's output in the log; ``processEvents``: keep the GUI alive while the logic's
    ``ensureDependencies`` waits for pip (the panel polls pip from its timer instead)."""
    if line.strip():
        logging.info(f"FemurSeg pip: {line}")
    if processEvents:
        slicer.app.processEvents()


#
# FemurSegLogic
#


class FemurSegLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, usable without the GUI (e.g. from the Python console).

    ``process(volumeNode, options)`` runs the whole segmentation and waits; the widget uses the
    same ``prepareJob`` / ``finishJob`` steps around a background process polled by a timer.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return FemurSegParameterNode(super().getParameterNode())

    # -- environment -----------------------------------------------------------------------------

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's Python launcher (``PythonSlicer``), which runs the CLI in the background."""
        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = os.path.join(os.path.dirname(sys.executable),
                                 "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
        if os.path.isfile(candidate):
            return candidate
        raise FemurSegError("cannot find PythonSlicer (Slicer's Python) to run the segmentation")

    @staticmethod
    def defaultOutputFolder() -> str:
        path = getattr(slicer.app, "defaultScenePath", "") or ""
        return path if path and os.path.isdir(path) else os.path.expanduser("~")

    @staticmethod
    def availableModels() -> List:
        """Bundled and installed models (``FemurSegLib.modelfolder.ModelInfo``), from their cards."""
        from FemurSegLib import modelfolder

        return modelfolder.list_models()

    @staticmethod
    def _packagingModule():
        """``slicer.packaging`` (Slicer 5.12 and later), else None."""
        try:
            return importlib.import_module("slicer.packaging")
        except ImportError:
            return None

    @staticmethod
    def _constraintsFile() -> str:
        return install.write_pin_constraints(
            os.path.join(slicer.app.temporaryPath, "FemurSeg-constraints.txt"))

    @staticmethod
    def _confirm(text: str) -> bool:
        return slicer.util.confirmOkCancelDisplay(text, windowTitle="FemurSeg")

    def _installMissing(self, missing: List[str]) -> bool:
        """Ask, then install ``missing`` and wait (``FemurSegMRMLLib.install``)."""
        return install.install_requirements(
            missing, python=self.pythonExecutable(), constraints=self._constraintsFile(),
            wheel_folder=install.wheel_folder(), packaging_module=self._packagingModule(),
            confirm=self._confirm, on_line=_logPipLine)

    def ensureDependencies(self) -> str:
        """Install what inference needs on first use and wait; return the engine that will run.

        Installs ``onnxruntime``, ``slicerio`` (and ``scipy`` if missing) after asking, from PyPI
        or, offline, from the folder of wheels named by ``$FEMURSEG_WHEELS``, with numpy,
        SimpleITK and torch pinned to the installed versions so that they are never reinstalled
        (``FemurSegMRMLLib.install``). Without ONNX Runtime (not installed, or its installation
        failed) the PyTorch fallback is used when torch is importable, installed through the
        PyTorch extension if the user agrees. Raises :class:`FemurSegError` naming the missing
        package when inference cannot run. The module panel does the same without waiting
        (:meth:`startInstallation`, :meth:`chooseEngine`).
        """
        return install.ensure_inference_requirements(self._installMissing, self._torchAvailable)

    def startInstallation(self):
        """For the panel: ask, then start installing what inference needs without waiting.

        Returns a started-on-first-poll ``install.PipInstallation`` to poll from a timer, or
        None when nothing is missing or the user declined. On Slicer 5.12 and later (without a
        wheel folder) ``slicer.packaging`` installs here, in its own progress dialog that keeps
        Slicer responsive, and None is returned. Raises :class:`FemurSegError` with the
        one-line message of a failed installation.
        """
        missing = install.missing_requirements(install.INFERENCE_REQUIREMENTS)
        if not missing:
            return None
        folder = install.wheel_folder()
        if install.uses_packaging(self._packagingModule(), folder):
            self._installMissing(missing)
            return None
        if not self._confirm(install.confirmation_text(missing, folder)):
            return None
        return install.PipInstallation(missing, python=self.pythonExecutable(),
                                       constraints=self._constraintsFile(), wheel_folder=folder)

    @staticmethod
    def startModelDownload(model: str, engine: str = "onnxruntime"):
        """A started ``models.ModelDownload`` when the folder ``model`` holds its card alone (a
        repository for the extensions index keeps the weights as release assets, see
        ``FemurSegLib.release``); None when its files are there."""
        need = "weights" if engine == "torch" else "onnx"
        if not model or not release.needs_download(model, need):
            return None
        return models.ModelDownload(model, need=need)

    def chooseEngine(self, installError: Optional[str] = None):
        """``(engine, note)`` after an installation (``install.choose_engine``)."""
        return install.choose_engine(self._torchAvailable, installError)

    @staticmethod
    def _torchAvailable() -> bool:
        """True if torch imports; offers to install it with the PyTorch extension if present."""
        import importlib.util

        if importlib.util.find_spec("torch") is not None:
            return True
        try:
            import PyTorchUtils
        except ImportError:
            return False
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True)
        return torch is not None

    # -- segmentation ----------------------------------------------------------------------------

    @staticmethod
    def jobOptions(parameterNode: FemurSegParameterNode) -> JobOptions:
        """The options of a run from the parameter node."""
        p = parameterNode
        if p.inputVolume is None:
            raise FemurSegError("select an input volume")
        model = models.model_to_run(p.model, _pathOrNone(p.modelFolder))
        stlFolder = None
        if p.exportStl:
            stlFolder = _pathOrNone(p.stlFolder)
            if not stlFolder or not os.path.isdir(stlFolder):
                raise FemurSegError(f"STL folder does not exist: {stlFolder or '(none chosen)'}")
        return JobOptions(model=model, device=p.device, tta=tta_option(p.ttaMode),
                          probabilities=p.probabilityMap, split=p.splitSides,
                          surface_smoothing=p.surfaceSmoothing, stl_sigma_voxels=p.stlSmoothing,
                          stl_folder=stlFolder, overwrite_stl=p.overwriteStl)

    def prepareJob(self, volumeNode, options: JobOptions):
        """Write the input volume to a temporary NRRD file and build the command."""
        return prepare_job(volumeNode, python=self.pythonExecutable(), module_dir=MODULE_DIR,
                           options=options, temp_root=slicer.app.temporaryPath)

    def finishJob(self, job, warnings=()):
        """Load the results into the scene, export STL files if asked, and show them (also with
        the command line's warnings: what there is is loaded)."""
        result = finish_job(job, slicer.mrmlScene, warnings)
        self.showResult(job.volume_node, result)
        return result

    def process(self, volumeNode, options: Optional[JobOptions] = None,
                onProgress: Optional[Callable[[float, str], None]] = None,
                isCancelled: Optional[Callable[[], bool]] = None):
        """Segment ``volumeNode`` and wait (no GUI needed). Returns a ``JobResult``
        (``FemurSegMRMLLib.job``).

        Raises :class:`FemurSegError` with a one-line message when the segmentation fails.
        """
        engine = self.ensureDependencies()
        options = options or JobOptions()
        need = "weights" if engine == "torch" else "onnx"
        if options.model and release.needs_download(options.model, need):  # waits, once
            options = dataclasses.replace(options, model=str(release.download_model(
                options.model, need=need)))
        result = segment_volume(volumeNode, slicer.mrmlScene, python=self.pythonExecutable(),
                                module_dir=MODULE_DIR, options=options,
                                on_progress=onProgress, is_cancelled=isCancelled,
                                temp_root=slicer.app.temporaryPath)
        self.showResult(volumeNode, result)
        return result

    @staticmethod
    def showResult(volumeNode, result) -> None:
        """Show the input with the segmentation in the slice views and the surfaces in 3D."""
        if not hasattr(slicer.app, "layoutManager") or slicer.app.layoutManager() is None:
            return
        slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        segNode = result.segmentation_node
        display = segNode.GetDisplayNode()
        if display is not None:
            display.SetVisibility(True)
            display.SetVisibility3D(True)
        threeD = slicer.app.layoutManager().threeDWidget(0)
        if threeD is not None:
            threeD.threeDView().resetFocalPoint()

    @staticmethod
    def summary(result, seconds: float) -> str:
        """One line for the status label: segments with their volumes, and the STL files."""
        if result is None:
            return ""
        node = result.segmentation_node
        parts = [f"{node.GetSegmentation().GetSegment(sid).GetName()} "
                 f"{scene.segment_voxel_volume_mm3(node, sid) / 1000.0:.1f} ml"
                 for sid in scene.segment_ids(node)]
        text = f"Done in {seconds:.0f} s: {', '.join(parts) or 'no femur found'}."
        if result.stl_files:
            text += f" {len(result.stl_files)} STL file(s) in {result.stl_files[0].parent}."
        if result.warnings:  # the command line's plausibility warning, e.g. "... no femur found"
            text = "Warning: " + " ".join(result.warnings) + " " + text
        return text


#
# FemurSegTest
#


#: What the self-test says when there is no model to test with.
NO_TEST_MODEL_MESSAGE = ("FemurSeg self-test not run: no trained model is installed (set "
                         "FEMURSEG_TEST_MODEL to a model folder and restart Slicer)")


class FemurSegTest(ScriptedLoadableModuleTest):
    """Runs the whole module on a synthetic hip phantom (needs a bundled or given model)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        """The three tests; without a trained model a message says why nothing ran (in *Reload
        and Test* a skipped test would show as a failure: it calls runTest, not unittest)."""
        if self._modelFolder() is None:
            logging.warning(f"FemurSeg: {NO_TEST_MODEL_MESSAGE}")
            self.delayDisplay(NO_TEST_MODEL_MESSAGE)
            return
        self.setUp()
        self.test_FemurSeg_logic_on_phantom()
        self.setUp()
        self.test_FemurSeg_blank_volume_error()
        self.setUp()
        self.test_FemurSeg_widget_background_process()
        self.delayDisplay("FemurSeg self-test passed")

    def _modelFolder(self) -> Optional[str]:
        """The model to test with: $FEMURSEG_TEST_MODEL, else the first bundled model."""
        folder = os.environ.get("FEMURSEG_TEST_MODEL")
        if folder:
            return folder
        models = FemurSegLogic.availableModels()
        return str(models[0].path) if models else None

    def _phantomVolume(self):
        from FemurSegLib.phantom import make_phantom

        phantom = make_phantom(seed=0)
        node = volumes.image_to_volume_node(phantom.image, slicer.mrmlScene, "FemurSegPhantom")
        return node, phantom

    def test_FemurSeg_logic_on_phantom(self):
        import numpy as np
        import SimpleITK as sitk

        from FemurSegLib.segments import TERMINOLOGY_CONTEXT

        model = self._modelFolder()
        if model is None:
            self.skipTest(NO_TEST_MODEL_MESSAGE)
        self.delayDisplay("Segmenting the phantom")
        volume, phantom = self._phantomVolume()
        stlFolder = os.path.join(slicer.app.temporaryPath, "FemurSegTestSTL")
        os.makedirs(stlFolder, exist_ok=True)
        options = JobOptions(model=model, probabilities=True, stl_folder=stlFolder,
                             overwrite_stl=True)
        progress = []
        result = FemurSegLogic().process(volume, options, onProgress=lambda p, m: progress.append(p))
        self.assertTrue(progress and progress[-1] == 100.0)

        seg = result.segmentation_node
        self.assertEqual(seg.GetName(), "FemurSegPhantom femur segmentation")
        names = [seg.GetSegmentation().GetSegment(s).GetName() for s in scene.segment_ids(seg)]
        self.assertEqual(names, ["Right femur", "Left femur"])
        for sid in scene.segment_ids(seg):
            terminology = scene.segment_terminology(seg.GetSegmentation().GetSegment(sid))
            self.assertIn("SCT^71341001^Femur", terminology)
            self.assertTrue(terminology.startswith(TERMINOLOGY_CONTEXT), terminology)

        # Exact input grid, and the phantom's femur found (DSC against its ground truth).
        labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
            seg, scene.segment_ids(seg), labelmap, volume)
        np.testing.assert_allclose(volumes.ijk_to_ras(labelmap), volumes.ijk_to_ras(volume),
                                   atol=1e-6)
        predicted = slicer.util.arrayFromVolume(labelmap) > 0
        truth = np.asarray(sitk.GetArrayFromImage(phantom.femur) if hasattr(phantom.femur, "GetSize")
                           else phantom.femur) > 0
        dsc = 2.0 * np.logical_and(predicted, truth).sum() / (predicted.sum() + truth.sum())
        self.assertGreater(dsc, 0.85, f"phantom femur DSC {dsc:.3f}")

        self.assertIsNotNone(result.probability_node)
        self.assertEqual(len(result.stl_files), len(names))
        self.delayDisplay(f"Phantom segmented: DSC {dsc:.3f}")

    def test_FemurSeg_blank_volume_error(self):
        import SimpleITK as sitk

        model = self._modelFolder()
        if model is None:
            self.skipTest(NO_TEST_MODEL_MESSAGE)
        blank = volumes.image_to_volume_node(sitk.Image([32, 32, 8], sitk.sitkInt16),
                                             slicer.mrmlScene, "blank")
        with self.assertRaises(FemurSegError) as caught:
            FemurSegLogic().process(blank, JobOptions(model=model))
        message = str(caught.exception)
        self.assertIn("is blank", message)
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)

    def test_FemurSeg_widget_background_process(self):
        """Apply in the module panel: the QProcess runs, the GUI stays live, the result loads."""
        model = self._modelFolder()
        if model is None:
            self.skipTest(NO_TEST_MODEL_MESSAGE)
        volume, _ = self._phantomVolume()
        slicer.util.selectModule("FemurSeg")
        widget = slicer.util.getModuleWidget("FemurSeg")
        params = widget.logic.getParameterNode()
        params.inputVolume = volume
        bundled = [str(m.path) for m in FemurSegLogic.availableModels()]
        params.model = model if model in bundled else ""  # "": use the model folder
        params.modelFolder = pathlib.Path(model)
        params.exportStl = False
        widget.onApplyButton()
        self.assertFalse(widget.ui.applyButton.enabled)  # running in the background
        deadline = time.time() + 600
        while widget._process is not None and time.time() < deadline:
            slicer.app.processEvents(qt.QEventLoop.AllEvents, 100)
        self.assertIsNone(widget._process, "segmentation did not finish within 10 minutes")
        self.assertTrue(widget.ui.statusLabel.text.startswith("Done"), widget.ui.statusLabel.text)
        self.assertIsNotNone(slicer.mrmlScene.GetFirstNodeByName("FemurSegPhantom femur segmentation"))
        self.delayDisplay("Background run finished")
