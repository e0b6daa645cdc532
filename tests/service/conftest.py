"""Fixtures for the service-layer tests: a way to reach a service over each transport.

``connect_to(service, ...)`` returns a client connection whose ``root`` is ``service``,
over TCP through a ThreadedServer or over the in-process pair (``connect_thread``),
depending on the fixture's parameter. Everything opened is closed at teardown. ``run(server)``
starts a server in a thread and stops it at teardown.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Protocol

import pytest

import rpc_service
from rpc_service import Connection, Server, Service, VoidService

from .helpers import Running


class ConnectTo(Protocol):
    def __call__(
        self,
        service: type[Service] | Service,
        config: dict[str, Any] | None = None,
        *,
        client_service: type[Service] | Service = VoidService,
        client_config: dict[str, Any] | None = None,
    ) -> Connection: ...


@pytest.fixture(params=["tcp", "thread"])
def transport(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def connect_to(transport: str) -> Iterator[ConnectTo]:
    servers: list[rpc_service.Server] = []
    conns: list[Connection] = []

    def connect_to(
        service: type[Service] | Service,
        config: dict[str, Any] | None = None,
        *,
        client_service: type[Service] | Service = VoidService,
        client_config: dict[str, Any] | None = None,
    ) -> Connection:
        if transport == "tcp":
            server = rpc_service.ThreadedServer(service, protocol_config=config)
            servers.append(server)
            server.start_in_thread()
            conn = rpc_service.connect("127.0.0.1", server.port, service=client_service, config=client_config)
        else:
            conn = rpc_service.connect_thread(
                service=client_service, config=client_config, remote_service=service, remote_config=config
            )
        conns.append(conn)
        return conn

    yield connect_to
    for conn in conns:
        conn.close()
    for server in servers:
        server.close()


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fails the test if it leaves threads of its own running (after a bounded grace period)."""
    before = set(threading.enumerate())
    yield
    for _ in range(50):
        extra = [thread for thread in threading.enumerate() if thread not in before and thread.is_alive()]
        if not extra:
            return
        extra[0].join(timeout=0.1)
    pytest.fail(f"threads left running: {[thread.name for thread in extra]}")


@pytest.fixture
def run() -> Iterator[Callable[[Server], Server]]:
    """Start servers in threads; close them (and check their threads ended) at teardown."""
    running: list[Running] = []

    def start(server: Server) -> Server:
        running.append(Running(server))
        return server

    yield start
    for item in running:
        item.stop()
