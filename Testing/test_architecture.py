"""The layering stays a layering: no import cycles inside the core, the adapter or training
(imports inside functions count too: they only hide a cycle), and the core never imports the
training package or Slicer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"FemurSegLib": ROOT / "FemurSeg" / "FemurSegLib",
            "FemurSegMRMLLib": ROOT / "FemurSeg" / "FemurSegMRMLLib",
            "FemurSegReview": ROOT / "FemurSeg" / "FemurSegReview",
            "FemurSegTraining": ROOT / "FemurSegTraining"}


def _imports(path: Path, package: str, modules: set) -> set:
    """Sibling modules of ``path`` it imports (relative or absolute, anywhere in the file)."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
            elif node.level == 1:
                deps.update(a.name for a in node.names)
            elif node.module and node.module.startswith(package + "."):
                deps.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            deps.update(a.name.split(".")[1] for a in node.names
                        if a.name.startswith(package + "."))
    return deps & modules


def _graph(folder: Path, package: str) -> dict:
    modules = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir()
                                                      if (p / "__init__.py").is_file()}
    return {p.stem: _imports(p, package, modules) - {p.stem} for p in folder.glob("*.py")}


def _cycles(graph: dict) -> set:
    found = set()

    def visit(node, path):
        for dep in graph.get(node, ()):
            if dep in path:
                found.add(tuple(sorted(set(path[path.index(dep):]))))
            else:
                visit(dep, path + [dep])

    for start in graph:
        visit(start, [start])
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    assert _cycles({"a": {"b"}, "b": set()}) == set()


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycles(package):
    assert _cycles(_graph(PACKAGES[package], package)) == set()


def test_core_imports_neither_training_nor_slicer():
    for path in PACKAGES["FemurSegLib"].rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [m for m in names if m.split(".")[0] in CORE_NEVER_IMPORTS]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


#: What no module of the core imports (statically or inside a function): the review app comes
#: to ``femurseg`` through the ``femurseg.commands`` entry point, never by an import.
CORE_NEVER_IMPORTS = ("FemurSegTraining", "slicer", "qt", "FemurSegMRMLLib", "vtk",
                      "FemurSegReview", "trame", "trame_slicer", "trame_server", "aiohttp")


def _top_imports(path: Path) -> list:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.level == 0]
    return names


def test_core_never_names_the_review_package():
    # not even through importlib: the string itself may not appear in the core's code
    for path in PACKAGES["FemurSegLib"].rglob("*.py"):
        assert "FemurSegReview" not in path.read_text(encoding="utf-8"), path


def test_only_the_review_server_imports_trame():
    for path in PACKAGES["FemurSegReview"].rglob("*.py"):
        trame = [m for m in _top_imports(path)
                 if m.split(".")[0] in ("trame", "trame_slicer", "trame_server", "aiohttp",
                                        "undo_stack", "slicer", "vtkmodules")]
        assert not trame or path.name == "server.py", f"{path.name} imports {trame}"


def test_the_review_entry_point_is_declared():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points."femurseg.commands"]\nreview = ' \
           '"FemurSegReview.command:register"' in text
