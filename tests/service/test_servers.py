"""Servers: ThreadedServer, ThreadPoolServer, ForkingServer and OneShotServer.

Binding (127.0.0.1 by default, port 0, IPv6, unix sockets), starting in a thread, closing
(every client closed, no thread left behind), the context manager, the ``authenticator=``
hook (credentials reach the service; a refusal drops only that client), the ``registrar=``
lease (register every alias, refresh, unregister), and the pool serving more clients than
it has threads.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

import rpc_protocol
import rpc_service
from rpc_service import (
    AuthenticationError,
    Connection,
    ConnectionClosedError,
    ConnectionFailedError,
    ForkingServer,
    OneShotServer,
    Server,
    Service,
    ThreadedServer,
    ThreadPoolServer,
)

from .helpers import Running

ServerClass = type[Server]
ALL_SERVERS: list[ServerClass] = [ThreadedServer, ThreadPoolServer, ForkingServer, OneShotServer]
MULTI_CLIENT_SERVERS: list[ServerClass] = [ThreadedServer, ThreadPoolServer, ForkingServer]
IN_PROCESS_SERVERS: list[ServerClass] = [ThreadedServer, ThreadPoolServer]


class CounterService(Service):
    """A little state per service object, plus what the tests need to look inside."""

    ALIASES = ["Counter", "Tally"]

    def __init__(self) -> None:
        self.count = 0
        self.connect_credentials: Any = "on_connect never ran"
        self.threads: set[str] = set()

    def on_connect(self, conn: Connection) -> None:
        self._conn = conn
        self.connect_credentials = conn.credentials

    def exposed_increment(self) -> int:
        self.count += 1
        self.threads.add(threading.current_thread().name)
        return self.count

    def exposed_pid(self) -> int:
        return os.getpid()

    def exposed_credentials(self) -> Any:
        return self._conn.credentials

    def exposed_connect_credentials(self) -> Any:
        return self.connect_credentials

    def exposed_slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def exposed_call_back(self, value: Any) -> Any:
        return self._conn.root.reflect(value)


class ReflectService(Service):
    def exposed_reflect(self, value: Any) -> Any:
        return ("reflected", value)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds (bounded in time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def connect(server: Server, **kwargs: Any) -> Connection:
    if server.socket_path is not None:
        return rpc_service.unix_connect(server.socket_path, **kwargs)
    return rpc_service.connect(server.host, server.port, ipv6=":" in server.host, **kwargs)


def sock_of(conn: Connection) -> socket.socket:
    """The socket under a connection (``Connection._stream`` is semi-private)."""
    stream = conn._stream
    assert isinstance(stream, rpc_service.SocketStream)
    return stream.sock


# -- every kind serves -----------------------------------------------------------------------


@pytest.mark.parametrize("server_class", MULTI_CLIENT_SERVERS)
def test_server_serves_a_service_class_per_connection(server_class: ServerClass, run: Callable[[Server], Server]) -> None:
    server = run(server_class(CounterService))
    with connect(server) as first, connect(server) as second:
        assert [first.root.increment() for _ in range(3)] == [1, 2, 3]
        assert second.root.increment() == 1  # a fresh service object per connection
        assert first.root.increment() == 4
        assert first.peer_services == ("COUNTER", "TALLY")


def test_threaded_server_shares_a_service_instance(run: Callable[[Server], Server]) -> None:
    shared = CounterService()
    server = run(ThreadedServer(shared))
    with connect(server) as first, connect(server) as second:
        assert first.root.increment() == 1
        assert second.root.increment() == 2
        assert first.root.increment() == 3
    assert shared.count == 3


def test_forking_server_serves_each_client_in_its_own_process(run: Callable[[Server], Server]) -> None:
    shared = CounterService()  # shared in the parent; each child works on its own copy
    server = run(ForkingServer(shared))
    with connect(server) as first, connect(server) as second:
        first_pid, second_pid = first.root.pid(), second.root.pid()
        assert os.getpid() not in (first_pid, second_pid)
        assert first_pid != second_pid
        assert [first.root.increment() for _ in range(3)] == [1, 2, 3]
        assert second.root.increment() == 1  # the other child's copy was not touched
    assert shared.count == 0  # nor was the parent's


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_starting_a_closed_or_started_server_raises_in_the_caller(server_class: ServerClass) -> None:
    """Regression: start_in_thread() on a closed server returned a thread that died with
    the error, and a second start_in_thread() ran a second accept loop."""
    closed = server_class(CounterService)
    closed.close()
    for start in (closed.start, closed.start_in_thread):
        with pytest.raises(RuntimeError, match="closed"):
            start()
    with server_class(CounterService) as server:
        server.start_in_thread()
        for start in (server.start, server.start_in_thread):
            with pytest.raises(RuntimeError, match="already started"):
                start()
        with connect(server) as conn:
            assert conn.root.increment() == 1


def _zombie_children() -> list[int]:
    """This process's children that have exited and not been reaped (Linux /proc)."""
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(entry))
    return zombies


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_forking_server_reaps_each_child_when_it_exits(run: Callable[[Server], Server]) -> None:
    """Regression: children were reaped only when the next client came, so a burst of
    clients followed by a quiet time left one zombie each."""
    earlier = set(_zombie_children())  # (not this test's)
    server = run(ForkingServer(CounterService))
    for _ in range(3):
        with connect(server) as conn:
            assert conn.root.increment() == 1
    deadline = time.monotonic() + 10
    while set(_zombie_children()) - earlier and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(_zombie_children()) - earlier == set()


_FORK_AFTER_IMPORTS = """
import sys
import rpc_service
assert "rpc_service._otel" not in sys.modules
with rpc_service.ForkingServer(rpc_service.VoidService) as server:
    assert "rpc_service._otel" in sys.modules  # imported before the first fork
    server.start_in_thread()
    for _ in range(3):
        rpc_service.connect("127.0.0.1", server.port, config={"handshake_timeout": 10}).close()
print("served")
"""


def test_forking_server_imports_what_a_connection_needs_before_it_forks() -> None:
    """Regression: a child forked while a client thread of the same process was importing
    the tracing module (each connection's first use, with opentelemetry installed) inherited
    the held import lock and hung in its handshake (the client: HandshakeTimeout)."""
    pytest.importorskip("opentelemetry.trace")
    done = subprocess.run([sys.executable, "-c", _FORK_AFTER_IMPORTS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "served", done.stderr


def test_one_shot_server_serves_one_client_then_stops() -> None:
    server = OneShotServer(CounterService)
    thread = server.start_in_thread()
    port = server.port
    with rpc_service.connect("127.0.0.1", port) as conn:
        assert conn.root.increment() == 1
        assert conn.root.increment() == 2
    thread.join(timeout=5)
    assert not thread.is_alive(), "OneShotServer.start() did not return after its client left"
    with pytest.raises(ConnectionFailedError):
        rpc_service.connect("127.0.0.1", port, timeout=2)
    server.close()  # idempotent


def test_one_shot_server_start_blocks_until_done() -> None:
    server = OneShotServer(CounterService)
    results: list[int] = []

    def client() -> None:
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            results.append(conn.root.increment())

    thread = threading.Thread(target=client)
    thread.start()
    server.start()  # returns once the single client is done
    thread.join(timeout=5)
    assert results == [1]
    with pytest.raises(RuntimeError, match="closed"):
        server.start()


# -- binding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_default_bind_is_loopback_on_a_free_port(server_class: ServerClass) -> None:
    with server_class(CounterService) as first, server_class(CounterService) as second:
        assert first.host == "127.0.0.1"
        assert first.listener.getsockname() == ("127.0.0.1", first.port)
        assert first.port > 0 and second.port > 0
        assert first.port != second.port
        assert str(first.port) in repr(first)


def test_explicit_port_is_honoured(run: Callable[[Server], Server]) -> None:
    with ThreadedServer(CounterService) as probe:
        port = probe.port
    server = run(ThreadedServer(CounterService, port=port))
    assert server.port == port
    with rpc_service.connect("127.0.0.1", port) as conn:
        assert conn.root.increment() == 1


def test_bind_failure_raises_and_releases_the_socket(tmp_path: Path) -> None:
    """The OSError (as RPyC users catch it), naming where it could not listen (its filename)."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError) as info:
            ThreadedServer(CounterService, port=port)
        assert (info.value.errno, info.value.filename) == (errno.EADDRINUSE, f"127.0.0.1:{port}")
    path = tmp_path / "missing" / "server.sock"
    with pytest.raises(FileNotFoundError) as missing:
        ThreadedServer(CounterService, socket_path=path)
    assert missing.value.filename == str(path)


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS + [ForkingServer])
def test_ipv6_loopback(server_class: ServerClass, run: Callable[[Server], Server]) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        server = server_class(CounterService, ipv6=True)
    except OSError as exc:
        pytest.skip(f"::1 is not available here: {exc}")
    run(server)
    assert server.host == "::1"
    assert server.listener.family == socket.AF_INET6
    with rpc_service.connect("::1", server.port, ipv6=True) as conn:
        assert conn.root.increment() == 1


@pytest.mark.parametrize("as_path", [False, True])
@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_unix_socket_path(server_class: ServerClass, as_path: bool, tmp_path: Path, no_thread_leak: None) -> None:
    """A str or (regression: TypeError) a pathlib.Path, on both ends."""
    path = tmp_path / "server.sock"
    server = server_class(CounterService, socket_path=path if as_path else str(path))
    running = Running(server)
    try:
        assert os.path.exists(path)
        assert str(path) in repr(server)
        with rpc_service.unix_connect(path if as_path else str(path)) as conn:
            assert conn.root.increment() == 1
    finally:
        running.stop()
    assert not os.path.exists(path), "close() left the socket file behind"


def test_a_host_that_does_not_resolve_is_a_value_error() -> None:
    """Regression: a raw socket.gaierror came out of the constructor."""
    with pytest.raises(ValueError, match="does not resolve"):
        ThreadedServer(CounterService, hostname="no-such-host.invalid")


def test_service_must_be_a_service() -> None:
    with pytest.raises(TypeError):
        ThreadedServer(object)  # type: ignore[arg-type]  # deliberately wrong: checked at runtime
    with pytest.raises(TypeError):
        ThreadedServer(CounterService().exposed_increment)  # type: ignore[arg-type]  # deliberately wrong
    ThreadedServer(CounterService()).close()  # an instance is fine


def test_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="nbthreads"):
        ThreadPoolServer(CounterService, nbthreads=0)


# -- starting and closing ----------------------------------------------------------------------


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_start_in_thread_returns_once_listening(server_class: ServerClass, no_thread_leak: None) -> None:
    server = server_class(CounterService)
    running = Running(server)
    try:
        assert running.thread.is_alive()
        with rpc_service.connect("127.0.0.1", server.port, timeout=2) as conn:
            assert conn.root.increment() == 1
    finally:
        running.stop()


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_close_right_after_start_in_thread_is_clean(
    server_class: ServerClass, monkeypatch: pytest.MonkeyPatch, no_thread_leak: None
) -> None:
    """No exception in a background thread, whatever the timing of start() and close()."""
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    for _ in range(20):
        server = server_class(CounterService)
        thread = server.start_in_thread()
        server.close()
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert not failures, [f"{f.thread}: {f.exc_type.__name__}: {f.exc_value}" for f in failures]


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS)
def test_close_while_clients_arrive_is_clean(
    server_class: ServerClass, monkeypatch: pytest.MonkeyPatch, no_thread_leak: None
) -> None:
    """close() racing with the accept loop spawning a client's thread (it once tried to
    join a thread that had not started yet: RuntimeError from close())."""
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    for _ in range(30):
        server = server_class(CounterService)
        thread = server.start_in_thread()
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        server.close()
        raw.close()
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert not failures, [f"{f.thread}: {f.exc_type.__name__}: {f.exc_value}" for f in failures]


def test_pool_close_is_prompt(no_thread_leak: None) -> None:
    """close() wakes the pool's poller instead of waiting out its select timeout (1 s)."""
    server = ThreadPoolServer(CounterService, nbthreads=2)
    running = Running(server)
    with connect(server) as conn:
        assert conn.root.increment() == 1
        start = time.monotonic()
        running.stop()
        assert time.monotonic() - start < 0.9


class IdentService(Service):
    def exposed_ident(self) -> int:
        return threading.get_ident()


def test_threaded_server_hands_the_next_client_to_a_waiting_thread(no_thread_leak: None) -> None:
    """A thread whose client left serves the next one (no thread start per connection);
    close() ends the waiting threads at once, not after IDLE_THREAD_SECONDS."""
    server = ThreadedServer(IdentService)
    running = Running(server)
    idents = set()
    for _ in range(3):
        with connect(server) as conn:
            idents.add(conn.root.ident())
        wait_for(lambda: server._idle == 1, what="the thread to wait for a client")  # semi-private
    assert len(idents) == 1
    with connect(server) as first, connect(server) as second:  # one waiting thread, one new
        assert first.root.ident() != second.root.ident()
    wait_for(lambda: server._idle == 2, what="both threads to wait")
    start = time.monotonic()
    running.stop()
    assert time.monotonic() - start < 2 < ThreadedServer.IDLE_THREAD_SECONDS


def test_threaded_server_retires_idle_threads(monkeypatch: pytest.MonkeyPatch, no_thread_leak: None) -> None:
    monkeypatch.setattr(ThreadedServer, "IDLE_THREAD_SECONDS", 0.05)
    monkeypatch.setattr(ThreadedServer, "IDLE_THREADS", 1)
    server = ThreadedServer(IdentService)
    running = Running(server)
    try:
        with connect(server) as first, connect(server) as second:  # two threads; one may wait
            assert first.root.ident() != second.root.ident()
        wait_for(lambda: not server._threads, what="the idle threads to retire")  # semi-private
        with connect(server) as conn:  # a new thread again
            assert isinstance(conn.root.ident(), int)
    finally:
        running.stop()


class ParkService(Service):
    """Records disconnects; calls back the client from a thread of its own on request."""

    def __init__(self) -> None:
        self.disconnected = threading.Event()
        self.called_back: list[Any] = []

    def on_connect(self, conn: Connection) -> None:
        self._conn = conn

    def on_disconnect(self, conn: Connection) -> None:
        self.disconnected.set()

    def exposed_ident(self) -> int:
        return threading.get_ident()

    def exposed_call_back_later(self, seconds: float) -> None:
        def later() -> None:
            time.sleep(seconds)
            self.called_back.append(self._conn.root.reflect("later"))

        threading.Thread(target=later, daemon=True).start()


def _parked(server: Server) -> int:
    """How many connections the ThreadedServer's poller holds (semi-private)."""
    poller = getattr(server, "_poller", None)
    return 0 if poller is None else len(poller._selector.get_map()) - 1


def test_threaded_server_parks_quiet_clients_and_serves_them_again(
    monkeypatch: pytest.MonkeyPatch, no_thread_leak: None
) -> None:
    """A quiet client costs no thread: its connection waits in the poller; it is served
    again (on some thread) when it calls, and the server can still call it meanwhile."""
    monkeypatch.setattr(ThreadedServer, "PARK_AFTER", 0.05)
    service = ParkService()
    server = ThreadedServer(service)
    running = Running(server)
    try:
        conns = [connect(server, service=ReflectService) for _ in range(3)]
        for conn in conns:
            assert isinstance(conn.root.ident(), int)
        wait_for(lambda: _parked(server) == 3, what="three parked clients")
        for conn in conns:  # served again
            assert isinstance(conn.root.ident(), int)
        wait_for(lambda: _parked(server) == 3, what="parked again")
        conns[0].root.call_back_later(0.2)  # the server calls a parked client (the last one on_connect saw)
        wait_for(lambda: (conns[2].poll_all(0.05), service.called_back)[1] == [("reflected", "later")], what="the callback")
        conns[1].close()  # a parked client leaves: forgotten, on_disconnect runs
        assert service.disconnected.wait(5)
        wait_for(lambda: len(server.clients) == 2, what="the client to be forgotten")
        for conn in conns:
            conn.close()
        wait_for(lambda: not server.clients, what="every client to be forgotten")
    finally:
        running.stop()


def test_threaded_server_close_closes_parked_clients(monkeypatch: pytest.MonkeyPatch, no_thread_leak: None) -> None:
    monkeypatch.setattr(ThreadedServer, "PARK_AFTER", 0.05)
    server = ThreadedServer(ParkService)
    running = Running(server)
    conns = [connect(server) for _ in range(3)]
    try:
        for conn in conns:
            conn.root.ident()
        wait_for(lambda: _parked(server) == 3, what="three parked clients")
        start = time.monotonic()
        running.stop()
        assert time.monotonic() - start < 3
        assert not server.clients
        for conn in conns:
            with pytest.raises(ConnectionClosedError):
                conn.root.ident()
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("server_class", MULTI_CLIENT_SERVERS)
def test_close_closes_every_client(server_class: ServerClass, no_thread_leak: None) -> None:
    server = server_class(CounterService)
    running = Running(server)
    conns = [connect(server) for _ in range(3)]
    try:
        for conn in conns:
            assert conn.root.increment() == 1
        if server_class is not ForkingServer:
            wait_for(lambda: len(server.clients) == 3, what="three clients")
        running.stop()
        assert not server.clients
        for conn in conns:
            with pytest.raises(ConnectionClosedError):
                conn.root.increment()
            assert conn.closed
    finally:
        for conn in conns:
            conn.close()


def test_close_interrupts_a_call_in_progress(no_thread_leak: None) -> None:
    server = ThreadedServer(CounterService)
    running = Running(server)
    with connect(server) as conn:
        call = rpc_service.async_(conn.root.slow)(0.3)
        wait_for(lambda: len(server.clients) == 1, what="the client")
        running.stop()
        start = time.monotonic()
        with pytest.raises(ConnectionClosedError):  # the pending call fails instead of hanging
            call.value
        assert time.monotonic() - start < 5


def test_one_shot_close_ends_the_served_client(no_thread_leak: None) -> None:
    server = OneShotServer(CounterService)
    running = Running(server)
    with connect(server) as conn:
        assert conn.root.increment() == 1
        running.stop()
        with pytest.raises(ConnectionClosedError):
            conn.root.increment()


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_context_manager_closes(server_class: ServerClass, no_thread_leak: None) -> None:
    with server_class(CounterService) as server:
        assert isinstance(server, server_class)
        thread = server.start_in_thread()
        port = server.port
        conn = rpc_service.connect("127.0.0.1", port)
        assert conn.root.increment() == 1
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(ConnectionClosedError):
        conn.root.increment()
    conn.close()
    with pytest.raises(ConnectionFailedError):
        rpc_service.connect("127.0.0.1", port, timeout=2)


def test_close_is_idempotent_and_start_after_close_fails() -> None:
    server = ThreadedServer(CounterService)
    server.close()
    server.close()
    with pytest.raises(RuntimeError):
        server.start()


def test_clients_lists_the_connected_clients(run: Callable[[Server], Server]) -> None:
    server = run(ThreadedServer(CounterService))
    assert server.clients == frozenset()
    with connect(server) as conn:
        conn.root.increment()
        wait_for(lambda: len(server.clients) == 1, what="one client")
        (client,) = server.clients
        assert isinstance(client, Connection)
        assert client.peer_services == ("VOID",)
    wait_for(lambda: not server.clients, what="the client to be forgotten")


def test_server_side_logger_is_used(run: Callable[[Server], Server], caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.service.custom-server-logger")
    with caplog.at_level(logging.INFO, logger=logger.name):
        server = run(ThreadedServer(CounterService, logger=logger))
        with connect(server) as conn:
            conn.root.increment()
    assert any(record.name == logger.name and "serving" in record.getMessage() for record in caplog.records)


# -- authenticator ---------------------------------------------------------------------------------


class RecordingAuthenticator:
    """Accepts every client: credentials are ("alice", peer host), and records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, float | None]] = []

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        self.seen.append((sock.getpeername(), sock.gettimeout()))
        return sock, ("alice", sock.getpeername()[0])


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_authenticator_credentials_reach_the_service(server_class: ServerClass, run: Callable[[Server], Server]) -> None:
    authenticator = RecordingAuthenticator()
    server = run(server_class(CounterService, authenticator=authenticator, protocol_config={"handshake_timeout": 4}))
    with connect(server) as conn:
        assert conn.root.connect_credentials() == ("alice", "127.0.0.1")  # seen in on_connect
        assert conn.root.credentials() == ("alice", "127.0.0.1")  # and in an exposed method
        assert conn.credentials is None  # the client side has no authenticator
        if server_class is not ForkingServer:  # (the fork's copy of the authenticator records)
            ((peer, timeout),) = authenticator.seen
            assert peer == sock_of(conn).getsockname()
            assert timeout == 4  # the handshake deadline applies to the authenticator


def test_authenticator_may_replace_the_socket(run: Callable[[Server], Server]) -> None:
    replaced: list[socket.socket] = []

    def rewrap(sock: socket.socket) -> tuple[socket.socket, Any]:
        new = socket.socket(sock.family, sock.type, fileno=sock.detach())
        replaced.append(new)
        return new, "rewrapped"

    server = run(ThreadedServer(CounterService, authenticator=rewrap))
    with connect(server) as conn:
        assert conn.root.credentials() == "rewrapped"
        (client,) = server.clients
        assert sock_of(client) is replaced[0]


class PickyAuthenticator:
    """Refuses the clients whose turn says so (in order of arrival)."""

    def __init__(self, decisions: Sequence[bool]) -> None:
        self._decisions = list(decisions)
        self._lock = threading.Lock()

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        with self._lock:
            accept = self._decisions.pop(0) if self._decisions else True
        if not accept:
            raise AuthenticationError("go away, stranger")
        return sock, "welcome"


@pytest.mark.parametrize("server_class", [ThreadedServer, ThreadPoolServer, OneShotServer])
def test_authentication_error_drops_only_that_client(
    server_class: ServerClass, run: Callable[[Server], Server], caplog: pytest.LogCaptureFixture
) -> None:
    server = run(server_class(CounterService, authenticator=PickyAuthenticator([False, True])))
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        with pytest.raises((rpc_protocol.RPCError, OSError)):
            connect(server, config={"handshake_timeout": 3})
        # the refused client did not use up a OneShotServer's shot either
        with connect(server) as conn:
            assert conn.root.credentials() == "welcome"
            assert conn.root.increment() == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("AuthenticationError" in text and "go away, stranger" in text for text in messages), messages


def test_authenticator_raising_anything_drops_the_client(run: Callable[[Server], Server], caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky(sock: socket.socket) -> tuple[socket.socket, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("bug in the authenticator")
        return sock, None

    server = run(ThreadedServer(CounterService, authenticator=flaky))
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        with pytest.raises((rpc_protocol.RPCError, OSError)):
            connect(server, config={"handshake_timeout": 3})
        with connect(server) as conn:
            assert conn.root.increment() == 1
    assert any("KeyError" in record.getMessage() for record in caplog.records)


# -- registrar ---------------------------------------------------------------------------------------


class FakeRegistrar:
    """Implements the Registrar protocol in memory."""

    REREGISTER_INTERVAL = 0.05

    def __init__(self, fail: bool = False) -> None:
        self.registered: list[tuple[tuple[str, ...], int, str]] = []
        self.unregistered: list[int] = []
        self.fail = fail
        self._lock = threading.Lock()

    def register(self, aliases: Sequence[str], port: int, interface: str = "") -> bool:
        with self._lock:
            self.registered.append((tuple(aliases), port, interface))
        if self.fail:
            raise OSError("the registry is down")
        return True

    def unregister(self, port: int) -> None:
        with self._lock:
            self.unregistered.append(port)

    def count(self) -> int:
        with self._lock:
            return len(self.registered)


def test_fake_registrar_implements_the_protocol() -> None:
    assert isinstance(FakeRegistrar(), rpc_service.Registrar)


@pytest.mark.parametrize("server_class", ALL_SERVERS)
def test_registrar_registers_refreshes_and_unregisters(server_class: ServerClass, no_thread_leak: None) -> None:
    registrar = FakeRegistrar()
    server = server_class(CounterService, registrar=registrar)
    assert server.auto_register
    running = Running(server)
    try:
        wait_for(lambda: registrar.count() >= 3, what="the lease to be refreshed")
        assert registrar.unregistered == []
        with connect(server) as conn:  # registering does not get in the way of serving
            assert conn.root.increment() == 1
    finally:
        running.stop()
    assert set(registrar.registered) == {(("COUNTER", "TALLY"), server.port, "127.0.0.1")}
    assert registrar.unregistered == [server.port]
    settled = registrar.count()
    time.sleep(0.2)
    assert registrar.count() == settled, "the server kept registering after close()"


def test_registrar_failures_are_logged_and_retried(run: Callable[[Server], Server], caplog: pytest.LogCaptureFixture) -> None:
    registrar = FakeRegistrar(fail=True)
    with caplog.at_level(logging.WARNING, logger="rpc_service"):
        server = run(ThreadedServer(CounterService, registrar=registrar))
        wait_for(lambda: registrar.count() >= 3, what="retries")
        with connect(server) as conn:
            assert conn.root.increment() == 1
    assert any("could not register" in record.getMessage() for record in caplog.records)


def test_auto_register_false_keeps_the_registrar_unused(run: Callable[[Server], Server]) -> None:
    registrar = FakeRegistrar()
    server = ThreadedServer(CounterService, registrar=registrar, auto_register=False)
    run(server)
    with connect(server) as conn:
        assert conn.root.increment() == 1
    server.close()
    assert registrar.registered == [] and registrar.unregistered == []


def test_auto_register_needs_a_registrar() -> None:
    with pytest.raises(ValueError, match="registrar"):
        ThreadedServer(CounterService, auto_register=True)


# -- the pool ----------------------------------------------------------------------------------------


def test_pool_of_two_serves_six_concurrent_clients(run: Callable[[Server], Server]) -> None:
    shared = CounterService()
    server = run(ThreadPoolServer(shared, nbthreads=2))
    conns = [connect(server) for _ in range(6)]  # six open (mostly idle) connections
    barrier = threading.Barrier(6, timeout=10)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            barrier.wait()
            results[index] = [conns[index].root.pid() for _ in range(10)]
            conns[index].root.increment()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
        assert not any(thread.is_alive() for thread in threads), "a client got stuck"
        assert not errors, errors
        assert results == {index: [os.getpid()] * 10 for index in range(6)}
        assert shared.count == 6
        assert shared.threads <= {"rpc-pool-0", "rpc-pool-1"}  # served by the two workers only
    finally:
        for conn in conns:
            conn.close()


def test_pool_idle_connections_do_not_hold_workers(run: Callable[[Server], Server]) -> None:
    server = run(ThreadPoolServer(CounterService, nbthreads=1))
    idle = [connect(server) for _ in range(5)]
    try:
        for conn in idle:
            assert conn.root.increment() == 1  # each was served once, then parked
        with connect(server) as active:
            start = time.monotonic()
            assert [active.root.increment() for _ in range(20)] == list(range(1, 21))
            assert time.monotonic() - start < 5
        assert idle[0].root.increment() == 2  # parked connections are woken by input
    finally:
        for conn in idle:
            conn.close()


def test_pool_serves_others_while_one_call_is_slow(run: Callable[[Server], Server]) -> None:
    server = run(ThreadPoolServer(CounterService, nbthreads=2))
    with connect(server) as slow, connect(server) as quick:
        call = rpc_service.async_(slow.root.slow)(0.4)
        start = time.monotonic()
        assert quick.root.increment() == 1
        assert time.monotonic() - start < 0.35, "the quick client waited for the slow call"
        call.wait()
        assert call.value == 0.4


@pytest.mark.parametrize("server_class", MULTI_CLIENT_SERVERS)
def test_server_calls_back_into_the_client(server_class: ServerClass, run: Callable[[Server], Server]) -> None:
    server = run(ThreadPoolServer(CounterService, nbthreads=1) if server_class is ThreadPoolServer else server_class(CounterService))
    with connect(server, service=ReflectService) as conn:
        assert conn.root.call_back("ping") == ("reflected", "ping")
        assert conn.root.call_back(2) == ("reflected", 2)


# -- socket options an accepted socket inherits ----------------------------------------------

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux passes a listener's options on to the sockets it accepts")


def _seconds(sock: socket.socket, option: int) -> float:
    whole, micros = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("@ll")))
    return float(whole + micros / 1e6)


class ShortWritesService(CounterService):
    """Asks for its own write timeout, whatever the server's config says."""

    def connection_config(self, config: rpc_service.Config) -> rpc_service.Config:
        return dataclasses.replace(config, write_timeout=3.0)


@linux_only
@pytest.mark.parametrize(("service", "expected"), [(CounterService, 7.5), (ShortWritesService, 3.0)])
def test_an_accepted_socket_has_the_write_timeout_and_no_delay(
    service: type[Service], expected: float, run: Callable[[Server], Server]
) -> None:
    """Set once on the listener and inherited (none set per connection), unless the
    service's own config asks for another write timeout, which is then set."""
    server = run(ThreadedServer(service, protocol_config={"write_timeout": 7.5}))
    with connect(server) as conn:
        assert conn.root.increment() == 1
        (client,) = server.clients
        sock = sock_of(client)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert _seconds(sock, socket.SO_SNDTIMEO) == pytest.approx(expected, abs=0.01)
        assert sock.gettimeout() is None  # blocking, the kernel bounding its reads


@pytest.mark.parametrize("server_class", IN_PROCESS_SERVERS + [OneShotServer])
def test_a_server_accepts_after_a_quiet_spell(server_class: ServerClass, run: Callable[[Server], Server], caplog: pytest.LogCaptureFixture) -> None:
    """The listener's read timeout (passed on to accepted sockets) also ends accept() every
    so often while no client comes: the accept loop goes round again, silently."""
    caplog.set_level(logging.DEBUG, logger="rpc_service")
    server = run(server_class(CounterService))
    time.sleep(0.5)  # (several of the listener's 0.15 s timeouts)
    with connect(server) as conn:
        assert conn.root.increment() == 1
    assert not [record for record in caplog.records if "accept()" in record.getMessage() or record.levelno >= logging.WARNING]


@linux_only
def test_an_authenticated_socket_reads_without_the_listeners_timeout(run: Callable[[Server], Server]) -> None:
    """Regression: an authenticator (and the socket it hands back, blocking) expects a
    socket with no read timeout of the kernel's; the one inherited from the listener is
    undone first. This one waits longer than that timeout for the client's token."""
    waited: list[float] = []

    def slow_token(sock: socket.socket) -> tuple[socket.socket, Any]:
        sock.settimeout(None)  # (blocking: only SO_RCVTIMEO could end the read early)
        started = time.monotonic()
        token = sock.recv(5)
        waited.append(time.monotonic() - started)
        return sock, token.decode()

    server = run(ThreadedServer(CounterService, authenticator=slow_token))
    sock = socket.create_connection((server.host, server.port), timeout=5)
    time.sleep(0.4)
    sock.sendall(b"token")
    with rpc_service.connect_stream(rpc_service.SocketStream(sock)) as conn:
        assert conn.root.credentials() == "token"
        time.sleep(0.4)  # (the served socket idle longer than that timeout too)
        assert conn.root.credentials() == "token"
    assert waited and waited[0] >= 0.3


def test_a_default_socket_timeout_set_after_the_server_started_changes_nothing(run: Callable[[Server], Server]) -> None:
    """Sockets accepted under ``socket.setdefaulttimeout()`` start with a timeout of Python's:
    the server makes them blocking again (the kernel bounds their reads), as before."""
    server = run(ThreadedServer(CounterService))
    socket.setdefaulttimeout(5.0)
    try:
        with connect(server) as conn:
            assert conn.root.increment() == 1
            (client,) = server.clients
            assert sock_of(client).gettimeout() is None
            time.sleep(0.3)  # (longer than the read timeout the listener passes on)
            assert conn.root.increment() == 2
    finally:
        socket.setdefaulttimeout(None)


@linux_only
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: ThreadedServer(CounterService), 0.15),  # parks quiet clients: its reads wait 0.2 s at most
        (lambda: ThreadedServer(CounterService, idle_timeout=30), 22.5),  # 3/4 of the wait
        (lambda: OneShotServer(CounterService), 0.0),  # waits without end: no timeout at all
    ],
    ids=["threaded", "idle-timeout", "one-shot"],
)
def test_a_serving_loop_that_waits_long_takes_the_listeners_read_timeout_off(
    make: Callable[[], Server], expected: float, run: Callable[[Server], Server]
) -> None:
    """Regression (review): the 0.15 s read timeout inherited from the listener was kept by
    loops that wait long or forever, waking an idle connection every 0.15 s (every 7.5 s
    before the listener passed it on)."""
    server = run(make())
    with connect(server) as conn:
        assert conn.root.increment() == 1
        (client,) = server.clients
        time.sleep(0.05)  # (the serving thread back in its read)
        assert _seconds(sock_of(client), socket.SO_RCVTIMEO) == pytest.approx(expected, abs=0.01)


@linux_only
def test_an_authenticator_gets_a_socket_without_inherited_timeouts(run: Callable[[Server], Server]) -> None:
    """Regression (review): the write timeout inherited from the listener stayed on the
    socket an authenticator works with (its reads and writes bounded by Python's timeout)."""
    seen: list[tuple[float, float]] = []

    def look(sock: socket.socket) -> tuple[socket.socket, Any]:
        seen.append((_seconds(sock, socket.SO_RCVTIMEO), _seconds(sock, socket.SO_SNDTIMEO)))
        return sock, None

    server = run(ThreadedServer(CounterService, authenticator=look))
    with connect(server) as conn:
        assert conn.root.increment() == 1
    assert seen == [(0.0, 0.0)]
