"""Where things are in the monorepo, for the workspace tests.

Owns the paths of the repository root and of each package's sources, found from this file so
the tests work from any working directory. It must not import any of the rpc packages.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES_DIR = REPO_ROOT / "packages"


@dataclass(frozen=True)
class PackageDir:
    """One distribution of the workspace: ``packages/<dist>/src/<import_name>``."""

    project_dir: Path
    import_name: str

    @property
    def dist_name(self) -> str:
        return self.project_dir.name

    @property
    def source_dir(self) -> Path:
        return self.project_dir / "src" / self.import_name

    @property
    def has_init(self) -> bool:
        return (self.source_dir / "__init__.py").is_file()

    def version(self) -> str:
        """The ``__version__`` string literal of the package's ``__about__.py``."""
        tree = ast.parse((self.source_dir / "__about__.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                return node.value.value
        raise AssertionError(f"no __version__ string literal in {self.source_dir / '__about__.py'}")


def workspace_packages() -> list[PackageDir]:
    """Every ``packages/*`` folder that has a ``pyproject.toml``, with its ``src/<name>``."""
    found: list[PackageDir] = []
    for project_dir in sorted(PACKAGES_DIR.iterdir()):
        if not (project_dir / "pyproject.toml").is_file():
            continue
        sources = [
            p
            for p in sorted((project_dir / "src").iterdir())
            if p.is_dir() and p.name.isidentifier() and not p.name.startswith("_")
        ]
        assert len(sources) == 1, f"{project_dir}: expected exactly one package under src/, got {sources}"
        found.append(PackageDir(project_dir=project_dir, import_name=sources[0].name))
    return found


def package(import_name: str) -> PackageDir:
    for pkg in workspace_packages():
        if pkg.import_name == import_name:
            return pkg
    raise LookupError(import_name)
