"""What the tests of the Slicer module's MRML layer (``FemurSeg/FemurSegMRMLLib``) share: the
``slicer-core`` check and marks, oblique test volumes, scene and phantom fixtures, node helpers.

They run against Kitware's Qt-free ``slicer-core`` wheel: volume nodes, segmentation nodes, the
segmentation storage node (Slicer's own .seg.nrrd reader), closed-surface conversion and STL export
are the real Slicer classes. The Qt widget (``FemurSeg.py``) cannot be imported outside Slicer; it
is compiled, and its references to the .ui file and parameter node are checked statically. The
end-to-end tests run the CLI in a subprocess exactly as the module does. Test modules import the
fixtures (``scene``, ``volume``, ``phantom``) from here.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]

MODULE_DIR = REPO / "FemurSeg"


try:
    import slicer
    import vtk
    HAVE_SLICER = hasattr(slicer, "vtkMRMLScene")
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_SLICER = False
    slicer = vtk = None

#: the marks of every test that needs MRML (``pytestmark = SLICER_MARKS``)
SLICER_MARKS = [pytest.mark.slicer,
                pytest.mark.skipif(not HAVE_SLICER, reason="needs the slicer-core wheel "
                                   "(pip install slicer-core==5.11.0.6 vtk==9.6.0): "
                                   "'import slicer' failed")]

sys.path.insert(0, str(MODULE_DIR))
# process, install and models need no MRML: their tests run without slicer-core
from FemurSegMRMLLib import install, process  # noqa: E402
from FemurSegMRMLLib import models as model_list  # noqa: E402

if HAVE_SLICER:
    from FemurSegMRMLLib import stl, volumes  # noqa: E402
    from FemurSegMRMLLib import job as jobs  # noqa: E402
    from FemurSegMRMLLib import scene as scene_nodes  # noqa: E402
else:  # the tests that use them skip (SLICER_MARKS)
    stl = volumes = jobs = scene_nodes = None

from FemurSegLib import segments, writers  # noqa: E402
from process_helpers import launcher_processes  # noqa: E402

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def rotation(ax: float, az: float) -> np.ndarray:
    """An oblique direction matrix: rotation about x by ``ax`` then about z by ``az`` (radians)."""
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ rx

DIRECTION = rotation(0.3, 0.35)

SPACING = (0.9, 0.8, 3.0)

ORIGIN_LPS = (-20.5, 10.25, 33.0)

SIZE = (48, 40, 14)  # i, j, k


def make_image(array: np.ndarray, spacing=SPACING, origin=ORIGIN_LPS, direction=DIRECTION
               ) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    return image


def ellipsoids(size=SIZE) -> np.ndarray:
    """Label array ``[k, j, i]``: 1 = an ellipsoid at low i, 2 = one at high i."""
    k, j, i = np.indices(size[::-1])
    a = ((i - 13) / 8.5) ** 2 + ((j - 20) / 11.0) ** 2 + ((k - 7) / 4.6) ** 2 <= 1
    b = ((i - 35) / 8.5) ** 2 + ((j - 20) / 11.0) ** 2 + ((k - 7) / 4.6) ** 2 <= 1
    return (a * 1 + b * 2).astype(np.uint8)


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def volume(scene):
    """An MR-like oblique, anisotropic volume node with two bright 'femurs'."""
    labels = ellipsoids()
    rng = np.random.default_rng(0)
    array = (120 + 700 * (labels > 0) + rng.integers(0, 60, labels.shape)).astype(np.int16)
    return volumes.image_to_volume_node(make_image(array), scene, "hip")


@pytest.fixture(scope="module")
def phantom():
    """The project's synthetic hip MR phantom at half the real in-plane resolution (1.8 mm) and
    the real 5.2 mm slices: LIP, slightly oblique, both femurs (about 2 s to build)."""
    from FemurSegLib.phantom import make_phantom
    return make_phantom(seed=0, size=(192, 192, 20), spacing=(1.822, 1.822, 5.2))


def node_array(node) -> np.ndarray:
    """Voxels of a volume node as ``[k, j, i]``."""
    image_data = node.GetImageData()
    dims = image_data.GetDimensions()
    from vtk.util import numpy_support
    return numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars()).reshape(dims[::-1])


def export_labelmap(scene, seg_node, reference):
    """All segments as one label map node on ``reference``'s grid (Slicer's exporter)."""
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        seg_node, scene_nodes.segment_ids(seg_node), labelmap, reference)
    assert ok
    return labelmap


def write_seg(path: Path, labels: np.ndarray, split: bool, reference: sitk.Image) -> list:
    specs = segments.femur_segments(split)
    if not split:
        labels = (labels > 0).astype(np.uint8)
    writers.write_seg_nrrd(make_image(labels, reference.GetSpacing(), reference.GetOrigin(),
                                      np.reshape(reference.GetDirection(), (3, 3))),
                           specs, path)
    return specs


def os_sep() -> str:
    import os
    return os.pathsep


def _script(tmp_path: Path, body: str) -> list:
    path = tmp_path / "fake_cli.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


@pytest.fixture
def launcher(tmp_path):
    yield from launcher_processes(tmp_path)
