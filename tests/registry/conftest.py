"""Fixtures for the registry tests: registries on loopback over each transport, a fake clock.

``make_registry(**kwargs)`` starts a registry server on 127.0.0.1, port 0, over the transport
of the ``transport`` parameter (udp, tcp) and closes it at teardown; ``helpers.client_for``
gives the matching client. Nothing here touches a network other than loopback.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from rpc_registry import RegistryServer
from tests.registry.helpers import FakeClock, MakeRegistry, start_registry
from tests.registry.redis_helpers import RedisProcess


@pytest.fixture(params=["udp", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_registry(transport: str) -> Iterator[MakeRegistry]:
    servers: list[RegistryServer] = []

    def make(**kwargs: Any) -> RegistryServer:
        server = start_registry(transport, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fails the test if it leaves threads of its own running (after a bounded grace period)."""
    before = set(threading.enumerate())
    yield
    extra: list[threading.Thread] = []
    for _ in range(50):
        extra = [thread for thread in threading.enumerate() if thread not in before and thread.is_alive()]
        if not extra:
            return
        extra[0].join(timeout=0.1)
    pytest.fail(f"threads left running: {[thread.name for thread in extra]}")


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisProcess]]:
    """Starts private redis-servers (``RedisProcess`` keywords) and stops them at teardown.

    Each lives in a short temp dir of its own (its unix socket path must stay short)."""
    started: list[RedisProcess] = []
    directories: list[str] = []

    def make(**kwargs: Any) -> RedisProcess:
        directory = tempfile.mkdtemp(prefix="rpc-redis-")
        directories.append(directory)
        server = RedisProcess(Path(directory), **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_server(make_redis: Callable[..., RedisProcess]) -> RedisProcess:
    """A private redis-server on 127.0.0.1 with no password."""
    return make_redis()
