"""Every package carries the licence and the metadata an index page shows.

Owns the static checks of ``packages/*/pyproject.toml`` and the LICENSE files (the built
wheels are checked in ``test_wheel.py``): each package ships the root's MIT licence, names
its authors, its project URLs and the platforms it supports. It must not import the rpc packages.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.workspace._repo import PACKAGES_DIR, REPO_ROOT, PackageDir, workspace_packages

if sys.version_info >= (3, 11):
    import tomllib
else:  # 3.10: the same parser, from PyPI (a test dependency)
    import tomli as tomllib


def project(pkg: PackageDir) -> dict[str, Any]:
    table = tomllib.loads((pkg.project_dir / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert isinstance(table, dict)
    return table


def test_the_root_license_is_mit() -> None:
    text = (REPO_ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


@pytest.mark.parametrize("pkg", workspace_packages(), ids=lambda pkg: pkg.dist_name)
def test_each_package_ships_the_root_license(pkg: PackageDir) -> None:
    assert (pkg.project_dir / "LICENSE").read_bytes() == (REPO_ROOT / "LICENSE").read_bytes()
    meta = project(pkg)
    assert meta["license"] == "MIT"
    assert meta["license-files"] == ["LICENSE"]


@pytest.mark.parametrize("pkg", workspace_packages(), ids=lambda pkg: pkg.dist_name)
def test_each_package_names_authors_and_urls(pkg: PackageDir) -> None:
    meta = project(pkg)
    assert meta["authors"] and all(author.get("name") for author in meta["authors"])
    urls = meta["urls"]
    assert urls["Homepage"].startswith("https://")
    assert all(url.startswith("https://") for url in urls.values())


@pytest.mark.parametrize("pkg", workspace_packages(), ids=lambda pkg: pkg.dist_name)
def test_classifiers_state_the_platforms_that_are_tested(pkg: PackageDir) -> None:
    """Only the sans-I/O core is OS independent; the rest needs POSIX (fork, pipes, unix sockets)."""
    classifiers = project(pkg)["classifiers"]
    if pkg.dist_name == "rpc-protocol":
        assert "Operating System :: OS Independent" in classifiers
    else:
        assert "Operating System :: OS Independent" not in classifiers
        assert "Operating System :: POSIX :: Linux" in classifiers
    versions = sorted(c.rsplit(" ", 1)[1] for c in classifiers if c.startswith("Programming Language :: Python :: 3."))
    assert versions == ["3.10", "3.11", "3.12", "3.13"]
    assert project(pkg)["requires-python"] == ">=3.10"


def test_no_compiled_modules_in_the_sources() -> None:
    """A compiled build (rpc-protocol's mypyc hook) built without HATCH_BUILD_CLEAN_HOOKS_AFTER
    leaves extension modules next to the sources, where every editable environment would import
    them instead of the .py files (`HATCH_BUILD_HOOK_ENABLE_MYPYC=true hatch clean` in the
    package's folder removes them)."""
    suffixes = (".so", ".pyd")
    found = [str(path.relative_to(REPO_ROOT)) for path in PACKAGES_DIR.glob("*/src/**/*") if path.suffix in suffixes]
    assert not found, f"compiled modules in the sources: {found}"
