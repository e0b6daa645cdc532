"""The layering rules of DESIGN.md §1, checked against the sources.

Owns three checks: importing ``rpc_protocol`` loads only the standard library and no I/O or
thread module (in a fresh interpreter); a copy of ``rpc_protocol`` under another name imports
and exposes the same ``__all__`` (vendorability); and a static scan of every
``packages/*/src/**/*.py`` proving that dependencies point down only. The allowed edges live in
``LAYERS``: a new package gets one entry there. It must not import the rpc packages itself.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workspace._repo import PackageDir, package, workspace_packages

if sys.version_info >= (3, 11):
    import tomllib
else:  # 3.10: the same parser, from PyPI (a test dependency)
    import tomli as tomllib

#: Modules that mean I/O or threads; the sans-I/O core must not load them.
IO_AND_THREAD_MODULES = frozenset({"socket", "ssl", "selectors", "threading", "asyncio"})


@dataclass(frozen=True)
class Layer:
    """What one package may import."""

    #: The other rpc packages it may import (only layers below it).
    may_import: frozenset[str]
    #: Standard-library modules it must not import.
    forbidden: frozenset[str] = frozenset()
    #: Vendorable: standard library only, and relative imports for its own modules.
    vendorable: bool = False


#: The layer graph, lowest first. Dependencies point down only; rpc_registry and rpc_tls are
#: siblings and must not import each other; rpc_classic may use rpc_tls (its ``tls`` extra).
LAYERS: dict[str, Layer] = {
    "rpc_protocol": Layer(may_import=frozenset(), forbidden=IO_AND_THREAD_MODULES, vendorable=True),
    "rpc_service": Layer(may_import=frozenset({"rpc_protocol"})),
    "rpc_registry": Layer(may_import=frozenset({"rpc_protocol", "rpc_service"})),
    "rpc_tls": Layer(may_import=frozenset({"rpc_protocol", "rpc_service"})),
    # rpc_tls and rpc_registry are optional extras of rpc-classic, imported lazily
    "rpc_classic": Layer(may_import=frozenset({"rpc_protocol", "rpc_service", "rpc_tls", "rpc_registry"})),
}

STDLIB = frozenset(sys.stdlib_module_names)

SUBPROCESS_TIMEOUT = 60.0

# Run in a fresh interpreter with -I -S (no site-packages, no user site, no environment
# variables, no cwd on sys.path): only the directory given is importable, so whatever shows up
# in sys.modules was loaded by the import itself.
_IMPORT_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
module = __import__(sys.argv[2])
after = set(sys.modules)
import json
names = getattr(module, "__all__", None)
print(json.dumps({
    "new_modules": sorted(after - before),
    "all_modules": sorted(after),
    "all": None if names is None else list(names),
    "missing": [] if names is None else [n for n in names if not hasattr(module, n)],
    "file": getattr(module, "__file__", None),
}))
"""


@dataclass(frozen=True)
class ImportProbe:
    new_modules: frozenset[str]
    all_modules: frozenset[str]
    all: tuple[str, ...] | None
    missing: tuple[str, ...]
    file: str | None

    def top_level(self, modules: frozenset[str]) -> frozenset[str]:
        return frozenset(name.partition(".")[0] for name in modules)


def probe_import(search_dir: Path, name: str) -> ImportProbe:
    """Import ``name`` from ``search_dir`` alone in a fresh interpreter and report what loaded."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _IMPORT_PROBE, str(search_dir), name],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"`import {name}` failed in a fresh interpreter:\n{result.stderr}"
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    raw_all = data["all"]
    return ImportProbe(
        new_modules=frozenset(data["new_modules"]),
        all_modules=frozenset(data["all_modules"]),
        all=None if raw_all is None else tuple(str(n) for n in raw_all),
        missing=tuple(data["missing"]),
        file=data["file"],
    )


def require_init(pkg: PackageDir) -> None:
    assert pkg.has_init, f"{pkg.source_dir / '__init__.py'} does not exist yet"


# --- (a) the protocol layer loads only the standard library ---------------------------------


def test_protocol_import_loads_only_stdlib_and_no_io() -> None:
    pkg = package("rpc_protocol")
    require_init(pkg)
    probe = probe_import(pkg.source_dir.parent, "rpc_protocol")

    assert probe.file is not None
    assert Path(probe.file).resolve() == (pkg.source_dir / "__init__.py").resolve()
    loaded_io = probe.top_level(probe.all_modules) & IO_AND_THREAD_MODULES
    assert not loaded_io, f"importing rpc_protocol loaded I/O or thread modules: {sorted(loaded_io)}"
    foreign = probe.top_level(probe.new_modules) - STDLIB - {"rpc_protocol"}
    assert not foreign, f"importing rpc_protocol loaded non-stdlib modules: {sorted(foreign)}"
    assert probe.all is not None, "rpc_protocol/__init__.py must define __all__"
    assert not probe.missing, f"names in rpc_protocol.__all__ that do not exist: {probe.missing}"


# --- (b) the protocol layer is vendorable ---------------------------------------------------


def test_protocol_is_vendorable_under_another_name(tmp_path: Path) -> None:
    pkg = package("rpc_protocol")
    require_init(pkg)
    shutil.copytree(
        pkg.source_dir,
        tmp_path / "vendored_wire",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )

    original = probe_import(pkg.source_dir.parent, "rpc_protocol")
    vendored = probe_import(tmp_path, "vendored_wire")

    assert vendored.file is not None
    assert Path(vendored.file).resolve() == (tmp_path / "vendored_wire" / "__init__.py").resolve()
    assert "rpc_protocol" not in vendored.top_level(vendored.all_modules), (
        "the vendored copy imported rpc_protocol by name: use relative imports inside the package"
    )
    foreign = vendored.top_level(vendored.new_modules) - STDLIB - {"vendored_wire"}
    assert not foreign, f"the vendored copy loaded non-stdlib modules: {sorted(foreign)}"
    assert vendored.all is not None
    assert sorted(vendored.all) == sorted(original.all or ())
    assert not vendored.missing


# --- (c) static scan: dependencies point down only -------------------------------------------


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    #: Top-level module name of an absolute import; None for a relative import.
    top_level: str | None

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def iter_imports(path: Path) -> Iterator[Import]:
    """Every import statement in a file, wherever it is (including under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name.partition(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield Import(path, node.lineno, None)
            elif node.module is not None:
                yield Import(path, node.lineno, node.module.partition(".")[0])


def layer_violations(import_name: str, layer: Layer, imp: Import) -> list[str]:
    """Why one import in package ``import_name`` breaks its layer's rules (empty if it doesn't)."""
    target = imp.top_level
    if target is None or target == "__future__":
        return []
    problems: list[str] = []
    if target == import_name:
        if layer.vendorable:
            problems.append(f"{imp.where()}: imports its own package by name; use a relative import")
        return problems
    if target in LAYERS and target not in layer.may_import:
        problems.append(f"{imp.where()}: {import_name} must not import {target} (dependencies point down)")
    if target in layer.forbidden:
        problems.append(f"{imp.where()}: {import_name} must not import {target}")
    if layer.vendorable and target not in STDLIB:
        problems.append(f"{imp.where()}: {import_name} is stdlib-only but imports {target}")
    return problems


def source_files(pkg: PackageDir) -> list[Path]:
    return sorted(p for p in pkg.source_dir.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_package_has_a_layer() -> None:
    names = {pkg.import_name for pkg in workspace_packages()}
    assert "rpc_protocol" in names
    unknown = names - LAYERS.keys()
    assert not unknown, f"add these packages to LAYERS in {__file__}: {sorted(unknown)}"


def test_layer_graph_points_down() -> None:
    order = list(LAYERS)
    for name, layer in LAYERS.items():
        assert layer.may_import <= LAYERS.keys(), name
        for lower in layer.may_import:
            assert order.index(lower) < order.index(name), f"{name} may import {lower}, which is not below it"
    assert "rpc_tls" not in LAYERS["rpc_registry"].may_import
    assert "rpc_registry" not in LAYERS["rpc_tls"].may_import


@pytest.mark.parametrize("pkg", workspace_packages(), ids=lambda pkg: pkg.import_name)
def test_imports_respect_layers(pkg: PackageDir) -> None:
    layer = LAYERS.get(pkg.import_name)
    if layer is None:
        pytest.fail(f"{pkg.import_name} has no entry in LAYERS")
    files = source_files(pkg)
    assert files, f"no sources under {pkg.source_dir}"
    problems = [p for path in files for imp in iter_imports(path) for p in layer_violations(pkg.import_name, layer, imp)]
    assert not problems, "\n".join(problems)


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


@pytest.mark.parametrize("pkg", workspace_packages(), ids=lambda pkg: pkg.import_name)
def test_sibling_imports_are_declared_dependencies(pkg: PackageDir) -> None:
    """``pip install <dist>`` must bring every rpc package it imports (directly or via an extra)."""
    project = tomllib.loads((pkg.project_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_requirement_name(r) for r in project.get("dependencies", [])}
    for extra in project.get("optional-dependencies", {}).values():
        declared |= {_requirement_name(r) for r in extra}
    imported = {
        imp.top_level
        for path in source_files(pkg)
        for imp in iter_imports(path)
        if imp.top_level is not None and imp.top_level in LAYERS and imp.top_level != pkg.import_name
    }
    undeclared = {name for name in imported if name.replace("_", "-") not in declared}
    assert not undeclared, f"{pkg.dist_name} imports {sorted(undeclared)} without depending on them"
