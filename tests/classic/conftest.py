"""Fixtures for the classic-mode tests: classic connections over each kind of transport.

``thread_conn`` is the in-process pair (both sides Slaves); ``subproc_conn`` runs the
``rpc-classic`` CLI in stdio mode as a child process (a real remote interpreter, started in
its own temporary working directory); ``classic_server`` is an in-process ThreadedServer
serving :class:`SlaveService` with the classic config. ``child_env()`` is the environment
that lets a child interpreter import the workspace packages; ``start_cli`` runs the
``rpc-classic`` command with it. Everything is closed at teardown.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

import rpc_classic
import rpc_service
from rpc_classic import ClassicConnection

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = sorted(str(path) for path in (REPO_ROOT / "packages").glob("rpc-*/src") if path.is_dir())


def child_env() -> dict[str, str]:
    """This environment with every workspace package importable (children run ``-m rpc_classic``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*SOURCE_DIRS, *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def thread_conn() -> Iterator[ClassicConnection]:
    conn = rpc_classic.connect_thread()
    yield conn
    conn.close()


@pytest.fixture
def child_cwd(tmp_path: Path) -> Path:
    path = tmp_path / "child-cwd"
    path.mkdir()
    return path


@pytest.fixture
def subproc_conn(child_cwd: Path) -> Iterator[ClassicConnection]:
    conn = rpc_classic.connect_subproc(env=child_env(), cwd=child_cwd)
    yield conn
    conn.close()


@pytest.fixture
def classic_server() -> Iterator[rpc_service.ThreadedServer]:
    config = rpc_classic.classic_config({"sync_request_timeout": 10})
    server = rpc_service.ThreadedServer(rpc_classic.SlaveService, protocol_config=config)
    server.start_in_thread()
    yield server
    server.close()


def server_side(server: rpc_service.Server, conn: rpc_service.Connection) -> rpc_service.Connection:
    """The server's end of ``conn`` (a round trip first: the server lists a client once it serves it)."""
    conn.ping(timeout=5)
    clients = server.clients
    assert len(clients) == 1, clients
    (client,) = clients
    return client


READY_TIMEOUT = 15.0


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rpc_classic", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env() if env is None else env,
    )


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
    assert ready, "the server printed nothing"
    return proc.stdout.readline().strip()


def finish(proc: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
    return proc.returncode, err
