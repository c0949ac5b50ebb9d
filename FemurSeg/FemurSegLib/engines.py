"""Inference engines: run one fold's network on a batch of patches.

An engine maps ``x`` (float32 ``[N, C, D, H, W]`` for 3D networks, ``[N, C, H, W]`` for 2D) to
class probabilities of the same layout. :class:`OnnxEngine` (ONNX Runtime) is the default: it
needs no torch. :class:`TorchEngine` is the fallback when onnxruntime is not installed or a
device it cannot serve is asked for; it imports torch only when constructed.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional

import numpy as np

from .errors import FemurSegError, ModelError
from .modelfolder import FoldFiles, Model

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")


class Engine:
    name = "engine"
    device = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class OnnxEngine(Engine):
    name = "onnxruntime"

    def __init__(self, path: os.PathLike, device: str = "auto", threads: Optional[int] = None):
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise FemurSegError("--device cuda: ONNX Runtime here has no CUDA provider "
                                "(install onnxruntime-gpu, or use --device cpu)")
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No per-session memory arena: an ensemble keeps one session per fold, and each arena
        # would hold the peak activations of a whole volume (4 folds: 1.8 GB instead of 0.7 GB).
        opts.enable_cpu_mem_arena = False
        # Worker threads sleep instead of spinning between operators: kinder to a CPU shared
        # with Slicer's GUI or other jobs, where spinning threads slowed each other down.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX graph {path}: {str(exc).splitlines()[0]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


def _import_torch():
    try:
        import torch
    except ImportError:
        raise FemurSegError("neither onnxruntime nor torch is installed: install "
                            "onnxruntime (pip install onnxruntime)") from None
    return torch


def pick_torch_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise FemurSegError("--device cuda: PyTorch sees no CUDA GPU here")
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise FemurSegError("--device mps: PyTorch sees no Apple GPU (MPS) here")
    return device


class TorchEngine(Engine):
    """A PyTorch network as an engine: the fallback of ``femurseg segment`` (from a weights
    file) and, with :meth:`from_network`, the network being trained during validation."""

    name = "torch"

    def __init__(self, weights: os.PathLike, architecture: dict, device: str = "auto"):
        torch = _import_torch()
        from .networks import build_network

        self.torch = torch
        self.device = pick_torch_device(device)
        self.net = build_network(architecture)
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"cannot load weights {weights}: {str(exc).splitlines()[0]}") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            self.net.load_state_dict(state)
        except (RuntimeError, TypeError) as exc:
            raise ModelError(f"weights {weights} do not fit the card's architecture: "
                             f"{str(exc).splitlines()[0]}") from None
        self.net.eval().to(self.device)

    @classmethod
    def from_network(cls, net, device: str = "cpu") -> "TorchEngine":
        """An engine running ``net`` as it is (already on ``device``; not copied, not put in
        eval mode: the caller decides)."""
        engine = cls.__new__(cls)
        engine.torch = _import_torch()
        engine.device = device
        engine.net = net
        return engine

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)
            if self.device == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.net(t)
            else:
                logits = self.net(t)
            return torch.softmax(logits.float(), dim=1).cpu().numpy()


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_engines(model: Model, device: str = "auto", engine: str = "auto",
                 threads: Optional[int] = None) -> List[Engine]:
    """One engine per fold of ``model``: ONNX Runtime when possible, PyTorch otherwise.

    ``engine`` is "auto", "onnx" or "torch". With "auto", ONNX Runtime is used unless it is not
    installed, the fold has no ONNX graph, or an Apple GPU (mps) was asked for.
    """
    if device not in DEVICES:
        raise FemurSegError(f"unknown device {device!r} (choose from {', '.join(DEVICES)})")
    use_onnx = engine == "onnx" or (engine == "auto" and onnxruntime_available()
                                    and device != "mps"
                                    and all(f.onnx is not None for f in model.folds))
    if engine == "onnx" and not onnxruntime_available():
        raise FemurSegError("onnxruntime is not installed (pip install onnxruntime)")
    engines: List[Engine] = []
    for f in model.folds:
        if use_onnx:
            if f.onnx is None:
                raise ModelError(f"model {model.name}: fold {f.fold} has no ONNX graph")
            engines.append(OnnxEngine(f.onnx, device, threads))
        else:
            if f.weights is None:
                raise ModelError(f"model {model.name}: fold {f.fold} has no PyTorch weights")
            engines.append(TorchEngine(f.weights, model.architecture, device))
    log.info("engine: %s on %s, %d fold(s)", engines[0].name, engines[0].device, len(engines))
    return engines


def needs_for(engine: str) -> str:
    """Which model files :func:`FemurSegLib.modelfolder.load_model` must require."""
    if engine == "onnx":
        return "onnx"
    if engine == "torch":
        return "weights"
    return "onnx" if onnxruntime_available() else "weights"


__all__ = ["Engine", "OnnxEngine", "TorchEngine", "make_engines", "pick_torch_device",
           "needs_for", "DEVICES", "FoldFiles"]
