"""``rpc-classic --register-redis URL``: a classic server announces itself on Redis."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

import rpc_classic
from rpc_classic._cli import main

from .conftest import READY_TIMEOUT, finish, first_line, start_cli

rpc_registry = pytest.importorskip("rpc_registry", reason="rpc-registry is not importable")
pytest.importorskip("redis", reason="redis-py (rpc-registry[redis]) is not installed")

from tests.registry.redis_helpers import PASSWORD, RedisProcess  # noqa: E402  (after the skips)


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    directory = tempfile.mkdtemp(prefix="rpc-redis-")
    server = RedisProcess(Path(directory), password=PASSWORD)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_register_redis(redis_server: RedisProcess) -> None:
    url = redis_server.url()
    proc = start_cli("--mode", "oneshot", "--port", "0", "--quiet", "--register-redis", url)
    try:
        host, port = first_line(proc).split("\t")
        registry = rpc_registry.RedisRegistry(url)
        deadline = time.monotonic() + READY_TIMEOUT
        while (host, int(port)) not in registry.discover("SLAVE"):
            assert time.monotonic() < deadline, "the server never registered"
            time.sleep(0.05)
        assert (host, int(port)) in registry.discover("classic")
        with rpc_classic.connect(host, int(port)) as conn:
            assert conn.eval("'found'") == "found"
        assert finish(proc)[0] == 0
        assert registry.discover("slave") == []  # unregistered when it closed
        registry.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


@pytest.mark.parametrize("argv", [["--register-redis", "http://nowhere/"], ["--mode", "stdio", "--register-redis", "redis://x/"]])
def test_register_redis_option_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "rpc-classic" in capsys.readouterr().err
