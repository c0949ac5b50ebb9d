"""MRML side of the FemurSeg Slicer module: everything that touches the scene but not Qt.

This file runs inside 3D Slicer and, for the tests, with Kitware's Qt-free ``slicer-core`` wheel.
It imports ``slicer`` (MRML classes only), ``vtk``, ``numpy``, ``SimpleITK`` and the pure core
``FemurSegLib``; the scene, the Python executable and the paths are passed in (nothing global), so
the same code serves the widget (which runs the command in a ``qt.QProcess``), the module logic
(which runs it with :func:`run_command`) and the tests.

The flow of one segmentation::

    job = prepare_job(volume_node, python=..., module_dir=..., options=JobOptions(...))
    run_command(job.command, env=job.env, cwd=job.cwd, on_progress=...)   # or a QProcess
    result = finish_job(job, scene)          # segmentation node, probability node, STL files
    job.cleanup()

Geometry: MRML volumes are RAS, ITK images are LPS. Only the signs of the first two rows of the
IJK-to-RAS matrix differ, so the conversion in both directions is exact.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from FemurSegLib import files, images
from FemurSegLib.errors import Cancelled, FemurSegError, InputError

#: Suffixes of the node names made from an input volume called "<name>".
SEGMENTATION_NAME_SUFFIX = " femur segmentation"
PROBABILITY_NAME_SUFFIX = " femur probability"

#: Smoothing factor of the closed surface (Slicer's default for binary labelmaps).
DEFAULT_SMOOTHING = 0.5

#: Devices offered by the module; "gpu" maps to CUDA, or to MPS on macOS.
DEVICES = ("auto", "cpu", "gpu")

_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_PROGRESS_RE = re.compile(r"^PROGRESS\s+([-+]?\d+(?:\.\d*)?)\s*(.*)$")
_ERROR_PREFIX = "error:"

ProgressCallback = Callable[[float, str], None]


# ----------------------------------------------------------------------------------------------
# Volume node <-> SimpleITK image


def ijk_to_ras(volume_node) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of ``volume_node`` (its own, not including parent transforms)."""
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _directions_ras(volume_node) -> np.ndarray:
    dirs = [[0.0] * 3 for _ in range(3)]
    volume_node.GetIJKToRASDirections(dirs)
    return np.array(dirs, dtype=float)


def volume_node_to_image(volume_node) -> sitk.Image:
    """Copy a scalar volume node into a ``SimpleITK.Image`` with the same geometry (in LPS).

    Raises :class:`InputError` for a node without image data or with several components.
    """
    name = volume_node.GetName() if volume_node is not None else None
    image_data = volume_node.GetImageData() if volume_node is not None else None
    if image_data is None or image_data.GetNumberOfPoints() == 0:
        raise InputError(f"volume {name!r} has no image data")
    components = image_data.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(f"volume {name!r} has {components} components per voxel; "
                         "a scalar (grey-value) volume is required")
    dims = image_data.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars())
    array = scalars.reshape(dims[::-1])  # [k, j, i]
    image = sitk.GetImageFromArray(array)  # copies
    spacing = np.asarray(volume_node.GetSpacing(), dtype=float)
    dirs_ras = _directions_ras(volume_node)
    origin_ras = np.asarray(volume_node.GetOrigin(), dtype=float)
    extent = image_data.GetExtent()
    if extent[0] or extent[2] or extent[4]:  # image data not starting at index 0
        origin_ras = origin_ras + dirs_ras @ (spacing * np.array(extent[::2], dtype=float))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(_LPS_FROM_RAS @ origin_ras))
    image.SetDirection(tuple((_LPS_FROM_RAS @ dirs_ras).ravel()))
    return image


def set_node_geometry_from_image(volume_node, image: sitk.Image) -> None:
    """Give ``volume_node`` the origin, spacing and directions of ``image`` (LPS -> RAS)."""
    dirs_ras = _LPS_FROM_RAS @ np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    m = vtk.vtkMatrix4x4()
    for r in range(3):
        for c in range(3):
            m.SetElement(r, c, dirs_ras[r, c])
    volume_node.SetIJKToRASDirectionMatrix(m)
    volume_node.SetSpacing(*image.GetSpacing())
    volume_node.SetOrigin(*(_LPS_FROM_RAS @ np.asarray(image.GetOrigin(), dtype=float)))


def image_to_volume_node(image: sitk.Image, scene, name: str,
                         node_class: str = "vtkMRMLScalarVolumeNode"):
    """Add a new volume node holding a copy of ``image`` (a 3D scalar image) to ``scene``."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: a 3D scalar image is required")
    array = sitk.GetArrayFromImage(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(*image.GetSize())
    vtk_array = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image_data.GetPointData().SetScalars(vtk_array)
    node = scene.AddNewNodeByClass(node_class, name)
    set_node_geometry_from_image(node, image)
    node.SetAndObserveImageData(image_data)
    return node


def write_volume_node(volume_node, path: os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``volume_node`` to ``path`` (NRRD, NIfTI, ...) with its exact geometry.

    The content is not judged here (a blank or odd volume is the CLI's to refuse, with the same
    message as on the command line).
    """
    return images.write_image(volume_node_to_image(volume_node), path, overwrite=overwrite,
                           compress=False)


def _matrix_of(image_to_world) -> np.ndarray:
    return np.array([[image_to_world.GetElement(r, c) for c in range(4)] for r in range(4)])


# ----------------------------------------------------------------------------------------------
# The command line and its output


@dataclass
class JobOptions:
    """What the user chose: model, device and options (the module's parameter node holds these)."""

    model: Optional[str] = None  # bundled model name or model folder; None: the CLI's default
    device: str = "auto"  # "auto", "cpu" or "gpu" (also accepted: "cuda", "mps")
    tta: Optional[bool] = None  # flip test-time augmentation; None: the model's default
    #                             (on a GPU; on the CPU only where the card says it pays)
    probabilities: bool = False  # also load the probability map
    split: bool = True  # name the femurs "Right femur" / "Left femur" when both are in view
    smoothing: float = DEFAULT_SMOOTHING  # closed-surface smoothing (display and STL)
    stl_folder: Optional[str] = None  # export STL surfaces there when set
    overwrite_stl: bool = False  # replace existing STL files of the same name


def cli_device(device: str, platform: str = sys.platform) -> str:
    """The CLI's ``--device`` value for a module choice: ``gpu`` is MPS on macOS, else CUDA."""
    d = (device or "auto").strip().lower()
    if d == "gpu":
        return "mps" if platform == "darwin" else "cuda"
    if d in ("auto", "cpu", "cuda", "mps"):
        return d
    raise InputError(f"unknown device {device!r} (choose auto, cpu or gpu)")


def build_command(python: str, input_path: os.PathLike, output_path: os.PathLike, *,
                  model: Optional[str] = None, device: str = "auto",
                  probabilities: Optional[os.PathLike] = None, tta: Optional[bool] = None,
                  split: bool = True, overwrite: bool = True) -> List[str]:
    """The command line that segments ``input_path`` into ``output_path`` (a .seg.nrrd)."""
    cmd = [str(python), "-m", "FemurSegLib.cli", "segment", str(input_path),
           "-o", str(output_path)]
    if model:
        cmd += ["--model", str(model)]
    cmd += ["--device", cli_device(device)]
    if probabilities is not None:
        cmd += ["--probabilities", str(probabilities)]
    if tta is not None:
        cmd.append("--tta" if tta else "--no-tta")
    if not split:
        cmd.append("--no-split")
    if overwrite:
        cmd.append("--overwrite")
    cmd += ["--progress", "lines"]
    return cmd


def cli_environment(module_dir: os.PathLike, base: Optional[Mapping[str, str]] = None
                    ) -> Dict[str, str]:
    """Environment for the background process: ``module_dir`` (holding FemurSegLib) first on
    PYTHONPATH, so ``python -m FemurSegLib.cli`` finds the core that sits next to the module."""
    env = dict(os.environ if base is None else base)
    paths = [str(module_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def parse_progress_line(line: str) -> Optional[Tuple[float, str]]:
    """``"PROGRESS 42 predicting"`` -> ``(42.0, "predicting")``; None for any other line.

    The percentage is clamped to 0..100.
    """
    match = _PROGRESS_RE.match(line.strip())
    if not match:
        return None
    return min(100.0, max(0.0, float(match.group(1)))), match.group(2).strip()


def error_message(lines: Sequence[str], returncode: Optional[int]) -> str:
    """The one-line message for a failed run of the CLI.

    The CLI's own ``error: <message>`` line wins (the last one, if several); otherwise the exit
    status (``returncode`` None: the process crashed) and the last line of output that is not a
    progress line (e.g. an unexpected traceback's final line) are reported.
    """
    for line in reversed(lines):
        text = line.strip()
        if text.lower().startswith(_ERROR_PREFIX):
            message = text[len(_ERROR_PREFIX):].strip()
            if message:
                return message
    if returncode is None:
        head = "segmentation process crashed"
    elif returncode < 0:
        head = f"segmentation process was terminated by signal {-returncode}"
    else:
        head = f"segmentation process failed with exit code {returncode}"
    others = [ln.strip() for ln in lines if ln.strip() and parse_progress_line(ln) is None]
    return f"{head}: {others[-1]}" if others else head


class LineBuffer:
    """Split a stream that arrives in arbitrary chunks (e.g. from ``QProcess``) into lines."""

    def __init__(self) -> None:
        self._partial = ""
        self.lines: List[str] = []

    def feed(self, chunk: str) -> List[str]:
        """Add ``chunk``; return the lines it completed (also appended to :attr:`lines`)."""
        text = (self._partial + chunk).replace("\r\n", "\n").replace("\r", "\n")
        *complete, self._partial = text.split("\n")
        self.lines.extend(complete)
        return complete

    def close(self) -> List[str]:
        """Flush a last line without a newline."""
        rest, self._partial = self._partial, ""
        if rest:
            self.lines.append(rest)
            return [rest]
        return []


def run_command(command: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[os.PathLike] = None,
                on_progress: Optional[ProgressCallback] = None,
                on_line: Optional[Callable[[str], None]] = None,
                is_cancelled: Optional[Callable[[], bool]] = None,
                poll_seconds: float = 0.1) -> List[str]:
    """Run the CLI in a subprocess (no Qt), reporting ``PROGRESS`` lines as they arrive.

    Returns all output lines. Raises :class:`FemurSegError` with the CLI's one-line message when
    it fails, and :class:`Cancelled` (after killing the process) when ``is_cancelled()`` turns
    true.
    """
    try:
        proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=None if env is None else dict(env),
                                cwd=None if cwd is None else str(cwd), text=True,
                                encoding="utf-8", errors="replace", bufsize=1)
    except OSError as exc:
        raise FemurSegError(f"cannot start {command[0]}: {exc.strerror or exc}") from None
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def _reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.rstrip("\r\n"))
        lines.put(None)

    thread = threading.Thread(target=_reader, daemon=True)
    thread.start()
    output: List[str] = []
    finished = False
    while not finished:
        if is_cancelled is not None and is_cancelled():
            proc.kill()
            proc.wait()
            thread.join(timeout=5)
            raise Cancelled("segmentation cancelled")
        try:
            line = lines.get(timeout=poll_seconds)
        except queue.Empty:
            continue
        if line is None:
            finished = True
            continue
        output.append(line)
        if on_line is not None:
            on_line(line)
        progress = parse_progress_line(line)
        if progress is not None and on_progress is not None:
            on_progress(*progress)
    returncode = proc.wait()
    thread.join(timeout=5)
    if returncode != 0:
        raise FemurSegError(error_message(output, returncode))
    return output


# ----------------------------------------------------------------------------------------------
# One job: input file out, command, results in


@dataclass
class Job:
    """Files and command of one segmentation run (see the module docstring for the flow)."""

    volume_node: object
    options: JobOptions
    work_dir: Path
    input_path: Path
    output_path: Path
    probability_path: Optional[Path]
    command: List[str]
    env: Dict[str, str]
    #: Working directory of the process: the module folder, so that ``python -m FemurSegLib.cli``
    #: finds the core even if a launcher rewrites PYTHONPATH (all paths passed are absolute).
    cwd: Path

    def cleanup(self) -> None:
        """Remove the temporary folder with the exchanged files."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


@dataclass
class JobResult:
    segmentation_node: object
    probability_node: Optional[object] = None
    stl_files: List[Path] = field(default_factory=list)


def prepare_job(volume_node, *, python: str, module_dir: os.PathLike,
                options: Optional[JobOptions] = None,
                temp_root: Optional[os.PathLike] = None) -> Job:
    """Write the input volume as NRRD into a new temporary folder and build the command."""
    if volume_node is None:
        raise InputError("no input volume selected")
    options = options or JobOptions()
    work_dir = Path(tempfile.mkdtemp(prefix="FemurSeg-", dir=None if temp_root is None
                                     else str(temp_root)))
    try:
        input_path = write_volume_node(
            volume_node, work_dir / f"{_safe_file_name(volume_node.GetName() or 'input')}.nrrd")
        output_path = work_dir / "output.seg.nrrd"
        prob_path = work_dir / "probability.nrrd" if options.probabilities else None
        command = build_command(python, input_path, output_path, model=options.model,
                                device=options.device, probabilities=prob_path,
                                tta=options.tta, split=options.split, overwrite=True)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    return Job(volume_node=volume_node, options=options, work_dir=work_dir,
               input_path=input_path, output_path=output_path, probability_path=prob_path,
               command=command, env=cli_environment(module_dir), cwd=Path(module_dir))


def finish_job(job: Job, scene) -> JobResult:
    """Load the results of a successful run into ``scene`` (and export STL files if asked)."""
    volume = job.volume_node
    seg_node = load_segmentation(job.output_path, scene, volume,
                                 smoothing=job.options.smoothing)
    result = JobResult(segmentation_node=seg_node)
    if job.probability_path is not None:
        result.probability_node = load_probability_map(job.probability_path, scene, volume)
    has_voxels = any(segment_voxel_volume_mm3(seg_node, sid) > 0 for sid in segment_ids(seg_node))
    if job.options.stl_folder and has_voxels:  # no femur found: nothing to export
        result.stl_files = export_stl(seg_node, job.options.stl_folder,
                                      smoothing=job.options.smoothing,
                                      overwrite=job.options.overwrite_stl)
    return result


def segment_volume(volume_node, scene, *, python: str, module_dir: os.PathLike,
                   options: Optional[JobOptions] = None,
                   on_progress: Optional[ProgressCallback] = None,
                   is_cancelled: Optional[Callable[[], bool]] = None,
                   temp_root: Optional[os.PathLike] = None) -> JobResult:
    """Segment ``volume_node`` by running the CLI in a subprocess and wait for it (no Qt)."""
    job = prepare_job(volume_node, python=python, module_dir=module_dir, options=options,
                      temp_root=temp_root)
    try:
        run_command(job.command, env=job.env, cwd=job.cwd, on_progress=on_progress,
                    is_cancelled=is_cancelled)
        return finish_job(job, scene)
    finally:
        job.cleanup()


# ----------------------------------------------------------------------------------------------
# Segmentation node


def register_segmentation_converter_rules() -> None:
    """Register the labelmap <-> closed surface conversion rules once.

    Slicer registers them at start-up; the ``slicer-core`` wheel starts with none, and without
    them ``CreateClosedSurfaceRepresentation()`` fails. A segmentation copies the factory's rules
    when it is constructed, so this must run before segmentation nodes are created: outside the
    Slicer application it runs when this file is imported.
    """
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for cls in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
                slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule,
                slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule):
        if cls.__name__ not in present:
            factory.RegisterConverterRule(cls())


def _check_on_grid(labelmap, volume_node, what: str) -> None:
    """Raise :class:`InputError` unless the oriented image lies on the volume's voxel grid."""
    ext = labelmap.GetExtent()
    if ext[0] > ext[1] or ext[2] > ext[3] or ext[4] > ext[5]:
        return  # an empty segment has no voxels to place
    m_lab = _matrix_of(_image_to_world(labelmap))
    m_vol = ijk_to_ras(volume_node)
    scale = max(1.0, float(np.abs(m_vol).max()))
    if not np.allclose(m_lab, m_vol, rtol=0, atol=1e-4 * scale):
        raise InputError(f"{what} is not on the input volume's grid (IJK-to-RAS differs)")
    dims = volume_node.GetImageData().GetDimensions()
    if any(ext[2 * a] < 0 or ext[2 * a + 1] > dims[a] - 1 for a in range(3)):
        raise InputError(f"{what} extends beyond the input volume (extent {ext}, size {dims})")


def _image_to_world(oriented_image):
    m = vtk.vtkMatrix4x4()
    oriented_image.GetImageToWorldMatrix(m)
    return m


def load_segmentation(path: os.PathLike, scene, reference_volume, *, name: Optional[str] = None,
                      smoothing: float = DEFAULT_SMOOTHING, closed_surface: bool = True):
    """Load a ``.seg.nrrd`` written by the CLI as a new ``vtkMRMLSegmentationNode``.

    Segment names, colours, label values and terminology come from the file (Slicer's own
    segmentation reader); the reference geometry is ``reference_volume``'s, and the file must lie
    on its voxel grid. The node is named "<volume name> femur segmentation", sits under the same
    parent transform as the volume, gets display nodes and (by default) a closed surface so it
    shows in 3D.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"segmentation file not found: {path}")
    register_segmentation_converter_rules()
    base = name or f"{reference_volume.GetName()}{SEGMENTATION_NAME_SUFFIX}"
    seg_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(base)
                                       if scene.GetFirstNodeByName(base) else base)
    try:
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(str(path))
        if not storage.ReadData(seg_node):
            raise InputError(f"cannot read segmentation file {path.name}")
        segmentation = seg_node.GetSegmentation()
        if segmentation.GetNumberOfSegments() == 0:
            raise InputError(f"segmentation file {path.name} has no segments")
        for i in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(i)
            labelmap = segment.GetRepresentation(
                slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
            if labelmap is None:
                raise InputError(f"segment {segment.GetName()!r} in {path.name} has no labelmap")
            _check_on_grid(labelmap, reference_volume, f"segmentation file {path.name}")
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        transform_id = reference_volume.GetTransformNodeID()
        if transform_id:
            seg_node.SetAndObserveTransformNodeID(transform_id)
        seg_node.CreateDefaultDisplayNodes()
        if closed_surface:
            update_closed_surface(seg_node, smoothing)
    except BaseException:
        scene.RemoveNode(seg_node)
        raise
    return seg_node


def update_closed_surface(seg_node, smoothing: float = DEFAULT_SMOOTHING) -> None:
    """(Re)create the closed-surface representation with the given smoothing factor (0..1)."""
    if not 0.0 <= float(smoothing) <= 1.0:
        raise InputError(f"smoothing factor must be between 0 and 1, not {smoothing}")
    register_segmentation_converter_rules()
    segmentation = seg_node.GetSegmentation()
    segmentation.SetConversionParameter("Smoothing factor", f"{float(smoothing):g}")
    seg_node.RemoveClosedSurfaceRepresentation()
    if not seg_node.CreateClosedSurfaceRepresentation():
        raise FemurSegError(f"cannot create surfaces for {seg_node.GetName()!r}")


def segment_ids(seg_node) -> List[str]:
    segmentation = seg_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segment_voxel_volume_mm3(seg_node, segment_id: str) -> float:
    """Volume of a segment's binary labelmap: voxel count times voxel volume (mm^3)."""
    segment = seg_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise InputError(f"no segment {segment_id!r} in {seg_node.GetName()!r}")
    labelmap = segment.GetRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if labelmap is None or labelmap.GetPointData().GetScalars() is None:
        return 0.0
    ext = labelmap.GetExtent()
    if ext[0] > ext[1] or ext[2] > ext[3] or ext[4] > ext[5]:
        return 0.0
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    count = int(np.count_nonzero(values == segment.GetLabelValue()))
    m = _matrix_of(_image_to_world(labelmap))
    return count * abs(float(np.linalg.det(m[:3, :3])))


# ----------------------------------------------------------------------------------------------
# Probability map


def load_probability_map(path: os.PathLike, scene, reference_volume, *,
                         name: Optional[str] = None):
    """Load the CLI's probability map (float, input grid) as a new scalar volume node."""
    image = images.read_image(path, what="probability map", allow_constant=True)
    reference = volume_node_to_image(reference_volume)
    mismatch = images.grid_mismatch(image, reference)
    if mismatch:
        raise InputError(f"probability map is not on the input volume's grid: {mismatch}")
    image.CopyInformation(reference)  # remove rounding of the file's geometry
    base = name or f"{reference_volume.GetName()}{PROBABILITY_NAME_SUFFIX}"
    node = image_to_volume_node(sitk.Cast(image, sitk.sitkFloat32), scene,
                                scene.GenerateUniqueName(base) if scene.GetFirstNodeByName(base)
                                else base)
    transform_id = reference_volume.GetTransformNodeID()
    if transform_id:
        node.SetAndObserveTransformNodeID(transform_id)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
    return node


# ----------------------------------------------------------------------------------------------
# STL export


def _safe_file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "segment"


def export_stl(seg_node, folder: os.PathLike, *, smoothing: float = DEFAULT_SMOOTHING,
               segment_ids_to_export: Optional[Iterable[str]] = None,
               overwrite: bool = False, lps: bool = True) -> List[Path]:
    """Export closed surfaces of the femur segments as STL files in millimetres.

    One file per non-empty segment, named "<segmentation node>_<segment>.stl", in LPS coordinates
    (as Slicer and ITK-based tools expect; ``lps=False`` gives RAS). Each segment's current
    voxels (after any editing) are exported on the segmentation's reference grid and meshed by
    the core's volume-preserving surface builder (:func:`FemurSegLib.surface.surface_mesh`, the
    same one `femurseg segment --stl` uses): signed-distance interpolation across the thick
    slices, ``smoothing`` voxels of Gaussian smoothing, and a contour level chosen so the enclosed
    volume matches the voxel volume, which finite-element work needs. Slicer's own closed-surface
    smoothing shrinks thin parts such as the femoral neck on 5 mm slices by more than 2%. The 3D
    view's closed surface is updated with the same smoothing factor. Existing files are refused
    unless ``overwrite``; every file is written to a temporary name and renamed into place.
    """
    from FemurSegLib import surface

    register_segmentation_converter_rules()
    ids = list(segment_ids_to_export) if segment_ids_to_export is not None else segment_ids(seg_node)
    ids = [sid for sid in ids if seg_node.GetSegmentation().GetSegment(sid) is None
           or segment_voxel_volume_mm3(seg_node, sid) > 0]  # an empty segment has no surface
    if not ids:
        raise InputError(f"{seg_node.GetName()!r} has no femur voxels to export as STL")
    target_dir = Path(folder)
    segmentation = seg_node.GetSegmentation()
    targets = {}
    for sid in ids:
        segment = segmentation.GetSegment(sid)
        if segment is None:
            raise InputError(f"no segment {sid!r} in {seg_node.GetName()!r}")
        file_name = _safe_file_name(f"{seg_node.GetName()}_{segment.GetName()}") + ".stl"
        targets[sid] = files.check_writable(target_dir / file_name, overwrite)
    update_closed_surface(seg_node, smoothing)
    scene = seg_node.GetScene()
    reference = seg_node.GetNodeReference(seg_node.GetReferenceImageGeometryReferenceRole())
    written: List[Path] = []
    for sid, target in targets.items():
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
        try:
            ids_array = vtk.vtkStringArray()
            ids_array.InsertNextValue(sid)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                seg_node, ids_array, labelmap, reference)
            if not ok:
                raise FemurSegError(f"cannot export segment {segmentation.GetSegment(sid).GetName()!r}"
                                    " as voxels")
            image = volume_node_to_image(labelmap)
        finally:
            scene.RemoveNode(labelmap)
        mask = sitk.GetArrayViewFromImage(image) > 0
        vertices, faces = surface.surface_mesh(mask, images.ijk_to_lps(image), smoothing)
        if not lps:  # RAS = LPS with x and y negated (a rotation: triangle winding stays outward)
            vertices = vertices * np.array([-1.0, -1.0, 1.0], dtype=vertices.dtype)
        surface.write_binary_stl(vertices, faces, target, overwrite=overwrite,
                                 header=f"FemurSeg {segmentation.GetSegment(sid).GetName()} "
                                        f"SPACE={'LPS' if lps else 'RAS'}")
        written.append(target)
        _warn_if_volume_differs(target, segment_voxel_volume_mm3(seg_node, sid))
    return written


#: Largest relative difference between the STL's enclosed volume and the voxel volume that is not
#: reported (met at the default smoothing on the data's resolution; strong smoothing of thick
#: slices shrinks thin parts such as the femoral neck).
STL_VOLUME_TOLERANCE = 0.02


def _warn_if_volume_differs(path: Path, voxel_mm3: float) -> None:
    import logging

    surface_mm3 = surface_volume_mm3(read_stl(path))
    if voxel_mm3 > 0 and abs(surface_mm3 - voxel_mm3) / voxel_mm3 > STL_VOLUME_TOLERANCE:
        logging.getLogger("FemurSeg").warning(
            "%s encloses %.1f ml but the segment holds %.1f ml (%+.1f%%): lower the smoothing "
            "for a closer surface", path.name, surface_mm3 / 1000, voxel_mm3 / 1000,
            100 * (surface_mm3 - voxel_mm3) / voxel_mm3)


def read_stl(path: os.PathLike):
    """Read an STL file as ``vtkPolyData`` (raises :class:`InputError` if empty)."""
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(path))
    reader.Update()
    poly = reader.GetOutput()
    if poly is None or poly.GetNumberOfCells() == 0:
        raise InputError(f"no surface in {path}")
    return poly


def surface_volume_mm3(poly) -> float:
    """Volume enclosed by a closed triangle surface (``vtkMassProperties``), in mm^3."""
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputData(poly)
    mass = vtk.vtkMassProperties()
    mass.SetInputConnection(triangles.GetOutputPort())
    mass.Update()
    return float(mass.GetVolume())


# In the Slicer application the Segmentations module registers the rules during start-up, maybe
# after this file is imported, and the factory does not skip duplicates: register here only
# outside the application (the slicer-core wheel), where nobody else does.
if not hasattr(slicer, "app"):
    register_segmentation_converter_rules()


# ----------------------------------------------------------------------------------------------
# Python dependencies of the background process

#: What ``FemurSegLib.cli segment`` needs beyond what Slicer ships (numpy and SimpleITK). scipy is
#: in Slicer too; it is listed so an old Slicer gets it. Never torch: only the fallback uses it.
INFERENCE_REQUIREMENTS = ("onnxruntime>=1.16", "slicerio>=1.0", "scipy>=1.9")

#: Packages the installation must never reinstall or upgrade (pinned by a constraints file).
PINNED_PACKAGES = ("numpy", "SimpleITK", "torch")


def requirement_name(requirement: str) -> str:
    """``"onnxruntime>=1.16"`` -> ``"onnxruntime"`` (the distribution name, as written)."""
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0]


def _installed_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_requirements(requirements: Iterable[str],
                         version_of: Callable[[str], Optional[str]] = _installed_version
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
                    version_of: Callable[[str], Optional[str]] = _installed_version) -> str:
    """pip constraints that hold the installed packages at their versions (absent ones are
    skipped: pip installs nothing because of a constraint)."""
    lines = [f"{name}=={version_of(name)}" for name in packages if version_of(name)]
    return "".join(line + "\n" for line in lines)


def write_pin_constraints(path: os.PathLike, packages: Iterable[str] = PINNED_PACKAGES) -> str:
    """Write :func:`pin_constraints` to ``path`` (replacing it); return the path as a string."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(pin_constraints(packages), encoding="utf-8")
    return str(path)


# ----------------------------------------------------------------------------------------------
# Model choices for the GUI


def model_choices(models: Iterable[object]) -> List[Tuple[str, str, str]]:
    """``(label, value, tooltip)`` per bundled model, from its card, for the model selector.

    ``models`` are ``FemurSegLib.modelfolder.ModelInfo`` objects (attributes ``name``, ``path``,
    ``card``). The label is the card's name and version, the value (passed to ``--model``) the
    model's folder, the tooltip the core's summary of the card (description, architecture,
    cross-validated DSC, intended use).
    """
    from FemurSegLib.modelfolder import describe

    choices = []
    for info in models:
        card = dict(getattr(info, "card", None) or {})
        card.setdefault("name", getattr(info, "name", "model"))
        label = " ".join(str(x) for x in (card["name"], card.get("version")) if x)
        summary = describe(card).splitlines()[1:]  # the first line repeats the label
        choices.append((label, str(getattr(info, "path", card["name"])),
                        "\n".join(line.strip() for line in summary)))
    return choices


# ----------------------------------------------------------------------------------------------
# Slicer's module scanner imports every .py file of a module folder and expects a class of the
# file's name. This hidden class keeps it from reporting an error for this helper file; it only
# exists inside the Slicer application (slicer-core has no ScriptedLoadableModule).

try:
    from slicer.ScriptedLoadableModule import ScriptedLoadableModule as _ScriptedLoadableModule
except ImportError:
    _ScriptedLoadableModule = None

if _ScriptedLoadableModule is not None:

    class FemurSegMRML(_ScriptedLoadableModule):  # pragma: no cover - needs the Slicer GUI
        """Hidden helper module: the MRML half of FemurSeg (see the module docstring)."""

        def __init__(self, parent):
            _ScriptedLoadableModule.__init__(self, parent)
            parent.title = "FemurSeg MRML helpers"
            parent.categories = ["Segmentation"]
            parent.hidden = True
            parent.contributors = ["FemurSeg contributors"]
            parent.helpText = "Helper functions of the FemurSeg module (no user interface)."
            parent.acknowledgementText = ""
