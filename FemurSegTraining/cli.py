"""The ``femurseg-train`` command line (exit 2 with one ``error:`` line on bad input)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from FemurSegLib.cli import _Parser
from FemurSegLib.errors import FemurSegError


def _default_run_dir(cfg: dict) -> Path:
    return Path("runs") / cfg["name"]


def cmd_fit(args) -> int:
    from .config import load_config
    from .cv import run_cv

    cfg = load_config(args.config)
    run_cv(cfg, Path(args.run_dir or _default_run_dir(cfg)), data_dir=args.data,
           folds=[args.fold], resume=args.resume, max_epochs=args.epochs, device=args.device,
           progress=not args.quiet)
    return 0


def cmd_cv(args) -> int:
    from .config import load_config
    from .cv import run_cv

    cfg = load_config(args.config)
    folds = [int(v) for v in args.folds.split(",")] if args.folds else None
    run_cv(cfg, Path(args.run_dir or _default_run_dir(cfg)), data_dir=args.data, folds=folds,
           resume=args.resume, max_epochs=args.epochs, device=args.device,
           progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="femurseg-train", description="Train FemurSeg models (Deniz et al. 2018).")
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(s):
        s.add_argument("config", help="config name (FemurSegTraining/configs) or JSON file")
        s.add_argument("--data", help="dataset folder in nnU-Net raw layout")
        s.add_argument("--run-dir", help="run folder (default runs/<config name>)")
        s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        s.add_argument("--epochs", type=int, help="epoch cap (e.g. for CPU runs)")
        s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
        s.add_argument("--quiet", action="store_true")

    f = sub.add_parser("fit", help="train one fold")
    common(f)
    f.add_argument("--fold", type=int, required=True)
    f.set_defaults(func=cmd_fit)
    c = sub.add_parser("cv", help="train all folds one after the other")
    common(c)
    c.add_argument("--folds", help="only these folds, e.g. 0,1")
    c.set_defaults(func=cmd_cv)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except FemurSegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted (resume with --resume)\n")
        return 130
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"error: internal error ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())}); rerun with --debug\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
