"""Fixtures for the registry tests: registries on loopback over each transport, a fake clock.

``make_registry(**kwargs)`` starts a registry server on 127.0.0.1, port 0, over the transport
of the ``transport`` parameter (udp, tcp) and closes it at teardown; ``helpers.client_for``
gives the matching client. Nothing here touches a network other than loopback.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from rpc_registry import RegistryServer
from tests.registry.helpers import FakeClock, MakeRegistry, start_registry


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
