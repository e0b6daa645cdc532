"""An authenticator may hand back a ready Stream; the server then leaves the raw socket alone."""

from __future__ import annotations

import socket
import threading
from typing import Any

import rpc_protocol
import rpc_service


class RecordingStream(rpc_service.SocketStream):
    """Keeps every byte read through it (however the kernel happens to split them)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.received = bytearray()
        self._lock = threading.Lock()

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        count = super().read_into(buffer, timeout)
        with self._lock:
            self.received += buffer[:count]
        return count


def test_the_server_talks_over_the_stream_the_authenticator_returns() -> None:
    timeouts: list[float | None] = []
    streams: list[RecordingStream] = []

    def authenticator(sock: socket.socket) -> tuple[rpc_service.Stream, Any]:
        timeouts.append(sock.gettimeout())  # the handshake deadline, set by the server
        stream = RecordingStream(sock.dup())
        streams.append(stream)
        return stream, "token"

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
    assert len(streams) == 1
    # Both the handshake and the call were read through the returned stream. Asserting on the
    # bytes, not on the number of reads: the kernel may deliver them in one read or in many.
    received = bytes(streams[0].received)
    assert received.startswith(rpc_protocol.MAGIC)
    assert b"whoami" in received
