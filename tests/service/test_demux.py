"""The connection core (issue 12): one thread's slow handler or silent peer never stalls another.

Replies reach their callers while another thread's callback runs; many threads share one
connection; when a factory returns, the server's on_connect has completed; a server whose
on_connect raises rejects the client with a reason; handshake deadlines raise
HandshakeTimeout (an RPCError and a TimeoutError); ``conn.stats`` says what a connection did
and holds. Every wait is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpc_protocol
import rpc_service
from rpc_service import (
    Connection,
    ConnectionRejectedError,
    ConnectionStats,
    HandshakeTimeout,
    Lifecycle,
    RPCError,
    Service,
    ThreadedServer,
    ThreadPoolServer,
)

from .conftest import ConnectTo
from .helpers import Running, run_threads

pytestmark = pytest.mark.timeout(60)


class ApplyService(Service):
    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_apply(self, function: Callable[..., Any], *args: Any) -> Any:
        return function(*args)

    def exposed_blob(self, size: int) -> bytes:
        return b"x" * size


# -- a slow callback on one thread, prompt replies on another ---------------------------------


def test_slow_client_callback_does_not_delay_another_threads_replies(connect_to: ConnectTo) -> None:
    """Thread A's call runs a client-side callback that sleeps 1.5 s; meanwhile thread B's 20
    calls on the same connection each complete in well under 0.25 s (and within a 1 s
    sync_request_timeout)."""
    conn = connect_to(ApplyService, client_config={"sync_request_timeout": 1.0})
    root: Any = conn.root
    sleeping = threading.Event()
    outcome: list[Any] = []

    def slow(value: int) -> int:
        sleeping.set()
        time.sleep(1.5)
        return value * 2

    def thread_a() -> None:
        try:
            outcome.append(rpc_service.timed(root.apply, 10)(slow, 21).value)
        except BaseException as exc:
            outcome.append(exc)

    a = threading.Thread(target=thread_a, name="thread-a")
    a.start()
    try:
        assert sleeping.wait(5), "the callback never started"
        durations = []
        for index in range(20):
            start = time.monotonic()
            assert root.echo(index) == index
            durations.append(time.monotonic() - start)
        assert max(durations) < 0.25, f"slowest call took {max(durations):.3f} s"
        assert a.is_alive(), "the callback was meant to still be sleeping"
    finally:
        a.join(10)
    assert outcome == [42]


def test_a_waiting_thread_takes_over_reading_from_a_thread_serving_a_callback(connect_to: ConnectTo) -> None:
    """B is already waiting for its reply when A starts a slow callback: B must not stay
    asleep until A's callback ends (the reading role is handed on before serving)."""
    conn = connect_to(ApplyService)
    root: Any = conn.root
    b_sent = threading.Event()
    b_done: list[float] = []
    release_b = threading.Event()

    def gate(value: Any) -> Any:
        release_b.wait(5)  # B's request is held by the server until then
        return value

    def thread_b() -> None:
        b_sent.set()
        assert root.apply(gate, "b") == "b"
        b_done.append(time.monotonic())

    def slow() -> str:
        threading.Thread(target=thread_b, name="thread-b").start()
        assert b_sent.wait(5)
        time.sleep(0.2)  # B is now waiting for its reply: with A's callback running
        release_b.set()
        time.sleep(1.5)
        return "a"

    started = time.monotonic()
    assert root.apply(slow) == "a"
    deadline = time.monotonic() + 5
    while not b_done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b_done, "B never got its reply"
    # B's reply was read while A's callback slept, not after it
    assert b_done[0] - started < 1.2, f"B finished {b_done[0] - started:.2f} s after the start"


def test_sixty_four_threads_share_one_connection(connect_to: ConnectTo) -> None:
    conn = connect_to(ApplyService)
    root: Any = conn.root
    calls = 200
    errors: list[BaseException] = []
    finished = [0] * 64

    def worker(index: int) -> None:
        try:
            for call in range(calls):
                value = (index, call)
                if root.echo(value) != value:
                    errors.append(AssertionError(f"thread {index} got another thread's reply"))
                    return
                finished[index] += 1
        except BaseException as exc:
            errors.append(exc)

    run_threads(64, worker, timeout=40)
    assert errors == []
    assert finished == [calls] * 64
    stats = conn.stats
    assert stats.calls_sent >= 64 * calls and stats.calls_pending == 0


def test_nested_callbacks_run_on_the_calling_thread(connect_to: ConnectTo) -> None:
    """A→B→A→B 20 deep on the client: every client-side callback runs on the thread that
    made the outermost call; no thread is started for them."""
    conn = connect_to(ApplyService)
    root: Any = conn.root
    threads_seen: set[threading.Thread] = set()

    def down(remaining: int) -> int:
        threads_seen.add(threading.current_thread())
        if remaining == 0:
            return 0
        result: int = root.apply(down, remaining - 1)
        return result + 1

    before = threading.active_count()
    assert root.apply(down, 20) == 20
    assert threads_seen == {threading.current_thread()}
    assert threading.active_count() <= before


def test_replies_are_delivered_before_queued_requests_run(connect_to: ConnectTo) -> None:
    """A reply that arrives while a callback of the peer's is being served reaches its
    caller at once: here the caller is the callback's own thread's neighbour."""
    conn = connect_to(ApplyService)
    root: Any = conn.root
    async_echo = rpc_service.async_(root.echo)
    result = async_echo("early")

    def callback() -> str:
        # the reply to async_echo arrives around here; it must be delivered without
        # waiting for this callback to return
        deadline = time.monotonic() + 3
        while not result.ready and time.monotonic() < deadline:
            time.sleep(0.01)
        return "callback saw the reply" if result.ready else "reply still pending"

    assert root.apply(callback) == "callback saw the reply"
    assert result.value == "early"


# -- ordering: on_connect completes before the factory returns ----------------------------------


class SlowOnConnect(Service):
    """One shared instance: counts the on_connect calls that have finished."""

    def __init__(self) -> None:
        self.finished = 0
        self.lock = threading.Lock()

    def on_connect(self, conn: Connection) -> None:
        time.sleep(0.001)  # widen the window a little: the Hello must still wait for this
        with self.lock:
            self.finished += 1


@pytest.mark.parametrize("kind", ["ThreadedServer", "ThreadPoolServer", "connect_thread"])
def test_two_hundred_connects_each_see_on_connect_finished(kind: str) -> None:
    service = SlowOnConnect()
    running = None
    if kind != "connect_thread":
        server_class = ThreadedServer if kind == "ThreadedServer" else ThreadPoolServer
        running = Running(server_class(service))
    try:
        for index in range(200):
            if running is None:
                conn = rpc_service.connect_thread(remote_service=service)
            else:
                conn = rpc_service.connect("127.0.0.1", running.server.port)
            with conn:
                with service.lock:
                    finished = service.finished
                assert finished == index + 1, f"connect #{index} returned before the server's on_connect finished"
    finally:
        if running is not None:
            running.stop()


# -- the accepting side's preface and Hello: together, after on_connect ----------------------------


class GatedOnConnect(Service):
    """on_connect waits for the test to open the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()

    def on_connect(self, conn: Connection) -> None:
        self.entered.set()
        self.gate.wait(10)


def read_until_closed(sock: socket.socket, seconds: float) -> bytes:
    """Everything the peer sends until it closes (bounded by ``seconds``)."""
    deadline = time.monotonic() + seconds
    data = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return data


def client_opening() -> tuple[rpc_protocol.Connection, bytes]:
    proto = rpc_protocol.Connection()
    return proto, b"".join(bytes(b) for b in [*proto.send(rpc_protocol.Preface()), *proto.send(rpc_protocol.Hello(services=("RAW",)))])


def test_the_server_sends_nothing_until_on_connect_returned_then_preface_and_hello() -> None:
    service = GatedOnConnect()
    running = Running(ThreadedServer(service))
    try:
        with socket.create_connection(("127.0.0.1", running.server.port), timeout=5) as sock:
            proto, opening = client_opening()
            sock.sendall(opening)
            assert service.entered.wait(5), "on_connect never ran"
            sock.settimeout(0.2)
            with pytest.raises(socket.timeout):
                sock.recv(1)  # neither preface nor Hello while on_connect runs
            service.gate.set()
            events: list[rpc_protocol.Event] = []
            deadline = time.monotonic() + 5
            while not any(isinstance(e, rpc_protocol.Hello) for e in events) and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                assert chunk, "the server closed instead of answering"
                events += proto.receive_data(chunk)
            assert [type(e) for e in events] == [rpc_protocol.Preface, rpc_protocol.Hello]
            assert proto.state is rpc_protocol.State.OPEN
    finally:
        service.gate.set()
        running.stop()


# A frame no peer may send before its Hello (an ERROR header, empty payload), sent with the preface
AFTER_PREFACE = {"nothing": b"", "a-bad-frame": bytes((rpc_protocol.FrameType.ERROR,)) + bytes(11)}


@pytest.mark.parametrize("after", AFTER_PREFACE.values(), ids=AFTER_PREFACE.keys())
def test_a_client_of_no_common_version_gets_the_servers_preface_and_a_clear_error(
    after: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (a-bad-frame, found by the live fuzz test): bad bytes read with the preface
    had failed the protocol connection already, so asking it for the refusal's error raised
    "the connection failed earlier" (a LocalProtocolError) instead."""
    running = Running(ThreadedServer(ApplyService))
    try:
        with caplog.at_level(logging.INFO, logger="rpc_service"):
            with socket.create_connection(("127.0.0.1", running.server.port), timeout=5) as sock:
                future = rpc_protocol.Connection()
                sock.sendall(b"".join(bytes(b) for b in future.send(rpc_protocol.Preface(200, 201))) + after)
                answer = read_until_closed(sock, 5)
            assert answer == b"".join(bytes(b) for b in rpc_protocol.Connection().send(rpc_protocol.Preface()))
            with pytest.raises(rpc_protocol.HandshakeError, match="no protocol version in common"):
                future.receive_data(answer)
            assert any("the peer speaks 200..201" in r.getMessage() for r in caplog.records)
            assert not [r for r in caplog.records if "LocalProtocolError" in r.getMessage()]
    finally:
        running.stop()


# -- rejection with a reason ----------------------------------------------------------------------


class RefusingService(Service):
    def on_connect(self, conn: Connection) -> None:
        raise PermissionError("no guests after midnight")


@pytest.mark.parametrize("server_class", [ThreadedServer, ThreadPoolServer])
def test_a_raising_on_connect_rejects_the_client_with_its_reason(
    server_class: type[ThreadedServer], caplog: pytest.LogCaptureFixture
) -> None:
    error, errors = _rejected(server_class(RefusingService), caplog)
    assert isinstance(error, RPCError)
    assert "PermissionError" in str(error) and "no guests after midnight" in str(error)
    assert "Traceback" not in str(error)
    assert errors, "the server did not log the rejection at ERROR"
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is PermissionError


def _rejected(server: ThreadedServer, caplog: pytest.LogCaptureFixture) -> tuple[ConnectionRejectedError, list[logging.LogRecord]]:
    """Connect to ``server`` (which rejects the client): the client's error and the
    server's ERROR records (waited for up to 5 s)."""
    running = Running(server)
    try:
        with caplog.at_level(logging.INFO, logger="rpc_service"):
            with pytest.raises(ConnectionRejectedError) as info:
                rpc_service.connect("127.0.0.1", running.server.port, timeout=5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(r.levelno >= logging.ERROR for r in caplog.records):
                time.sleep(0.01)
    finally:
        running.stop()
    return info.value, [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_connect_thread_rejection_carries_the_reason_too() -> None:
    with pytest.raises(ConnectionRejectedError, match="PermissionError: no guests"):
        rpc_service.connect_thread(remote_service=RefusingService)


class UnmakeableService(Service):
    def __init__(self) -> None:
        raise RuntimeError("cannot open the database")


@pytest.mark.parametrize("server_class", [ThreadedServer, ThreadPoolServer])
def test_a_service_class_whose_constructor_raises_rejects_the_client_with_its_reason(
    server_class: type[ThreadedServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the client got only "the peer closed the connection" and the server
    logged the error at INFO without a traceback, as if the client were to blame."""
    error, errors = _rejected(server_class(UnmakeableService), caplog)
    assert "UnmakeableService() failed: RuntimeError: cannot open the database" in str(error)
    assert errors and errors[0].exc_info is not None and errors[0].exc_info[0] is RuntimeError


def test_connect_thread_says_what_is_wrong_with_the_far_side() -> None:
    """Regression: the far side's errors were swallowed on its thread (a broken pipe here)."""
    with pytest.raises(ConnectionRejectedError, match="UnmakeableService"):
        rpc_service.connect_thread(remote_service=UnmakeableService)
    with pytest.raises(TypeError, match="Service subclass or instance"):
        rpc_service.connect_thread(remote_service=42)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(ValueError, match="unknown config keys"):
        rpc_service.connect_thread(remote_config={"nope": 1})


class SecondTimeUnmakeableService(Service):
    made = 0  # (aio.Server makes one up front, to check its argument)

    def __init__(self) -> None:
        type(self).made += 1
        if type(self).made > 1:
            raise RuntimeError("out of licences")


def test_an_aio_server_rejects_the_client_of_an_unmakeable_service_too() -> None:
    from rpc_service import aio

    async def main() -> None:
        async with aio.Server(SecondTimeUnmakeableService) as server:
            await server.start()
            with pytest.raises(ConnectionRejectedError, match=r"SecondTimeUnmakeableService\(\) failed: RuntimeError: out of licences"):
                await asyncio.wait_for(aio.connect("127.0.0.1", server.port), 10)

    asyncio.run(main())


# -- handshake deadlines ---------------------------------------------------------------------------


def test_handshake_timeout_is_an_rpc_error_and_a_timeout_error() -> None:
    assert issubclass(HandshakeTimeout, RPCError) and issubclass(HandshakeTimeout, TimeoutError)
    assert rpc_service.HandshakeTimeout is HandshakeTimeout
    assert issubclass(ConnectionRejectedError, RPCError)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port whose listener accepts (in the kernel) but never speaks."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def test_connect_timeout_bounds_the_handshake(silent_listener: int) -> None:
    start = time.monotonic()
    with pytest.raises(HandshakeTimeout) as info:
        rpc_service.connect("127.0.0.1", silent_listener, timeout=0.4)  # handshake_timeout stays 10 s
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 2.0, f"gave up after {elapsed:.2f} s"
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, RPCError)


def test_handshake_timeout_from_config_is_a_handshake_timeout(silent_listener: int) -> None:
    start = time.monotonic()
    with pytest.raises(HandshakeTimeout):
        rpc_service.connect("127.0.0.1", silent_listener, config={"handshake_timeout": 0.3})
    assert time.monotonic() - start < 2.0


def test_unix_connect_timeout_bounds_the_handshake(tmp_path: Any) -> None:
    path = str(tmp_path / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        start = time.monotonic()
        with pytest.raises(HandshakeTimeout):
            rpc_service.unix_connect(path, timeout=0.3)
        assert time.monotonic() - start < 2.0


def test_failures_to_open_are_rpc_errors(silent_listener: int) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    with pytest.raises(RPCError):
        rpc_service.connect("127.0.0.1", port, timeout=2)  # refused
    with pytest.raises(RPCError):
        rpc_service.connect("127.0.0.1", silent_listener, timeout=0.2)
    with pytest.raises(RPCError):
        rpc_service.connect_subproc(["/nonexistent/rpc-child"])
    assert rpc_service.ProtocolError is rpc_protocol.ProtocolError


# -- write timeout ---------------------------------------------------------------------------------


def test_write_timeout_fails_a_connection_whose_peer_does_not_read(caplog: pytest.LogCaptureFixture) -> None:
    """The client asks for big replies and never reads them: the server's write stops
    progressing and the connection fails after write_timeout, instead of blocking forever."""
    running = Running(ThreadedServer(ApplyService, protocol_config={"write_timeout": 0.3}))
    try:
        conn = rpc_service.connect("127.0.0.1", running.server.port)
        conn._stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # type: ignore[attr-defined]  # a SocketStream
        for _ in range(16):
            rpc_service.async_(conn.root.blob)(1 << 20)  # 16 MiB of replies, never read
        deadline = time.monotonic() + 10
        while running.server.clients and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running.server.clients, "the server is still blocked writing to a peer that does not read"
        conn.close()
    finally:
        running.stop()


def test_write_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        rpc_service.Config(write_timeout=0)
    assert rpc_service.Config().write_timeout is not None


# -- stats and lifecycle -----------------------------------------------------------------------------


class HolderService(Service):
    def __init__(self) -> None:
        self.kept: list[Any] = []

    def exposed_keep(self, value: Any) -> None:
        self.kept.append(value)

    def exposed_make(self) -> Any:
        return Thing()

    def exposed_echo(self, value: Any) -> Any:
        return value


class Thing:
    def exposed_get(self) -> int:
        return 1


def test_stats_count_calls_bytes_and_objects(connect_to: ConnectTo) -> None:
    holder = HolderService()
    conn = connect_to(holder)
    root: Any = conn.root
    first = conn.stats
    assert isinstance(first, ConnectionStats)
    assert first.calls_sent == 0 and first.bytes_received > 0 and first.bytes_sent > 0  # the handshake
    with pytest.raises(AttributeError):
        first.calls_sent = 5  # type: ignore[misc]  # frozen: a snapshot, not a handle
    assert [root.echo(i) for i in range(5)] == list(range(5))
    local = [1, 2]
    root.keep(local)  # lends a list to the server
    thing = root.make()  # holds a proxy of the server's object
    stats = conn.stats
    assert stats.calls_sent >= 7  # echo x5, keep, make (and the attribute lookups that proxies make)
    assert stats.bytes_sent > first.bytes_sent and stats.bytes_received > first.bytes_received
    assert stats.objects_lent >= 1  # the list lent (and the client's root service)
    assert stats.proxies_held >= 2  # the server's root and the thing
    assert stats.calls_pending == 0
    assert thing.get() == 1
    del thing
    root.echo("a release rides on this call")
    assert conn.stats.proxies_held == stats.proxies_held - 1


def test_stats_count_calls_served(connect_to: ConnectTo) -> None:
    conn = connect_to(ApplyService)
    root: Any = conn.root
    assert root.apply(lambda: 1) == 1
    assert root.apply(lambda x: x, 2) == 2
    assert conn.stats.calls_served == 2  # the two callbacks the server made


def test_lifecycle_moves_from_open_to_closed(connect_to: ConnectTo) -> None:
    conn = connect_to(ApplyService)
    before = conn.lifecycle
    assert before is Lifecycle.OPEN and not conn.closed
    conn.close()
    after = conn.lifecycle
    assert after is Lifecycle.CLOSED and conn.closed
    assert "closed" in repr(conn)


# -- random mixes ------------------------------------------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("echo"), st.integers(-(2**70), 2**70)),
        st.tuples(st.just("nest"), st.integers(0, 6)),
        st.tuples(st.just("async"), st.integers(0, 1000)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans=st.lists(_OPS, min_size=1, max_size=6))
def test_random_mixes_of_calls_callbacks_and_async_calls_on_shared_threads(plans: list[list[tuple[str, int]]]) -> None:
    """Threads share one connection, each running its own random mix of plain calls,
    nested callbacks and async calls: every result is the caller's own."""
    conn = rpc_service.connect_thread(remote_service=ApplyService, config={"sync_request_timeout": 20})
    try:
        root: Any = conn.root
        errors: list[str] = []

        def down(remaining: int) -> int:
            if remaining == 0:
                return 0
            result: int = root.apply(down, remaining - 1)
            return result + 1

        def worker(index: int) -> None:
            try:
                for kind, value in plans[index]:
                    if kind == "echo":
                        got = root.echo((index, value))
                        expected: Any = (index, value)
                    elif kind == "nest":
                        got, expected = root.apply(down, value), value
                    else:
                        got, expected = rpc_service.async_(root.echo)((index, value)).value, (index, value)
                    if got != expected:
                        errors.append(f"thread {index}: {kind}({value}) gave {got!r}")
            except BaseException as exc:
                errors.append(f"thread {index}: {type(exc).__name__}: {exc}")

        run_threads(len(plans), worker, timeout=30)
        assert errors == []
        assert conn.stats.calls_pending == 0
    finally:
        conn.close()


class _Lender(Service):
    def exposed_thing(self) -> object:
        return object()  # (a reference: the caller's unbox hook makes its proxy)


@pytest.mark.parametrize("path", ["fast", "general"])
def test_a_connection_whose_unbox_hook_failed_is_closed(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Regression: an unbox hook raising something other than RemoteProtocolError while a
    reply was decoded failed the protocol (where the next frame starts is lost) but left the
    connection open: ``closed`` False, on_disconnect never run, every later call "closed".
    The caller gets the hook's exception and the connection is closed, as for bad bytes.
    (The hook is patched: no peer's bytes make rpc_service's own hook raise this way.)"""
    from rpc_service import _boxing

    real_unbox = _boxing.Boxer.unbox
    armed = threading.Event()
    caller = threading.get_ident()

    def unbox(self: Any, ref: Any) -> object:
        if armed.is_set() and threading.get_ident() == caller:
            raise ValueError("a bug in the unbox hook")
        return real_unbox(self, ref)

    monkeypatch.setattr(_boxing.Boxer, "unbox", unbox)  # (before connecting: the protocol keeps the bound hook)
    disconnected = threading.Event()

    class Client(Service):
        def on_disconnect(self, conn: Connection) -> None:
            disconnected.set()

    server = ThreadedServer(_Lender, hostname="127.0.0.1", port=0)
    server.start_in_thread()
    try:
        conn = rpc_service.connect("127.0.0.1", server.port, service=Client, config={"sync_request_timeout": 10})
        armed.set()
        with pytest.raises(ValueError, match="a bug in the unbox hook"):
            if path == "fast":
                conn.root.thing()
            else:
                rpc_service.async_(conn.root.thing)().wait()  # (a slot and the general reader)
        assert conn.closed and conn.lifecycle is Lifecycle.CLOSED
        assert disconnected.wait(5)
        with pytest.raises(rpc_service.ConnectionClosedError):
            conn.root.thing()
    finally:
        server.close()
