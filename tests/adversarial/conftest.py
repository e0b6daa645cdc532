"""Fixtures of the adversarial suite: a server under attack, a bystander client, a baseline.

Shared by every module of ``tests/adversarial`` (the load and leak tests use them too):

- ``service``: the :class:`~tests.adversarial.helpers.TargetService` instance the server shares
  between its clients (so a test can see calls, connects, disconnects and lent items);
- ``server_config``: the server's ``protocol_config``; override it in a module (define a
  fixture of the same name) or per test with ``@pytest.mark.server_config({...})``;
- ``server``: a ``ThreadedServer`` of ``service`` (threads end with their client: none kept
  for reuse, no client parked) on 127.0.0.1, port 0, started in a thread,
  closed (and its thread joined) at teardown;
- ``normal_client``: a well-behaved client connected to ``server`` (config overridden per test
  with ``@pytest.mark.client_config({...})``); at teardown it must still be served (every adversarial case promises that);
- ``baseline``: a :class:`~tests.adversarial.helpers.Baseline` of threads and open fds taken
  once ``server`` and ``normal_client`` are up; at teardown everything the test added (hostile
  peers, their server threads, sockets) must be gone within ``BASELINE_WAIT`` seconds;
- ``raw``: opens plain loopback sockets to ``server`` (the hostile peers), closed before the
  baseline is checked; ``raw_peer`` wraps one in a :class:`~tests.adversarial.helpers.RawPeer`.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterator

import pytest

import rpc_service
from rpc_service import Connection, ThreadedServer
from tests.adversarial.helpers import Baseline, RawPeer, TargetService

BASELINE_WAIT = 5.0
DEFAULT_SERVER_CONFIG: dict[str, Any] = {"handshake_timeout": 2.0, "sync_request_timeout": 10.0}
CLIENT_CONFIG: dict[str, Any] = {"sync_request_timeout": 10.0}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server_config(dict): protocol_config of the adversarial `server` fixture")
    config.addinivalue_line("markers", "client_config(dict): config of the adversarial `normal_client` fixture")


@pytest.fixture
def service() -> TargetService:
    return TargetService()


@pytest.fixture
def server_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    config = dict(DEFAULT_SERVER_CONFIG)
    marker = request.node.get_closest_marker("server_config")
    if marker is not None:
        config.update(marker.args[0])
    return config


class OneThreadPerClient(ThreadedServer):
    """A ThreadedServer whose threads end with their client (none kept waiting for the next,
    no client parked): what a bad peer leaves behind shows in the baseline checks."""

    IDLE_THREADS = 0
    PARK_AFTER = None


@pytest.fixture
def server(service: TargetService, server_config: dict[str, Any]) -> Iterator[ThreadedServer]:
    srv = OneThreadPerClient(service, hostname="127.0.0.1", port=0, protocol_config=server_config)
    thread = srv.start_in_thread()
    try:
        yield srv
    finally:
        srv.close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the server's thread did not end after close()"


@pytest.fixture
def normal_client(server: ThreadedServer, request: pytest.FixtureRequest) -> Iterator[Connection]:
    config = dict(CLIENT_CONFIG)
    marker = request.node.get_closest_marker("client_config")
    if marker is not None:
        config.update(marker.args[0])
    conn = rpc_service.connect("127.0.0.1", server.port, config=config)
    assert conn.root.echo("hello") == "hello"
    try:
        yield conn
        if not conn.closed:
            assert conn.root.echo("still served") == "still served", "the normal client stopped being served"
    finally:
        conn.close()


@pytest.fixture
def baseline(server: ThreadedServer, normal_client: Connection) -> Iterator[Baseline]:
    base = Baseline()
    yield base
    base.assert_back(BASELINE_WAIT)


@pytest.fixture
def raw(server: ThreadedServer, baseline: Baseline) -> Iterator[Callable[[], socket.socket]]:
    """Opens plain sockets to the server; all closed at teardown, before the baseline check."""
    opened: list[socket.socket] = []

    def open_() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        opened.append(sock)
        return sock

    yield open_
    for sock in opened:
        sock.close()


@pytest.fixture
def raw_peer(raw: Callable[[], socket.socket]) -> Callable[[], RawPeer]:
    """Opens a :class:`RawPeer` (not yet handshaken) to the server."""

    def open_() -> RawPeer:
        return RawPeer(raw())

    return open_
