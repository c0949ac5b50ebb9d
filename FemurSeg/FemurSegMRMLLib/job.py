"""One segmentation run: the user's options, the command line, its files and its results."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from FemurSegLib.errors import InputError

from . import scene as scene_nodes
from . import stl
from .process import (WARNING_EXIT_CODE, ProgressCallback, child_environment, run_command,
                      warning_lines)
from .volumes import safe_file_name, write_volume_node

#: Devices offered by the module; "gpu" maps to CUDA, or to MPS on macOS.
DEVICES = ("auto", "cpu", "gpu")

#: The module's flip test-time augmentation choices and the :attr:`JobOptions.tta` of each.
#: "model default" (None) sends neither ``--tta`` nor ``--no-tta``: the model card decides, as
#: for ``femurseg segment`` without either option (the bundled model turns it on for CPU and GPU).
TTA_CHOICES = {"model default": None, "on": True, "off": False}


def tta_option(choice: str) -> Optional[bool]:
    """:attr:`JobOptions.tta` for a choice of :data:`TTA_CHOICES`."""
    if choice not in TTA_CHOICES:
        raise InputError(f"unknown test-time augmentation choice {choice!r} (choose "
                         f"{', '.join(TTA_CHOICES)})")
    return TTA_CHOICES[choice]


@dataclass
class JobOptions:
    """What the user chose: model, device and options (the module's parameter node holds these)."""

    model: Optional[str] = None  # bundled model name or model folder; None: the CLI's default
    device: str = "auto"  # "auto", "cpu" or "gpu" (also accepted: "cuda", "mps")
    tta: Optional[bool] = None  # flip test-time augmentation; None: the model's default
    #                             (on a GPU; on the CPU only where the card says it pays)
    probabilities: bool = False  # also load the probability map
    split: bool = True  # "Right femur" (1) / "Left femur" (2) in every image; else "Femur"
    #: Slicer's closed-surface smoothing factor (0..1) of the surface shown in the 3D view.
    surface_smoothing: float = scene_nodes.DEFAULT_SURFACE_SMOOTHING
    #: Gaussian smoothing of the exported STL surfaces: standard deviation in voxels (0 = none),
    #: the same as ``femurseg segment --stl-smoothing``.
    stl_sigma_voxels: float = stl.DEFAULT_STL_SIGMA_VOXELS
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
    PYTHONPATH, so ``python -m FemurSegLib.cli`` finds the core that sits next to the module,
    and UTF-8, unbuffered output (:func:`.process.child_environment`)."""
    env = child_environment(base)
    paths = [str(module_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


@dataclass
class Job:
    """Files and command of one segmentation run (see the package docstring for the flow)."""

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
    #: the CLI's warnings (no femur, implausible volume, ...), shown beside the loaded result
    warnings: List[str] = field(default_factory=list)


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
            volume_node, work_dir / f"{safe_file_name(volume_node.GetName() or 'input')}.nrrd")
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


def finish_job(job: Job, scene, warnings: Sequence[str] = ()) -> JobResult:
    """Load the results of a finished run into ``scene`` (and export STL files if asked);
    ``warnings`` (:func:`.process.warning_lines` of its output: exit code 3) go with the result:
    what there is is loaded all the same."""
    volume = job.volume_node
    seg_node = scene_nodes.load_segmentation(job.output_path, scene, volume,
                                             surface_smoothing=job.options.surface_smoothing)
    result = JobResult(segmentation_node=seg_node, warnings=list(warnings))
    if job.probability_path is not None:
        result.probability_node = scene_nodes.load_probability_map(job.probability_path, scene,
                                                                   volume)
    has_voxels = any(scene_nodes.segment_voxel_volume_mm3(seg_node, sid) > 0
                     for sid in scene_nodes.segment_ids(seg_node))
    if job.options.stl_folder and has_voxels:  # no femur found: nothing to export
        result.stl_files = stl.export_stl(seg_node, job.options.stl_folder,
                                          sigma_voxels=job.options.stl_sigma_voxels,
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
        output = run_command(job.command, env=job.env, cwd=job.cwd, on_progress=on_progress,
                             is_cancelled=is_cancelled, ok_codes=(0, WARNING_EXIT_CODE))
        return finish_job(job, scene, warning_lines(output))
    finally:
        job.cleanup()
