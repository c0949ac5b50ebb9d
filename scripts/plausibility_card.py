#!/usr/bin/env python3
"""Compute a model card's ``plausibility`` section from the model's training data.

The section holds the per-femur volume range of the training label maps (with a margin) and the
intensity fingerprint of the training images after the model's own preprocessing (see
``FemurSegLib/plausibility.py``). ``femurseg-train export`` writes it for new models; this script
adds it to an existing model folder (the card's checksums cover only the weight files)::

    python scripts/plausibility_card.py ../shared/data/hip-mri-t1 Resources/Models/femur-t1-coronal
    python scripts/plausibility_card.py ../shared/data/hip-mri-t1 Resources/Models/femur-t1-coronal --write

Without ``--write`` the section is printed; with it, it replaces the card's section (the card is
written atomically). The data themselves are never copied.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="training data in nnU-Net raw layout (imagesTr, labelsTr, "
                   "dataset.json)")
    p.add_argument("model", help="model folder whose card gets the section")
    p.add_argument("--foreground", default=None, help="femur label name or value (default: the "
                   "card's training.data.foreground_label, else 'femur')")
    p.add_argument("--write", action="store_true", help="write the section into the card")
    args = p.parse_args(argv)

    from FemurSegLib.errors import FemurSegError
    from FemurSegLib.files import write_json
    from FemurSegLib.modelfolder import CARD_NAME, read_card
    from FemurSegLib.plausibility import training_section
    from FemurSegLib.preprocessing import InputSpec
    from FemurSegTraining.data import load_dataset

    try:
        card = read_card(args.model)
        foreground = args.foreground
        if foreground is None:
            value = ((card.get("training") or {}).get("data") or {}).get("foreground_label")
            foreground = str(value) if value is not None else None
        dataset = load_dataset(args.data, foreground)
        section = training_section(
            [(c.image_path, c.label_path) for c in dataset.cases], InputSpec.from_dict(card["input"]),
            dataset.foreground_label,
            source=f"{len(dataset.cases)} training cases of {Path(args.data).resolve().name} "
                   f"(label {dataset.foreground_label}), scripts/plausibility_card.py")
    except FemurSegError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    print(json.dumps(section, indent=2))
    if args.write:
        card["plausibility"] = section
        write_json(card, Path(args.model) / CARD_NAME, overwrite=True)
        read_card(args.model)  # the written card validates
        print(f"written into {Path(args.model) / CARD_NAME}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
