"""Several processes (GPUs) with DistributedDataParallel under ``torchrun``; one process otherwise.

``torchrun --nproc_per_node=N -m FemurSegTraining.cli cv CONFIG --device cuda ...`` starts N
processes; :func:`setup_distributed` joins them (NCCL on CUDA, gloo on CPU). In
:func:`FemurSegTraining.train.fit` every rank samples its own patches from
``epoch_rng(seed, fold, epoch, rank)`` (rank 0 draws exactly what a single process draws), an
epoch's patches are shared out between the ranks, gradients are averaged by DDP, and rank 0
alone validates, writes checkpoints and tells the others when to stop.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any, Tuple


def world() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed support
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: str = "cpu") -> str:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); return the device
    this process trains on (``cuda:<LOCAL_RANK>`` for CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        # rank 0 validates while the others wait: allow for long validations
        dist.init_process_group(backend, timeout=_dt.timedelta(hours=3))
    return device


def barrier() -> None:
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself without a process group)."""
    if world()[1] == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value: float) -> float:
    """The mean of ``value`` over all ranks (``value`` itself without a process group)."""
    if world()[1] == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / world()[1]
