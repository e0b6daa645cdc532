"""Each package builds into a wheel and an sdist that install and import on their own.

Owns the packaging check: ``hatch build`` (or, without hatch on PATH, ``pip wheel``) of
rpc-protocol and rpc-service, then a fresh virtual environment that installs the wheels with
``--no-index`` and no pip configuration, so the metadata must resolve from the built files
alone. Slow (builds and venvs), so marked ``slow``; it still runs by default. It must not
import the rpc packages in this interpreter: everything happens in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workspace._repo import PackageDir, package

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BUILD_TIMEOUT = 300.0
VENV_TIMEOUT = 300.0
PIP_TIMEOUT = 300.0


def clean_env() -> dict[str, str]:
    """This process's environment without the active hatch/venv markers or pip configuration."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HATCH_ENV_", "PIP_", "PYTHON")) and key != "VIRTUAL_ENV"
    }
    env["PIP_CONFIG_FILE"] = os.devnull  # ignore every pip.conf: no index, no find-links
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


def run(args: Sequence[str], *, timeout: float, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run(
        list(args),
        cwd=cwd,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, (
        f"command failed ({result.returncode}): {' '.join(args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result.stdout


@dataclass(frozen=True)
class Built:
    pkg: PackageDir
    wheel: Path
    sdist: Path | None


def build(pkg: PackageDir, out_dir: Path) -> Built:
    """Build ``pkg`` into ``out_dir``: ``hatch build`` when hatch is on PATH, else ``pip wheel``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    hatch = shutil.which("hatch")
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("HATCH_ENV_") or k == "VIRTUAL_ENV"]:
        del env[key]  # a nested hatch must not think it runs inside our test environment
    if hatch is not None:
        run([hatch, "build", "-t", "wheel", "-t", "sdist", str(out_dir)], cwd=pkg.project_dir, env=env, timeout=BUILD_TIMEOUT)
    else:
        run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out_dir), str(pkg.project_dir)],
            env=env,
            timeout=BUILD_TIMEOUT,
        )
    stem = f"{pkg.import_name}-{pkg.version()}"
    wheels = sorted(out_dir.glob(f"{stem}-*.whl"))
    assert len(wheels) == 1, f"expected one wheel {stem}-*.whl in {sorted(out_dir.iterdir())}"
    sdists = sorted(out_dir.glob(f"{stem}.tar.gz"))
    if hatch is not None:
        assert len(sdists) == 1, f"expected {stem}.tar.gz in {sorted(out_dir.iterdir())}"
    return Built(pkg=pkg, wheel=wheels[0], sdist=sdists[0] if sdists else None)


@dataclass(frozen=True)
class Venv:
    root: Path

    @property
    def python(self) -> Path:
        if sys.platform == "win32":
            return self.root / "Scripts" / "python.exe"
        return self.root / "bin" / "python"

    def pip_install(self, *args: str) -> None:
        run([str(self.python), "-m", "pip", "install", "--no-index", *args], env=clean_env(), timeout=PIP_TIMEOUT)

    def probe(self, import_name: str, dist_name: str) -> dict[str, str]:
        """Import a package in the venv, isolated from the source tree (-I, cwd=the venv)."""
        code = (
            "import importlib, importlib.metadata, json, sys\n"
            f"module = importlib.import_module({import_name!r})\n"
            f"about = importlib.import_module({import_name + '.__about__'!r})\n"
            "print(json.dumps({"
            "'file': str(getattr(module, '__file__', None)),"
            "'about_file': about.__file__,"
            "'version': about.__version__,"
            f"'metadata_version': importlib.metadata.version({dist_name!r}),"
            "'py_typed': str(__import__('pathlib').Path(about.__file__).with_name('py.typed').is_file()),"
            "}))\n"
        )
        out = run([str(self.python), "-I", "-c", code], cwd=self.root, env=clean_env(), timeout=PIP_TIMEOUT)
        data = json.loads(out)
        assert isinstance(data, dict)
        return {str(k): str(v) for k, v in data.items()}


def make_venv(path: Path) -> Venv:
    run([sys.executable, "-m", "venv", str(path)], env=clean_env(), timeout=VENV_TIMEOUT)
    return Venv(path)


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def protocol_dist(dist_dir: Path) -> Built:
    return build(package("rpc_protocol"), dist_dir)


@pytest.fixture(scope="module")
def service_dist(dist_dir: Path, protocol_dist: Built) -> Built:
    pkg = package("rpc_service")
    if not pkg.has_init:
        pytest.skip(f"{pkg.source_dir / '__init__.py'} does not exist yet")
    return build(pkg, dist_dir)


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(meta).decode("utf-8")


def sdist_names(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tf:
        return tf.getnames()


def check_contents(built: Built) -> None:
    name = built.pkg.import_name
    names = wheel_names(built.wheel)
    for required in ("__init__.py", "__about__.py", "py.typed"):
        assert f"{name}/{required}" in names, f"{built.wheel.name} lacks {name}/{required}"
    assert not [n for n in names if n.startswith(("tests/", "src/"))], names
    metadata = wheel_metadata(built.wheel)
    assert "Classifier: Typing :: Typed" in metadata
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
    assert [n for n in names if n.endswith(".dist-info/licenses/LICENSE")], f"{built.wheel.name} lacks its LICENSE"
    assert "Author: The rpc maintainers" in metadata
    assert "Project-URL: Homepage, " in metadata
    if built.sdist is not None:
        top = f"{name}-{built.pkg.version()}"
        snames = sdist_names(built.sdist)
        for required in ("pyproject.toml", "README.md", "LICENSE", f"src/{name}/__about__.py", f"src/{name}/py.typed"):
            assert f"{top}/{required}" in snames, f"{built.sdist.name} lacks {required}"


def installed_files_are_in(venv: Venv, info: Mapping[str, str]) -> Iterator[str]:
    root = venv.root.resolve()
    for key in ("file", "about_file"):
        if not Path(info[key]).resolve().is_relative_to(root):
            yield f"{key}={info[key]} is not inside {root}"


def test_protocol_wheel_installs_alone(protocol_dist: Built, tmp_path: Path) -> None:
    check_contents(protocol_dist)
    assert "Requires-Dist:" not in wheel_metadata(protocol_dist.wheel), "rpc-protocol must have no dependencies"

    venv = make_venv(tmp_path / "venv")
    venv.pip_install(str(protocol_dist.wheel))
    info = venv.probe("rpc_protocol", "rpc-protocol")

    expected = protocol_dist.pkg.version()
    assert info["version"] == expected
    assert info["metadata_version"] == expected
    assert info["py_typed"] == "True"
    assert not list(installed_files_are_in(venv, info))
    # the default build is the pure one (the compiled wheel is opt-in: hatch run compiled:test)
    assert protocol_dist.wheel.name.endswith("-py3-none-any.whl"), protocol_dist.wheel.name
    assert not [n for n in wheel_names(protocol_dist.wheel) if not n.endswith((".py", ".typed", "/LICENSE", "METADATA", "WHEEL", "RECORD"))]
    compiled = run([str(venv.python), "-I", "-c", "import rpc_protocol; print(rpc_protocol.COMPILED)"], cwd=venv.root, env=clean_env(), timeout=PIP_TIMEOUT)
    assert compiled.strip() == "False"


def test_service_wheel_resolves_protocol_from_find_links(service_dist: Built, protocol_dist: Built, tmp_path: Path) -> None:
    check_contents(service_dist)
    assert "Requires-Dist: rpc-protocol" in wheel_metadata(service_dist.wheel)

    venv = make_venv(tmp_path / "venv")
    # Only rpc-service is named: pip must find rpc-protocol through the declared range.
    venv.pip_install("--find-links", str(protocol_dist.wheel.parent), "rpc-service")
    for import_name, built in (("rpc_service", service_dist), ("rpc_protocol", protocol_dist)):
        info = venv.probe(import_name, built.pkg.dist_name)
        assert info["version"] == built.pkg.version()
        assert info["metadata_version"] == built.pkg.version()
        assert not list(installed_files_are_in(venv, info))

