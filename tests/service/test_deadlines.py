"""Deadlines and cancellation on the threaded driver (``rpc_service.deadline``).

What issue 15 asks to be shown: the budget travels with each call and shrinks along a
chain of nested calls (client -> server -> client callback -> server), the innermost
handler learns it was cancelled, ``DeadlineExceeded`` arrives within 50 ms of the deadline
while the server is still busy, a ``sync_request_timeout`` expiry sends CANCEL too, and the
connection keeps serving afterwards. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, Callable, Iterator

import pytest

import rpc_service
from rpc_service import DeadlineExceeded, ThreadedServer

_BUSY_LIMIT = 5.0  # a busy handler gives up by itself after this long


def _busy(record: dict[str, Any], key: str) -> str:
    """Work until cancelled (polling ``cancelled()``) or _BUSY_LIMIT; record which."""
    end = time.monotonic() + _BUSY_LIMIT
    while time.monotonic() < end:
        if rpc_service.cancelled():
            record[key] = "cancelled"
            return "cancelled"
        time.sleep(0.002)
    record[key] = "finished"
    return "finished"


class ChainService(rpc_service.Service):
    """The server: hop 1 calls the client back, hop 3 (called by the callback) is busy."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self.done = threading.Event()

    def exposed_hop1(self, callback: Callable[[], Any]) -> Any:
        self.record["hop1"] = rpc_service.remaining()
        time.sleep(0.03)
        try:
            return callback()
        finally:
            self.record["hop1 cancelled"] = rpc_service.cancelled()

    def exposed_hop3(self) -> str:
        self.record["hop3"] = rpc_service.remaining()
        try:
            return _busy(self.record, "hop3 outcome")
        finally:
            self.done.set()

    def exposed_remaining(self) -> float | None:
        return rpc_service.remaining()

    def exposed_busy(self) -> str:
        try:
            return _busy(self.record, "busy")
        finally:
            self.done.set()

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


@pytest.fixture
def chain() -> Iterator[tuple[ChainService, rpc_service.Connection]]:
    service = ChainService()
    with ThreadedServer(service) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config={"tracing": False}) as conn:
            yield service, conn


def test_remaining_and_cancelled_outside_any_call() -> None:
    assert rpc_service.remaining() is None and not rpc_service.cancelled()
    with rpc_service.deadline(10):
        left = rpc_service.remaining()
        assert left is not None and 9 < left <= 10
        with rpc_service.deadline(60):  # nested: the earlier one stays
            inner = rpc_service.remaining()
            assert inner is not None and inner <= left
        with rpc_service.deadline(1):
            shorter = rpc_service.remaining()
            assert shorter is not None and shorter <= 1
    assert rpc_service.remaining() is None
    for bad in (float("nan"), True, "5", None):
        with pytest.raises(ValueError):
            rpc_service.deadline(bad)  # type: ignore[arg-type]  # the wrong types are the test


def test_one_deadline_object_entered_again_and_inside_itself() -> None:
    limit = rpc_service.deadline(30)
    for _ in range(2):  # used again after it ended
        with limit:
            first = rpc_service.remaining()
            assert first is not None and 29 < first <= 30
            with limit:  # inside itself: a new deadline from now, the earlier one kept
                with rpc_service.deadline(5):
                    assert (rpc_service.remaining() or 0) <= 5
                assert (rpc_service.remaining() or 99) <= first
            assert rpc_service.remaining() is not None
        assert rpc_service.remaining() is None
    with rpc_service.deadline(2):  # an int and a float subclass are seconds too
        with rpc_service.deadline(_Seconds(1.5)):
            left = rpc_service.remaining()
            assert left is not None and 1 < left <= 1.5


class _Seconds(float):
    pass


def test_one_deadline_object_used_by_threads_and_tasks_at_once() -> None:
    """Regression: the object kept its context tokens itself, so two threads (or tasks)
    inside one deadline object at once both failed on exit (ValueError: a token of another
    context) and kept the deadline set afterwards."""
    limit = rpc_service.deadline(30)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def first() -> None:
        with limit:
            first_in.set()
            second_in.wait(5)
        seen["first after"] = rpc_service.remaining()
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with limit:
            second_in.set()
            first_out.wait(5)  # the first leaves while this one is inside
            seen["second inside"] = rpc_service.remaining()
        seen["second after"] = rpc_service.remaining()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    left = seen.pop("second inside")
    assert isinstance(left, float) and 25 < left <= 30
    assert seen == {"first after": None, "second after": None}

    async def task(pause: float) -> float | None:
        with limit:
            await asyncio.sleep(pause)
        return rpc_service.remaining()

    async def both() -> list[float | None]:
        return list(await asyncio.gather(task(0.01), task(0.03)))

    assert asyncio.run(both()) == [None, None]
    with pytest.raises(RuntimeError, match="without being entered"):
        limit.__exit__(None, None, None)


def test_the_budget_travels_and_calls_without_a_deadline_carry_none(chain: tuple[ChainService, rpc_service.Connection]) -> None:
    _, conn = chain
    assert conn.root.remaining() is None
    with rpc_service.deadline(5):
        left = conn.root.remaining()
    assert left is not None and 4 < left <= 5
    assert conn.root.remaining() is None


def test_deadline_exceeded_within_50_ms_while_the_server_is_busy(chain: tuple[ChainService, rpc_service.Connection]) -> None:
    service, conn = chain
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        with rpc_service.deadline(0.3):
            conn.root.busy()
    late = time.monotonic() - (start + 0.3)
    assert late < 0.05, f"DeadlineExceeded came {late * 1000:.0f} ms after the deadline"
    assert isinstance(caught.value, TimeoutError) and isinstance(caught.value, rpc_service.RPCError)
    assert service.done.wait(_BUSY_LIMIT + 1)
    assert service.record["busy"] == "cancelled"  # the handler stopped early
    assert conn.root.echo("still serving") == "still serving"
    with pytest.raises(DeadlineExceeded):  # a passed deadline fails at once, sending nothing
        with rpc_service.deadline(0):
            conn.root.echo(1)


def test_three_hops_the_budget_shrinks_and_the_innermost_is_cancelled(chain: tuple[ChainService, rpc_service.Connection]) -> None:
    service, conn = chain
    seen: dict[str, Any] = {}

    def callback() -> Any:  # hop 2, on the client, serving the server's call
        seen["hop2"] = rpc_service.remaining()
        time.sleep(0.03)
        return conn.root.hop3()

    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        with rpc_service.deadline(0.6):
            conn.root.hop1(callback)
    assert time.monotonic() - start < 0.6 + 0.05
    assert service.done.wait(_BUSY_LIMIT + 1)
    hop1, hop2, hop3 = service.record["hop1"], seen["hop2"], service.record["hop3"]
    assert 0.6 >= hop1 > hop2 > hop3 > 0, (hop1, hop2, hop3)
    assert service.record["hop3 outcome"] == "cancelled"
    assert conn.root.echo(3) == 3  # the connection keeps serving
    with rpc_service.deadline(5):
        assert conn.root.echo(4) == 4


def test_a_sync_request_timeout_sends_cancel_too() -> None:
    service = ChainService()
    with ThreadedServer(service) as server:
        server.start_in_thread()
        config = {"sync_request_timeout": 0.3, "tracing": False}
        with rpc_service.connect("127.0.0.1", server.port, config=config) as conn:
            with pytest.raises(rpc_service.AsyncResultTimeout):
                with rpc_service.deadline(30):  # far away: only CANCEL can tell the handler
                    conn.root.busy()
            assert service.done.wait(_BUSY_LIMIT + 1)
            assert service.record["busy"] == "cancelled"
            assert conn.root.echo(1) == 1


def test_timed_and_async_results_carry_the_budget(chain: tuple[ChainService, rpc_service.Connection]) -> None:
    _, conn = chain
    left = rpc_service.timed(conn.root.remaining, 5)().value
    assert left is not None and 4 < left <= 5
    with rpc_service.deadline(5):
        result = rpc_service.async_(conn.root.remaining)()
    assert result.value is not None and 4 < result.value <= 5
    late = rpc_service.timed(conn.root.sleep, 0.2)(0.5)
    with pytest.raises(rpc_service.AsyncResultTimeout):
        late.wait()
    assert late.expired
    late.set_expiry(None)  # as in RPyC: the reply still counts when it arrives later
    late.wait(5)
    assert late.value == 0.5
    assert conn.root.echo(2) == 2


def test_deadlines_are_per_thread(chain: tuple[ChainService, rpc_service.Connection]) -> None:
    _, conn = chain
    seen: list[float | None] = []
    with rpc_service.deadline(5):
        thread = threading.Thread(target=lambda: seen.append(conn.root.remaining()))
        thread.start()
        thread.join(10)
    assert seen == [None]


@pytest.mark.parametrize("seconds", [float("inf"), 1e300, 10**400], ids=["inf", "1e300", "10**400"])
def test_an_endless_deadline_is_carried_as_the_longest_one(chain: tuple[ChainService, rpc_service.Connection], seconds: float) -> None:
    """Regression: infinity failed with OverflowError and 1e300 with EncodeError (the budget
    in microseconds did not fit 64 bits); they mean "no limit in practice"."""
    _, conn = chain
    with rpc_service.deadline(seconds):
        left = conn.root.remaining()
        assert left is not None and left > 1e12
        assert conn.root.echo(3) == 3
        assert (rpc_service.remaining() or 0) > 1e12


def test_an_endless_past_deadline_has_passed(chain: tuple[ChainService, rpc_service.Connection]) -> None:
    _, conn = chain
    with rpc_service.deadline(-float("inf")):
        assert rpc_service.remaining() == 0.0 and rpc_service.cancelled()
        with pytest.raises(DeadlineExceeded):
            conn.root.echo(1)
    assert conn.root.echo(2) == 2


@pytest.mark.parametrize("seconds", [None, 1e12, float("inf")])
def test_threads_waiting_on_one_connection_with_very_long_timeouts(seconds: float | None) -> None:
    """Regression: with sync_request_timeout=1e12, a thread waiting while another read
    failed with OverflowError (a lock's wait is bounded by threading.TIMEOUT_MAX)."""
    service = ChainService()
    with ThreadedServer(service, protocol_config={"tracing": False}) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config={"sync_request_timeout": 1e12, "tracing": False}) as conn:
            results: list[object] = []

            def call() -> None:
                try:
                    if seconds is None:
                        results.append(conn.root.sleep(0.05))
                    else:
                        with rpc_service.deadline(seconds):
                            results.append(conn.root.sleep(0.05))
                except Exception as exc:  # noqa: BLE001  # recorded for the assertion
                    results.append(exc)

            threads = [threading.Thread(target=call) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert results == [0.05] * 4


class _EchoBack(rpc_service.Service):
    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_call_back(self, function: Callable[[], Any]) -> Any:
        return function()


@pytest.mark.timeout(60)
def test_a_callback_served_by_another_waiting_thread_runs_under_its_own_context() -> None:
    """Regression: thread B's callback (B called without a deadline) may be served by thread A,
    which waits on a call of its own under ``deadline(30)``; the callback saw A's deadline
    (``remaining()`` about 30, its own calls cut off by A's budget). It runs under what its
    request carried: nothing here."""
    server = ThreadedServer(_EchoBack, port=0)
    server.start_in_thread()
    conn = rpc_service.connect("127.0.0.1", server.port)
    stop = threading.Event()
    seen: list[tuple[str, float | None]] = []

    def callback() -> str:
        seen.append((threading.current_thread().name, rpc_service.remaining()))
        time.sleep(0.05)
        return "called back"

    def thread_a() -> None:
        end = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < end:
            with rpc_service.deadline(30):
                conn.root.echo(1)

    a = threading.Thread(target=thread_a, name="A")
    try:
        a.start()
        for _ in range(50):  # until A has served one (it does nearly every time)
            assert conn.root.call_back(callback) == "called back"
            if any(name == "A" for name, _ in seen):
                break
    finally:
        stop.set()
        a.join(10)
        conn.close()
        server.close()
    assert any(name == "A" for name, _ in seen)
    assert all(remaining is None for _, remaining in seen), seen


class _OffThreadCaller(rpc_service.Service):
    """Calls the client's callback from a thread of its own: the request carries no context."""

    def exposed_call_off_thread(self, fn: Callable[[], Any]) -> Any:
        result: list[Any] = []
        worker = threading.Thread(target=lambda: result.append(fn()))
        worker.start()
        worker.join(10)
        return result[0]

    def exposed_call(self, fn: Callable[[], Any]) -> Any:
        return fn()


def test_a_callback_served_while_waiting_runs_under_its_own_context() -> None:
    """The thread waiting on its call (fast path) serves the callback itself: under the
    callback's own call context (the budget the server's request carried), or none when
    the request carried none; never under the waiting call's deadline."""
    with ThreadedServer(_OffThreadCaller) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config={"tracing": False}) as conn:
            for _ in range(3):  # (the fast path, call after call)
                with rpc_service.deadline(20):
                    assert conn.root.call_off_thread(rpc_service.remaining) is None
                    inner = conn.root.call(rpc_service.remaining)
                    assert inner is not None and 0 < inner <= 20
                assert conn.root.call_off_thread(rpc_service.remaining) is None
                assert conn.root.call(rpc_service.remaining) is None
            assert conn.stats.calls_served == 12


class _CallsBackThenWorks(rpc_service.Service):
    def exposed_call_then_work(self, fn: Callable[[], Any], seconds: float) -> str:
        fn()
        time.sleep(seconds)
        return "answered"


def test_a_callback_served_meanwhile_does_not_extend_sync_request_timeout() -> None:
    """Regression: under a deadline, a callback served by the waiting thread restarted the
    sync_request_timeout window: the answer at 1.6 s came back although the timeout was 1 s."""
    with ThreadedServer(_CallsBackThenWorks) as server:
        server.start_in_thread()
        for under_deadline in (False, True):  # (a connection each: the server serves one's requests in turn)
            with rpc_service.connect("127.0.0.1", server.port, config={"sync_request_timeout": 1.0, "tracing": False}) as conn:
                with rpc_service.deadline(30) if under_deadline else contextlib.nullcontext():
                    with pytest.raises(rpc_service.AsyncResultTimeout):
                        conn.root.call_then_work(lambda: time.sleep(0.7), 0.7)
                time.sleep(0.8)  # (the late answer is dropped)
                assert conn.root.call_then_work(lambda: None, 0) == "answered"


class _QueueService(rpc_service.Service):
    """One connection's requests are served one after another: ``poll`` keeps the serving
    thread busy, polling ``cancelled()`` (which reads what arrived meanwhile), until it is
    released, so the requests read then wait in the queue."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[float | None, bool]] = {}
        self.polling = threading.Event()
        self.release = threading.Event()

    def exposed_poll(self) -> None:
        self.polling.set()
        for _ in range(2000):  # (10 s at most)
            if self.release.wait(0.005):
                return
            rpc_service.cancelled()

    def exposed_probe(self, key: str) -> None:
        self.seen[key] = (rpc_service.remaining(), rpc_service.cancelled())


def _queued_behind_poll(config: dict[str, Any], probes: dict[str, float], *, all_give_up: bool = False) -> dict[str, tuple[float | None, bool]]:
    """Call ``probe(key)`` under ``deadline(seconds)`` for each of ``probes`` while the
    server's thread for this connection serves ``poll()``, which is released once the
    probes have waited in the queue at least 0.4 s (and, with ``all_give_up``, once every
    probe call has given up, its CANCEL sent): what each probe saw."""
    service = _QueueService()
    with ThreadedServer(service) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config={"tracing": False, **config}) as conn:

            def probe(key: str, seconds: float) -> None:
                with contextlib.suppress(DeadlineExceeded, rpc_service.AsyncResultTimeout), rpc_service.deadline(seconds):
                    conn.root.probe(key)

            with rpc_service.deadline(30):  # (not waited for: no timeout cancels it)
                polling = rpc_service.async_(conn.root.poll)()
            assert service.polling.wait(5)  # poll() is being served
            sent = conn.stats.calls_sent
            threads = [threading.Thread(target=probe, args=item) for item in probes.items()]
            for thread in threads:
                thread.start()
            for _ in range(500):  # until every probe's request is out (bounded)
                if conn.stats.calls_sent >= sent + len(probes):
                    break
                time.sleep(0.01)
            time.sleep(0.4)  # (their least time in the queue, whatever the load)
            if all_give_up:
                for thread in threads:
                    thread.join(10)
            service.release.set()
            for thread in threads:
                thread.join(10)
            polling.wait()
            # served after the queued probes (a connection's requests are served in order),
            # also those whose calls gave up: the connection keeps serving
            assert conn.root.probe("after") is None
    return service.seen


def test_a_queued_request_keeps_its_budget_running() -> None:
    """Regression: a request read while another was being served counted its budget from
    when a thread got to it, not from its arrival; one whose deadline passed meanwhile ran."""
    seen = _queued_behind_poll({}, {"long": 10.0, "short": 0.15})
    left, cancelled = seen["long"]
    assert left is not None and left <= 10.0 - 0.3 and not cancelled  # (queued 0.4 s at least)
    assert "short" not in seen  # answered DeadlineExceeded, not run


def test_a_queued_request_learns_of_its_cancel() -> None:
    """Regression: a CANCEL for a request read but not yet served was dropped (here sent
    when sync_request_timeout expired: the request's own deadline is far)."""
    seen = _queued_behind_poll({"sync_request_timeout": 0.15}, {"cancelled": 10.0}, all_give_up=True)
    left, cancelled = seen["cancelled"]
    assert cancelled and left is not None and left > 5


def test_a_call_waiting_when_this_side_closes_says_so(chain: tuple[ChainService, rpc_service.Connection]) -> None:
    """Regression: a call waiting while another thread closed the connection was told that
    the *peer* closed it."""
    _, conn = chain
    pending = rpc_service.async_(conn.root.echo)("in flight")  # (the call then takes the general path)
    closer = threading.Timer(0.2, conn.close)
    closer.start()
    try:
        with pytest.raises(rpc_service.ConnectionClosedError) as info:
            conn.root.sleep(1)
        assert "peer" not in str(info.value)
        assert pending.ready
    finally:
        closer.join(5)


class _Answers(rpc_service.Service):
    @rpc_service.by_value
    def exposed_table(self) -> dict[str, Any]:
        return {"rows": [[1, 2], [3, 4]], "left": rpc_service.remaining()}

    def exposed_by_reference(self) -> list[int]:
        return [1, 2]

    @rpc_service.by_value
    def exposed_deep(self, depth: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(depth):
            value = [value]
        return value

    def exposed_fail(self) -> None:
        raise KeyError("no such row")


def test_a_call_under_a_deadline_is_answered_as_one_without() -> None:
    """What a handler serving a call that carried a deadline returns or raises reaches the
    caller as it does without one (those calls are answered on a path of their own): a result
    marked by value arrives as a copy, an unmarked list by reference, one too deep to encode
    as the error saying so, an exception as itself; the connection keeps serving."""
    with ThreadedServer(_Answers, protocol_config={"max_depth": 16}) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config={"tracing": False}) as conn:
            for _ in range(2):  # (the second time with every prefix and memo warm)
                with rpc_service.deadline(30):
                    table = conn.root.table()
                    assert type(table) is dict and table["rows"] == [[1, 2], [3, 4]]
                    assert 0 < table["left"] <= 30
                    assert rpc_service.is_proxy(conn.root.by_reference())
                    with pytest.raises(ValueError, match="max_depth"):
                        conn.root.deep(40)
                    with pytest.raises(KeyError, match="no such row"):
                        conn.root.fail()
                    assert conn.root.deep(3) == [[[[]]]]
            assert conn.root.deep(2) == [[[]]] and conn.stats.calls_pending == 0


class _CancelProbe(rpc_service.Service):
    """Its server-side connection's fast-path handler start is held back (``taken``, ``go``)."""

    def __init__(self) -> None:
        self.taken = threading.Event()
        self.go = threading.Event()
        self.seen: list[bool] = []

    def on_connect(self, conn: rpc_service.Connection) -> None:
        serve_arrived = conn._serve_arrived  # (the fast path's handler start, once the lock is given back)

        def held_back(*args: Any) -> None:
            self.taken.set()
            self.go.wait(10)
            serve_arrived(*args)

        setattr(conn, "_serve_arrived", held_back)  # noqa: B010  # (the window the race needs, made wide)
        self.conn = conn

    def exposed_work(self) -> None:
        self.seen.append(rpc_service.cancelled())


def test_a_cancel_read_before_the_handler_starts_is_not_lost() -> None:
    """Regression: a request taken on the fast path was registered for CANCEL only when its
    handler started, after the lock was given back; a CANCEL another thread read in between
    was dropped, and the handler never learnt it was cancelled (its own deadline far off)."""
    service = _CancelProbe()
    conn = rpc_service.connect_thread(
        config={"sync_request_timeout": 1.0, "tracing": False}, remote_service=service, remote_config={"tracing": False}
    )
    try:
        def call() -> None:
            with contextlib.suppress(rpc_service.AsyncResultTimeout), rpc_service.deadline(30):
                conn.root.work()  # gives up after 1 s and sends CANCEL (the request was taken long before)

        caller = threading.Thread(target=call)
        caller.start()
        assert service.taken.wait(10)  # taken on the fast path, its handler held back
        caller.join(10)
        assert not caller.is_alive()  # the CANCEL is out
        service.conn.serve(2)  # this thread reads it (the serving thread is held back)
        service.go.set()
        for _ in range(100):
            if service.seen:
                break
            time.sleep(0.02)
        assert service.seen == [True]
        assert conn.root.work() is None  # and the connection keeps serving
    finally:
        service.go.set()
        conn.close()
