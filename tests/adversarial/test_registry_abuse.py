"""Hostile peers against the registries (issue 13, items 11, 13 and 14).

- 11: a small spoofable UDP query must not draw a large reply (at most 3x its size unless the
  request is padded or signed), and one source is rate-limited;
- 13: one address cannot hold every TCP slot, and a connection cannot be held forever;
- 14: a field holding a huge int is a ``MessageError`` (not ``ValueError``) and costs no
  traceback in the log, however many such datagrams arrive.

Requests are built by hand from the documented message format (the rpc-registry README:
``(b"RPCREG", 1, body, mac[, padding])``, ``body = (kind, rid, timestamp, *fields)``) with the
public value codec, as a hostile peer would.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from typing import Iterator

import pytest

from rpc_protocol import ValueEncoder
from rpc_registry import (
    MessageError,
    RegistryLimits,
    TCPRegistryServer,
    UDPRegistryClient,
    UDPRegistryServer,
)
from rpc_registry._messages import decode
from tests.registry.helpers import KEY, FakeClock

PROVIDERS = 300  # enough that a full answer is several KiB
REPLY_WAIT = 0.5


def message(kind: str, *fields: object, mac: bytes = b"") -> bytes:
    body = b"".join(ValueEncoder().encode((kind, os.urandom(16), time.time(), *fields)))
    return b"".join(ValueEncoder().encode((b"RPCREG", 1, body, mac)))


def udp_exchange(port: int, data: bytes, source: str = "127.0.0.1") -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(REPLY_WAIT)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65536)
        except TimeoutError:
            return None


@pytest.fixture
def crowded_udp() -> Iterator[UDPRegistryServer]:
    server = UDPRegistryServer("127.0.0.1", 0)
    for port in range(10000, 10000 + PROVIDERS):
        assert server.table.register(["ECHO"], "10.1.2.3", port)
    server.start_in_thread()
    yield server
    server.close()


# -- item 11: no reflection amplifier ----------------------------------------------------------


def test_a_small_udp_query_draws_at_most_three_times_its_size(crowded_udp: UDPRegistryServer) -> None:
    query = message("query", "echo")
    reply = udp_exchange(crowded_udp.port, query)
    assert reply is not None, "an unsigned small query still gets an (abridged) answer"
    assert len(reply) <= 3 * len(query), (len(query), len(reply))  # before the fix: 55 bytes -> 8 KiB


def test_the_udp_client_still_gets_the_whole_answer(crowded_udp: UDPRegistryServer) -> None:
    found = UDPRegistryClient("127.0.0.1", crowded_udp.port, timeout=2).discover("echo")
    assert len(found) == PROVIDERS


def test_a_signed_query_gets_the_whole_answer_unpadded() -> None:
    with UDPRegistryServer("127.0.0.1", 0, key=KEY) as server:
        for port in range(10000, 10000 + PROVIDERS):
            server.table.register(["ECHO"], "10.1.2.3", port)
        server.start_in_thread()
        assert len(UDPRegistryClient("127.0.0.1", server.port, timeout=2, key=KEY).discover("echo")) == PROVIDERS


def test_an_unsigned_refusal_is_not_amplified_either() -> None:
    with UDPRegistryServer("127.0.0.1", 0, key=KEY) as server:
        server.start_in_thread()
        request = message("register", ("A",), 18861, "")  # unsigned: refused with a reason
        reply = udp_exchange(server.port, request)
        assert reply is not None and len(reply) <= 3 * len(request)
        assert decode(reply).body.reason  # type: ignore[union-attr]  # a Nack, with some reason left


def test_udp_requests_are_rate_limited_per_source() -> None:
    clock = FakeClock()  # frozen: no token comes back during the test
    limits = RegistryLimits(udp_burst=5, udp_rate=1.0)
    with UDPRegistryServer("127.0.0.1", 0, clock=clock, limits=limits) as server:
        server.start_in_thread()
        answered = sum(udp_exchange(server.port, message("query", "echo")) is not None for _ in range(8))
        assert answered == 5
        assert server.handler.dropped >= 3
        # another source has its own bucket
        assert udp_exchange(server.port, message("query", "echo"), source="127.0.0.2") is not None


# -- item 13: one peer cannot hold every TCP slot ----------------------------------------------


def closed_by_server(sock: socket.socket, within: float = 3.0) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_one_source_cannot_take_every_tcp_slot() -> None:
    limits = RegistryLimits(max_connections=64, max_connections_per_source=4, connection_timeout=30.0)
    with TCPRegistryServer("127.0.0.1", 0, limits=limits) as server:
        server.start_in_thread()
        hogs = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        try:
            time.sleep(0.2)  # let the server take them all on (a generous bound, not a speed check)
            extra = socket.create_connection(("127.0.0.1", server.port))
            with extra:
                assert closed_by_server(extra)
            other_source = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.2", 0))
            with other_source:  # a different address is still served while 127.0.0.1 is at its cap
                request = message("query", "echo")
                other_source.sendall(struct.pack(">I", len(request)) + request)
                other_source.settimeout(3)
                assert len(other_source.recv(4)) == 4
        finally:
            for hog in hogs:
                hog.close()


def test_a_tcp_connection_cannot_be_held_forever() -> None:
    limits = RegistryLimits(connection_lifetime=0.5, connection_timeout=5.0, max_requests_per_connection=1000)
    with TCPRegistryServer("127.0.0.1", 0, limits=limits) as server:
        server.start_in_thread()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.settimeout(2)
            request = message("query", "echo")
            started = time.monotonic()
            cut = False
            for _ in range(60):  # at most 60 requests, 0.1 s apart: 6 s if never cut
                try:
                    sock.sendall(struct.pack(">I", len(request)) + request)
                    header = sock.recv(4)
                except (ConnectionResetError, BrokenPipeError, TimeoutError):
                    cut = True
                    break
                if len(header) < 4:
                    cut = True
                    break
                (size,) = struct.unpack(">I", header)
                while size:
                    size -= len(sock.recv(size))
                time.sleep(0.1)
            assert cut, "the registry served one connection for 6 s"
            assert time.monotonic() - started < 4.0


# -- item 14: huge ints -------------------------------------------------------------------------

HUGE = 10 ** 10_000  # 10,001 digits


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(lambda: message("register", ("A",), HUGE, ""), id="port"),
        pytest.param(lambda: message("query", HUGE), id="name"),
        pytest.param(lambda: message("unregister", 18861, HUGE), id="host"),
        pytest.param(lambda: b"".join(ValueEncoder().encode((b"RPCREG", HUGE, b"", b""))), id="version"),
        pytest.param(lambda: message(HUGE), id="kind"),  # type: ignore[arg-type]  # a hostile kind
    ],
)
def test_a_huge_int_field_is_a_message_error(request_bytes: object) -> None:
    assert callable(request_bytes)
    with pytest.raises(MessageError):
        decode(request_bytes())


def test_huge_int_datagrams_log_no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rpc_registry")
    with UDPRegistryServer("127.0.0.1", 0, limits=RegistryLimits(udp_burst=1000)) as server:
        server.start_in_thread()
        bad = message("register", ("A",), HUGE, "")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for sent in range(1, 31):  # paced: each datagram is handled before the next is sent
                sock.sendto(bad, ("127.0.0.1", server.port))
                deadline = time.monotonic() + 2
                while server.handler.dropped < sent and time.monotonic() < deadline:
                    time.sleep(0.005)
        assert server.handler.dropped == 30
    records = [record for record in caplog.records if record.name.startswith("rpc_registry")]
    assert not [record for record in records if record.exc_info], "a traceback was logged for a datagram"
    assert sum(record.levelno >= logging.WARNING for record in records) <= 20  # the rate-limited drop log
