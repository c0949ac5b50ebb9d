"""Shared fixtures: tiny randomly initialised model folders (never presented as results)."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hip-mri-t1"
#: PyTorch is optional (`[torch]` or `[train]`; development pins it in the Makefile): the tests
#: that train, export or run the fallback engine skip with this reason without it.
TORCH_MISSING = "needs PyTorch, which [test] does not install: pip install torch (or femurseg[train])"


def require_torch():
    """The torch module, or a skip with :data:`TORCH_MISSING` when it is not installed."""
    return pytest.importorskip("torch", reason=TORCH_MISSING)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: on two busy cores torch's default two threads train
    many times slower than one."""
    torch = require_torch()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def real_data_dir() -> Path:
    """The shared real data folder; tests that need it skip with a reason when it is absent."""
    if not (REAL_DATA / "imagesTr").is_dir():
        pytest.skip(f"real hip MR data not present at {REAL_DATA} (only on the development machine)")
    return REAL_DATA


def make_tiny_model(out_dir: Path, *, kind: str = "3d", seed: int = 0, threshold=None) -> Path:
    """A small, randomly initialised model folder (with .pt and .onnx) for end-to-end tests."""
    torch = require_torch()

    from FemurSegLib.networks import build_network
    from FemurSegTraining.cards import make_card
    from FemurSegTraining.modelwriter import write_model_folder

    torch.manual_seed(seed)
    if kind == "3d":
        arch = {"type": "UNet3D", "in_channels": 1, "num_classes": 2, "features": 4,
                "levels": 3, "pooling": [[1, 2, 2], [2, 2, 2]], "norm": "none"}
        inference = {"patch_size": None, "divisor": [2, 4, 4], "overlap": 0.5,
                     "tta_flip_axes": [[2]], "threshold": threshold}
    else:
        arch = {"type": "UNet2D", "in_channels": 3, "num_classes": 2, "features": 4,
                "levels": 2, "norm": "none"}
        net = build_network(arch)
        inference = {"input_size": 60, "output_size": net.output_size(60),
                     "tta_flip_axes": [[2]], "threshold": threshold}
    nets = {0: build_network(arch), 1: build_network(arch)}
    card = make_card(name=f"tiny-{kind}", version="0.0.1",
                     description="Tiny randomly initialised test model: NOT a trained model.",
                     architecture=arch,
                     input_spec={"orientation": "LIP", "spacing": [3.6, 3.6, 5.2],
                                 "normalisation": {"method": "percentile",
                                                   "percentiles": [0.5, 99.5]}},
                     inference=inference)
    return write_model_folder(out_dir, card, nets,
                              check_shape=(8, 16, 16) if kind == "3d" else None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-3d")


@pytest.fixture(scope="session")
def tiny_model_2d_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models2d") / "tiny-2d", kind="2d")


@pytest.fixture(scope="module")
def shared_segmenters():
    """One loaded :class:`~FemurSegLib.inference.Segmenter` per model folder and settings for a
    whole test module: ``femurseg segment`` called in-process (``cli.main``) then loads the
    bundled model once, not for every call. For tests that do not need a fresh process and never
    change a model folder in place (a changed card gives a new entry: its size and time are in
    the key). Yields the cache (``{key: segmenter}``)."""
    import os

    from FemurSegLib.inference import Segmenter

    cache = {}
    load = Segmenter.from_folder.__func__

    def from_folder(cls, model_dir, **kwargs):
        card = Path(model_dir) / "model.json"
        stat = os.stat(card) if card.is_file() else None
        key = (str(Path(model_dir).resolve()), stat and (stat.st_size, stat.st_mtime_ns),
               tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in cache:
            cache[key] = load(cls, model_dir, **kwargs)
        return cache[key]

    patch = pytest.MonkeyPatch()
    patch.setattr(Segmenter, "from_folder", classmethod(from_folder))
    yield cache
    patch.undo()
