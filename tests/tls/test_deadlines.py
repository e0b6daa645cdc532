"""Handshake deadlines: a silent or slow client never delays anyone else, and is dropped in time.

The TLS handshake runs in the authenticator, on the client's own thread (or a pool worker),
never on the accept loop, and the server's ``handshake_timeout`` bounds it in total: a client
that connects and says nothing, or trickles a ClientHello a byte at a time, is cut off at
the deadline while other clients connect at once. A client facing a server that never
answers gives up after its own ``timeout``.
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest

import rpc_service
import rpc_tls
from rpc_tls import TLSHandshakeTimeout

from .conftest import Pki, RecordingAuthenticator, Serve, mutual

SERVERS = pytest.mark.parametrize("server_class", [rpc_service.ThreadedServer, rpc_service.ThreadPoolServer], ids=["threaded", "pool"])


def silent_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def client_hello() -> bytes:
    """The first flight of a real TLS client, made in memory."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    data = outgoing.read()
    assert data[:1] == b"\x16"  # a handshake record
    return data


def wait_closed(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closes ``sock`` (reading returns EOF or fails)."""
    start = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return time.monotonic() - start


@SERVERS
def test_silent_tcp_client_does_not_block_a_second_client(pki: Pki, serve: Serve, server_class: type[rpc_service.Server]) -> None:
    server = serve(mutual(pki), server_class=server_class, protocol_config={"handshake_timeout": 5})
    silent = [silent_client(server.port) for _ in range(3)]
    try:
        start = time.monotonic()
        with rpc_tls.tls_connect("127.0.0.1", server.port, pki.alice.key, pki.alice.cert, pki.ca) as conn:
            assert conn.root.whoami() == "alice"
        assert time.monotonic() - start < 2.0  # far below the 5 s the silent ones may take
    finally:
        for sock in silent:
            sock.close()


def test_silent_client_is_dropped_at_the_deadline(pki: Pki, serve: Serve) -> None:
    auth = RecordingAuthenticator(mutual(pki))
    server = serve(auth, protocol_config={"handshake_timeout": 0.5})
    with silent_client(server.port) as sock:
        elapsed = wait_closed(sock, limit=5)
    assert 0.3 < elapsed < 3.0
    assert auth.done.wait(5)
    assert isinstance(auth.errors[0], TLSHandshakeTimeout)
    assert "within 0.5 s" in str(auth.errors[0])


def test_trickling_client_is_dropped_at_the_total_deadline(pki: Pki, serve: Serve) -> None:
    """Each byte arrives well within the deadline; the handshake as a whole does not."""
    server = serve(mutual(pki), protocol_config={"handshake_timeout": 0.6})
    hello = client_hello()
    with silent_client(server.port) as sock:
        start = time.monotonic()
        dropped = None
        for index in range(min(len(hello), 40)):  # at most 40 x 0.1 s
            try:
                sock.sendall(hello[index : index + 1])
            except OSError:
                dropped = time.monotonic() - start
                break
            sock.settimeout(0.1)
            try:
                if sock.recv(4096) == b"":
                    dropped = time.monotonic() - start
                    break
            except TimeoutError:
                continue
            except OSError:
                dropped = time.monotonic() - start
                break
    assert dropped is not None, "the server kept a trickling handshake open for 4 s"
    assert dropped < 2.0


def test_server_close_interrupts_a_pending_handshake(pki: Pki) -> None:
    server = rpc_service.ThreadedServer(rpc_service.VoidService, port=0, authenticator=mutual(pki), protocol_config={"handshake_timeout": 30})
    server.start_in_thread()
    with silent_client(server.port) as sock:
        deadline = time.monotonic() + 5
        while not server._pending and time.monotonic() < deadline:  # the handshake has started
            time.sleep(0.01)
        start = time.monotonic()
        server.close()
        assert time.monotonic() - start < 2.0  # not the 30 s deadline, nor the 5 s join limit
        assert wait_closed(sock, limit=5) < 5


def test_client_gives_up_on_a_server_that_never_answers() -> None:
    with socket.socket() as listener:  # connections complete in the backlog; nobody speaks
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        start = time.monotonic()
        with pytest.raises(TLSHandshakeTimeout) as caught:
            rpc_tls.tls_connect("127.0.0.1", listener.getsockname()[1], timeout=0.5)
        assert time.monotonic() - start < 3.0
    assert isinstance(caught.value, TimeoutError)
    assert "did not complete the TLS handshake within 0.5 s" in str(caught.value)
