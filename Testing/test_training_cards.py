"""FemurSegTraining.cards: the card's data description from the dataset's README."""

from __future__ import annotations

import pytest

from conftest import require_torch

torch = require_torch()



# ----------------------------------------------------------------------------------------------
# Data description


@pytest.mark.parametrize("readme, expected", [
    ("# Title\n\nFirst paragraph\nof two lines.\n\nSecond.", "First paragraph of two lines."),
    ("# T\n\n17 scans. Layout follows nnU-Net:\n\n    imagesTr/", "17 scans."),  # block intro dropped
    ("Only: a colon", "Only: a colon"),
])
def test_card_data_description_from_readme(tmp_path, readme, expected):
    from FemurSegTraining.cards import data_description

    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    assert data_description(str(tmp_path)) == expected
    assert data_description(str(tmp_path / "missing")) is None
