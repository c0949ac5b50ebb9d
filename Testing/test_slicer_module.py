"""The Slicer module's files that the extensions index and Slicer 5.8 check (no application,
no MRML): the description JSON, the licence, Python 3.9 syntax. (The process, installation and
model-choice tests moved to test_mrml_process.py, test_mrml_install.py, test_mrml_models.py.)"""

from __future__ import annotations

import ast
import json
import re

import pytest

from slicer_helpers import (MODULE_DIR, REPO, slicer)  # noqa: F401,E402


# ----------------------------------------------------------------------------------------------
# Extension index


#: Keys of Slicer's extension catalog entry schema v1.0.1 (Slicer v5.8.0 and v5.10.0:
#: Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json, "additionalProperties": false).
CATALOG_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type",
                "build_dependencies", "build_subdirectory", "enabled", "tier"}


CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


def test_extension_description_json_for_the_index():
    entry = json.loads((REPO / "FemurSeg.json").read_text(encoding="utf-8"))
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_KEYS
    assert entry["$schema"] == ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                                "slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry["category"] == "Segmentation"
    assert entry["build_dependencies"] == ["PyTorch"]
    assert entry["build_subdirectory"] == "."
    assert entry["scm_revision"] == "main"
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    # The repository is not public yet: the URL is a marked placeholder, the same as CMake's.
    assert entry["scm_url"] == "https://github.com/OWNER/SlicerFemurSeg"
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(FemurSeg)" in cmake
    assert not (REPO / "FemurSeg.s4ext").exists()  # Slicer 5.6 (.s4ext index) is not supported


def cmake_literal(text: str, name: str):
    """The value of ``set(NAME "...")`` as written (no CMake expansion: the index's checker
    reads the file as text), or None."""
    import re

    match = re.search(rf'^\s*set\(\s*{name}\s+"([^"]*)"\s*\)', text, re.M)
    return match.group(1) if match else None


def test_description_passes_the_extensions_index_rules():
    """The rules of Slicer/ExtensionsIndex scripts/check_description_files.py that can be
    checked here: the icon and screenshot addresses are literal http(s) URLs (read without
    CMake), at least one screenshot, the repository name starts with "Slicer" while the
    extension name (the .json file and project()) does not, a licence file in the root."""
    from urllib.parse import urlsplit

    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    icon = cmake_literal(cmake, "EXTENSION_ICONURL")
    assert icon == ("https://raw.githubusercontent.com/OWNER/SlicerFemurSeg/main/Resources/"
                    "Icons/FemurSeg.png")
    assert (REPO / urlsplit(icon).path.split("/main/", 1)[1]).is_file()  # the file it names
    screenshots = (cmake_literal(cmake, "EXTENSION_SCREENSHOTURLS") or "").split()
    assert screenshots == ["https://raw.githubusercontent.com/OWNER/SlicerFemurSeg/main/"
                           "Resources/Screenshots/FemurSeg.png"]
    for url in [icon] + screenshots + [cmake_literal(cmake, "EXTENSION_HOMEPAGE")]:
        assert url.startswith("https://") and "${" not in url, url
    entry = json.loads((REPO / "FemurSeg.json").read_bytes())
    assert b"\r" not in (REPO / "FemurSeg.json").read_bytes()  # LF line endings only
    repository = urlsplit(entry["scm_url"]).path.strip("/").split("/")[-1]
    assert repository.startswith("Slicer") and repository == "SlicerFemurSeg"
    assert not "FemurSeg".lower().startswith("slicer")
    assert "project(FemurSeg)" in cmake  # = the description file's name, FemurSeg.json
    assert (REPO / "LICENSE").is_file()
    # How to make the screenshot is in the README, under the path the URL names.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "Resources/Screenshots/FemurSeg.png" in readme


def test_the_package_carries_this_repositorys_licence():
    """UseSlicer.cmake (v5.8.0, v5.10.0) puts Slicer's licence in the package unless
    EXTENSION_LICENSE_FILE is set before include(${Slicer_USE_FILE})."""
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    licence = cmake.index("set(EXTENSION_LICENSE_FILE ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE)")
    assert licence < cmake.index("include(${Slicer_USE_FILE})")


def test_one_repository_placeholder_everywhere():
    """Every address of the project names the same placeholder repository, OWNER/SlicerFemurSeg
    (the help text takes it from FemurSegLib.release): replacing OWNER is one search."""
    import re

    from FemurSegLib import release

    files = [REPO / "CMakeLists.txt", REPO / "FemurSeg.json", MODULE_DIR / "FemurSeg.py",
             MODULE_DIR / "FemurSegLib" / "release.py", REPO / "README.md"]
    found = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        for repo in re.findall(r"(?:github\.com|githubusercontent\.com)/([\w.-]+/[\w.-]+)", text):
            if repo.split("/")[0] != "Slicer":  # Slicer's own schema and repositories
                found.setdefault(repo.rstrip("."), set()).add(path.name)
    assert set(found) == {release.REPOSITORY}, found
    assert release.REPOSITORY == "OWNER/SlicerFemurSeg"
    module = (MODULE_DIR / "FemurSeg.py").read_text(encoding="utf-8")
    assert "github.com" not in module and '.format(url=REPOSITORY_URL)' in module


def test_license_is_the_apache_license():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.lstrip().startswith("Apache License\n")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    for section in range(1, 10):  # all nine sections of the terms
        assert f"\n   {section}. " in text, section
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "Apache-2.0" in pyproject


def test_module_code_is_python_3_9_syntax():
    """Slicer 5.8 runs Python 3.9: the module, its adapter and the core parse as 3.9 code."""
    import ast

    sources = sorted(MODULE_DIR.rglob("*.py"))
    assert len(sources) > 20
    for path in sources:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
