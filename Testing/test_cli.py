"""The femurseg command line end to end: outputs on the input grid, errors, exit codes."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegLib import images
from FemurSegLib.cli import main
from geometry_helpers import blob, oblique_image


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    shape = (10, 48, 40)
    rng = np.random.default_rng(3)
    arr = (blob(shape, centre=[5, 24, 10], radius=(3, 10, 6)).astype(float)
           + blob(shape, centre=[5, 24, 30], radius=(3, 10, 6))) * 800 + rng.normal(100, 10, shape)
    img = oblique_image(arr.astype(np.int16), spacing=(1.8, 1.8, 5.2))
    path = tmp_path_factory.mktemp("scan") / "hip.nii.gz"
    sitk.WriteImage(img, str(path))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_tiny_result(code, err, *names):
    """The tiny random model's segmentation covers most of each image: the run finishes with
    exit code 3 and one warning line per input (the outputs are written all the same)."""
    lines = err.splitlines()
    assert code == 3, err
    assert len(lines) == len(names), err
    for line, name in zip(lines, names):
        assert re.fullmatch(rf"warning: {re.escape(name)}: the segmentation fills \d+% of the "
                            r"image", line), line


@pytest.mark.slow
def test_segment_writes_all_outputs_on_input_grid(tmp_path, capsys, scan, tiny_model_dir):
    out = tmp_path / "hip.seg.nrrd"
    code, stdout, err = run(capsys, "segment", scan, "-o", out, "--model", tiny_model_dir,
                            "--probabilities", tmp_path / "p.nrrd", "--stl", tmp_path / "stl",
                            "--report", tmp_path / "report", "--quiet")
    assert_tiny_result(code, err, "hip.nii.gz")
    assert stdout == ""  # --quiet
    img = sitk.ReadImage(str(scan))
    import slicerio
    seg = slicerio.read_segmentation(str(out))
    np.testing.assert_allclose(seg["ijkToLPS"], images.ijk_to_lps(img), atol=1e-4)
    assert seg["voxels"].shape == img.GetSize()  # slicerio arrays are [i, j, k]
    assert [s["name"] for s in seg["segments"]] in (["Femur"], ["Right femur", "Left femur"])
    # the same run written as a label map holds the same voxels
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "lab.nii.gz", "--model",
                       tiny_model_dir, "--quiet")
    assert_tiny_result(code, err, "hip.nii.gz")
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "lab.nii.gz")))
    np.testing.assert_array_equal(seg["voxels"].transpose(2, 1, 0), lab)
    prob = sitk.ReadImage(str(tmp_path / "p.nrrd"))
    assert images.grid_mismatch(prob, img) == ""
    assert (tmp_path / "report" / "report.png").is_file()
    assert json.loads((tmp_path / "report" / "volumes.json").read_text(encoding="utf-8"))
    # one binary STL per segment with voxels, named by its segment ID, in LPS millimetres
    present = [s for s in seg["segments"] if np.any(seg["voxels"] == s["labelValue"])]
    assert present
    assert sorted(p.name for p in (tmp_path / "stl").iterdir()) == sorted(
        f"{s['id']}.stl" for s in present)
    lps = images.ijk_to_lps(img)
    corners = np.array([lps @ [i, j, k, 1] for i in (0, img.GetSize()[0] - 1)
                        for j in (0, img.GetSize()[1] - 1) for k in (0, img.GetSize()[2] - 1)])
    for s in present:
        data = (tmp_path / "stl" / f"{s['id']}.stl").read_bytes()
        n = int(np.frombuffer(data[80:84], "<u4")[0])
        assert n > 0 and len(data) == 84 + 50 * n
        assert b"SPACE=LPS" in data[:80]
        tri = np.frombuffer(data[84:], np.dtype([("n", "<f4", 3), ("v", "<f4", (3, 3)),
                                                 ("a", "<u2")]))["v"].reshape(-1, 3)
        margin = 2 * max(img.GetSpacing())  # surfaces lie inside the image's box (smoothing)
        assert np.all(tri >= corners[:, :3].min(axis=0) - margin)
        assert np.all(tri <= corners[:, :3].max(axis=0) + margin)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_segment_label_map_formats_keep_grid(tmp_path, capsys, scan, tiny_model_dir, suffix):
    out = tmp_path / f"lab{suffix}"
    code, _, err = run(capsys, "segment", scan, "-o", out, "--model", tiny_model_dir, "--quiet",
                       "--no-tta")
    assert_tiny_result(code, err, "hip.nii.gz")
    assert images.grid_mismatch(sitk.ReadImage(str(out)), sitk.ReadImage(str(scan))) == ""


def test_several_inputs_load_model_once(tmp_path, capsys, scan, tiny_model_dir):
    second = tmp_path / "in" / "other.nrrd"
    second.parent.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(scan)), str(second))
    code, stdout, err = run(capsys, "segment", scan, second, "-o", tmp_path / "out",
                            "--model", tiny_model_dir, "--format", ".nii.gz", "--no-tta",
                            "--progress", "none")
    assert_tiny_result(code, err, "hip.nii.gz", "other.nrrd")
    assert stdout.count("loaded in") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hip.nii.gz", "other.nii.gz"]


def test_existing_output_not_overwritten(tmp_path, capsys, scan, tiny_model_dir):
    out = tmp_path / "o.nii.gz"
    out.write_bytes(b"precious")
    code, _, err = run(capsys, "segment", scan, "-o", out, "--model", tiny_model_dir)
    assert code == 2
    assert err == f"error: output exists: {out} (use --overwrite to replace it)\n"
    assert out.read_bytes() == b"precious"
    code, _, err = run(capsys, "segment", scan, "-o", out, "--model", tiny_model_dir,
                       "--overwrite", "--quiet", "--no-tta")
    assert_tiny_result(code, err, "hip.nii.gz")
    assert out.read_bytes() != b"precious"


def _bad_inputs(tmp):
    two_d = tmp / "slice.nrrd"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16) + 3, str(two_d))
    blank = tmp / "blank.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkInt16), str(blank))
    nan = tmp / "nan.nrrd"
    a = np.ones((4, 8, 8), np.float32)
    a[0, 0, 0] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(a), str(nan))
    txt = tmp / "scan.txt"
    txt.write_text("not an image")
    return {"missing": (tmp / "nope.nii.gz", "input not found"),
            "2d": (two_d, "is 2D; a 3D volume is required"),
            "blank": (blank, "is blank"),
            "nan": (nan, "non-finite voxel values"),
            "format": (txt, "unknown input format: scan.txt")}


@pytest.mark.parametrize("case", ["missing", "2d", "blank", "nan", "format"])
def test_bad_input_one_line_exit_2(tmp_path, capsys, tiny_model_dir, case):
    path, message = _bad_inputs(tmp_path)[case]
    code, _, err = run(capsys, "segment", path, "-o", tmp_path / "o.nii.gz",
                       "--model", tiny_model_dir)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_tampered_model_refused(tmp_path, capsys, scan, tiny_model_dir):
    bad = tmp_path / "model"
    shutil.copytree(tiny_model_dir, bad)
    data = bytearray((bad / "fold_0.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "fold_0.onnx").write_bytes(bytes(data))
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "o.nii.gz", "--model", bad)
    assert code == 2
    assert "fold_0.onnx fails its SHA-256 check" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv,message", [
    (["segment", "x.nii.gz", "-o", "y.nii.gz", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["segment", "x.nii.gz"], "the following arguments are required: -o/--output"),
    (["segment", "x.nii.gz", "-o", "y.nii.gz", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors(tmp_path, capsys, scan, argv, message):
    argv = [str(scan) if a == "x.nii.gz" else str(tmp_path / a) if a == "y.nii.gz" else a
            for a in argv]
    try:
        code = main(argv)          # errors found after parsing return 2
    except SystemExit as ex:       # argparse errors exit 2
        code = ex.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


def test_no_default_model_says_so(tmp_path, capsys, scan, monkeypatch):
    monkeypatch.setenv("FEMURSEG_MODELS", str(tmp_path / "none"))
    monkeypatch.setattr("FemurSegLib.modelfolder.bundled_models_dir", lambda: tmp_path / "none")
    code, _, err = run(capsys, "segment", scan, "-o", tmp_path / "o.nii.gz")
    assert code == 2
    assert "no trained model is installed" in err


def test_evaluate_known_answer(tmp_path, capsys):
    ref = np.zeros((4, 5, 5), np.uint8)
    ref[1:3, 1:4, 1:4] = 1          # 18 voxels
    pred = np.zeros_like(ref)
    pred[1:3, 1:4, 2:4] = 1         # 12 voxels, all inside
    img = lambda a: oblique_image(a, spacing=(1.0, 1.0, 2.0))
    sitk.WriteImage(img(ref), str(tmp_path / "ref.nrrd"))
    sitk.WriteImage(img(pred * 2), str(tmp_path / "pred.nrrd"))  # label 2 = left femur counts
    code, out, err = run(capsys, "evaluate", tmp_path / "pred.nrrd", tmp_path / "ref.nrrd",
                         "--json", tmp_path / "m.json")
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert m["dsc"] == pytest.approx(2 * 12 / 30)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(12 / 18)
    assert m["volume_ref_ml"] == pytest.approx(18 * 2.0 / 1000)
    assert "dsc" in out


def test_evaluate_errors(tmp_path, capsys):
    a = oblique_image(np.ones((2, 3, 3), np.uint8))
    b = oblique_image(np.ones((2, 3, 4), np.uint8))
    sitk.WriteImage(a, str(tmp_path / "a.nrrd"))
    sitk.WriteImage(b, str(tmp_path / "b.nrrd"))
    code, _, err = run(capsys, "evaluate", tmp_path / "a.nrrd", tmp_path / "b.nrrd")
    assert code == 2 and "different grids: size" in err
    code, _, err = run(capsys, "evaluate", tmp_path / "a.nrrd", tmp_path / "a.nrrd", "--label", 3)
    assert code == 2 and "has no voxel with label 3" in err


def test_models_lists_installed(tmp_path, capsys, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("FEMURSEG_MODELS", str(tiny_model_dir.parent))
    code, out, _ = run(capsys, "models")
    assert code == 0 and "[installed]" in out and "tiny-3d" in out


@pytest.mark.slow
def test_segment_path_does_not_import_torch(tmp_path, scan, tiny_model_dir):
    code = ("import sys; from FemurSegLib.cli import main; "
            f"rc = main(['segment', {str(scan)!r}, '-o', {str(tmp_path / 'o.seg.nrrd')!r}, "
            f"'--model', {str(tiny_model_dir)!r}, '--quiet']); "
            "print(rc, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["3", "False"], res.stderr  # 3: the tiny model's result


@pytest.mark.slow
def test_progress_lines_for_the_slicer_module(tmp_path, scan, tiny_model_dir):
    res = subprocess.run([sys.executable, "-m", "FemurSegLib.cli", "segment", str(scan), "-o",
                          str(tmp_path / "o.seg.nrrd"), "--model", str(tiny_model_dir),
                          "--progress", "lines", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr  # finished; the tiny model's result is implausible
    pct = [int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("PROGRESS ")]
    assert pct[0] == 0 and pct[-1] == 100 and pct == sorted(pct)


def _femur_pair_images(tmp_path):
    """Reference with a right femur (12 voxels at low i) and a left femur (24 voxels at high i)
    on a 1 x 1 x 2 mm grid; the prediction finds the right one exactly and half the left one,
    plus a stray voxel on the left side."""
    ref = np.zeros((4, 5, 14), np.uint8)
    ref[1:3, 1:4, 1:3] = 1           # right femur: 2 x 3 x 2 = 12 voxels
    ref[1:3, 1:4, 9:13] = 1          # left femur: 2 x 3 x 4 = 24 voxels
    pred = np.zeros_like(ref)
    pred[1:3, 1:4, 1:3] = 1          # right: exact
    pred[1:3, 1:4, 9:11] = 2         # left: 12 of 24
    pred[0, 0, 13] = 2               # a stray voxel on the left side
    img = lambda a: oblique_image(a, spacing=(1.0, 1.0, 2.0))
    return img(pred), img(ref)


def test_evaluate_reports_each_femur(tmp_path, capsys):
    pred, ref = _femur_pair_images(tmp_path)
    sitk.WriteImage(pred, str(tmp_path / "pred.nrrd"))
    sitk.WriteImage(ref, str(tmp_path / "ref.nrrd"))
    code, out, err = run(capsys, "evaluate", tmp_path / "pred.nrrd", tmp_path / "ref.nrrd",
                         "--json", tmp_path / "m.json", "--csv", tmp_path / "m.csv")
    assert code == 0, err
    m = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert m["dsc"] == pytest.approx(2 * 24 / (25 + 36))     # both together
    assert m["right"]["dsc"] == pytest.approx(1.0)
    assert m["left"]["dsc"] == pytest.approx(2 * 12 / (13 + 24))
    assert m["left"]["precision"] == pytest.approx(12 / 13)
    assert m["left"]["volume_ref_ml"] == pytest.approx(24 * 2.0 / 1000)
    rows = (tmp_path / "m.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == ("case,femur,dsc,precision,recall,specificity,hd95_mm,assd_mm,"
                       "volume_pred_ml,volume_ref_ml,prediction,reference")
    assert [r.split(",")[:2] for r in rows[1:]] == [["pred", "both"], ["pred", "right"],
                                                    ["pred", "left"]]
    assert float(rows[2].split(",")[2]) == pytest.approx(1.0)
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["both", "right", "left"]


def test_evaluate_two_folders_pairs_by_case_name(tmp_path, capsys):
    from FemurSegLib import writers
    from FemurSegLib.segments import femur_segments

    pred, ref = _femur_pair_images(tmp_path)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    sitk.WriteImage(pred, str(tmp_path / "pred" / "hip01.nii.gz"))
    writers.write_seg_nrrd(pred, femur_segments(True), tmp_path / "pred" / "hip02.seg.nrrd")
    sitk.WriteImage(pred, str(tmp_path / "pred" / "hip03.nii.gz"))        # no reference
    sitk.WriteImage(ref, str(tmp_path / "ref" / "hip01.nii.gz"))
    sitk.WriteImage(ref, str(tmp_path / "ref" / "hip02.nii.gz"))
    sitk.WriteImage(ref, str(tmp_path / "ref" / "hip04.nii.gz"))          # no prediction
    code, out, err = run(capsys, "evaluate", tmp_path / "pred", tmp_path / "ref", "--json",
                         tmp_path / "m.json", "--csv", tmp_path / "m.csv")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "unpaired predictions (left out): hip03"
    assert lines[1] == "unpaired references (left out): hip04"
    assert [line.split()[:2] for line in lines[3:]] == [
        ["hip01", "both"], ["hip01", "right"], ["hip01", "left"],
        ["hip02", "both"], ["hip02", "right"], ["hip02", "left"],
        ["mean", "both"], ["mean", "right"], ["mean", "left"]]
    m = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert [c["case"] for c in m["cases"]] == ["hip01", "hip02"]
    assert m["unpaired"] == {"predictions": ["hip03"], "references": ["hip04"]}
    assert m["summary"]["left"]["cases"] == 2
    assert m["summary"]["left"]["dsc"]["mean"] == pytest.approx(2 * 12 / (13 + 24))
    assert m["summary"]["right"]["dsc"] == {"mean": pytest.approx(1.0), "sd": pytest.approx(0.0)}
    assert len((tmp_path / "m.csv").read_text(encoding="utf-8").splitlines()) == 1 + 6


@pytest.mark.parametrize("setup, message", [
    ("file-and-folder", "give two files or two folders (pairs by case name), not one of each"),
    ("no-pairs", "no case has both a prediction in {tmp}/pred and a reference in {tmp}/ref "
                 "(files pair by case name: hip01.seg.nrrd with hip01.nii.gz)"),
    ("two-of-a-case", "two prediction files of case hip01 in {tmp}/pred: hip01.nii.gz, "
                      "hip01_0000.nrrd"),
])
def test_evaluate_folder_errors(tmp_path, capsys, setup, message):
    pred, ref = _femur_pair_images(tmp_path)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    sitk.WriteImage(pred, str(tmp_path / "pred" / "hip01.nii.gz"))
    sitk.WriteImage(ref, str(tmp_path / "ref" / ("hip02.nii.gz" if setup == "no-pairs"
                                                 else "hip01.nii.gz")))
    if setup == "two-of-a-case":
        sitk.WriteImage(pred, str(tmp_path / "pred" / "hip01_0000.nrrd"))
    second = tmp_path / "ref" / "hip01.nii.gz" if setup == "file-and-folder" else tmp_path / "ref"
    code, _, err = run(capsys, "evaluate", tmp_path / "pred", second)
    assert code == 2
    assert err == f"error: {message.format(tmp=tmp_path)}\n"


def test_readme_synopsis_lists_every_option():
    """The README's command synopsis (the block under '## Command line') names every option of
    every command, and the exit codes and label values are documented."""
    from pathlib import Path

    from FemurSegLib.cli import build_parser

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Command line", 1)[1]
    synopsis = section.split("```", 2)[1]
    parser = build_parser()
    missing = []
    commands = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0]
    for name, sub in [("femurseg", parser)] + list(commands.choices.items()):
        if name != "femurseg":
            assert f"femurseg {name} " in synopsis, name
        for action in sub._actions:
            longest = max(action.option_strings, key=len, default=None)
            if longest and longest != "--help" and longest not in synopsis:
                missing.append(f"{name} {longest}")
    assert missing == []
    assert "**0** finished, every result plausible; **3** finished" in section
    assert "**1 = right femur, 2 = left femur**" in section and "**1 =\n  femur**" in section
