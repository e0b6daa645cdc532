"""Greedy and abandoned clients against the servers' limits (issues 12 and 13).

A ThreadPoolServer with its default pool (20 workers) faces more clients than workers that
send small requests for big replies and never read them: each worker that serves one blocks
writing, until ``write_timeout`` fails that connection; a legitimate client is then served.
A peer that connects 2 000 times and goes silent cannot keep a legitimate client out either:
``max_connections`` bounds the handshakes it can hold, evicting the oldest. Every wait is
bounded in count and time.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

import rpc_service
from rpc_service import Service, ThreadedServer, ThreadPoolServer

pytestmark = pytest.mark.timeout(120)


class BlobService(Service):
    def exposed_blob(self, size: int) -> bytes:
        return b"x" * size

    def exposed_echo(self, value: Any) -> Any:
        return value


def _wait_for(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_default_pool_survives_clients_that_never_read() -> None:
    greedy_count = 24  # more than the 20 workers of the default pool
    server = ThreadPoolServer(BlobService, protocol_config={"write_timeout": 0.5, "handshake_timeout": 5})
    assert server.nbthreads == 20  # the default pool
    thread = server.start_in_thread()
    greedy: list[rpc_service.Connection] = []
    try:
        for _ in range(greedy_count):
            conn = rpc_service.connect("127.0.0.1", server.port, timeout=5)
            greedy.append(conn)
            blob = rpc_service.async_(conn.root.blob)
            for _ in range(8):
                blob(1 << 20)  # small requests, 8 MiB of replies nobody reads
        # every worker is (or was) stuck writing to one of them; the write timeout frees them
        assert _wait_for(lambda: len(server.clients) == 0, 30), f"{len(server.clients)} greedy clients still held"
        start = time.monotonic()
        with rpc_service.connect("127.0.0.1", server.port, timeout=5) as conn:
            assert conn.root.echo("served") == "served"
            assert conn.root.blob(1000) == b"x" * 1000
        assert time.monotonic() - start < 5
    finally:
        for conn in greedy:
            conn.close()
        server.close()
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize("server_class", [ThreadedServer, ThreadPoolServer])
def test_two_thousand_silent_connects_do_not_keep_a_client_out(server_class: type[ThreadedServer]) -> None:
    server = server_class(BlobService, protocol_config={"handshake_timeout": 30}, max_connections=100)
    thread = server.start_in_thread()
    silent: list[socket.socket] = []
    try:
        for _ in range(2000):
            silent.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        # the legitimate client arrives after the flood, whose handshakes would last 30 s
        start = time.monotonic()
        with rpc_service.connect("127.0.0.1", server.port, timeout=10) as conn:
            assert conn.root.echo("in") == "in"
        assert time.monotonic() - start < 10
    finally:
        for sock in silent:
            sock.close()
        server.close()
        thread.join(15)
    assert not thread.is_alive()
