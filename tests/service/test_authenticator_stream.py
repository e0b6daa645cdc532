"""An authenticator may hand back a ready Stream; the server then leaves the raw socket alone."""

from __future__ import annotations

import socket
from typing import Any

import rpc_service


class CountingStream(rpc_service.SocketStream):
    reads = 0

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        CountingStream.reads += 1
        return super().read_into(buffer, timeout)


def test_the_server_talks_over_the_stream_the_authenticator_returns() -> None:
    timeouts: list[float | None] = []

    def authenticator(sock: socket.socket) -> tuple[rpc_service.Stream, Any]:
        timeouts.append(sock.gettimeout())  # the handshake deadline, set by the server
        return CountingStream(sock.dup()), "token"

    class Echo(rpc_service.Service):
        def exposed_whoami(self) -> object:
            return self.conn.credentials

        def on_connect(self, conn: rpc_service.Connection) -> None:
            self.conn = conn

    with rpc_service.ThreadedServer(Echo, authenticator=authenticator, protocol_config={"handshake_timeout": 3}) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            assert conn.root.whoami() == "token"
    assert timeouts == [3]
    assert CountingStream.reads >= 2  # the handshake and the call were read through it
