"""FemurSegMRMLLib.job on real MRML (slicer-core): the options of a run, its command line and
the whole path volume node -> CLI subprocess -> segmentation node."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from FemurSegLib import segments  # noqa: E402
from FemurSegLib.errors import FemurSegError, InputError  # noqa: E402
from slicer_helpers import (_script, export_labelmap, jobs, make_image, MODULE_DIR, node_array,
                            os_sep, phantom, process, scene, scene_nodes, SIZE, SLICER_MARKS, stl,
                            volume, volumes)  # noqa: F401,E402

pytestmark = SLICER_MARKS


# ----------------------------------------------------------------------------------------------
# The command line of a run


@pytest.mark.parametrize("kwargs, tail", [
    ({}, ["--device", "auto", "--overwrite", "--progress", "lines"]),
    ({"model": "/m/tiny", "device": "cpu", "probabilities": "/t/p.nrrd", "tta": False,
      "split": False, "overwrite": False},
     ["--model", "/m/tiny", "--device", "cpu", "--probabilities", "/t/p.nrrd", "--no-tta",
      "--no-split", "--progress", "lines"]),
    ({"model": "femur-t1-coronal", "device": "auto"},
     ["--model", "femur-t1-coronal", "--device", "auto", "--overwrite", "--progress", "lines"]),
    ({"tta": True}, ["--device", "auto", "--tta", "--overwrite", "--progress", "lines"]),
])
def test_build_command(kwargs, tail):
    cmd = jobs.build_command("/bin/PythonSlicer", "/t/in.nrrd", "/t/out.seg.nrrd", **kwargs)
    assert cmd == ["/bin/PythonSlicer", "-m", "FemurSegLib.cli", "segment", "/t/in.nrrd",
                   "-o", "/t/out.seg.nrrd"] + tail


@pytest.mark.parametrize("device, platform, expected", [
    ("auto", "linux", "auto"), ("cpu", "win32", "cpu"), ("gpu", "linux", "cuda"),
    ("gpu", "win32", "cuda"), ("gpu", "darwin", "mps"), ("GPU", "linux", "cuda"),
    ("cuda", "linux", "cuda"), ("mps", "darwin", "mps"), ("", "linux", "auto"),
])
def test_cli_device(device, platform, expected):
    assert jobs.cli_device(device, platform) == expected


def test_cli_device_rejects_unknown():
    with pytest.raises(InputError, match=r"^unknown device 'tpu' \(choose auto, cpu or gpu\)$"):
        jobs.cli_device("tpu")


def test_cli_environment_puts_module_dir_first():
    env = jobs.cli_environment("/mod", {"PYTHONPATH": f"/a{os_sep()}/mod{os_sep()}/b", "X": "1"})
    assert env["PYTHONPATH"] == os_sep().join(["/mod", "/a", "/b"])
    assert env["X"] == "1" and env["PYTHONUNBUFFERED"] == "1" and env["PYTHONIOENCODING"] == "utf-8"
    assert jobs.cli_environment("/mod", {})["PYTHONPATH"] == "/mod"


def test_non_ascii_error_survives_a_console_that_is_not_utf8(tmp_path):
    """PYTHONIOENCODING: a Windows console code page (here: the C locale with UTF-8 coercion
    off) must not garble the CLI's one-line error."""
    cmd = _script(tmp_path, """
        import sys
        sys.stderr.write("error: Eingabe H\\u00fcfte_\\u00df.nrrd ist leer\\n")
        sys.exit(2)
    """)
    base = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "LANG": "C",
            "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    env = jobs.cli_environment(MODULE_DIR, base)
    assert env["PYTHONIOENCODING"] == "utf-8"
    with pytest.raises(FemurSegError) as caught:
        process.run_command(cmd, env=env)
    assert str(caught.value) == "Eingabe Hüfte_ß.nrrd ist leer"


# ----------------------------------------------------------------------------------------------
# The whole path: volume node -> CLI subprocess -> segmentation node


@pytest.mark.slow
def test_segment_volume_end_to_end(scene, phantom, tiny_model_dir, tmp_path):
    """Phantom volume node -> NRRD -> CLI subprocess (tiny random model) -> segmentation node."""
    volume = volumes.image_to_volume_node(phantom.image, scene, "phantom")
    stl_dir = tmp_path / "stl"
    stl_dir.mkdir()
    options = jobs.JobOptions(model=str(tiny_model_dir), device="cpu", probabilities=True,
                           tta=True, split=True, stl_folder=str(stl_dir))
    job = jobs.prepare_job(volume, python=sys.executable, module_dir=MODULE_DIR, options=options,
                        temp_root=tmp_path)
    assert job.input_path.name == "phantom.nrrd"
    assert job.command[:4] == [sys.executable, "-m", "FemurSegLib.cli", "segment"]
    assert job.cwd == MODULE_DIR and str(MODULE_DIR) == job.env["PYTHONPATH"].split(os_sep())[0]
    progress = []
    try:
        output = process.run_command(job.command, env=job.env, cwd=job.cwd,
                                     on_progress=lambda p, m: progress.append(p),
                                     ok_codes=(0, process.WARNING_EXIT_CODE))
        import slicerio
        written = slicerio.read_segmentation(str(job.output_path))
        result = jobs.finish_job(job, scene, process.warning_lines(output))
    finally:
        job.cleanup()
    assert not job.work_dir.exists()
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] == 100.0

    seg_node = result.segmentation_node
    assert seg_node.GetName() == "phantom femur segmentation"
    names = [seg_node.GetSegmentation().GetSegment(s).GetName() for s in scene_nodes.segment_ids(seg_node)]
    assert names == [s["name"] for s in written["segments"]]
    assert names == ["Right femur", "Left femur"]
    # the tiny random model's mask covers much of the phantom: exit code 3, its warning kept
    (warning,) = result.warnings
    assert re.fullmatch(r"phantom\.nrrd: the segmentation fills \d+% of the image", warning)
    for sid in scene_nodes.segment_ids(seg_node):
        assert "SCT^71341001^Femur" in seg_node.GetSegmentation().GetSegment(sid).GetTerminology()
    # The node holds exactly the voxels the CLI wrote, on the input grid.
    labelmap = export_labelmap(scene, seg_node, volume)
    np.testing.assert_allclose(volumes.ijk_to_ras(labelmap), volumes.ijk_to_ras(volume), rtol=0, atol=1e-9)
    cli_voxels = np.asarray(written["voxels"]).transpose(2, 1, 0)  # [i,j,k] -> [k,j,i]
    assert np.array_equal(node_array(labelmap), cli_voxels)

    prob = result.probability_node
    assert prob.GetName() == "phantom femur probability"
    np.testing.assert_allclose(volumes.ijk_to_ras(prob), volumes.ijk_to_ras(volume), rtol=0, atol=1e-9)
    values = node_array(prob)
    assert values.shape == cli_voxels.shape and values.dtype == np.float32
    assert values.min() >= 0.0 and values.max() <= 1.0
    non_empty = [s for s in scene_nodes.segment_ids(seg_node) if scene_nodes.segment_voxel_volume_mm3(seg_node, s) > 0]
    assert [p.name for p in result.stl_files] == [
        f"phantom_femur_segmentation_{sid}.stl" for sid in non_empty]


@pytest.mark.slow
def test_segment_volume_loads_an_implausible_result_with_its_warning(scene, phantom, tmp_path):
    """No femur found: the run finishes with exit code 3; the (empty) segmentation is loaded and
    the CLI's warning line comes with the result for the status line."""
    from conftest import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny-none", threshold=1.0)  # its softmax stays near 0.5
    volume = volumes.image_to_volume_node(phantom.image, scene, "phantom")
    stl_dir = tmp_path / "stl"
    stl_dir.mkdir()
    result = jobs.segment_volume(volume, scene, python=sys.executable, module_dir=MODULE_DIR,
                                 options=jobs.JobOptions(model=str(model), device="cpu",
                                                         stl_folder=str(stl_dir)),
                                 temp_root=tmp_path)
    assert result.warnings == ["phantom.nrrd: no femur found"]
    seg_node = result.segmentation_node
    ids = scene_nodes.segment_ids(seg_node)
    assert [seg_node.GetSegmentation().GetSegment(s).GetName() for s in ids] == [
        "Right femur", "Left femur"]
    assert all(scene_nodes.segment_voxel_volume_mm3(seg_node, s) == 0 for s in ids)
    assert result.stl_files == [] and list(stl_dir.iterdir()) == []
    assert not list(tmp_path.glob("FemurSeg-*"))  # temporary files removed


@pytest.mark.parametrize("case, message", [
    ("blank", r"^input image hip-blank\.nrrd is blank: every voxel has the value 0$"),
    ("no-model", r"^model folder not found: .*no-such-model$"),
])
@pytest.mark.slow
def test_segment_volume_errors_are_one_line(scene, volume, tiny_model_dir, tmp_path, case,
                                            message):
    if case == "blank":
        node = volumes.image_to_volume_node(make_image(np.zeros(SIZE[::-1], np.int16)), scene,
                                      "hip-blank")
        model = str(tiny_model_dir)
    else:
        node, model = volume, str(tmp_path / "no-such-model")
    n_segs = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(FemurSegError, match=message) as caught:
        jobs.segment_volume(node, scene, python=sys.executable, module_dir=MODULE_DIR,
                         options=jobs.JobOptions(model=model), temp_root=tmp_path)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == n_segs
    assert not list(tmp_path.glob("FemurSeg-*"))  # temporary files removed


@pytest.mark.slow
def test_cli_segment_path_needs_only_the_installed_requirements(volume, tiny_model_dir, tmp_path):
    """What the module installs in Slicer is enough: the CLI segments with torch, scikit-image,
    matplotlib and tqdm made unimportable."""
    volumes.write_volume_node(volume, tmp_path / "hip.nrrd")
    runner = tmp_path / "blocked.py"
    runner.write_text(textwrap.dedent("""
        import runpy, sys
        BLOCKED = {"torch", "skimage", "matplotlib", "tqdm"}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
        sys.argv = ["femurseg"] + sys.argv[1:]
        runpy.run_module("FemurSegLib.cli", run_name="__main__")
    """))
    cmd = [sys.executable, str(runner), "segment", str(tmp_path / "hip.nrrd"), "-o",
           str(tmp_path / "out.seg.nrrd"), "--model", str(tiny_model_dir), "--probabilities",
           str(tmp_path / "p.nrrd"), "--progress", "lines"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=jobs.cli_environment(MODULE_DIR))
    # 3: finished; the tiny random model's mask covers most of the image (a warning line)
    assert proc.returncode == 3, proc.stderr[-2000:]
    (warning,) = process.warning_lines(proc.stderr.splitlines())
    assert re.fullmatch(r"hip\.nrrd: the segmentation fills \d+% of the image", warning)
    assert (tmp_path / "out.seg.nrrd").is_file() and (tmp_path / "p.nrrd").is_file()
