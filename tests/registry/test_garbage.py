"""Hostile input: malformed, oversized and spoofed messages are dropped and logged, and the
registry keeps serving; TCP clients that stall or hoard connections are bounded.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

import pytest

from rpc_protocol import ValueEncoder
from rpc_registry import RegistryLimits, RegistryUnavailableError, TCPRegistryClient
from rpc_registry._messages import MAGIC, MAX_MESSAGE_SIZE, Ack, Providers, Query, Register, encode, new_rid
from tests.registry.helpers import KEY, OTHER_KEY, client_for, start_registry, wait_for


def hostile_messages() -> list[bytes]:
    return [
        b"",
        b"\x00",
        os.urandom(64),
        b"\xff" * 1000,
        b"x" * (MAX_MESSAGE_SIZE + 1),
        b"y" * 60_000,
        b"".join(ValueEncoder().encode((MAGIC, 99, b"", b""))),  # a future version
        encode(Register(("Echo",), 1, "h"), new_rid())[:-3],  # truncated
        encode(Ack(), new_rid()),  # a reply sent to the registry
        encode(Providers((("203.0.113.1", 1),)), new_rid()),
    ]


def test_garbage_datagrams_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    server = start_registry("udp")
    try:
        client = client_for(server)
        assert client.register(["Echo"], 5000)
        garbage = hostile_messages()
        with caplog.at_level(logging.WARNING), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            for datagram in garbage:
                sock.sendto(datagram, ("127.0.0.1", server.port))
            # datagrams on loopback are handled in order: once this answers, all were seen
            assert client.discover("echo") == [("127.0.0.1", 5000)]
            with pytest.raises(TimeoutError):
                sock.recvfrom(65536)  # no reply to any of them
        assert server.handler.dropped == len(garbage)
        assert caplog.text.count("dropped a message from 127.0.0.1") == len(garbage)
    finally:
        server.close()


def test_spoofed_registrations_are_refused_by_a_registry_with_a_key(caplog: pytest.LogCaptureFixture) -> None:
    server = start_registry("udp", key=KEY)
    try:
        owner = client_for(server, key=KEY)
        assert owner.register(["Echo"], 5000)
        with caplog.at_level(logging.WARNING), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for key in (None, OTHER_KEY):
                sock.sendto(encode(Register(("Echo",), 6666, "203.0.113.66"), new_rid(), key), ("127.0.0.1", server.port))
            captured = encode(Register(("Echo",), 5000, "127.0.0.1"), new_rid(), KEY)
            sock.sendto(captured, ("127.0.0.1", server.port))
            sock.sendto(captured, ("127.0.0.1", server.port))  # replayed
            assert owner.discover("echo") == [("127.0.0.1", 5000)]
        assert server.handler.refused == 3
        assert "authentication required" in caplog.text
        assert "authentication failed" in caplog.text
        assert "replayed" in caplog.text
    finally:
        server.close()


def disconnected(sock: socket.socket) -> bool:
    """True when the peer closed ``sock`` without sending anything (a reset counts)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack(">I", 0xFFFFFFFF),  # announces 4 GiB
        struct.pack(">I", MAX_MESSAGE_SIZE + 1) + b"z" * 100,
        frame(b"\xff" * 50),
        frame(encode(Ack(), new_rid())),
    ],
    ids=["huge-length", "oversized", "garbage", "reply"],
)
def test_tcp_garbage_closes_that_connection_only(payload: bytes) -> None:
    server = start_registry("tcp")
    try:
        client = client_for(server)
        assert client.register(["Echo"], 5000)
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
            sock.sendall(payload)
            assert disconnected(sock)  # without a reply
        assert server.handler.dropped == 1
        assert client.discover("echo") == [("127.0.0.1", 5000)]
    finally:
        server.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes however the kernel splits them (bounded by the socket's timeout)."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the registry closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_tcp_several_requests_on_one_connection() -> None:
    server = start_registry("tcp")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
            for _ in range(3):
                sock.sendall(frame(encode(Query("x"), new_rid())))
                (size,) = struct.unpack(">I", recv_exactly(sock, 4))
                assert 0 < size <= MAX_MESSAGE_SIZE
                assert len(recv_exactly(sock, size)) == size
    finally:
        server.close()


def test_tcp_stalled_and_hoarding_clients_are_bounded(no_thread_leak: None) -> None:
    server = start_registry("tcp", limits=RegistryLimits(max_connections=2, connection_timeout=0.3))
    try:
        client = TCPRegistryClient("127.0.0.1", server.port, timeout=2)
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=2) for _ in range(2)]
        idle[1].sendall(b"\x00\x00")  # half a length prefix, then silence
        try:
            with pytest.raises(RegistryUnavailableError):
                client.discover("echo")  # both slots are taken: turned away
            for sock in idle:
                assert disconnected(sock)  # each is dropped once its time is up
        finally:
            for sock in idle:
                sock.close()
        assert wait_for(lambda: not server._clients)
        assert client.discover("echo") == []
    finally:
        server.close()
