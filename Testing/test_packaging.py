"""A non-editable install (``pip install .``, a wheel) works outside the source tree: the named
training configs and the bundled default model are package data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "FemurSeg/FemurSegLib",
           "FemurSeg/FemurSegReview", "FemurSegTraining", "Resources/Models"]


@pytest.mark.slow
def test_a_non_editable_install_finds_the_configs_and_the_bundled_model(tmp_path):
    src = tmp_path / "src"
    for rel in SOURCES:  # a copy: an in-tree build would write build/ into the checkout
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / rel).is_dir() else shutil.copy2
        copy(ROOT / rel, src / rel, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                       if (ROOT / rel).is_dir() else {}))
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--no-build-isolation", "--no-index", "--target", str(site), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    code = ("import FemurSegLib, FemurSegTraining.config as c\n"
            "from FemurSegLib.modelfolder import find_model, load_model\n"
            "print(FemurSegLib.__file__)\n"
            "print(c.load_config('default_25d_f16l5_long')['name'])\n"
            "print(sorted(p.stem for p in c.CONFIG_DIR.rglob('*.json')) != [])\n"
            "print(load_model(find_model()).name)\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    where, config, listed, model = res.stdout.splitlines()
    assert Path(where).is_relative_to(site)  # the installed copy, not the checkout
    assert (config, listed, model) == ("default_25d_f16l5_long", "True", "femur-t1-coronal")
