"""Markdown tables render as tables: the README's and docs' tables and the ones femurseg-train
writes (Table 2, per fold, per case, comparisons).

A GitHub-flavoured Markdown table is a header row, a delimiter row (``|---|---:|``) with as many
cells, and body rows; a body row that looks like a delimiter renders as a row of dashes, and a
row with more cells than the header loses its last ones. :func:`table_problems` finds both, a
table without its delimiter row (rendered as a paragraph of pipes) and a table glued to the text
above it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]
_DELIMITER_CELL = re.compile(r"^\s*:?-+:?\s*$")


def cells(line: str) -> List[str]:
    """The cells of a table row: split at the pipes that are not escaped (``\\|``)."""
    text = line.strip()
    text = text[1:] if text.startswith("|") else text
    text = text[:-1] if text.endswith("|") and not text.endswith("\\|") else text
    return re.split(r"(?<!\\)\|", text)


def is_delimiter(line: str) -> bool:
    return all(_DELIMITER_CELL.match(c) for c in cells(line))


def table_problems(text: str, name: str = "text") -> List[str]:
    """One line per malformed table in the Markdown ``text`` (code blocks are skipped)."""
    problems = []
    lines = text.splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.lstrip().startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            i += 1
        block = lines[start:i]
        where = f"{name}:{start + 1}"
        if start > 0 and lines[start - 1].strip():
            problems.append(f"{where}: a table needs a blank line before it")
        if len(block) < 2 or not is_delimiter(block[1]):
            problems.append(f"{where}: table without a delimiter row under its header")
            continue
        width = len(cells(block[0]))
        if len(cells(block[1])) != width:
            problems.append(f"{where}: delimiter row has {len(cells(block[1]))} cells, the "
                            f"header {width}")
        for n, row in enumerate(block[2:], start=start + 3):
            if is_delimiter(row):
                problems.append(f"{name}:{n}: stray delimiter row inside a table")
            elif len(cells(row)) != width:
                problems.append(f"{name}:{n}: row has {len(cells(row))} cells, the header "
                                f"{width}")
    return problems


def test_the_checker_finds_each_kind_of_malformed_table():
    good = "Text.\n\n| a | b |\n|---|---:|\n| 1 | x \\| y |\n\nMore text.\n"
    assert table_problems(good) == []
    assert table_problems("```\n| not | a table\n```\n") == []
    assert table_problems("\n| a | b |\n|---|---:|\n| 1 | 2 |\n|---|---|---:|\n") == [
        "text:5: stray delimiter row inside a table"]
    assert table_problems("\n| a | b |\n|---|---:|\n| 1 | 2 | 3 |\n") == [
        "text:4: row has 3 cells, the header 2"]
    assert table_problems("\n| a | b |\n| 1 | 2 |\n") == [
        "text:2: table without a delimiter row under its header"]
    assert table_problems("\n| a | b |\n|---|\n") == [
        "text:2: delimiter row has 1 cells, the header 2"]
    assert table_problems("Intro:\n| a |\n|---|\n") == [
        "text:2: a table needs a blank line before it"]


@pytest.mark.parametrize("path", [ROOT / "README.md"] + sorted((ROOT / "docs").rglob("*.md")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_documentation_tables_are_well_formed(path):
    assert table_problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []


_SUBJECTS = [  # literal per-subject rows: two folds, three cases, one missing value
    {"subject": "b", "fold": 1.0, "dsc": 0.8, "dsc_labelled_slices": 0.85, "precision": 0.9,
     "recall": 0.7, "specificity": 0.99, "auc": 0.98, "ap": 0.9, "hd95_mm": 5.2, "assd_mm": 1.0,
     "volume_pred_ml": 200.4, "volume_ref_ml": 210.6},
    {"subject": "a", "fold": 0.0, "dsc": 0.9, "dsc_labelled_slices": 0.9, "precision": 0.8,
     "recall": 1.0, "specificity": 0.98, "auc": 0.97, "ap": 0.8, "hd95_mm": 3.0, "assd_mm": 0.5,
     "volume_pred_ml": 100.0, "volume_ref_ml": 90.0},
    {"subject": "c", "fold": 1.0, "dsc": 0.6, "precision": 0.7, "recall": 0.5,
     "hd95_mm": float("nan"), "assd_mm": 2.0, "volume_pred_ml": 50.0, "volume_ref_ml": 60.0},
]


def test_generated_tables_are_well_formed():
    """What femurseg-train table/evaluate write, and what the README's Table 2 is pasted from."""
    from FemurSegTraining.report import (case_table, comparison_tables, fold_table,
                                         markdown_table, table_row)

    rows = [table_row("3D tiny", 0.5, "0.5", _SUBJECTS),
            table_row("3D tiny + PP", 0.593, "pr", _SUBJECTS)]
    for name, text in (("markdown_table", markdown_table(rows, title="Table 2")),
                       ("fold_table", fold_table(_SUBJECTS)),
                       ("case_table", case_table(_SUBJECTS)),
                       ("comparison_tables", comparison_tables([("3D", _SUBJECTS),
                                                                ("2D", _SUBJECTS[:2])]))):
        assert table_problems("\n" + text, name) == []
        assert text.count("|---") >= 1
