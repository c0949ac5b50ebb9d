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


def _module_name(path: Path, root: Path) -> str:
    """Dotted name of ``path`` inside its package: ``cli``, ``phantom.build``, ``phantom``
    (a subpackage's ``__init__``), ``__init__`` (the package's own)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _imports(path: Path, root: Path, package: str, modules: set) -> set:
    """Modules of the package that ``path`` imports: relative imports of any level (``from .x``,
    ``from ..files``) and absolute ones (``FemurSegLib.x``), anywhere in the file."""
    name = _module_name(path, root)
    here = [] if name == "__init__" else name.split(".")
    package_parts = here if path.name == "__init__.py" else here[:-1]
    deps = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        candidates = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package_parts):
                    continue  # above the package: not ours
                base = package_parts[:len(package_parts) - (node.level - 1)]
            elif node.module and node.module.startswith(package + "."):
                base = []
            else:
                continue
            module = (node.module or "") if node.level else node.module[len(package) + 1:]
            target = base + (module.split(".") if module else [])
            candidates = [".".join(target + [a.name]) for a in node.names] + [".".join(target)]
        elif isinstance(node, ast.Import):
            candidates = [a.name[len(package) + 1:] for a in node.names
                          if a.name.startswith(package + ".")]
        for c in candidates:  # the longest prefix that is a module (from .x import name)
            parts = c.split(".") if c else []
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts:
                deps.add(".".join(parts))
    return deps


def _graph(folder: Path, package: str) -> dict:
    """Import graph of every module of the package, subpackages (``phantom/``) included."""
    paths = sorted(folder.rglob("*.py"))
    modules = {_module_name(p, folder) for p in paths}
    return {_module_name(p, folder): _imports(p, folder, package, modules)
            - {_module_name(p, folder)} for p in paths}


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


def test_graph_resolves_subpackages_and_relative_imports(tmp_path):
    """The graph sees a subpackage's modules and their ``..`` imports: a cycle through
    ``phantom/`` is found (the old graph read only the package's top-level files)."""
    pkg = tmp_path / "Pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "files.py").write_text("def f():\n    from .sub.build import g\n")
    (pkg / "sub" / "__init__.py").write_text("from .build import g\n")
    (pkg / "sub" / "build.py").write_text("from ..files import f\nimport Pkg.files\n")
    graph = _graph(pkg, "Pkg")
    assert graph == {"__init__": set(), "files": {"sub.build"}, "sub": {"sub.build"},
                     "sub.build": {"files"}}
    assert _cycles(graph) == {("files", "sub.build")}


def test_the_phantom_subpackage_is_in_the_graph():
    graph = _graph(PACKAGES["FemurSegLib"], "FemurSegLib")
    assert {"phantom", "phantom.build", "phantom.anatomy"} <= set(graph)
    assert {"files", "images", "phantom.anatomy"} <= graph["phantom.build"]


def test_training_never_imports_the_mrml_adapter():
    for path in PACKAGES["FemurSegTraining"].rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        bad = [m for m in names if m.split(".")[0] in ("FemurSegMRMLLib", "slicer", "qt", "vtk")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_cli_contract_is_defined_once():
    """Exit code 3 and the ``warning:`` prefix (written by the CLI, read by the Slicer module)
    are defined in FemurSegLib.errors only; everyone else imports them."""
    found = []
    for path in sorted((ROOT / "FemurSeg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "warning:":
                found.append((path.name, "warning:"))
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and node.value.value == 3 and any(
                        isinstance(t, ast.Name) and ("EXIT" in t.id or "CODE" in t.id)
                        for t in node.targets):
                found.append((path.name, "exit code 3"))
    assert sorted(found) == [("errors.py", "exit code 3"), ("errors.py", "warning:")]


def test_the_core_docstring_lists_every_module():
    """FemurSegLib's docstring names each of its modules (and nothing that is gone)."""
    import re

    text = (PACKAGES["FemurSegLib"] / "__init__.py").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([a-z_]+) {2,}", text.split("-------\n", 1)[1], re.M))
    actual = {p.stem for p in PACKAGES["FemurSegLib"].glob("*.py") if p.stem != "__init__"}
    actual |= {p.name for p in PACKAGES["FemurSegLib"].iterdir() if (p / "__init__.py").is_file()}
    assert listed == actual
