"""Streams on platforms without ``select.poll`` or ``socket.sendmsg`` (Windows lacks both).

Their absence is simulated: ``select.poll`` is removed from the module, and ``sendmsg`` is
hidden by a socket subclass. The streams must then wait with ``select()`` and write buffer by
buffer, with the same results: timeouts, data, and whole connections.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from typing import Any

import pytest

import rpc_service
from rpc_service import Connection, PipeStream, SocketStream

from .test_streams import read_all


class SocketWithoutSendmsg(socket.socket):
    """A socket as a platform without ``sendmsg`` shows it."""

    def __getattribute__(self, name: str) -> Any:
        if name == "sendmsg":
            raise AttributeError(name)
        return super().__getattribute__(name)


def without_sendmsg(sock: socket.socket) -> socket.socket:
    return SocketWithoutSendmsg(sock.family, sock.type, sock.proto, fileno=sock.detach())


@pytest.fixture
def no_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(select, "poll")


def test_the_simulation_hides_what_it_says() -> None:
    left, right = socket.socketpair()
    sock = without_sendmsg(left)
    try:
        assert not hasattr(sock, "sendmsg")
        with pytest.MonkeyPatch.context() as patch:
            patch.delattr(select, "poll")
            assert not hasattr(select, "poll")
    finally:
        sock.close()
        right.close()


@pytest.mark.parametrize("timeout", [0.0, 0.005])  # short waits take the poll()/select() path on every platform
def test_socket_reads_time_out_and_then_read_without_poll(no_poll: None, timeout: float) -> None:
    left, right = socket.socketpair()
    stream = SocketStream(left)
    try:
        with pytest.raises(TimeoutError):
            stream.read_into(memoryview(bytearray(8)), timeout)
        right.sendall(b"ready")
        assert read_all(stream.read_into, 5) == b"ready"
        right.close()
        assert stream.read_into(memoryview(bytearray(8)), 1.0) == 0  # end of stream
    finally:
        stream.close()
        right.close()


def test_pipe_reads_time_out_and_then_read_without_poll(no_poll: None) -> None:
    read_fd, write_fd = os.pipe()
    stream = PipeStream(read_fd, write_fd)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            stream.read_into(memoryview(bytearray(8)), 0.05)
        assert time.monotonic() - start < 2
        stream.write([b"through ", b"the pipe"])
        assert read_all(stream.read_into, 16) == b"through the pipe"
    finally:
        stream.close()


def test_socket_writes_every_buffer_in_order_without_sendmsg() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(without_sendmsg(left))
    # past the join limit, so the vectored path would be taken; 3000 buffers is past IOV_MAX too
    buffers = [bytes([index % 251]) * 97 for index in range(3000)]
    expected = b"".join(buffers)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_all(SocketStream(right).read_into, len(expected))))
    reader.start()
    try:
        stream.write(buffers)
        reader.join(10)
        assert not reader.is_alive()
        assert received == [expected]
    finally:
        stream.close()
        right.close()


class Calculator(rpc_service.Service):
    def exposed_twice(self, callback: Any, value: bytes) -> bytes:
        return bytes(callback(value * 2))


def test_a_connection_works_end_to_end_without_poll_or_sendmsg(no_poll: None) -> None:
    """A call with a 1 MiB argument and a callback, over streams that have neither."""
    left, right = socket.socketpair()
    server_side: list[Connection] = []

    def serve() -> None:  # the handshake is symmetric: each end must run its own
        server_side.append(rpc_service.connect_stream(SocketStream(without_sendmsg(right)), service=Calculator))
        server_side[0].serve_all()

    served = threading.Thread(target=serve, daemon=True)
    served.start()
    conn: Connection = rpc_service.connect_stream(SocketStream(without_sendmsg(left)))
    try:
        payload = os.urandom(1 << 20)
        assert conn.root.twice(lambda data: data[::-1], payload) == (payload * 2)[::-1]
    finally:
        conn.close()
        served.join(5)
    assert not served.is_alive()
    assert server_side and server_side[0].closed
