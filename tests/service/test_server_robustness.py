"""Servers against bad peers: silent, slow, garbage-speaking, vanishing mid-call.

Whatever one client does, the others keep being served (DESIGN §5, §6): handshakes and
authenticators run off the accept loop under a deadline, a peer that breaks the protocol
is dropped with a logged reason, and a client that disappears mid-call disturbs nobody.
Misbehaving peers are played by raw sockets, some speaking the wire by hand through the
sans-I/O ``rpc_protocol.Connection``.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from typing import Any, Callable, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import Connection, ConnectionClosedError, ForkingServer, OneShotServer, Server, Service, ThreadedServer, ThreadPoolServer

from .helpers import Running, dropped_within

ServerClass = type[Server]
MULTI_CLIENT_SERVERS: list[ServerClass] = [ThreadedServer, ThreadPoolServer, ForkingServer]
IN_PROCESS_SERVERS: list[ServerClass] = [ThreadedServer, ThreadPoolServer]  # (their logs are ours to read)
MiB = 1024 * 1024


class WorkService(Service):
    """Shared by every connection of a server, so the tests can see what it went through."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finished = threading.Event()
        self.disconnects = 0
        self._lock = threading.Lock()

    def on_disconnect(self, conn: Connection) -> None:
        with self._lock:
            self.disconnects += 1

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_slow(self, seconds: float) -> str:
        self.started.set()
        time.sleep(seconds)
        self.finished.set()
        return "done"

    def exposed_blob(self, size: int) -> bytes:
        return b"\xab" * size


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture
def raw_sockets() -> Iterator[Callable[[int], socket.socket]]:
    """Plain loopback sockets connected to a port; closed at teardown."""
    opened: list[socket.socket] = []

    def open_(port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        opened.append(sock)
        return sock

    yield open_
    for sock in opened:
        sock.close()


def make_server(server_class: ServerClass, service: Service | type[Service], **kwargs: Any) -> Server:
    return server_class(service, **kwargs)


def assert_serves(server: Server, within: float = 3.0, size: int = 100_000) -> None:
    """A well-behaved client connects and is served, promptly."""
    start = time.monotonic()
    with rpc_service.connect("127.0.0.1", server.port, config={"sync_request_timeout": within + 2}) as conn:
        assert conn.root.echo("hello") == "hello"
        assert conn.root.echo(b"x" * size) == b"x" * size
    assert time.monotonic() - start < within, "a well-behaved client was kept waiting"


def logged(caplog: pytest.LogCaptureFixture, *needles: str) -> bool:
    return any(all(needle in record.getMessage() for needle in needles) for record in caplog.records)


class RawClient:
    """Speaks the protocol by hand over a plain socket (sans-I/O ``rpc_protocol.Connection``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.proto = wire.Connection()  # no box hook: the raw client sends plain values only
        self.root: wire.Ref | None = None
        self._seq = 0

    def handshake(self) -> None:
        """Open the connection: our preface and Hello at once, then the server's Hello
        (which the accepting side sends only after ours, once its on_connect returned)."""
        opening = [*self.proto.send(wire.Preface()), *self.proto.send(wire.Hello(services=("RAW",)))]
        self.sock.sendall(b"".join(bytes(buf) for buf in opening))
        for event in self._events_until(wire.Hello):
            if isinstance(event, wire.Hello):
                assert isinstance(event.root, wire.Ref)
                self.root = event.root

    def request(self, method: str, *args: Any) -> tuple[int, bytes]:
        """The bytes of a call ``root.<method>(*args)`` (not sent)."""
        assert self.root is not None
        self._seq += 1
        target = wire.BackRef(self.root.oid)  # the server's own object, sent home
        buffers = self.proto.send(wire.Request(self._seq, wire.Op.CALLATTR, target, (method, *args)))
        return self._seq, b"".join(bytes(buf) for buf in buffers)

    def reply(self, seq: int, timeout: float = 5.0) -> Any:
        for event in self._events_until(wire.Reply, timeout):
            if isinstance(event, wire.Reply) and event.seq == seq:
                return event.value
        raise AssertionError("no reply")

    def _events_until(self, kind: type, timeout: float = 5.0) -> list[wire.Event]:
        deadline = time.monotonic() + timeout
        events: list[wire.Event] = []
        while not any(type(event) is kind for event in events):
            errors = [event for event in events if isinstance(event, wire.ErrorReply)]
            assert not errors, f"the server answered with an error: {errors[0].exc_type}: {errors[0].args}"
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {kind.__name__} from the server"
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            assert data, f"the server closed before sending {kind.__name__}"
            events.extend(self.proto.receive_data(data))
        return events


# -- silent clients ------------------------------------------------------------------------------


@pytest.mark.parametrize("server_class", MULTI_CLIENT_SERVERS)
def test_silent_client_does_not_block_others(
    server_class: ServerClass, run: Callable[[Server], Server], raw_sockets: Callable[[int], socket.socket]
) -> None:
    server = run(make_server(server_class, WorkService, protocol_config={"handshake_timeout": 10}))
    silent = [raw_sockets(server.port) for _ in range(3)]  # connect, then never say a word
    assert_serves(server)
    assert_serves(server)
    for sock in silent:
        assert not dropped_within(sock, 0.05), "a silent client was dropped before its deadline"


def test_pool_with_fewer_workers_than_silent_clients_still_serves(
    run: Callable[[Server], Server], raw_sockets: Callable[[int], socket.socket]
) -> None:
    """Handshakes must not tie up the pool's workers: silent peers would starve everyone."""
    server = run(ThreadPoolServer(WorkService, nbthreads=2, protocol_config={"handshake_timeout": 10}))
    for _ in range(4):
        raw_sockets(server.port)
    time.sleep(0.1)  # let the server take them all in
    assert_serves(server)


class PeekingAuthenticator:
    """Blocks until the client has sent something (peeking, so the handshake still sees it)."""

    def __init__(self) -> None:
        self.calls = 0
        self.outcomes: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        with self._lock:
            self.calls += 1
        try:
            first = sock.recv(1, socket.MSG_PEEK)  # the server gave the socket a timeout
        except TimeoutError:
            with self._lock:
                self.outcomes.append("timeout")
            raise rpc_service.AuthenticationError("the client said nothing in time") from None
        with self._lock:
            self.outcomes.append("spoke" if first else "eof")
        return sock, "peeked"


@pytest.mark.parametrize("server_class", MULTI_CLIENT_SERVERS)
def test_blocking_authenticator_runs_off_the_accept_loop(
    server_class: ServerClass, raw_sockets: Callable[[int], socket.socket], no_thread_leak: None
) -> None:
    authenticator = PeekingAuthenticator()
    server = server_class(WorkService, authenticator=authenticator, protocol_config={"handshake_timeout": 10})
    running = Running(server)
    try:
        silent = raw_sockets(server.port)
        if server_class is not ForkingServer:  # (a fork's authenticator counts in the child)
            deadline = time.monotonic() + 5
            while authenticator.calls < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert authenticator.calls == 1, "the authenticator never got the silent client"
        assert_serves(server)  # while the authenticator is stuck on the silent client
        assert not dropped_within(silent, 0.1), "the silent client was dropped early"
    finally:
        start = time.monotonic()
        running.stop()  # wakes the authenticator (its socket is shut down)
        assert time.monotonic() - start < 4, "close() waited for the stuck authenticator"


@pytest.mark.parametrize("server_class", MULTI_CLIENT_SERVERS + [OneShotServer])
def test_handshake_timeout_drops_a_silent_client(
    server_class: ServerClass,
    run: Callable[[Server], Server],
    raw_sockets: Callable[[int], socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        server = run(make_server(server_class, WorkService, protocol_config={"handshake_timeout": 0.5}))
        silent = raw_sockets(server.port)
        start = time.monotonic()
        assert dropped_within(silent, 2.5), "the silent client was not dropped"
        assert 0.3 < time.monotonic() - start < 2.5
        assert_serves(server)  # (a OneShotServer still has its shot)
        if server_class is not ForkingServer:
            # the server closes the socket, then logs: the client may see the drop first (and
            # the record must come while the INFO level is still set)
            deadline = time.monotonic() + 5
            while not logged(caplog, "dropped client", "handshake") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert logged(caplog, "dropped client", "handshake")


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_handshake_timeout_bounds_a_blocking_authenticator(
    server_class: ServerClass, run: Callable[[Server], Server], raw_sockets: Callable[[int], socket.socket]
) -> None:
    authenticator = PeekingAuthenticator()
    server = run(server_class(WorkService, authenticator=authenticator, protocol_config={"handshake_timeout": 0.5}))
    silent = raw_sockets(server.port)
    assert dropped_within(silent, 2.5), "the silent client was not dropped"
    assert authenticator.outcomes[:1] == ["timeout"]
    assert_serves(server)


# -- bad bytes --------------------------------------------------------------------------------------


BAD_OPENINGS = {
    "garbage": b"\x00\x01\x02garbage that is not the protocol" * 8,
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "future-version": wire.MAGIC + struct.pack("<BBH", 90, 99, 0),  # a well-formed preface, no common version
    "tls": bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64,
}


@pytest.mark.parametrize("opening", sorted(BAD_OPENINGS))
@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS + [OneShotServer])
def test_non_rpc_peer_is_dropped_with_a_logged_reason(
    server_class: ServerClass,
    opening: str,
    run: Callable[[Server], Server],
    raw_sockets: Callable[[int], socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        server = run(make_server(server_class, WorkService))
        if server_class is not OneShotServer:
            bystander = rpc_service.connect("127.0.0.1", server.port)  # already being served
        bad = raw_sockets(server.port)
        bad.sendall(BAD_OPENINGS[opening])
        assert dropped_within(bad, 3), "the server kept talking to a non-rpc peer"
        if server_class is not OneShotServer:
            with bystander:
                assert bystander.root.echo("unbothered") == "unbothered"
        assert_serves(server)
    assert logged(caplog, "dropped client"), [record.getMessage() for record in caplog.records]
    reasons = [record.getMessage() for record in caplog.records if "dropped client" in record.getMessage()]
    assert any("Error" in reason for reason in reasons), reasons  # the reason names the error


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS + [OneShotServer])
def test_garbage_after_the_handshake_drops_only_that_client(
    server_class: ServerClass,
    raw_sockets: Callable[[int], socket.socket],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    service = WorkService()
    server = server_class(service)
    running = Running(server)
    try:
        with caplog.at_level(logging.INFO, logger="rpc_service"):
            raw = RawClient(raw_sockets(server.port))
            raw.handshake()
            seq, call = raw.request("echo", "before")
            raw.sock.sendall(call)
            assert raw.reply(seq) == "before"
            raw.sock.sendall(b"\xee" * 64)  # not a frame header
            assert dropped_within(raw.sock, 3)
            if server_class is OneShotServer:
                running.thread.join(timeout=5)
                assert not running.thread.is_alive(), "the one shot did not end with its client"
            else:
                assert_serves(server)
        assert logged(caplog, "broke the protocol") or logged(caplog, "dropped")
    finally:
        running.stop()
    assert not failures, [f"{f.thread}: {f.exc_type.__name__}: {f.exc_value}" for f in failures]


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_oversized_frame_header_is_refused_before_its_payload(
    server_class: ServerClass,
    run: Callable[[Server], Server],
    raw_sockets: Callable[[int], socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = run(server_class(WorkService, protocol_config={"max_frame_size": 64 * 1024}))
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        raw = RawClient(raw_sockets(server.port))
        raw.handshake()
        # a request header announcing 1 GiB; the server must refuse it from the header alone
        raw.sock.sendall(struct.pack("<BBHII", wire.FrameType.REQUEST, 0, 0, 1, 1 << 30))
        assert dropped_within(raw.sock, 3)
        assert_serves(server, size=1000)
    assert logged(caplog, "broke the protocol", "exceeds the limit")


def test_first_request_sent_with_the_hello_is_served(
    run: Callable[[Server], Server], raw_sockets: Callable[[int], socket.socket]
) -> None:
    """A client whose first request follows the server's Hello at once (it may reach the
    server while the handshake is still winding up): the request must still be served."""
    for server_class in (ThreadedServer, ThreadPoolServer, OneShotServer):
        server = run(server_class(WorkService))
        raw = RawClient(raw_sockets(server.port))
        raw.handshake()
        seq, call = raw.request("echo", "together")
        raw.sock.sendall(call)
        assert raw.reply(seq, timeout=3) == "together", server_class.__name__


# -- clients leaving mid-call -------------------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_raw_client_leaving_mid_call_disturbs_nobody(
    server_class: ServerClass,
    reset: bool,
    raw_sockets: Callable[[int], socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    no_thread_leak: None,
) -> None:
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    service = WorkService()
    server = server_class(service)
    running = Running(server)
    try:
        with rpc_service.connect("127.0.0.1", server.port) as other:
            raw = RawClient(raw_sockets(server.port))
            raw.handshake()
            _, call = raw.request("slow", 0.3)
            raw.sock.sendall(call)
            assert service.started.wait(3), "the slow call never started"
            if reset:
                raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.sock.close()  # gone before the reply
            assert other.root.echo("meanwhile") == "meanwhile"
            assert service.finished.wait(3), "the slow call never finished"
            deadline = time.monotonic() + 3
            while len(server.clients) > 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(server.clients) == 1, "the vanished client was not cleaned up"
            assert service.disconnects == 1  # on_disconnect ran, whichever side noticed first
            assert other.root.echo("after") == "after"
            assert_serves(server)
    finally:
        running.stop()
    assert not failures, [f"{f.thread}: {f.exc_type.__name__}: {f.exc_value}" for f in failures]


@pytest.mark.parametrize("server_class", MULTI_CLIENT_SERVERS)
def test_connection_closed_from_another_thread_during_a_slow_call(server_class: ServerClass, no_thread_leak: None) -> None:
    service = WorkService()
    server = server_class(service)
    running = Running(server)
    try:
        with rpc_service.connect("127.0.0.1", server.port) as other:
            leaving = rpc_service.connect("127.0.0.1", server.port)
            call = rpc_service.async_(leaving.root.slow)(0.3)
            closer = threading.Timer(0.1, leaving.close)
            closer.start()
            with pytest.raises(ConnectionClosedError):
                call.value
            closer.join(timeout=5)
            assert leaving.closed
            assert other.root.echo("still here") == "still here"
            time.sleep(0.3)  # the slow call ends on the server and finds its client gone
            assert other.root.echo("and after") == "and after"
            if server_class is not ForkingServer:
                deadline = time.monotonic() + 3
                while len(server.clients) > 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert len(server.clients) == 1
    finally:
        running.stop()


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_client_vanishing_mid_frame(
    server_class: ServerClass, run: Callable[[Server], Server], raw_sockets: Callable[[int], socket.socket]
) -> None:
    server = run(server_class(WorkService))
    raw = RawClient(raw_sockets(server.port))
    raw.handshake()
    _, call = raw.request("echo", b"z" * 200_000)
    raw.sock.sendall(call[: len(call) // 2])
    raw.sock.close()
    assert_serves(server)


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_client_that_stops_reading_does_not_hang_close(
    server_class: ServerClass, raw_sockets: Callable[[int], socket.socket], no_thread_leak: None
) -> None:
    server = server_class(WorkService)
    running = Running(server)
    raw = RawClient(raw_sockets(server.port))
    raw.handshake()
    _, call = raw.request("blob", 32 * MiB)
    raw.sock.sendall(call)  # ...and never read the 32 MiB reply
    time.sleep(0.2)  # let the server block writing it
    assert_serves(server)
    start = time.monotonic()
    running.stop()
    assert time.monotonic() - start < 5, "close() hung on a client that does not read"


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_connection_churn(server_class: ServerClass, run: Callable[[Server], Server], raw_sockets: Callable[[int], socket.socket]) -> None:
    """Many clients arriving and leaving at every stage, while one client keeps working."""
    service = WorkService()
    server = run(server_class(service))
    with rpc_service.connect("127.0.0.1", server.port) as steady:
        for index in range(30):
            stage = index % 3
            if stage == 0:
                raw_sockets(server.port).close()  # leaves before the handshake
            elif stage == 1:
                raw = RawClient(raw_sockets(server.port))
                raw.handshake()
                raw.sock.close()  # leaves right after it
            else:
                with rpc_service.connect("127.0.0.1", server.port) as conn:
                    assert conn.root.echo(index) == index
            assert steady.root.echo(index) == index



@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_closing_a_server_under_calls_blames_no_client(server_class: ServerClass, caplog: pytest.LogCaptureFixture) -> None:
    """Regression: close() with calls in flight logged "the peer broke the protocol: the peer
    referred to object #1, which is not lent to it" at WARNING for well-behaved clients (the
    requests read after the close named objects the close had forgotten)."""
    server = server_class(WorkService(), port=0)
    server.start_in_thread()
    conns = [rpc_service.connect("127.0.0.1", server.port) for _ in range(3)]

    def hammer(conn: Connection) -> None:
        end = time.monotonic() + 10
        try:
            while time.monotonic() < end:
                conn.root.echo(1)
        except Exception:
            pass

    threads = [threading.Thread(target=hammer, args=(conn,)) for conn in conns for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="rpc_service"):
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        server.close()
        for thread in threads:
            thread.join(15)
    for conn in conns:
        conn.close()
    assert not [record.getMessage() for record in caplog.records if "broke the protocol" in record.getMessage()]
