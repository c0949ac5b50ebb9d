"""The model-folder contract: card validation, SHA-256 verification, lookup, engines agree."""

import json
import shutil

import numpy as np
import pytest

from FemurSegLib import modelfolder
from FemurSegLib.engines import OnnxEngine, TorchEngine, make_engines
from FemurSegLib.errors import ModelError


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    return d


def test_load_verifies_and_describes(tiny_model_dir):
    m = modelfolder.load_model(tiny_model_dir)
    assert m.name == "tiny-3d"
    assert [f.fold for f in m.folds] == [0, 1]
    assert all(f.onnx.is_file() and f.weights.is_file() for f in m.folds)
    assert m.threshold == 0.5  # the card has none
    assert m.input.spacing == (3.6, 3.6, 5.2)
    assert [s.name for s in m.segments(split=True)] == ["Right femur", "Left femur"]
    assert [s.name for s in m.segments(split=False)] == ["Femur"]
    assert "tiny-3d" in modelfolder.describe(m.card)


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "fold_0.onnx").write_bytes((d / "fold_0.onnx").read_bytes()[:-10]),
     "fold_0.onnx fails its SHA-256 check"),
    (lambda d: (d / "fold_1.pt").write_bytes(b"x" + (d / "fold_1.pt").read_bytes()[1:]),
     "fold_1.pt fails its SHA-256 check"),
    (lambda d: (d / "fold_1.onnx").unlink(), "missing file fold_1.onnx"),
    (lambda d: (d / "model.json").write_text("{not json"), "is not valid JSON"),
    (lambda d: (d / "model.json").unlink(), "not a model folder"),
])
def test_damaged_model_is_refused(model_copy, damage, message):
    damage(model_copy)
    with pytest.raises(ModelError, match=message):
        modelfolder.load_model(model_copy)


def _edit_card(d, **changes):
    card = json.loads((d / "model.json").read_text(encoding="utf-8"))
    card.update(changes)
    (d / "model.json").write_text(json.dumps(card))
    return card


def test_card_without_checksum_is_refused(model_copy):
    card = json.loads((model_copy / "model.json").read_text(encoding="utf-8"))
    del card["folds"][0]["onnx_sha256"]
    (model_copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="no SHA-256 for fold_0.onnx"):
        modelfolder.load_model(model_copy)


def test_card_pointing_outside_is_refused(model_copy):
    card = json.loads((model_copy / "model.json").read_text(encoding="utf-8"))
    card["folds"][0]["onnx"] = "../elsewhere.onnx"
    (model_copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="outside the model folder"):
        modelfolder.load_model(model_copy)


@pytest.mark.parametrize("changes,message", [
    ({"format_version": 99}, "has format 99"),
    ({"folds": []}, "lists no folds"),
])
def test_card_fields_checked(model_copy, changes, message):
    _edit_card(model_copy, **changes)
    with pytest.raises(ModelError, match=message):
        modelfolder.load_model(model_copy)


def test_missing_field_named(model_copy):
    card = json.loads((model_copy / "model.json").read_text(encoding="utf-8"))
    del card["labels"]
    (model_copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="lacks labels"):
        modelfolder.read_card(model_copy)


def test_fold_selection(tiny_model_dir):
    assert [f.fold for f in modelfolder.load_model(tiny_model_dir, folds=[1]).folds] == [1]
    with pytest.raises(ModelError, match=r"has folds \[0, 1\], not \[3\]"):
        modelfolder.load_model(tiny_model_dir, folds=[3])


def test_threshold_from_card(model_copy):
    card = json.loads((model_copy / "model.json").read_text(encoding="utf-8"))
    card["inference"]["threshold"] = 0.37
    (model_copy / "model.json").write_text(json.dumps(card))
    assert modelfolder.load_model(model_copy).threshold == pytest.approx(0.37)


def test_lookup_installed_models(model_copy, monkeypatch, tmp_path):
    monkeypatch.setenv("FEMURSEG_MODELS", str(model_copy.parent))
    names = [m.name for m in modelfolder.list_models()]
    assert "tiny-3d" in names
    assert modelfolder.find_model("tiny-3d") == model_copy
    assert modelfolder.find_model(str(model_copy)) == model_copy
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        modelfolder.find_model("nope")


def test_onnx_and_torch_engines_agree(tiny_model_dir):
    m = modelfolder.load_model(tiny_model_dir)
    x = np.random.default_rng(0).random((1, 1, 4, 16, 16), dtype=np.float32)
    a = OnnxEngine(m.folds[0].onnx)(x)
    b = TorchEngine(m.folds[0].weights, m.architecture, "cpu")(x)
    assert a.shape == b.shape == (1, 2, 4, 16, 16)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a.sum(1), 1.0, atol=1e-5)


def test_engine_selection(tiny_model_dir):
    m = modelfolder.load_model(tiny_model_dir)
    assert [e.name for e in make_engines(m, "cpu")] == ["onnxruntime", "onnxruntime"]
    assert [e.name for e in make_engines(m, "cpu", engine="torch")] == ["torch", "torch"]
    with pytest.raises(Exception, match="unknown device 'tpu'"):
        make_engines(m, "tpu")


def test_torch_engine_refuses_non_tensor_pickle(tmp_path, tiny_model_dir):
    """weights_only=True: a pickle that would run code is refused with a one-line error."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps(Evil()))
    arch = modelfolder.load_model(tiny_model_dir).architecture
    with pytest.raises(ModelError, match="cannot load weights"):
        TorchEngine(p, arch, "cpu")


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("features"), r"architecture: missing keys features$"),
    (lambda a: a.update(type="UNet4D"), r"architecture\.type: must be one of UNet3D, UNet2D, "
                                        r"UNet25D, not 'UNet4D'$"),
    (lambda a: a.update(colour="red"), r"architecture \(UNet3D\): unknown keys colour"),
    (lambda a: a.update(norm="group"), r"architecture\.norm: must be one of none, batch, "
                                       r"instance, not 'group'$"),
    (lambda a: a.update(pooling=[[1, 2, 2]]), r"architecture\.pooling: must have levels - 1 = "
                                              r"2 entries, not 1$"),
])
def test_card_architecture_is_typed(model_copy, capsys, change, message):
    """A card's architecture is checked when the card is read: a missing key is one error line
    (exit 2) naming it, not a KeyError when the network is built."""
    from FemurSegLib.cli import main

    card = json.loads((model_copy / "model.json").read_text(encoding="utf-8"))
    change(card["architecture"])
    (model_copy / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=rf"^model card {model_copy / 'model.json'}: {message}"):
        modelfolder.read_card(model_copy)
    assert main(["segment", str(model_copy / "none.nii.gz"), "-o", str(model_copy / "o.nii.gz"),
                 "--model", str(model_copy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "architecture" in err, err


def test_architecture_spec_round_trip():
    from FemurSegLib.specs import ArchitectureSpec

    arch = {"type": "UNet3D", "in_channels": 1, "num_classes": 2, "features": 4, "levels": 3,
            "pooling": [[1, 2, 2], [2, 2, 2]], "norm": "none"}
    spec = ArchitectureSpec.from_dict(arch)
    assert spec.pooling == ((1, 2, 2), (2, 2, 2)) and spec.max_features is None
    assert spec.to_dict() == arch


@pytest.mark.parametrize("deep, message", [
    (2, None),
    (0, None),
    (3, r"deep_supervision: must be an integer in \[0, levels - 2 = 2\], not 3"),
    (True, r"deep_supervision: must be an integer in \[0, levels - 2 = 2\], not True"),
])
def test_architecture_deep_supervision(deep, message):
    from FemurSegLib.specs import ArchitectureSpec

    arch = {"type": "UNet25D", "in_channels": 5, "num_classes": 5, "features": 4, "levels": 4,
            "deep_supervision": deep}
    if message is None:
        spec = ArchitectureSpec.from_dict(arch)
        assert spec.deep_supervision == deep and spec.to_dict() == arch
    else:
        with pytest.raises(ModelError, match=message):
            ArchitectureSpec.from_dict(arch)
    with pytest.raises(ModelError, match=r"\(UNet3D\): unknown keys deep_supervision"):
        ArchitectureSpec.from_dict({**arch, "type": "UNet3D"})
