"""Concurrency: threads sharing a connection, nested callbacks, closing under waiters, timeouts.

DESIGN.md §5: both ends serve requests; nested callbacks A→B→A→B work without deadlock;
many threads may share one connection and each gets its own reply; closing wakes every
waiter with ConnectionClosedError. Every wait here is bounded in count and time.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import pytest

import rpc_service
from rpc_service import AsyncResultTimeout, ConnectionClosedError, Connection, Service

from .conftest import ConnectTo
from .helpers import run_threads

pytestmark = pytest.mark.timeout(60)


class WorkService(Service):
    """Echoes, recurses through callbacks, and blocks on a gate the test controls."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.gate = threading.Event()  # released by the test (and always at teardown)
        self.entered = threading.Event()
        self.depth = 0
        self.max_depth = 0
        self.disconnected = threading.Event()

    def on_connect(self, conn: Connection) -> None:
        self.conn = conn

    def on_disconnect(self, conn: Connection) -> None:
        self.disconnected.set()

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_bounce(self, callback: Callable[[int], int], remaining: int) -> int:
        """Call back into the client, which calls back into us, ``remaining`` times."""
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        try:
            return callback(remaining - 1) + 1 if remaining > 0 else 0
        finally:
            self.depth -= 1

    def exposed_block(self) -> str:
        self.entered.set()
        self.gate.wait(10)
        return "released"

    def exposed_outer(self, callback: Callable[[], object]) -> str:
        """Call the client back, then hold the reply until the gate opens."""
        callback()
        self.gate.wait(5)
        return "outer"

    def exposed_close_soon(self, delay: float) -> str:
        """Close this side of the connection from another thread while the call is running."""
        assert self.conn is not None
        conn = self.conn
        self.entered.set()
        threading.Timer(delay, conn.close).start()
        self.disconnected.wait(5)
        return "too late"


@pytest.fixture
def service() -> Iterator[WorkService]:
    svc = WorkService()
    yield svc
    svc.gate.set()  # let any server thread still blocked in block() finish


def test_threads_sharing_a_connection_get_their_own_replies(connect_to: ConnectTo, service: WorkService) -> None:
    conn = connect_to(service)
    root: Any = conn.root
    threads, calls = 8, 300
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        got = results.setdefault(index, [])
        try:
            for call in range(calls):
                value = (index, call, "x" * (call % 7))
                got.append(root.echo(value))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    run_threads(threads, worker)
    assert errors == []
    for index in range(threads):
        assert results[index] == [(index, call, "x" * (call % 7)) for call in range(calls)]


def test_threads_calling_each_way_at_once(connect_to: ConnectTo, service: WorkService) -> None:
    """Client threads make plain calls while others recurse through callbacks."""
    conn = connect_to(service)
    root: Any = conn.root
    errors: list[BaseException] = []
    done: list[int] = []

    def callback(remaining: int) -> int:
        result: int = root.bounce(callback, remaining - 1) + 1 if remaining > 0 else 0
        return result

    def worker(index: int) -> None:
        try:
            for call in range(50):
                if index % 2:
                    assert root.echo((index, call)) == (index, call)
                else:
                    assert root.bounce(callback, 4) == 4
            done.append(index)
        except BaseException as exc:
            errors.append(exc)

    run_threads(6, worker)
    assert errors == []
    assert sorted(done) == list(range(6))


def test_nested_callbacks_to_depth_twenty(connect_to: ConnectTo, service: WorkService) -> None:
    conn = connect_to(service)
    root: Any = conn.root
    client_depth = [0, 0]  # current, max

    def callback(remaining: int) -> int:
        client_depth[0] += 1
        client_depth[1] = max(client_depth[1], client_depth[0])
        try:
            result: int = root.bounce(callback, remaining - 1) + 1 if remaining > 0 else 0
            return result
        finally:
            client_depth[0] -= 1

    # 20 server frames and 20 client frames interleaved: A→B→A→B… 40 calls deep
    assert root.bounce(callback, 39) == 39
    assert service.max_depth == 20 and service.depth == 0
    assert client_depth == [0, 20]
    assert root.echo("still fine") == "still fine"


def test_callbacks_nested_past_what_the_stacks_hold_raise_and_the_connection_serves_on(
    connect_to: ConnectTo, service: WorkService
) -> None:
    """Callbacks nested deeper than one serving thread's stack holds are served on threads of
    their own; past half of max_pending_requests nested on the connection they end in
    RecursionError for the caller, at any depth, and the connection keeps serving (it was
    closed: the frame read at the innermost level could not be decoded, or the peer passed
    max_pending_requests)."""
    conn = connect_to(service)
    root: Any = conn.root

    def callback(remaining: int) -> int:
        result: int = root.bounce(callback, remaining - 1) + 1 if remaining > 0 else 0
        return result

    assert root.bounce(callback, 900) == 900  # past what one thread's stack holds
    for depth in (15_000, 30_000):
        with pytest.raises(RecursionError, match="nested too deeply"):
            root.bounce(callback, depth)
        assert not conn.closed
        assert service.depth == 0
        assert root.bounce(callback, 39) == 39
    assert root.echo("still fine") == "still fine"


def _outcomes(threads: int, call: Callable[[], object]) -> dict[int, object]:
    """What ``call()`` returned, or raised, on each of ``threads`` threads run at once."""
    outcomes: dict[int, object] = {}

    def worker(index: int) -> None:
        try:
            outcomes[index] = call()
        except Exception as exc:
            outcomes[index] = exc

    run_threads(threads, worker)
    return outcomes


def test_callbacks_of_many_threads_nest_on_one_connection(connect_to: ConnectTo, service: WorkService) -> None:
    """Regression: 8 client threads each nesting callbacks 20 deep got RecursionError: the
    server serves one connection on one thread, so the 8 chains piled up on its stack."""
    conn = connect_to(service)
    root: Any = conn.root

    def callback(remaining: int) -> int:
        result: int = root.bounce(callback, remaining - 1) + 1 if remaining > 0 else 0
        return result

    assert _outcomes(8, lambda: root.bounce(callback, 39)) == {index: 39 for index in range(8)}
    assert root.echo("still fine") == "still fine"


def test_concurrent_callbacks_below_max_pending_requests_are_not_refused_as_nested(
    connect_to: ConnectTo, service: WorkService
) -> None:
    """Regression: with max_pending_requests=16, 12 threads each making one call that calls
    back once got "nested too deeply" for some: the server's one thread served their
    callbacks on top of each other, and the refusal counted them from half the limit."""
    limit = {"max_pending_requests": 16}
    conn = connect_to(service, limit, client_config=limit)
    root: Any = conn.root

    def callback(remaining: int) -> int:
        time.sleep(0.05)  # (the callbacks overlap)
        return 0

    assert _outcomes(12, lambda: root.bounce(callback, 1)) == {index: 1 for index in range(12)}


def test_closing_wakes_every_waiting_caller(connect_to: ConnectTo, service: WorkService) -> None:
    conn = connect_to(service)
    root: Any = conn.root
    outcomes: dict[int, tuple[type[BaseException] | None, float]] = {}
    closed_at: list[float] = []

    def worker(index: int) -> None:
        try:
            root.block()
            outcomes[index] = (None, time.monotonic())
        except BaseException as exc:
            outcomes[index] = (type(exc), time.monotonic())

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    assert service.entered.wait(5)
    deadline = time.monotonic() + 5
    while conn.stats.calls_pending < 4 and time.monotonic() < deadline:  # requests in flight
        time.sleep(0.01)
    assert conn.stats.calls_pending == 4

    def close() -> None:
        closed_at.append(time.monotonic())
        conn.close()

    closer = threading.Thread(target=close)
    closer.start()
    closer.join(5)
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(outcomes) == [0, 1, 2, 3]
    for kind, when in outcomes.values():
        assert kind is ConnectionClosedError
        assert when - closed_at[0] < 2
    assert conn.closed


def test_server_closing_mid_call(connect_to: ConnectTo, service: WorkService) -> None:
    conn = connect_to(service)
    started = time.monotonic()
    with pytest.raises(ConnectionClosedError):
        conn.root.close_soon(0.2)
    assert time.monotonic() - started < 3
    assert conn.closed
    assert service.disconnected.wait(5)


def test_peer_gone_wakes_waiter_blocked_on_another_thread_reading(connect_to: ConnectTo, service: WorkService) -> None:
    """One thread holds the reader role, another waits for it; the peer closes on both."""
    conn = connect_to(service)
    root: Any = conn.root
    kinds: list[type[BaseException]] = []

    def blocked(index: int) -> None:
        try:
            root.block()
        except BaseException as exc:
            kinds.append(type(exc))

    waiter = threading.Thread(target=blocked, args=(0,))
    waiter.start()
    assert service.entered.wait(5)
    service.entered.clear()
    assert service.conn is not None
    threading.Timer(0.2, service.conn.close).start()
    with pytest.raises(ConnectionClosedError):
        root.echo(1)  # queued behind block() on the server, which closes instead
    waiter.join(5)
    assert kinds == [ConnectionClosedError]


def test_calls_after_close_raise_connection_closed(connect_to: ConnectTo, service: WorkService) -> None:
    conn = connect_to(service)
    root: Any = conn.root
    echo = root.echo
    conn.close()
    assert conn.closed
    with pytest.raises(ConnectionClosedError):
        root.echo(1)
    with pytest.raises(ConnectionClosedError):
        echo(1)
    with pytest.raises(ConnectionClosedError):
        rpc_service.async_(echo)(1)
    with pytest.raises(ConnectionClosedError):
        conn.ping()
    with pytest.raises(ConnectionClosedError):
        conn.serve(0.1)
    assert conn.poll_all(0.1) is False
    conn.close()  # idempotent


def test_calls_after_the_peer_closed_raise_connection_closed(connect_to: ConnectTo, service: WorkService) -> None:
    conn = connect_to(service)
    assert conn.root.echo(1) == 1
    assert service.conn is not None
    service.conn.close()
    deadline = time.monotonic() + 5
    with pytest.raises(ConnectionClosedError):
        while time.monotonic() < deadline:  # the first call may already be on its way out
            conn.root.echo(2)
            time.sleep(0.01)
    assert conn.closed
    with pytest.raises(ConnectionClosedError):
        conn.ping()


def test_closing_while_threads_hammer_the_connection(connect_to: ConnectTo, service: WorkService) -> None:
    """Whatever a call was doing when another thread closed, it fails with ConnectionClosedError."""
    for _ in range(10):
        conn = connect_to(service)
        root: Any = conn.root
        unexpected: list[BaseException] = []
        running = threading.Barrier(5, timeout=5)

        def worker(index: int) -> None:
            running.wait()
            try:
                for call in range(100_000):
                    assert root.echo(call) == call
            except ConnectionClosedError:
                return
            except BaseException as exc:
                unexpected.append(exc)

        threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        running.wait()
        time.sleep(0.02)
        conn.close()
        for thread in threads:
            thread.join(5)
        assert not any(thread.is_alive() for thread in threads)
        assert unexpected == []


def test_sync_request_timeout(connect_to: ConnectTo, service: WorkService) -> None:
    conn = connect_to(service, client_config={"sync_request_timeout": 0.3})
    root: Any = conn.root
    started = time.monotonic()
    with pytest.raises(AsyncResultTimeout) as info:
        root.block()
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 3
    assert isinstance(info.value, TimeoutError)
    assert "sync_request_timeout" in str(info.value)
    service.gate.set()  # the late reply now arrives, and is dropped
    assert root.echo("after") == "after"
    assert [root.echo(i) for i in range(20)] == list(range(20))
    assert conn._slots == {}  # semi-private: the abandoned request left nothing behind
    conn.ping()
    assert not conn.closed


def test_sync_request_timeout_with_several_threads(connect_to: ConnectTo, service: WorkService) -> None:
    """One caller times out while another is reading: only that caller gives up."""
    conn = connect_to(service, client_config={"sync_request_timeout": 0.3})
    root: Any = conn.root
    kinds: list[type[BaseException]] = []

    def blocked(index: int) -> None:
        try:
            root.block()
        except BaseException as exc:
            kinds.append(type(exc))

    run_threads(3, blocked, timeout=10)
    assert kinds == [AsyncResultTimeout] * 3
    service.gate.set()
    assert root.echo(5) == 5
