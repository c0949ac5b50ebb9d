"""The typed card sections (FemurSegLib.specs), the one JSON reader and the shared command-line
wrapper: validation messages, round trips and exit codes."""

from __future__ import annotations

import argparse
import json

import pytest

from FemurSegLib import files
from FemurSegLib.commandline import run
from FemurSegLib.errors import FemurSegError, InputError, ModelError
from FemurSegLib.specs import InferenceSpec, InputSpec, RoiSpec


def test_inference_spec_round_trip_and_defaults():
    d = {"patch_size": [16, 128, 128], "overlap": 0.25, "divisor": [2, 8, 8], "batch_size": 4,
         "tta_flip_axes": [[2], [1, 2]], "tta_on_cpu": True, "tta_on_gpu": False,
         "roi": {"threshold": 0.1, "margin": [1, 8, 8]}, "foreground_channels": [1, 2],
         "threshold": 0.4, "postprocess": "largest", "input_size": None, "output_size": None}
    spec = InferenceSpec.from_dict(d)
    assert spec.patch_size == (16, 128, 128) and spec.roi == RoiSpec(0.1, (1, 8, 8))
    assert spec.tta_flip_axes == ((2,), (1, 2))
    assert InferenceSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict() == d
    empty = InferenceSpec.from_dict({})
    assert empty == InferenceSpec() and empty.mask_threshold == 0.5 and empty.roi is None
    assert (empty.tta_default("cpu"), empty.tta_default("gpu")) == (False, True)
    filled = InferenceSpec.from_dict({**d, "fill_slice_gaps": 150})
    assert filled.fill_slice_gaps == 150.0 and filled.to_dict() == {**d, "fill_slice_gaps": 150.0}
    assert spec.fill_slice_gaps is None  # off when absent, and then not written
    # cards written before the spec existed (flip axes as plain numbers) still read
    assert InferenceSpec.from_dict({"tta_flip_axes": [2]}).tta_flip_axes == ((2,),)


@pytest.mark.parametrize("d, message", [
    ({"colour": 1}, "inference: unknown keys colour"),
    ({"overlap": 1.5}, "inference.overlap: must be a number in [0, 0.95], not 1.5"),
    ({"divisor": [2, 8]}, "inference.divisor: must be a list of 3 integers"),
    ({"patch_size": [16, 0, 128]}, "inference.patch_size: must be an integer >= 1, not 0"),
    ({"batch_size": 2.5}, "inference.batch_size: must be an integer >= 1, not 2.5"),
    ({"tta_on_cpu": "yes"}, "inference.tta_on_cpu: must be true or false, not 'yes'"),
    ({"fill_slice_gaps": -1}, "inference.fill_slice_gaps: must be a number in [0, 1e+06], not -1"),
    ({"fill_slice_gaps": True}, "inference.fill_slice_gaps: must be a number"),
    ({"tta_flip_axes": [[3]]}, "inference.tta_flip_axes: axes must be 0, 1 or 2"),
    ({"roi": {"threshold": 2}}, "inference.roi.threshold: must be a number in [0, 1], not 2"),
    ({"roi": {"margin": [1, 2]}}, "inference.roi.margin: must be a list of 3 integers"),
    ({"postprocess": "biggest"}, "inference.postprocess: must be one of largest_per_femur, "
                                 "largest, none, not 'biggest'"),
    ({"threshold": -0.1}, "inference.threshold: must be a number in [0, 1], not -0.1"),
    ({"foreground_channels": []}, "inference.foreground_channels: must name at least one"),
    ({"input_size": 60}, "input_size and output_size go together"),
])
def test_inference_spec_rejects_with_the_field(d, message):
    with pytest.raises(ModelError) as err:
        InferenceSpec.from_dict(d)
    assert message in str(err.value)


@pytest.mark.parametrize("d, message", [
    ({"orientation": "LIX"}, "input.orientation: 'LIX' is not a three-letter code"),
    ({"orientation": "LLP"}, "input.orientation: 'LLP' is not a three-letter code"),
    ({"spacing": [1, 1]}, "input.spacing: must be null or three positive numbers"),
    ({"spacing": [1, 0, 1]}, "input.spacing: must be null or three positive numbers"),
    ({"normalisation": {"method": "minmax"}}, "input.normalisation.method: must be percentile"),
    ({"extra": 1}, "input: unknown keys extra"),
])
def test_input_spec_rejects_with_the_field(d, message):
    with pytest.raises(ModelError) as err:
        InputSpec.from_dict(d)
    assert message in str(err.value)


def test_input_spec_round_trip():
    spec = InputSpec.from_dict({"orientation": "rps", "spacing": [1, 2, 3]})
    assert spec.orientation == "RPS" and spec.spacing == (1.0, 2.0, 3.0)
    assert InputSpec.from_dict(spec.to_dict()) == spec


def test_card_with_a_bad_inference_section_is_refused_when_read(tiny_model_dir, tmp_path):
    import shutil

    from FemurSegLib.modelfolder import load_model, read_card

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    card["inference"]["postprocess"] = "everything"
    (model / "model.json").write_text(json.dumps(card), encoding="utf-8")
    with pytest.raises(ModelError, match=r"model card .*model.json: inference.postprocess: "
                                         "must be one of"):
        read_card(model)
    with pytest.raises(ModelError, match="inference.postprocess"):
        load_model(model)


# ----------------------------------------------------------------------------------------------
# read_json


@pytest.mark.parametrize("content, kind, message", [
    (None, dict, "cannot read thing {p}: No such file or directory"),
    ("{oops", dict, "thing {p} is not valid JSON: Expecting property name"),
    ("[1, 2]", dict, "thing {p} is not a JSON object"),
    ("{}", list, "thing {p} is not a JSON list"),
    (b"\xff\xfe{", dict, "thing {p} is not valid JSON: not UTF-8 text"),
])
def test_read_json_errors_are_one_line(tmp_path, content, kind, message):
    p = tmp_path / "x.json"
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as err:
        files.read_json(p, "thing", InputError, kind=kind)
    assert str(err.value).startswith(message.format(p=p))
    assert "\n" not in str(err.value)


def test_read_json_reads_objects_and_lists(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": [1, 2]}', encoding="utf-8")
    assert files.read_json(p, "thing") == {"a": [1, 2]}
    p.write_text("[1]", encoding="utf-8")
    assert files.read_json(p, "thing", kind=list) == [1]


def test_json_ready():
    import numpy as np

    assert files.json_ready({"a": float("nan"), 1: (np.float32(0.5), np.int64(3), float("inf"))}) \
        == {"a": None, "1": [0.5, 3, None]}


# ----------------------------------------------------------------------------------------------
# the shared command-line wrapper


@pytest.mark.parametrize("exc, code, line", [
    (None, 0, ""),
    (FemurSegError("bad\ninput"), 2, "error: bad input\n"),
    (KeyboardInterrupt(), 130, "error: stopped here\n"),
    (RuntimeError("boom"), 1, "error: internal error (RuntimeError: boom); rerun with --debug "
                              "for details\n"),
])
def test_run_maps_exceptions_to_one_line_and_exit_code(capsys, exc, code, line):
    def func(args):
        if exc is not None:
            raise exc
        return 0

    assert run(func, argparse.Namespace(debug=False), interrupted="stopped here") == code
    assert capsys.readouterr().err == line


def test_run_reraises_internal_errors_with_debug():
    def func(args):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run(func, argparse.Namespace(debug=True))


def test_both_command_lines_use_the_wrapper(tmp_path, capsys):
    from FemurSegLib.cli import main as femurseg
    from FemurSegTraining.cli import main as femurseg_train

    assert femurseg(["evaluate", str(tmp_path / "a.nii.gz"), str(tmp_path / "b.nii.gz")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    # the training CLI takes a user error's own exit code (no hard-coded 2)
    assert femurseg_train(["evaluate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} is not a run folder (no run.json)\n"
