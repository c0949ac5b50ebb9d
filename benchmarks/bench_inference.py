#!/usr/bin/env python3
"""Benchmark `femurseg segment` end to end: wall time, peak memory and DSC per case.

Each variant runs as a fresh process per case (`python -m FemurSegLib.cli segment ...`), so the
times include Python start-up, imports, reading the image, inference and writing the .seg.nrrd,
as a user sees them. Peak resident memory is the child's ru_maxrss. DSC is against the
reference femur label. Variants run case by case, interleaved, so machine load affects them alike.

    python benchmarks/bench_inference.py                       # real data if present, else phantoms
    python benchmarks/bench_inference.py --data DIR --cases 5 --model DIR

Variants:
  baseline   the dense reference: PyTorch engine, fp32, all folds, flip TTA, every fold on the
             whole volume (--engine torch --tta --dense)
  optimised  the default `femurseg segment`: ONNX Runtime with the model card's settings (its
             flip TTA choice for the device, its region-of-interest cascade for an ensemble)
  no-tta     the default without flip test-time augmentation (--no-tta): what TTA costs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "hip-mri-t1"

VARIANTS = {
    "baseline": ["--engine", "torch", "--tta", "--dense"],  # fp32, flip TTA, all folds, whole volume
    "optimised": [],                              # the CLI defaults
    "no-tta": ["--no-tta"],                       # the defaults without flip TTA
}

CHILD = r"""
import resource, sys, time
t0 = time.perf_counter()
from FemurSegLib.cli import main
rc = main(sys.argv[1:])
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(f"BENCH rc={rc} peak_mb={peak_mb:.1f} inproc_s={time.perf_counter() - t0:.3f}", file=sys.stderr)
sys.exit(rc)
"""


def cases_from(data: Path, n: int):
    images = sorted((data / "imagesTr").glob("*_0000.nii.gz"))[:n]
    for img in images:
        name = img.name[: -len("_0000.nii.gz")]
        yield name, img, data / "labelsTr" / f"{name}.nii.gz"


def phantom_cases(n: int, tmp: Path):
    from FemurSegLib.phantom import write_phantom

    for seed in range(n):
        img, lab = tmp / f"phantom{seed}.nii.gz", tmp / f"phantom{seed}_labels.nii.gz"
        write_phantom(img, lab, seed=seed)
        yield f"phantom{seed}", img, lab


def dsc(pred_path: Path, ref_path: Path) -> float:
    from FemurSegLib.metrics import dice

    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_path))) > 0
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_path))) == 1
    return dice(pred, ref)


def run_variant(extra, image: Path, out: Path, model: str | None):
    argv = ["segment", str(image), "-o", str(out), "--quiet", "--overwrite"] + extra
    if model:
        argv += ["--model", model]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CHILD] + argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = [ln for ln in res.stderr.splitlines() if ln.startswith("BENCH ")]
    if res.returncode not in (0, 3) or not line:  # 3: finished, with a plausibility warning
        raise SystemExit(f"error: {' '.join(argv)} failed: {res.stderr.strip().splitlines()[-1:]}")
    fields = dict(kv.split("=") for kv in line[-1].split()[1:])
    return wall, float(fields["peak_mb"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cases", type=int, default=17)
    p.add_argument("--model", default=None, help="model name or folder (default: bundled)")
    p.add_argument("--variants", default="baseline,optimised")
    p.add_argument("--json", type=Path, help="also write the raw results as JSON")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="femurseg-bench-"))
    if (args.data / "imagesTr").is_dir():
        cases = list(cases_from(args.data, args.cases))
        source = str(args.data)
    else:
        cases = list(phantom_cases(min(args.cases, 3), tmp))
        source = "synthetic phantoms (real data not found)"
    print(f"# {len(cases)} case(s) from {source}; {os.cpu_count()} CPU cores")
    rows = []
    for name, img, lab in cases:
        row = {"case": name}
        for v in names:
            out = tmp / f"{name}_{v}.seg.nrrd"
            wall, peak = run_variant(VARIANTS[v], img, out, args.model)
            row[v] = {"seconds": wall, "peak_mb": peak, "dsc": dsc(out, lab)}
        rows.append(row)
        print(f"{name:>10}  " + "  ".join(
            f"{v}: {row[v]['seconds']:6.2f} s {row[v]['peak_mb']:7.0f} MB DSC {row[v]['dsc']:.4f}"
            for v in names), flush=True)
    print()
    print("| variant | median s | mean s | max peak MB | mean DSC |")
    print("|---|---|---|---|---|")
    summary = {}
    for v in names:
        secs = [r[v]["seconds"] for r in rows]
        summary[v] = {"median_s": statistics.median(secs), "mean_s": statistics.mean(secs),
                      "max_peak_mb": max(r[v]["peak_mb"] for r in rows),
                      "mean_dsc": float(np.mean([r[v]["dsc"] for r in rows]))}
        s = summary[v]
        print(f"| {v} | {s['median_s']:.2f} | {s['mean_s']:.2f} | {s['max_peak_mb']:.0f} | "
              f"{s['mean_dsc']:.4f} |")
    if "baseline" in summary and "optimised" in summary:
        b, o = summary["baseline"], summary["optimised"]
        print(f"\nspeed-up (median baseline / median optimised): "
              f"{b['median_s'] / o['median_s']:.2f}x; DSC difference {o['mean_dsc'] - b['mean_dsc']:+.4f}")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "rows": rows, "summary": summary},
                                        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
