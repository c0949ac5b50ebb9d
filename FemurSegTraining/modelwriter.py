"""Write model folders (see :mod:`FemurSegLib.modelfolder` for the contract; the card comes
from :mod:`.cards`, the export command is :mod:`.export`).

Each fold's network is saved as a PyTorch state dict (``fold_K.pt``) and as an ONNX graph with
the softmax head (``fold_K.onnx``); the card records both SHA-256 sums. After writing, the ONNX
graph is run with ONNX Runtime on a test input and must agree with PyTorch to ``atol``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from FemurSegLib.errors import FemurSegError
from FemurSegLib.files import replace_folder, write_json
from FemurSegLib.modelfolder import CARD_NAME, FORMAT_VERSION, load_model, sha256_of
from FemurSegLib.networks import SoftmaxHead, build_network


def export_onnx(net: nn.Module, path: os.PathLike, example: torch.Tensor) -> None:
    """Export ``net`` with a softmax head; batch and spatial axes are dynamic."""
    spatial = {i: f"s{i}" for i in range(2, example.ndim)}
    wrapped = SoftmaxHead(copy.deepcopy(net).cpu().float()).eval()
    with torch.no_grad():
        torch.onnx.export(wrapped, example, str(path), input_names=["image"],
                          output_names=["probabilities"],
                          dynamic_axes={"image": {0: "batch", **spatial},
                                        "probabilities": {0: "batch", **spatial}},
                          opset_version=17, dynamo=False)


def onnx_max_difference(net: nn.Module, onnx_path: os.PathLike, example: torch.Tensor) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime probabilities."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = torch.softmax(copy.deepcopy(net).cpu().float().eval()(example), dim=1).numpy()
    out = sess.run(None, {"image": example.numpy()})[0]
    return float(np.abs(out - ref).max())


def example_input(architecture: dict, shape: Optional[Sequence[int]] = None,
                  seed: int = 0) -> torch.Tensor:
    """A random test input fitting the architecture (3D: ``[1, C, D, H, W]``; 2D and 2.5D:
    ``[1, C, H, W]``)."""
    g = torch.Generator().manual_seed(seed)
    channels = int(architecture.get("in_channels", 1))
    net = build_network(architecture)
    if architecture["type"] == "UNet2D":
        size = shape[0] if shape else net.valid_input_size(4)
        return torch.rand((1, channels, size, size), generator=g)
    if architecture["type"] == "UNet25D":
        shape = tuple(shape) if shape else tuple(2 * d for d in net.divisor[1:])
        return torch.rand((1, channels) + shape, generator=g)
    if shape is None:
        shape = tuple(2 * d for d in net.divisor)
    return torch.rand((1, channels) + tuple(shape), generator=g)


def write_model_folder(out_dir: os.PathLike, card: dict, nets: Dict[int, nn.Module], *,
                       overwrite: bool = False, check_shape: Optional[Sequence[int]] = None,
                       atol: float = 1e-4, half_precision_weights: bool = False) -> Path:
    """Write a model folder with one ``.pt`` and one ``.onnx`` per fold; return its path.

    ``card`` is completed with format version, fold file names and SHA-256 sums, the export date
    and the measured ONNX/PyTorch agreement. The folder is assembled in a temporary folder and
    moved into place (:func:`FemurSegLib.files.replace_folder`), so a failed export leaves
    nothing half-written and an existing folder is replaced only by a complete one.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FemurSegError(f"output exists: {out} (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=str(out.parent)))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700
    try:
        card = copy.deepcopy(card)
        card["format_version"] = FORMAT_VERSION
        card.setdefault("exported", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        example = example_input(card["architecture"], check_shape)
        folds = []
        worst = 0.0
        for k in sorted(nets):
            net = nets[k].cpu().float().eval()
            state = {n: (t.half() if half_precision_weights and t.is_floating_point() else t)
                     for n, t in net.state_dict().items()}
            pt = tmp / f"fold_{k}.pt"
            torch.save(state, pt)
            onnx_path = tmp / f"fold_{k}.onnx"
            if half_precision_weights:  # export what the fallback would load
                net = build_network(card["architecture"])
                net.load_state_dict({n: t.float() for n, t in state.items()})
                net.eval()
            export_onnx(net, onnx_path, example)
            diff = onnx_max_difference(net, onnx_path, example)
            worst = max(worst, diff)
            if diff > atol:
                raise FemurSegError(f"fold {k}: ONNX Runtime and PyTorch differ by {diff:.2e} "
                                    f"(> {atol:.0e}); not exporting")
            folds.append({"fold": k, "weights": pt.name, "weights_sha256": sha256_of(pt),
                          "onnx": onnx_path.name, "onnx_sha256": sha256_of(onnx_path)})
        card["folds"] = folds
        card.setdefault("export_checks", {})["onnx_vs_torch_max_abs_diff"] = worst
        card["export_checks"]["weights_dtype"] = "float16" if half_precision_weights else "float32"
        write_json(card, tmp / CARD_NAME, overwrite=True)
        load_model(tmp, need="any")  # verify what we wrote
        replace_folder(tmp, out, overwrite=overwrite)  # the old folder is kept until then
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
