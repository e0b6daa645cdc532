"""Server limits and server logs: max_connections, idle_timeout, server.clients, INFO/ERROR logs.

Every wait is bounded in count and time; ports are 0, addresses loopback.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable

import pytest

import rpc_service
from rpc_service import ConnectionClosedError, Service, ThreadedServer, ThreadPoolServer

from .helpers import Running, dropped_within

pytestmark = pytest.mark.timeout(60)
SERVERS = [ThreadedServer, ThreadPoolServer]


class EchoService(Service):
    def exposed_echo(self, value: Any) -> Any:
        return value


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.parametrize("server_class", SERVERS)
def test_max_connections_refuses_clients_beyond_it(server_class: type[ThreadedServer], caplog: pytest.LogCaptureFixture) -> None:
    running = Running(server_class(EchoService, max_connections=2))
    try:
        first = rpc_service.connect("127.0.0.1", running.server.port, timeout=5)
        second = rpc_service.connect("127.0.0.1", running.server.port, timeout=5)
        assert _wait_for(lambda: len(running.server.clients) == 2, 5)
        with caplog.at_level(logging.WARNING, logger="rpc_service"):
            with pytest.raises(rpc_service.RPCError):
                rpc_service.connect("127.0.0.1", running.server.port, timeout=5)
        assert any("max_connections" in record.getMessage() for record in caplog.records)
        assert first.root.echo(1) == 1 and second.root.echo(2) == 2
        first.close()
        assert _wait_for(lambda: len(running.server.clients) == 1, 5)
        with rpc_service.connect("127.0.0.1", running.server.port, timeout=5) as third:  # room again
            assert third.root.echo(3) == 3
        second.close()
    finally:
        running.stop()


@pytest.mark.parametrize("server_class", SERVERS)
def test_max_connections_evicts_the_oldest_unfinished_handshake(server_class: type[ThreadedServer]) -> None:
    running = Running(server_class(EchoService, max_connections=3, protocol_config={"handshake_timeout": 30}))
    silent = [socket.create_connection(("127.0.0.1", running.server.port), timeout=5) for _ in range(3)]
    try:
        with rpc_service.connect("127.0.0.1", running.server.port, timeout=5) as conn:
            assert conn.root.echo("in") == "in"
        assert dropped_within(silent[0], 5), "the oldest silent handshake was not dropped"
    finally:
        for sock in silent:
            sock.close()
        running.stop()


@pytest.mark.parametrize("server_class", SERVERS)
def test_idle_timeout_closes_idle_clients_only(server_class: type[ThreadedServer]) -> None:
    running = Running(server_class(EchoService, idle_timeout=0.5))
    try:
        idle = rpc_service.connect("127.0.0.1", running.server.port, timeout=5)
        busy = rpc_service.connect("127.0.0.1", running.server.port, timeout=5)
        deadline = time.monotonic() + 1.5  # three idle periods
        while time.monotonic() < deadline:
            assert busy.root.echo("alive") == "alive"
            time.sleep(0.1)
        assert _wait_for(lambda: len(running.server.clients) == 1, 5)
        with pytest.raises(ConnectionClosedError):
            for _ in range(50):  # the close may be on its way: bounded
                idle.root.echo("too late")
                time.sleep(0.05)
        assert busy.root.echo("still") == "still"
        busy.close()
    finally:
        running.stop()


def test_server_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ThreadedServer(EchoService, max_connections=0)
    with pytest.raises(ValueError):
        ThreadedServer(EchoService, idle_timeout=0)
    server = ThreadedServer(EchoService)
    try:
        assert server.max_connections == 1000 and server.idle_timeout is None
    finally:
        server.close()


@pytest.mark.parametrize("server_class", SERVERS)
def test_accepted_and_closed_connections_are_logged_at_info(
    server_class: type[ThreadedServer], caplog: pytest.LogCaptureFixture
) -> None:
    running = Running(server_class(EchoService))
    try:
        with caplog.at_level(logging.INFO, logger="rpc_service"):
            conn = rpc_service.connect("127.0.0.1", running.server.port, timeout=5)
            port = conn._stream.sock.getsockname()[1]  # type: ignore[attr-defined]  # a SocketStream: our address is the server's peer
            assert conn.root.echo(1) == 1
            conn.close()
            assert _wait_for(lambda: not running.server.clients, 5)

            def logged(word: str) -> bool:
                return any(
                    record.levelno == logging.INFO and word in record.getMessage() and str(port) in record.getMessage() and "ECHO" in record.getMessage()
                    for record in caplog.records
                )

            assert _wait_for(lambda: logged("accepted") and logged("closed"), 5), [r.getMessage() for r in caplog.records]
    finally:
        running.stop()


class BrokenOnDisconnect(Service):
    def exposed_echo(self, value: Any) -> Any:
        return value

    def on_disconnect(self, conn: rpc_service.Connection) -> None:
        raise RuntimeError("disconnect handler broke")


def test_a_crashing_on_disconnect_is_logged_at_error_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    running = Running(ThreadedServer(BrokenOnDisconnect))
    try:
        with caplog.at_level(logging.INFO, logger="rpc_service"):
            with rpc_service.connect("127.0.0.1", running.server.port, timeout=5) as conn:
                assert conn.root.echo(1) == 1

            def crashed() -> bool:
                return any(
                    record.levelno == logging.ERROR and record.exc_info is not None and record.exc_info[0] is RuntimeError
                    for record in caplog.records
                )

            assert _wait_for(crashed, 5)
    finally:
        running.stop()
