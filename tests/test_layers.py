"""The imports between the package's layers go one way (ARCHITECTURE.md, "Which way the imports go")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "eksray_jupyter"
FACES = ("server", "cli", "magics", "console", "present", "kernel", "services")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path, module: str) -> set[str]:
    """The eksray_jupyter modules that ``module`` (at ``path``) imports, at module level or in functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("eksray_jupyter"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("eksray_jupyter"):
                continue
            if node.module:
                found.add(target)
            else:  # ``from .. import ray_dashboard``: the names are the modules
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    if parts[1] == "backends" and len(parts) > 2:
        return f"backends.{parts[2]}"
    return parts[1]


def _edges(extra: dict[str, Path] | None = None) -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py") if "labextension" not in path.parts}
    modules.update(extra or {})
    edges: dict[str, set[str]] = {}
    for source, path in modules.items():
        for target in _imports(path, source):
            if _layer(target) not in ("package", _layer(source)):
                edges.setdefault(source, set()).add(target)
    return edges


def _violations(allowed: dict[str, tuple[str, ...]], extra: dict[str, Path] | None = None) -> list[str]:
    out = []
    for source, targets in sorted(_edges(extra).items()):
        layer = _layer(source)
        if layer not in allowed:
            continue
        for target in sorted(targets):
            target_layer = _layer(target)
            if not any(target_layer == ok or target_layer.startswith(ok + ".") for ok in allowed[layer]):
                out.append(f"{source} imports {target}")
    return out


def test_imports_point_one_way() -> None:
    allowed = {
        "core": (),
        "jobs": ("core",),
        "backends.ray_dashboard": ("core",),  # shared by the backends
        "backends.local": ("core", "backends.ray_dashboard"),
        # The kuberay backend provides the KubeRay job runner: it implements jobs' interfaces.
        "backends.kuberay": ("core", "jobs", "backends.ray_dashboard"),
    }
    assert _violations(allowed) == []


def test_nothing_below_the_faces_imports_a_face() -> None:
    faces = set(FACES)
    offenders = [
        f"{source} imports {target}"
        for source, targets in sorted(_edges().items())
        if _layer(source) not in faces and _layer(source) != "package"  # the entry points live at the top
        for target in sorted(targets)
        if _layer(target) in faces
    ]
    assert offenders == []


def test_the_check_sees_a_wrong_way_import(tmp_path: Path) -> None:
    """Relative imports inside functions are resolved too: a core module importing jobs is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..jobs.service import JobService\n")
    violations = _violations({"core": ()}, {"eksray_jupyter.core.probe": probe})
    assert violations == ["eksray_jupyter.core.probe imports eksray_jupyter.jobs.service"]
