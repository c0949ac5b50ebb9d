"""FemurSegMRMLLib.models (needs no slicer-core): the model list and model choice of the panel."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from FemurSegLib.errors import FemurSegError  # noqa: E402
from slicer_helpers import model_list  # noqa: F401,E402  (puts FemurSeg/ on sys.path)
from FemurSegMRMLLib import models  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Model choices from the cards


def test_model_choices_come_from_the_cards():
    card = {"name": "femur-t1-coronal", "version": "1.0.0", "description": "3D U-Net, 4 folds.",
            "architecture": {"type": "UNet3D", "features": 16, "levels": 4},
            "folds": [{}, {}, {}, {}], "metrics": {"dsc_mean": 0.9312, "dsc_sd": 0.0204},
            "intended_use": "research, not a medical device"}
    models = [SimpleNamespace(name="femur-t1-coronal", path=Path("/models/femur-t1-coronal"),
                              card=card),
              SimpleNamespace(name="small", path=Path("/m/small"),
                              card={"name": "small", "description": "2D U-Net.",
                                    "architecture": {"type": "UNet2D", "features": 64, "levels": 3},
                                    "folds": [{}]})]
    assert model_list.model_choices(models) == [
        ("femur-t1-coronal 1.0.0", str(Path("/models/femur-t1-coronal")),
         "3D U-Net, 4 folds.\narchitecture: UNet3D F16 L4, 4 fold(s)\n"
         "cross-validated DSC: 0.931 +- 0.020\nintended use: research, not a medical device"),
        ("small", str(Path("/m/small")), "2D U-Net.\narchitecture: UNet2D F64 L3, 1 fold(s)"),
    ]


# ----------------------------------------------------------------------------------------------
# The model choice of the panel


def model_folder(root: Path, name: str) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    return str(folder)


def test_reconcile_model_choice(tmp_path):
    listed = [model_folder(tmp_path / "bundled", "femur-t1-coronal")]
    own = model_folder(tmp_path / "mine", "femur-3d")
    home = str(tmp_path)
    # A listed model stays; a folder choice stays.
    assert models.reconcile_model_choice(listed[0], home, listed) == (listed[0], home)
    assert models.reconcile_model_choice("", own, listed) == ("", own)
    # A saved model that is no longer listed: folder mode ("Model folder..." as the combo box
    # shows), the dead path is dropped; a still valid folder becomes the folder choice.
    dead = str(tmp_path / "old-extension" / "femur-t1-coronal")
    assert models.reconcile_model_choice(dead, home, listed) == ("", home)
    assert models.reconcile_model_choice(own, home, listed) == ("", own)


def test_model_to_run(tmp_path):
    listed = model_folder(tmp_path / "bundled", "femur-t1-coronal")
    own = model_folder(tmp_path / "mine", "femur-3d")
    assert models.model_to_run(listed, str(tmp_path)) == listed
    assert models.model_to_run("", own) == own
    with pytest.raises(FemurSegError, match=r"^not a FemurSeg model folder \(no model\.json\): "):
        models.model_to_run("", str(tmp_path))
    with pytest.raises(FemurSegError, match=r"^choose a model folder \(no bundled model is "
                                            r"selected\)$"):
        models.model_to_run("", None)
    with pytest.raises(FemurSegError, match=r"^the model .*gone is no longer installed: choose "
                                            r"a model$"):
        models.model_to_run(str(tmp_path / "gone"), own)
