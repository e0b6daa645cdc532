"""Every script in ``examples/`` runs to completion, so the examples never rot.

Owns running each example as a user would (``python examples/<name>.py``, in a child process
with the workspace packages importable) and checking that it exits 0 and reaches its last line.
Examples bind 127.0.0.1 only and make their files in temporary directories. It must not import
the examples into this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workspace._repo import PACKAGES_DIR, REPO_ROOT

EXAMPLES_DIR = REPO_ROOT / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))
#: the uses the README promises an example for (a new script is picked up by EXAMPLES by itself)
PROMISED = {"demo", "custom_service", "registry_versions", "classic_mode", "mutual_tls"}


def test_every_promised_example_exists_and_is_documented() -> None:
    assert PROMISED <= {path.stem for path in EXAMPLES}
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert not [path.name for path in EXAMPLES if f"`{path.name}`" not in readme]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    sources = [str(path) for path in sorted(PACKAGES_DIR.glob("rpc-*/src"))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*sources, *filter(None, [os.environ.get("PYTHONPATH")])]))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # as a user would run it from anywhere; nothing written next to the script
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith(("[example] done", "[demo] done")), result.stdout  # it ran to the end
    assert "Traceback" not in result.stderr, result.stderr
