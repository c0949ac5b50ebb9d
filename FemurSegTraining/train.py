"""Training one fold: the loop, early stopping, validation, checkpoints, resume (samples come
from :mod:`.sampling`, augmentation from :mod:`.augment`).

Every epoch ends with a checkpoint (model, optimiser, early-stopping state, history) written
atomically to ``RUN/fold_K/checkpoint.pt``; the best epoch's weights go to ``best.pt``. A killed
run continues with ``resume=True`` and ends with the same weights as an uninterrupted run: all
randomness of epoch ``e`` comes from generators seeded by (seed, fold, e).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch

from FemurSegLib import files
from FemurSegLib.engines import TorchEngine
from FemurSegLib.inference import predict_fold
from FemurSegLib.metrics import dice
from FemurSegLib.networks import build_network

from . import distributed
from .augment import affine_batch, augment_sample
from .cards import inference_spec
from .config import is_2d, is_25d, lr_at_epoch
from .data import Preprocessed
from .sampling import sample_patch_2d, sample_patch_3d, sample_slab
from .losses import get_loss

log = logging.getLogger("femurseg.train")


# ----------------------------------------------------------------------------------------------
# Early stopping (paper: stop when the metric has not improved by min_delta in `patience`
# epochs; the first `min_epochs` epochs always run)


@dataclass
class EarlyStopping:
    min_delta: float = 1e-4
    patience: int = 10
    min_epochs: int = 30
    best: float = -math.inf
    best_epoch: int = -1
    epochs_seen: int = 0

    def update(self, metric: float) -> bool:
        """Record the metric of the next epoch; True when training should stop after it.

        An epoch improves when its metric exceeds the best epoch's metric by more than
        ``min_delta`` (as Keras' EarlyStopping, which the paper's settings describe): gains
        smaller than that do not count, but they add up, so a slow steady rise still improves.
        ``best`` is always the metric of ``best_epoch`` (whose weights are ``best.pt``).
        """
        epoch = self.epochs_seen
        self.epochs_seen += 1
        if metric > self.best + self.min_delta:
            self.best, self.best_epoch = float(metric), epoch
        if self.epochs_seen < self.min_epochs:
            return False
        return epoch - self.best_epoch >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "epochs_seen": self.epochs_seen}

    def load_state_dict(self, s: dict) -> None:
        self.best, self.best_epoch = float(s["best"]), int(s["best_epoch"])
        self.epochs_seen = int(s["epochs_seen"])


# ----------------------------------------------------------------------------------------------
# Randomness


#: the pseudo-fold of a network trained on every case (``femurseg-train fit --fold all``)
ALL_CASES = "all"
#: the number that stands for :data:`ALL_CASES` in the seeds (no CV fold has it)
ALL_CASES_SEED = 1000


def fold_seed(fold: Union[int, str]) -> int:
    """The number of ``fold`` in its seeds: the fold itself, or :data:`ALL_CASES_SEED`."""
    return ALL_CASES_SEED if fold == ALL_CASES else int(fold)


def epoch_rng(seed: int, fold: Union[int, str], epoch: int, rank: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, fold_seed(fold), epoch, rank])


# ----------------------------------------------------------------------------------------------


def predict_case(net: torch.nn.Module, cfg: dict, image: np.ndarray, device: str) -> np.ndarray:
    """Foreground probability on the network grid with the core's inference code and the
    card's geometry (:func:`.cards.inference_spec`), one pass without flips."""
    net.eval()
    return predict_fold(TorchEngine.from_network(net, device), image, cfg["architecture"],
                        inference_spec(cfg, net))


# ----------------------------------------------------------------------------------------------


def _atomic_save(obj, path: Path) -> None:
    with files.atomic_path(path, overwrite=True) as tmp:
        torch.save(obj, tmp)


def make_optimizer(net: torch.nn.Module, opt_cfg: dict) -> torch.optim.Optimizer:
    """Adam (the paper) or AdamW (decoupled weight decay) from the config's ``optimizer``."""
    name = str(opt_cfg.get("name", "adam")).lower()
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(name)
    if cls is None:
        from FemurSegLib.errors import FemurSegError
        raise FemurSegError(f"unknown optimizer {name!r} (adam, adamw)")
    return cls(net.parameters(), lr=float(opt_cfg["lr"]),
               weight_decay=float(opt_cfg.get("weight_decay", 0.0)))


@dataclass
class FitResult:
    fold_dir: Path
    epochs: int
    best_epoch: int
    best_metric: float
    stopped_early: bool
    seconds: float
    history: List[dict] = field(default_factory=list)


def fit(cfg: dict, fold: Union[int, str], train_cases: List[Preprocessed], val_cases: List[Preprocessed],
        run_dir: Path, *, resume: bool = False, max_epochs: Optional[int] = None,
        device: str = "cpu", progress: bool = True, time_budget: Optional[float] = None,
        on_epoch: Optional[Callable[[dict], None]] = None) -> FitResult:
    """Train one fold; returns when early stopping triggers or ``max_epochs`` is reached.

    ``time_budget`` (seconds for this fold): after the first epoch the number of epochs that fit
    into the budget is planned (at most the config's ``max_epochs``) and kept in the checkpoint;
    the learning-rate schedule then runs over the planned epochs, so a budgeted run still ends
    its schedule, and a resumed run keeps the plan (and stays exact).

    Under torchrun (a process group is initialised, see :mod:`.distributed`) every rank trains
    on its share of the epoch's patches with DistributedDataParallel; rank 0 validates, writes
    the checkpoints and logs, and broadcasts the decision to stop.

    ``fold`` :data:`ALL_CASES` (``"all"``) trains one network on every case with no validation
    cases: early stopping is off (every epoch up to ``max_epochs`` runs, so the learning-rate
    schedule spans the whole run) and the last epoch's weights are kept (``best.pt``).
    """
    rank, world_size = distributed.world()
    main = rank == 0
    if not val_cases:  # nothing to choose on: no early stopping, the last epoch is kept
        cfg = {**cfg, "select": "last"}
    fold_dir = Path(run_dir) / f"fold_{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = fold_dir / "checkpoint.pt"
    seed = int(cfg["seed"])
    torch.manual_seed(seed + 1000 * fold_seed(fold))
    net = build_network(cfg["architecture"]).to(device)
    opt_cfg = cfg["optimizer"]
    optimizer = make_optimizer(net, opt_cfg)
    stopper = EarlyStopping(float(cfg["min_delta"]), int(cfg["patience"]),
                            int(cfg["min_epochs"]) if val_cases else 2 ** 31)
    history: List[dict] = []
    start_epoch = 0
    elapsed = 0.0
    scaler_state = None
    planned = None
    if resume and ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stopper.load_state_dict(state["early_stopping"])
        history = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        elapsed = float(state.get("seconds", 0.0))
        scaler_state = state.get("scaler")  # CUDA mixed precision only
        planned = state.get("planned_epochs")
        if state.get("finished"):
            log.info("fold %s already finished at epoch %d", fold, start_epoch - 1)
            return FitResult(fold_dir, start_epoch, stopper.best_epoch, stopper.best, True,
                             elapsed, history)
        log.info("fold %s: resuming at epoch %d", fold, start_epoch)
    elif ckpt_path.is_file() and not resume:
        from FemurSegLib.errors import FemurSegError
        raise FemurSegError(f"{ckpt_path} exists: use --resume to continue it, or another run folder")
    train_net = net
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_net = DistributedDataParallel(
            net, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
    loss_fn = get_loss(cfg["loss"])
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    if scaler is not None and scaler_state:
        scaler.load_state_dict(scaler_state)
    cap = int(max_epochs if max_epochs is not None else cfg["max_epochs"])
    if planned is not None:
        cfg = {**cfg, "max_epochs": int(planned)}
        cap = min(cap, int(planned))
    steps = int(cfg["patches_per_epoch"] or len(train_cases))
    if world_size > 1:  # the epoch's patches are shared out between the ranks
        steps = int(math.ceil(steps / world_size))
    bs = int(cfg["batch_size"])
    two_d = is_2d(cfg)
    slab = is_25d(cfg)
    spec = inference_spec(cfg) if two_d else None
    stopped = False
    epoch = start_epoch - 1
    while epoch + 1 < cap:
        epoch += 1
        t0 = time.perf_counter()
        rng = epoch_rng(seed, fold, epoch, rank)
        torch.manual_seed(int(rng.integers(2 ** 31)))
        lr = lr_at_epoch(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        train_net.train()
        losses = []
        iterator = range(steps)
        if progress and main:
            from tqdm import tqdm
            # disable=None: a bar only on a terminal; a log file gets the epoch lines alone
            iterator = tqdm(iterator, desc=f"fold {fold} epoch {epoch}", leave=False,
                            disable=None)
        for _ in iterator:
            xs, ys = [], []
            for _b in range(bs):
                case = train_cases[int(rng.integers(len(train_cases)))]
                if slab:
                    x, y = sample_slab(case, int(cfg["patch_size"]),
                                       int(cfg["architecture"]["in_channels"]), rng,
                                       float(cfg["foreground_oversample"]))
                elif two_d:
                    x, y = sample_patch_2d(case, spec.input_size, spec.output_size,
                                           int(cfg["architecture"].get("in_channels", 3)), rng,
                                           float(cfg["foreground_oversample"]))
                else:
                    x, y = sample_patch_3d(case, cfg["patch_size"], rng,
                                           float(cfg["foreground_oversample"]))
                x, y = augment_sample(x, y, rng, cfg)
                xs.append(x if (two_d or slab) else x[None])
                ys.append(y)
            xb = torch.from_numpy(np.stack(xs)).to(device)
            yb = torch.from_numpy(np.stack(ys).astype(np.int64)).to(device)
            if slab and cfg["augment"].get("affine"):
                xb, yb = affine_batch(xb, yb, rng)
            optimizer.zero_grad(set_to_none=True)
            if use_amp:
                with torch.autocast("cuda", dtype=torch.float16):
                    loss = loss_fn(train_net(xb), yb)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss = loss_fn(train_net(xb), yb)
                loss.backward()
                optimizer.step()
            losses.append(float(loss.detach()))
        mean_loss = distributed.mean_over_ranks(float(np.mean(losses)))
        stop, planning = False, time_budget is not None and planned is None
        if main:
            stop, elapsed, planned = _end_epoch(
                net, cfg, val_cases, device, stopper, history, epoch, mean_loss,
                time.perf_counter() - t0, fold, fold_dir, optimizer, ckpt_path, elapsed, scaler,
                planned, time_budget)
        if planning:  # rank 0 planned from its measured epoch (training and validation)
            planned = int(distributed.broadcast(planned))
            cfg = {**cfg, "max_epochs": planned}
            cap = min(cap, planned)
            if main:
                log.info("fold %s: %d epoch(s) of %.0f s fit into the time budget of %.0f s",
                         fold, planned, history[-1]["seconds"], time_budget)
        if main and on_epoch:
            on_epoch(history[-1])
        stop = bool(distributed.broadcast(stop))
        if stop:
            stopped = True
            break
    if cfg.get("select", "best") == "last" and history:
        return FitResult(fold_dir, len(history), int(history[-1]["epoch"]),
                         float(history[-1]["val_dsc"]), stopped, elapsed, history)
    return FitResult(fold_dir, len(history), stopper.best_epoch, stopper.best, stopped, elapsed,
                     history)


def plan_epochs(time_budget: float, epoch_seconds: float, max_epochs: int, done: int = 1) -> int:
    """The epochs of a fold with ``time_budget`` seconds whose epoch (training, validation)
    took ``epoch_seconds``: as many as fit (at most ``max_epochs``), and never fewer than the
    ``done`` epochs already run, so a plan passes the budget by less than one epoch."""
    fit_in = int(time_budget // epoch_seconds) if epoch_seconds > 0 else int(max_epochs)
    return max(int(done), min(int(max_epochs), fit_in))


def _end_epoch(net, cfg, val_cases, device, stopper: EarlyStopping, history: List[dict],
               epoch: int, mean_loss: float, train_seconds: float, fold: int, fold_dir: Path,
               optimizer, ckpt_path: Path, elapsed: float, scaler=None,
               planned: Optional[int] = None, time_budget: Optional[float] = None
               ) -> Tuple[bool, float, Optional[int]]:
    """Validate (DSC at 0.5 on the network grid, mean over validation cases), update early
    stopping, write best.pt / checkpoint.pt / history.csv and log one line. With a
    ``time_budget`` and no plan yet, the epochs are planned from this epoch's measured time
    (:func:`plan_epochs`) and the plan goes into this checkpoint.

    Returns (stop, total seconds of the fold so far, planned epochs)."""
    t0 = time.perf_counter()
    dscs = []
    for case in val_cases:
        prob = predict_case(net, cfg, case.image, device)
        dscs.append(dice(prob >= 0.5, case.target.astype(bool)))
    val = float(np.mean(dscs)) if dscs else float("nan")
    improved_before = stopper.best_epoch
    stop = stopper.update(val if dscs else -mean_loss)
    seconds = train_seconds + time.perf_counter() - t0
    elapsed += seconds
    row = {"epoch": epoch, "loss": mean_loss, "val_dsc": val,
           "seconds": seconds, "best_epoch": stopper.best_epoch}
    history.append(row)
    if cfg.get("select", "best") == "last" or stopper.best_epoch != improved_before:
        # best.pt holds the selected weights: the best validation epoch, or with
        # ``"select": "last"`` the latest epoch (no choice made on the validation cases)
        _atomic_save(net.state_dict(), fold_dir / "best.pt")
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(),
             "early_stopping": stopper.state_dict(), "history": history,
             "epoch": epoch, "seconds": elapsed, "finished": bool(stop)}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if time_budget is not None and planned is None:
        planned = plan_epochs(time_budget, seconds, int(cfg["max_epochs"]), epoch + 1)
    if planned is not None:
        state["planned_epochs"] = int(planned)
    _atomic_save(state, ckpt_path)
    _write_history(history, fold_dir / "history.csv", cfg.get("select", "best"))
    log.info("fold %s epoch %3d  lr %.1e  loss %.4f  val DSC %.4f  %.0f s%s", fold, epoch,
             optimizer.param_groups[0]["lr"], row["loss"], val, seconds,
             "  (best)" if stopper.best_epoch == epoch else "")
    return bool(stop), elapsed, planned


def _write_history(history: List[dict], path: Path, select: str = "best") -> None:
    """``history.csv``; its ``best_epoch`` is the epoch whose weights ``best.pt`` held after each
    epoch, as ``run.json`` reports it: with ``"select": "last"`` that epoch itself (the
    checkpoint's history keeps early stopping's best epoch)."""
    rows = [{**row, "best_epoch": row["epoch"]} for row in history] if select == "last" \
        else history
    with files.atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(rows)
