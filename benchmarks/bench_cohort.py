#!/usr/bin/env python3
"""Benchmark `femurseg cohort` against the plain sequential `femurseg segment` of the same inputs.

The shared real cases (or phantoms when they are absent) are repeated to ``cases x repeat``
inputs (symbolic links named ``<case>r<n>_0000.nii.gz`` in one folder, so that every input is its
own case), then segmented by three fresh processes, one after another:

  sequential   femurseg segment DIR -o OUT/            (one process, ONNX Runtime's own threads)
  1w x 2t      femurseg cohort DIR -o OUT --workers 1 --threads-per-worker 2
  2w x 1t      femurseg cohort DIR -o OUT --workers 2 --threads-per-worker 1

Each time is the wall time of the whole command (Python start-up, the cluster, model loading on
every worker, all cases, the manifest). Printed: cases per minute, and the cohort's overhead per
case against the sequential run ((cohort wall - sequential wall) / inputs; negative: faster),
and whether every label map is voxel for voxel the sequential one.

    python benchmarks/bench_cohort.py                          # 17 cases x 4 = 68 inputs
    python benchmarks/bench_cohort.py --cases 8 --repeat 1     # a quick first figure
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "hip-mri-t1"

VARIANTS = {
    "sequential": ["segment"],
    "1w x 2t": ["cohort", "--workers", "1", "--threads-per-worker", "2"],
    "2w x 1t": ["cohort", "--workers", "2", "--threads-per-worker", "1"],
}


def source_images(data: Path, n: int, tmp: Path) -> list:
    images = sorted((data / "imagesTr").glob("*_0000.nii.gz"))[:n]
    if images:
        return images
    from FemurSegLib.phantom import write_phantom

    out = []
    for seed in range(n):
        path = tmp / "phantoms" / f"phantom{seed:02d}_0000.nii.gz"
        write_phantom(path, seed=seed)
        out.append(path)
    return out


def inputs_folder(images: list, repeat: int, folder: Path) -> list:
    folder.mkdir(parents=True)
    made = []
    for r in range(repeat):
        for img in images:
            case = img.name[: -len("_0000.nii.gz")]
            link = folder / f"{case}r{r}_0000.nii.gz"
            link.symlink_to(img.resolve())
            made.append(link)
    return made


def run_variant(argv: list, inputs: Path, out: Path, model) -> float:
    cmd = [sys.executable, "-m", "FemurSegLib.cli", *argv[:1], str(inputs), "-o",
           str(out) + os.sep, *argv[1:], "--quiet"]
    cmd += ["--progress", "none"]
    if model:
        cmd += ["--model", str(model)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return wall


def same_labels(a: Path, b: Path) -> bool:
    import numpy as np
    import SimpleITK as sitk

    files = sorted(p.name for p in a.glob("*.seg.nrrd"))
    return bool(files) and files == sorted(p.name for p in b.glob("*.seg.nrrd")) and all(
        np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(a / f))),
                       sitk.GetArrayFromImage(sitk.ReadImage(str(b / f)))) for f in files)


def case_seconds(out: Path) -> float:
    """Mean seconds per case on the workers (the manifest's seconds column)."""
    import csv

    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f) if r["seconds"]]
    return sum(seconds) / len(seconds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cases", type=int, default=17, help="distinct cases (default 17)")
    p.add_argument("--repeat", type=int, default=4, help="times each case is given (default 4)")
    p.add_argument("--model", help="model name or folder (default: the bundled model)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    p.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not names or any(v not in VARIANTS for v in names) or names[0] != "sequential":
        p.error(f"--variants: sequential first, then any of {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        tmp = Path(tmp)
        images = source_images(args.data, args.cases, tmp)
        inputs = inputs_folder(images, args.repeat, tmp / "inputs")
        n = len(inputs)
        print(f"{n} inputs ({len(images)} cases x {args.repeat}) from "
              f"{images[0].parent}; {os.cpu_count()} CPU(s), load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        results = {}
        for name in names:
            out = tmp / f"out-{name.replace(' ', '')}"
            wall = run_variant(VARIANTS[name], tmp / "inputs", out, args.model)
            row = {"wall_s": round(wall, 2), "cases_per_min": round(n / wall * 60, 2)}
            if name != "sequential":
                seq = results["sequential"]["wall_s"]
                row["overhead_per_case_s"] = round((wall - seq) / n, 3)
                row["mean_case_s_on_worker"] = round(case_seconds(out), 2)
                row["labels_identical"] = same_labels(tmp / "out-sequential", out)
            results[name] = row
            print(f"{name:<11} {wall:8.1f} s  {row['cases_per_min']:6.2f} cases/min"
                  + (f"  overhead {row['overhead_per_case_s']:+.2f} s/case vs sequential, "
                     f"{row['mean_case_s_on_worker']:.1f} s per case on a worker, label maps "
                     f"{'identical' if row['labels_identical'] else 'DIFFERENT'}"
                     if name != "sequential" else ""), flush=True)
        print(f"load at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"inputs": n, "cases": len(images),
                                         "repeat": args.repeat, "results": results},
                                        indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
