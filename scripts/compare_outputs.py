#!/usr/bin/env python3
"""Do two versions of FemurSeg give the same segmentations? (A refactoring check.)

Runs ``femurseg segment`` of the working tree and of a git revision (checked out into a
temporary worktree) on the synthetic phantoms of seeds 0-3 and, when present, on the shared real
cases, with the same model folder, and compares the label maps voxel for voxel and the
probability maps to float precision. Exit code 0 when every label map is identical, 1 otherwise.

    .venv/bin/python scripts/compare_outputs.py --base f9af2bc [--model DIR] [--data DIR]

The model defaults to the working tree's bundled default model, so both versions run the same
weights and card.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def segment(tree: Path, image: Path, out: Path, model: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'FemurSeg'}{os.pathsep}{tree}"}
    cmd = [sys.executable, "-m", "FemurSegLib.cli", "segment", str(image), "-o", str(out),
           "--probabilities", str(out.with_name(out.name.replace(".nii.gz", "_p.nii.gz"))),
           "--model", str(model), "--quiet"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode not in (0, 3):  # 3: finished with a plausibility warning
        raise SystemExit(f"error: {tree.name} failed on {image.name}: {res.stderr.strip()}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--model", default=str(ROOT / "Resources" / "Models" / "femur-t1-coronal"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hip-mri-t1"))
    p.add_argument("--seeds", default="0,1,2,3")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="femurseg-compare-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                        args.base], check=True, capture_output=True)
        try:
            inputs = []
            from FemurSegLib.phantom import write_phantom

            for seed in (int(s) for s in args.seeds.split(",") if s):
                img = tmp / f"phantom{seed}.nii.gz"
                write_phantom(img, tmp / f"phantom{seed}_labels.nii.gz", seed=seed)
                inputs.append(img)
            images_dir = Path(args.data) / "imagesTr"
            if images_dir.is_dir():
                inputs += sorted(images_dir.glob("*_0000.nii.gz"))
            else:
                print(f"real data not found at {args.data}: phantoms only")
            differ = 0
            print(f"{'input':<24} {'label voxels differing':>22} {'max |dp|':>10}")
            for img in inputs:
                outs = []
                for name, tree in (("base", base), ("head", ROOT)):
                    out = tmp / f"{img.name.split('.')[0]}_{name}.nii.gz"
                    segment(tree, img, out, Path(args.model))
                    outs.append(out)
                a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(o))) for o in outs)
                pa, pb = (sitk.GetArrayFromImage(sitk.ReadImage(
                    str(o.with_name(o.name.replace(".nii.gz", "_p.nii.gz"))))) for o in outs)
                n = int(np.count_nonzero(a != b))
                differ += n > 0
                print(f"{img.name:<24} {n:>22} {float(np.abs(pa - pb).max()):>10.2e}")
            print(f"{len(inputs) - differ} of {len(inputs)} label maps identical "
                  f"(base {args.base}, head = working tree)")
            return 0 if differ == 0 else 1
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                           capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
