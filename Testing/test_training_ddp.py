"""DistributedDataParallel on CPU: 2 processes with the gloo backend (a few seconds)."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import require_torch

torch = require_torch()

import torch.distributed as dist
import torch.multiprocessing as mp

from FemurSegTraining.config import load_config

from training_helpers import blob_cases, write_config

pytestmark = [pytest.mark.slow,  # two training processes
              pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available()
                                 or sys.platform != "linux",
                                 reason="needs torch.distributed with gloo and fork (Linux)")]


def _instrumented_fit(cfg, run_dir, out_dir, rank):
    """Run fit, recording the patches this process samples and its final weights."""
    import FemurSegTraining.train as T

    sampled, nets = [], []
    orig_sample, orig_build = T.sample_patch_3d, T.build_network

    def sample(case, size, rng, p_fg):
        x, y = orig_sample(case, size, rng, p_fg)
        sampled.append([case.name, float(x.sum())])
        return x, y

    def build(arch):
        nets.append(orig_build(arch))
        return nets[-1]

    T.sample_patch_3d, T.build_network = sample, build
    try:
        result = T.fit(cfg, 0, blob_cases(3, seed=0), blob_cases(1, seed=1), run_dir,
                       max_epochs=2, progress=False)
    finally:
        T.sample_patch_3d, T.build_network = orig_sample, orig_build
    torch.save(nets[0].state_dict(), out_dir / f"rank{rank}.pt")
    (out_dir / f"rank{rank}.json").write_text(json.dumps(
        {"sampled": sampled, "epochs": result.epochs}))


def _worker(rank, cfg, run_dir, out_dir, store):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        _instrumented_fit(cfg, run_dir, out_dir, rank)
    finally:
        dist.destroy_process_group()



def test_ddp_two_processes_on_cpu(tmp_path, one_thread):
    cfg = load_config(str(write_config(tmp_path / "c.json", patches_per_epoch=3)))
    out = tmp_path / "out"
    out.mkdir()
    import torch._dynamo  # noqa: F401  DDP imports it (2-3 s): once here, not in each child
    mp.start_processes(_worker, args=(cfg, tmp_path / "ddp", out, tmp_path / "store"), nprocs=2,
                       join=True, start_method="fork")
    ranks = [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    # an epoch of 3 patches is shared out: 2 per rank, so 4 per rank over 2 epochs
    assert [len(r["sampled"]) for r in ranks] == [4, 4] and ranks[0]["epochs"] == 2
    assert ranks[0]["sampled"] != ranks[1]["sampled"]  # rank-aware sampling
    w0, w1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in w0:  # gradients averaged: every rank ends with the same weights
        torch.testing.assert_close(w0[name], w1[name], rtol=0, atol=0)
    ckpt = torch.load(tmp_path / "ddp" / "fold_0" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2
    assert all(not k.startswith("module.") for k in ckpt["model"])  # same format as 1 process
    for name in w0:
        torch.testing.assert_close(ckpt["model"][name], w0[name], rtol=0, atol=0)

    # rank 0 draws what a single process draws (the first 2 of its 3 patches per epoch)
    single = tmp_path / "single"
    single.mkdir()
    _instrumented_fit(cfg, tmp_path / "one", single, 0)
    one = json.loads((single / "rank0.json").read_text(encoding="utf-8"))["sampled"]
    assert ranks[0]["sampled"] == one[0:2] + one[3:5]
