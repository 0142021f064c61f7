"""The package declares what it imports, and one JupyterLab range is used everywhere."""

from __future__ import annotations

import ast
import json
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / "eksray_jupyter").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_third_party_import_is_a_declared_dependency() -> None:
    declared = {_requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    distributions = packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level_modules()):
        if module in sys.stdlib_module_names or module in ("eksray_jupyter", "__future__"):
            continue
        names = {_requirement_name(d) for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_one_jupyterlab_range() -> None:
    ranges = {
        "build-system": [r for r in PYPROJECT["build-system"]["requires"] if r.startswith("jupyterlab")],
        "lab extra": [
            r for r in PYPROJECT["project"]["optional-dependencies"]["lab"] if r.startswith("jupyterlab")
        ],
        "test extra": [
            r for r in PYPROJECT["project"]["optional-dependencies"]["test"] if r.startswith("jupyterlab")
        ],
    }
    assert {tuple(r) for r in ranges.values()} == {("jupyterlab>=4.6,<5",)}, ranges
    package = json.loads((ROOT / "package.json").read_text())
    assert package["dependencies"]["@jupyterlab/application"] == "^4.6.0"
