"""FemurSegTraining.report: the per-fold, per-case and comparison tables (known answers)."""

from __future__ import annotations

import pytest

from conftest import require_torch

torch = require_torch()



# ----------------------------------------------------------------------------------------------
# Tables

_SUBJECTS = [  # tiny literal per-subject rows: two folds, three cases
    {"subject": "b", "fold": 1.0, "dsc": 0.8, "dsc_labelled_slices": 0.85, "precision": 0.9, "recall": 0.7, "hd95_mm": 5.2,
     "assd_mm": 1.0, "volume_pred_ml": 200.4, "volume_ref_ml": 210.6},
    {"subject": "a", "fold": 0.0, "dsc": 0.9, "dsc_labelled_slices": 0.9, "precision": 0.8, "recall": 1.0, "hd95_mm": 3.0,
     "assd_mm": 0.5, "volume_pred_ml": 100.0, "volume_ref_ml": 90.0},
    {"subject": "c", "fold": 1.0, "dsc": 0.6, "precision": 0.7, "recall": 0.5, "hd95_mm": float("nan"),
     "assd_mm": 2.0, "volume_pred_ml": 50.0, "volume_ref_ml": 60.0},
]


def test_fold_table_known_answer():
    from FemurSegTraining.report import fold_table

    lines = fold_table(_SUBJECTS).splitlines()
    assert lines[0] == ("| Fold | Validation cases | DSC | DSC (labelled slices) | Precision | "
                        "Recall | HD95 mm | ASSD mm |")
    # one case: the sample sd of one value is undefined (n/a), not 0
    assert lines[2] == ("| 0 | a | 0.900 ± n/a | 0.900 ± n/a | 0.800 ± n/a | 1.000 ± n/a "
                        "| 3.0 ± n/a | 0.50 ± n/a |")
    # fold 1: DSC 0.8, 0.6 -> 0.7 ± 0.141 (sample sd); HD95 and the labelled-slice DSC ignore
    # the missing values (case c has no labelled-slice DSC)
    assert lines[3] == ("| 1 | b, c | 0.700 ± 0.141 | 0.850 ± n/a | 0.800 ± 0.141 | "
                        "0.600 ± 0.141 | 5.2 ± n/a | 1.50 ± 0.71 |")
    assert lines[4].startswith("| all | 3 | 0.767 ± 0.153 |")


def test_case_table_known_answer():
    from FemurSegTraining.report import case_table

    lines = case_table(_SUBJECTS).splitlines()
    assert [ln.split(" | ")[0] for ln in lines[2:]] == ["| a", "| b", "| c"]  # sorted by case
    assert lines[3] == "| b | 1 | 0.800 | 0.850 | 0.900 | 0.700 | 5.2 | 1.00 | 200 / 211 |"
    assert lines[4] == "| c | 1 | 0.600 | n/a | 0.700 | 0.500 | n/a | 2.00 | 50 / 60 |"


def test_comparison_tables_side_by_side():
    from FemurSegTraining.report import comparison_tables

    other = [dict(r, dsc=r["dsc"] - 0.1) for r in _SUBJECTS[:2]]  # case c missing
    text = comparison_tables([("3D", _SUBJECTS), ("2D + PP", other)])
    assert "| Fold | 3D | 2D + PP |" in text
    assert "| 1 | 0.700 ± 0.141 | 0.700 ± n/a |" in text  # one case: no sd
    assert "| all | 0.767 ± 0.153 | 0.750 ± 0.071 |" in text
    assert "| a | 0 | 0.900 | 0.800 |" in text and "| c | 1 | 0.600 | n/a |" in text


@pytest.mark.parametrize("folds, inference, expected", [
    (1, {"roi": {"threshold": 0.05}}, []),  # one network: the product path itself
    (4, {}, ["each subject is predicted by its own fold; the exported model averages all 4 "
             "folds"]),
    (2, {"roi": {"threshold": 0.05}}, ["each subject is predicted by its own fold; the exported "
                                       "model averages all 2 folds with the ROI cascade"]),
])
def test_product_differences_name_the_exported_folds(folds, inference, expected):
    """The exported model holds the folds evaluated: a one-fold experiment of a 4-fold split
    exports one network and differs from `femurseg segment` in nothing."""
    from FemurSegTraining.evaluate import product_differences

    assert product_differences({"inference": inference}, folds) == expected
