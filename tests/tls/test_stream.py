"""The TLS transport under a connection: TLSSocket and TLSStream.

A read with a timeout never waits while OpenSSL already holds decrypted bytes (``poll`` on
the descriptor cannot see them), on the client's :class:`TLSStream` and on the plain
``SocketStream`` servers wrap around the authenticator's socket; lists of buffers are
written in order (``sendmsg`` works on a TLSSocket); timeouts keep their meaning although
the descriptor is non-blocking; closing wakes a blocked reader; and many threads can share
one TLS connection (one reading while others write) with large payloads and callbacks.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

import rpc_service
import rpc_tls
from rpc_service import BgServingThread, ConnectionClosedError, SocketStream
from rpc_tls import TLSSocket, TLSStream

from .conftest import Pki, Serve, mutual


@pytest.fixture
def tls_pair(pki: Pki) -> Iterator[tuple[TLSSocket, TLSSocket]]:
    """(client, server) ends of one TLS connection over a socketpair, both past the handshake."""
    ours, theirs = socket.socketpair()
    auth = rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert, handshake_timeout=5)
    served: list[socket.socket] = []
    thread = threading.Thread(target=lambda: served.append(auth(theirs)[0].tls))
    thread.start()
    client = rpc_tls.TLSClient(ca_certs=pki.ca).wrap(ours, "localhost", timeout=5)
    thread.join(5)
    (server,) = served
    assert isinstance(server, TLSSocket)
    yield client, server
    client.close()
    server.close()


def read_exactly(read: object, size: int) -> bytes:
    assert callable(read)
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    deadline = time.monotonic() + 5
    while got < size and time.monotonic() < deadline:
        count = read(view[got:], 1.0)
        assert count, "end of stream"
        got += count
    return bytes(buffer[:got])


def test_tls_stream_reads_plaintext_buffered_inside_openssl(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    client, server = tls_pair
    stream = TLSStream(client)
    server.sendall(b"a" * 100 + b"b" * 100)  # one TLS record
    buffer = memoryview(bytearray(200))
    assert stream.read_into(buffer[:100], None) == 100  # the rest of the record stays in OpenSSL
    start = time.monotonic()
    assert stream.read_into(buffer[100:], 0.3) == 100
    assert time.monotonic() - start < 0.2
    assert bytes(buffer) == b"a" * 100 + b"b" * 100


def test_server_socket_stream_reads_plaintext_buffered_inside_openssl(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    """Servers wrap the authenticator's socket in a plain SocketStream: it must cope too."""
    client, server = tls_pair
    stream = SocketStream(server)
    client.sendall(b"c" * 100 + b"d" * 100)
    buffer = memoryview(bytearray(200))
    assert stream.read_into(buffer[:100], None) == 100
    start = time.monotonic()
    assert stream.read_into(buffer[100:], 0.3) == 100
    assert time.monotonic() - start < 0.2


def test_a_read_times_out_on_time(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    client, _ = tls_pair
    stream = TLSStream(client)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        stream.read_into(memoryview(bytearray(10)), 0.2)
    assert 0.15 < time.monotonic() - start < 1.0


def test_socket_timeouts_keep_their_meaning(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    client, server = tls_pair
    assert client.gettimeout() is None and client.getblocking()  # shared: the fd is non-blocking underneath
    client.settimeout(0.2)
    assert client.gettimeout() == 0.2
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        client.recv(10)
    assert time.monotonic() - start < 1.0
    client.setblocking(True)
    assert client.gettimeout() is None
    server.sendall(b"hello")
    assert client.recv(10) == b"hello"


def test_sendmsg_writes_every_buffer_in_order(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    client, server = tls_pair
    big = bytes(range(256)) * 1024  # 256 KiB: several records
    buffers: list[bytes | bytearray | memoryview] = [b"ab", memoryview(b"cd"), bytearray(b"ef"), big, b"z"]
    expected = b"".join(bytes(buf) for buf in buffers)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(read_exactly(TLSStream(client).read_into, len(expected))))
    reader.start()
    assert server.sendmsg(buffers) == len(expected)
    reader.join(10)
    assert received == [expected]


def test_a_corrupt_record_is_a_tls_connection_error(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    client, server = tls_pair
    stream = TLSStream(client, peer="the test server")
    socket.socket.sendall(server, b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # bypassing TLS: a forged record
    with pytest.raises(rpc_tls.TLSConnectionError, match="TLS connection with the test server lost") as caught:
        stream.read_into(memoryview(bytearray(100)), 2.0)
    assert isinstance(caught.value, ConnectionClosedError)  # so a connection shuts down on it
    assert caught.value.handshake_error is None


def test_closing_wakes_a_blocked_reader(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    client, _ = tls_pair
    stream = TLSStream(client)
    outcome: list[BaseException | int] = []

    def read() -> None:
        try:
            outcome.append(stream.read_into(memoryview(bytearray(10)), None))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.1)
    stream.close()
    reader.join(3)
    assert not reader.is_alive()
    assert outcome and (outcome[0] == 0 or isinstance(outcome[0], ConnectionClosedError))


def test_large_payloads(pki: Pki, serve: Serve) -> None:
    server = serve(mutual(pki))
    with rpc_tls.tls_connect("127.0.0.1", server.port, pki.alice.key, pki.alice.cert, pki.ca) as conn:
        for size in (0, 1, 16 * 1024 - 1, 16 * 1024, 64 * 1024 + 3, 4 * 1024 * 1024):
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            assert conn.root.echo(payload) == payload


@pytest.mark.parametrize("server_class", [rpc_service.ThreadedServer, rpc_service.ThreadPoolServer], ids=["threaded", "pool"])
def test_threads_share_one_tls_connection(pki: Pki, serve: Serve, server_class: type[rpc_service.Server]) -> None:
    server = serve(mutual(pki), server_class=server_class)
    with rpc_tls.tls_connect("127.0.0.1", server.port, pki.alice.key, pki.alice.cert, pki.ca) as conn:
        errors: list[BaseException] = []
        blob = b"y" * 100_000

        def work(offset: int) -> None:
            try:
                for index in range(40):
                    assert conn.root.call(lambda x: x + 1, offset + index) == offset + index + 1
                    if index % 10 == 0:
                        assert conn.root.echo(blob) == blob
            except BaseException as exc:
                errors.append(exc)

        background = BgServingThread(conn)  # a reader of its own, competing with the callers
        try:
            threads = [threading.Thread(target=work, args=(1000 * n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        finally:
            background.stop()
        assert not errors, errors[0]
        assert all(not thread.is_alive() for thread in threads)


def test_a_read_with_a_timeout_times_out_after_the_stream_is_built(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    """A TLS stream's reads keep their timeout (the server once reset the accepted socket's
    timeout after the handshake, which turned the dup'd TLS descriptor blocking)."""
    client, server = tls_pair
    stream = rpc_tls.TLSStream(server, server_side=True)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        stream.read_into(memoryview(bytearray(16)), 0.2)
    assert time.monotonic() - started < 2


def test_a_read_with_timeout_zero_and_nothing_there_is_a_timeout(tls_pair: tuple[TLSSocket, TLSSocket]) -> None:
    """Regression: timeout 0 (what pooled servers use to drain a connection) raised the raw
    SSLWantReadError, which the connection took for a lost connection."""
    client, server = tls_pair
    stream = rpc_tls.TLSStream(server, server_side=True)
    with pytest.raises(TimeoutError):
        stream.read_into(memoryview(bytearray(16)), 0)
