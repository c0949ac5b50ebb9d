#!/usr/bin/env python3
"""Score one fold of a model folder on cases it did not train on, as `femurseg segment` runs it.

For comparing a shipped model with new experiments on the same validation cases:

    .venv/bin/python scripts/evaluate_model_fold.py --model Resources/Models/femur-t1-coronal \
        --fold 1 --cases hip09,hip13,hip16,hip17 [--data ../shared/data/hip-mri-t1]

Each case is segmented by that fold alone with the card's settings (threshold, post-processing,
the CPU's TTA default); prints DSC on all slices and on the slices that carry a femur label,
HD95 and volumes per case, and the mean.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from FemurSegLib import images, metrics
from FemurSegLib.inference import Segmenter

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--cases", required=True, help="comma-separated case names")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hip-mri-t1"))
    tta = p.add_mutually_exclusive_group()
    tta.add_argument("--tta", dest="tta", action="store_true", default=None,
                     help="flip TTA on (default: the card's CPU choice)")
    tta.add_argument("--no-tta", dest="tta", action="store_false", help="flip TTA off")
    p.add_argument("--fill-slice-gaps", default="card", metavar="card|off|MM2",
                   help="close one-slice gaps of the probability (inference.fill_slice_gaps): "
                        "as the card says (default), off, or in pieces of at least MM2 mm^2 "
                        "(0: every gap voxel), to measure the step")
    p.add_argument("--threshold", type=float, default=None,
                   help="the femur probability threshold (default: the card's); to compare "
                        "runs at the threshold a shipped model uses")
    args = p.parse_args()
    if args.threshold is not None and not 0 < args.threshold < 1:
        p.error(f"--threshold must be between 0 and 1, not {args.threshold}")
    seg = Segmenter.from_folder(args.model, folds=[args.fold], engine="auto",
                                tta=args.tta)
    changes = {}  # of the card's inference settings
    if args.threshold is not None:
        changes["threshold"] = args.threshold
    if args.fill_slice_gaps != "card":
        changes["fill_slice_gaps"] = (None if args.fill_slice_gaps == "off"
                                      else float(args.fill_slice_gaps))
    if changes:
        seg.model = dataclasses.replace(
            seg.model, inference=dataclasses.replace(seg.model.inference, **changes))
    data = Path(args.data)
    print(f"model {seg.model.name} {seg.model.card.get('version')}, fold {args.fold}, threshold "
          f"{seg.model.threshold:.3f}, post-processing {seg.model.inference.postprocess}, "
          f"TTA {'on' if seg.tta else 'off'}, slice gaps "
          f"{'kept' if seg.model.inference.fill_slice_gaps is None else 'closed in pieces of at least %g mm2' % seg.model.inference.fill_slice_gaps}")
    print("| Case | DSC | DSC (labelled slices) | HD95 mm | Volume ml (predicted / reference) |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for name in args.cases.split(","):
        image = images.read_image(data / "imagesTr" / f"{name}_0000.nii.gz")
        label = images.read_label(data / "labelsTr" / f"{name}.nii.gz", image)
        ref = sitk.GetArrayViewFromImage(label) == 1
        pred = sitk.GetArrayViewFromImage(seg.segment(image).labelmap) > 0
        m = metrics.evaluate_masks(pred, ref, metrics.array_spacing(image))
        rows.append(m)
        print(f"| {name} | {m['dsc']:.3f} | {m['dsc_labelled_slices']:.3f} | {m['hd95_mm']:.1f} | "
              f"{m['volume_pred_ml']:.0f} / {m['volume_ref_ml']:.0f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("dsc", "dsc_labelled_slices",
                                                              "hd95_mm")}
    print(f"| mean | {mean['dsc']:.3f} | {mean['dsc_labelled_slices']:.3f} | "
          f"{mean['hd95_mm']:.1f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
