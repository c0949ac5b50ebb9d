"""The ``femurseg-train`` command line (exit 2 with one ``error:`` line on bad input)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from FemurSegLib.commandline import LowerCaseLevels, VersionAction, global_options
from FemurSegLib.commandline import Parser as _Parser
from FemurSegLib.commandline import run
from FemurSegLib.errors import FemurSegError


def _default_run_dir(cfg: dict) -> Path:
    return Path("runs") / cfg["name"]


def _load(args) -> dict:
    from .config import load_config

    if getattr(args, "threads", None):
        import torch

        if args.threads < 1:
            raise FemurSegError(f"--threads must be at least 1, not {args.threads}")
        torch.set_num_threads(args.threads)
    return load_config(args.config, plan=args.plan)


def cmd_fit(args) -> int:
    from .cv import run_cv
    from .distributed import setup_distributed

    cfg = _load(args)
    device = setup_distributed(args.device)
    run_cv(cfg, Path(args.run_dir or _default_run_dir(cfg)), data_dir=args.data,
           folds=[args.fold], resume=args.resume, max_epochs=args.epochs, device=device,
           progress=not args.quiet, command=_command(args), time_budget=_budget(args))
    return 0


def cmd_cv(args) -> int:
    from .cv import run_cv
    from .distributed import setup_distributed

    cfg = _load(args)
    folds = _folds(args.folds)
    device = setup_distributed(args.device)
    run_cv(cfg, Path(args.run_dir or _default_run_dir(cfg)), data_dir=args.data, folds=folds,
           resume=args.resume, max_epochs=args.epochs, device=device,
           progress=not args.quiet, command=_command(args), time_budget=_budget(args))
    return 0


def _fold_arg(text: str):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold number or 'all', not {text!r}") from None


def _budget(args) -> Optional[float]:
    if args.time_budget is None:
        return None
    if not args.time_budget > 0:
        raise FemurSegError(f"--time-budget must be a positive number of minutes, not "
                            f"{args.time_budget}")
    return 60.0 * args.time_budget


def _command(args) -> str:
    return " ".join(["femurseg-train"] + list(args.argv))


def _folds(text: Optional[str]):
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FemurSegError(f"--folds takes comma-separated fold numbers, not {text!r}") from None


def cmd_plan(args) -> int:
    from .plan import write_plan

    doc = write_plan(args.dataset, args.output, foreground=args.foreground_label,
                     levels=args.levels, patch_voxels=args.patch_voxels,
                     overwrite=args.overwrite)
    plan = doc["plan"]
    print(f"plan for {doc['fingerprint']['cases']} cases -> {args.output}: spacing "
          f"{plan['spacing']} mm, patch {plan['patch_size']}, pooling {plan['pooling']}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_run

    summary = evaluate_run(args.run_dir, data_dir=args.data, device=args.device,
                           folds=_folds(args.folds), progress=not args.quiet)
    print((Path(args.run_dir) / "evaluation" / "table.md").read_text(encoding="utf-8"), end="")
    print(f"PR-optimal threshold {summary['pr_optimal']['threshold']:.4f}; "
          f"written to {Path(args.run_dir) / 'evaluation'}")
    return 0


def cmd_robustness(args) -> int:
    from .robustness import markdown, robustness_run

    contrasts = [c.strip() for c in args.contrasts.split(",") if c.strip()] if args.contrasts \
        else None
    kwargs = {"contrasts": contrasts} if contrasts else {}
    result = robustness_run(args.run_dir, data_dir=args.data, device=args.device,
                            progress=not args.quiet, **kwargs)
    print(markdown(result), end="")
    print(f"written to {Path(args.run_dir) / 'evaluation' / 'robustness.md'}")
    return 0


def cmd_export(args) -> int:
    from .cards import read_card_extra
    from .export import export_run

    extra = read_card_extra(args.card_extra) if args.card_extra else None
    out = export_run(args.run_dir, args.model_dir, name=args.name, version=args.version,
                     half=args.half, overwrite=args.overwrite, license=args.license,
                     command=_command(args), card_extra=extra, cv_run=args.cv_run)
    print(f"model folder written: {out}")
    return 0


def cmd_unpack(args) -> int:
    from .unpack import unpack_model

    out = unpack_model(args.model_dir, args.run_dir, command=_command(args))
    print(f"run folder written: {out} (evaluate it with: femurseg-train evaluate {out})")
    return 0


def cmd_table(args) -> int:
    from .report import combine_runs

    combine_runs([Path(r) for r in args.run_dirs], Path(args.output), threshold=args.threshold,
                 pp=args.pp, overwrite=True)
    print((Path(args.output) / "table.md").read_text(encoding="utf-8"), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="femurseg-train", description="Train FemurSeg models (Deniz et al. 2018).")
    p.add_argument("--version", action=VersionAction, text=_version_text)
    global_options(p, "--debug")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(s):
        s.add_argument("config", help="config name (FemurSegTraining/configs) or JSON file")
        s.add_argument("--data", help="dataset folder in nnU-Net raw layout")
        s.add_argument("--plan", metavar="PLAN.json", help="fill the config's null spacing, "
                       "patch size and pooling from a plan (femurseg-train plan)")
        s.add_argument("--run-dir", help="run folder (default runs/<config name>)")
        s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        s.add_argument("--epochs", type=int, help="epoch cap (e.g. for CPU runs)")
        s.add_argument("--device", default="cpu", help="auto (CUDA when usable, else MPS, else "
                       "cpu), cpu, cuda, cuda:1, mps (under torchrun: cuda uses the local "
                       "rank's GPU)")
        s.add_argument("--time-budget", type=float, metavar="MINUTES",
                       help="train all folds within about this many minutes: each fold plans "
                       "its epochs after the first one (at most the config's max_epochs)")
        s.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's "
                       "choice; 1 lets two runs share two cores)")
        s.add_argument("--quiet", action="store_true", help="no progress bars")

    f = sub.add_parser("fit", help="train one fold")
    common(f)
    f.add_argument("--fold", type=_fold_arg, required=True, metavar="K|all",
                   help="fold number, or 'all': one network on every case, no validation cases "
                   "(no early stopping: all max_epochs run; the last epoch's weights are kept)")
    f.set_defaults(func=cmd_fit)
    c = sub.add_parser("cv", help="train all folds one after the other")
    common(c)
    c.add_argument("--folds", help="only these folds, e.g. 0,1")
    c.set_defaults(func=cmd_cv)

    pl = sub.add_parser("plan", help="fingerprint a dataset and write an editable plan")
    pl.add_argument("dataset", help="dataset folder in nnU-Net raw layout")
    pl.add_argument("-o", "--output", required=True, metavar="PLAN.json", help="the plan file "
                    "to write")
    pl.add_argument("--foreground-label", default=None,
                    help="label name or value of the foreground (default: 'femur')")
    pl.add_argument("--levels", type=int, default=5, help="plan pooling for up to this many "
                    "network levels (default 5)")
    pl.add_argument("--patch-voxels", type=int, default=16 * 160 * 160,
                    help="voxel budget of a training patch (default 409600)")
    pl.add_argument("--overwrite", action="store_true", help="replace an existing plan file")
    pl.set_defaults(func=cmd_plan)

    def scoring(s):
        """What the commands that score a run's folds share."""
        s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of femurseg-train cv")
        s.add_argument("--data", help="dataset folder (default: the one the run trained on)")
        s.add_argument("--device", default="cpu", help="auto, cpu, cuda, mps")
        s.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="cross-validated metrics, Table 2, ROC/PR and box plots")
    scoring(e)
    e.add_argument("--folds", help="only these folds, e.g. 0,1 (default: all)")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("robustness", help="segment contrast-changed copies of each fold's "
                       "validation cases (bias field, gamma, inverted, random map)")
    scoring(r)
    from .contrast import CONTRASTS

    r.add_argument("--contrasts", help=f"comma-separated subset of {','.join(CONTRASTS)} "
                   "(default: all)")
    r.set_defaults(func=cmd_robustness)

    x = sub.add_parser("export", help="write a model folder with all folds as an ensemble")
    x.add_argument("run_dir", metavar="RUN_DIR", help="an evaluated cross-validation run "
                   "(femurseg-train cv, then evaluate), or a run of one network on all cases "
                   "(fit --fold all) with --cv-run")
    x.add_argument("model_dir", metavar="MODEL_DIR", help="the model folder to write (model.json, "
                   "fold_K.pt, fold_K.onnx); under $FEMURSEG_MODELS (default ~/.femurseg/models) "
                   "`femurseg segment --model` finds it by its name or its folder name")
    x.add_argument("--name", help="model name on the card, listed by `femurseg models` (default: "
                   "the config name)")
    x.add_argument("--version", default="1.0.0", help="model version on the card (default "
                   "1.0.0; femurseg-train --version prints the program's version)")
    x.add_argument("--half", action="store_true", help="store float16 PyTorch weights")
    x.add_argument("--license", default="Apache-2.0", help="licence of the model on the card "
                   "(an SPDX identifier; default Apache-2.0)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_DIR (only "
                   "once the new folder is complete and its ONNX graphs are checked)")
    x.add_argument("--cv-run", metavar="CV_RUN_DIR",
                   help="for a run of one network trained on all cases (fit --fold all): the "
                   "evaluated cross-validation of the same recipe whose metrics and threshold "
                   "go on the card")
    x.add_argument("--card-extra", metavar="JSON",
                   help="notes, intended use and description to add to the card (inference "
                   "settings belong in the config)")
    x.set_defaults(func=cmd_export)

    u = sub.add_parser("unpack", help="a run folder again from an exported cross-validation "
                       "ensemble (its card and fold weights), to evaluate it again or use it as "
                       "export --cv-run")
    u.add_argument("model_dir", metavar="MODEL_DIR", help="an exported model folder")
    u.add_argument("run_dir", metavar="RUN_DIR", help="the run folder to write (must not exist)")
    u.set_defaults(func=cmd_unpack)

    t = sub.add_parser("table", help="combine evaluated runs into one Table 2 with figures")
    t.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="evaluated run folders")
    t.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for table.md, "
                   "table.csv and the figures")
    t.add_argument("--threshold", choices=["pr", "0.5"], default="pr",
                   help="PR-optimal threshold of each run (default) or 0.5")
    t.add_argument("--pp", choices=["both", "none"], default=None,
                   help="rows with/without PP (default as the paper: PP rows for 2D only)")
    t.set_defaults(func=cmd_table)
    for command in sub.choices.values():  # also after the command: femurseg-train cv ... --debug
        global_options(command, "--debug", top=False)
    return p


def _version_text() -> str:
    from FemurSegLib import __version__

    return f"femurseg-train {__version__}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    if getattr(args, "device", None) == "auto":  # CUDA when usable, else MPS, else the CPU
        from FemurSegLib.engines import pick_torch_device

        args.device = pick_torch_device("auto")
    handler = logging.StreamHandler()
    handler.setFormatter(LowerCaseLevels(clock=True))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: only rank 0 reports
        logging.getLogger().setLevel(logging.WARNING)
    return run(args.func, args, interrupted="interrupted (resume with --resume)")


if __name__ == "__main__":
    sys.exit(main())
