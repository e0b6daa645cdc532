"""Asynchronous calls: ``async_``, ``AsyncResult`` and ``timed``.

The server's ``block()`` waits on a gate the test opens, so "still pending" is a state the
test controls rather than a race against a sleep.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Iterator

import pytest

import rpc_service
from rpc_service import AsyncResult, AsyncResultTimeout, Connection, Service, aio, async_, timed

from .conftest import ConnectTo
from .helpers import run_threads

pytestmark = pytest.mark.timeout(60)


def add(a: int, b: int) -> int:
    return a + b


class AsyncService(Service):
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_block(self, value: Any = "released") -> Any:
        self.entered.set()
        self.gate.wait(10)
        return value

    def exposed_fail(self, message: str) -> None:
        raise ValueError(message)

    def exposed_get_adder(self) -> Callable[[int, int], int]:
        return add

    def exposed_get_len(self) -> Callable[[Any], int]:
        return len

    def exposed_get_list(self) -> list[int]:
        return [1, 2]  # (by reference: a proxy on the caller's side)

    def exposed_combine(self, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], tuple[tuple[str, Any], ...]]:
        return args, tuple(sorted(kwargs.items()))


@pytest.fixture
def service() -> Iterator[AsyncService]:
    svc = AsyncService()
    yield svc
    svc.gate.set()  # never leave a server thread blocked


def test_async_returns_at_once_and_wait_collects(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    started = time.monotonic()
    result = async_(conn.root.block)("done")
    assert time.monotonic() - started < 0.5
    assert isinstance(result, AsyncResult)
    assert service.entered.wait(5)
    assert not result.ready
    assert not result.error
    assert not result.expired
    assert "pending" in repr(result)
    service.gate.set()
    result.wait(5)
    assert result.ready
    assert not result.error
    assert result.value == "done"
    assert result.value == "done"  # reading it again is fine
    assert "ready" in repr(result)


def test_ready_serves_pending_input(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    result = async_(conn.root.echo)(17)
    deadline = time.monotonic() + 5
    while not result.ready and time.monotonic() < deadline:  # .ready itself reads the reply
        time.sleep(0.005)
    assert result.ready
    assert result.value == 17


def test_value_waits(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    result = async_(conn.root.block)(3)
    threading.Timer(0.1, service.gate.set).start()
    assert result.value == 3


def test_remote_exception(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service, {"include_local_traceback": True})
    result = async_(conn.root.fail)("boom")
    result.wait(5)
    assert result.ready
    assert result.error
    assert "error" in repr(result)
    for _ in range(2):  # raised each time value is read
        with pytest.raises(ValueError, match="boom") as info:
            _ = result.value
        assert "exposed_fail" in getattr(info.value, "remote_traceback", "")
    assert conn.root.echo(1) == 1  # the connection is unaffected


def test_error_serves_pending_input_as_ready_does(connect_to: ConnectTo, service: AsyncService) -> None:
    """Regression: ``error`` read only what had been read already, so it stayed False for
    an error reply that had arrived until ``ready`` (which reads) was asked first."""
    conn = connect_to(service)
    result = async_(conn.root.fail)("late")
    deadline = time.monotonic() + 5
    while not result.error and time.monotonic() < deadline:  # .error itself reads the reply
        time.sleep(0.005)
    assert result.error and result.ready


def test_async_with_keyword_arguments(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    result = async_(conn.root.combine)(1, 2, x=3, y="four")
    assert result.value == ((1, 2), (("x", 3), ("y", "four")))


def test_expiry(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    result = async_(conn.root.block)("late")
    result.set_expiry(0.1)
    started = time.monotonic()
    with pytest.raises(AsyncResultTimeout):
        result.wait()
    assert 0.05 <= time.monotonic() - started < 3
    assert result.expired
    assert not result.ready
    assert "expired" in repr(result)
    with pytest.raises(AsyncResultTimeout):
        _ = result.value
    # the reply still counts when it arrives later (as in RPyC)
    service.gate.set()
    result.set_expiry(None)
    result.wait(5)
    assert result.ready and not result.expired
    assert result.value == "late"


def test_wait_timeout_then_wait_again(connect_to: ConnectTo, service: AsyncService) -> None:
    """Regression: a wait() that timed out used to orphan the result; the reply was then
    dropped on arrival and every later wait() failed (or, without a timeout, hung)."""
    conn = connect_to(service)
    result = async_(conn.root.block)("eventually")
    for _ in range(3):
        with pytest.raises(AsyncResultTimeout):
            result.wait(0.05)
    assert not result.expired  # a wait() timeout is not an expiry
    service.gate.set()
    result.wait(5)
    assert result.value == "eventually"
    assert conn._slots == {}  # semi-private: nothing left registered


def test_set_expiry_none_means_never(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    result = async_(conn.root.block)()
    result.set_expiry(None)
    threading.Timer(0.2, service.gate.set).start()
    assert not result.expired
    result.wait(5)
    assert result.value == "released"


def test_add_callback_runs_once_with_the_result(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    seen: list[tuple[AsyncResult, Any]] = []
    result = async_(conn.root.block)("cb")
    result.add_callback(lambda res: seen.append((res, res.value)))
    assert seen == []
    service.gate.set()
    result.wait(5)
    assert seen == [(result, "cb")]
    conn.ping()  # more traffic does not call it again
    result.wait()
    assert len(seen) == 1


def test_add_callback_after_ready_runs_at_once(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    result = async_(conn.root.echo)("now")
    result.wait(5)
    seen: list[Any] = []
    result.add_callback(lambda res: seen.append(res.value))
    assert seen == ["now"]


def test_callbacks_see_errors_and_run_in_order(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    order: list[str] = []
    result = async_(conn.root.fail)("bad")
    result.add_callback(lambda res: order.append(f"first error={res.error}"))
    result.add_callback(lambda res: order.append("second"))
    result.wait(5)
    assert order == ["first error=True", "second"]


def test_raising_callback_is_logged_not_propagated(
    connect_to: ConnectTo, service: AsyncService, caplog: pytest.LogCaptureFixture
) -> None:
    conn = connect_to(service)
    result = async_(conn.root.echo)(1)

    def bad(res: AsyncResult) -> None:
        raise RuntimeError("callback broke")

    result.add_callback(bad)
    with caplog.at_level("ERROR", logger="rpc_service"):
        result.wait(5)
    assert result.value == 1
    assert "callback raised" in caplog.text
    assert conn.root.echo(2) == 2


def test_add_callback_racing_the_reply(connect_to: ConnectTo, service: AsyncService) -> None:
    """Regression: a reply that arrived between add_callback's readiness check and its
    append made the callback never run. The race is forced with a line tracer that, on
    the append line, waits until another thread delivered the reply."""
    conn = connect_to(service)
    bg = rpc_service.BgServingThread(conn, interval=0.05)
    try:
        result = async_(conn.root.echo)("raced")
        code = AsyncResult.add_callback.__code__
        append_lines = {
            code.co_firstlineno + index
            for index, line in enumerate(_source_lines(AsyncResult.add_callback))
            if ".append(" in line
        }
        assert append_lines

        def local(frame: FrameType, event: str, arg: object) -> Any:
            if event == "line" and frame.f_lineno in append_lines:
                deadline = time.monotonic() + 5
                while not result._ready and time.monotonic() < deadline:  # semi-private: no serving here
                    time.sleep(0.005)
            return local

        def tracer(frame: FrameType, event: str, arg: object) -> Any:
            return local if frame.f_code is code else None

        seen: list[Any] = []
        previous = sys.gettrace()  # e.g. coverage's tracer: put it back afterwards
        sys.settrace(tracer)
        try:
            result.add_callback(lambda res: seen.append(res.value))
        finally:
            sys.settrace(previous)
        assert result._ready
        deadline = time.monotonic() + 2
        while not seen and time.monotonic() < deadline:
            time.sleep(0.005)
        assert seen == ["raced"]
    finally:
        bg.stop()


def _source_lines(func: Callable[..., Any]) -> list[str]:
    return inspect.getsourcelines(func)[0]


def test_async_on_a_remote_function(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    adder = conn.root.get_adder()
    assert rpc_service.is_proxy(adder)
    assert async_(adder)(2, 3).value == 5
    assert async_(adder)(a=4, b=5).value == 9
    remote_len = conn.root.get_len()
    assert async_(remote_len)((1, 2, 3)).value == 3


def test_async_rejects_what_is_not_a_proxy() -> None:
    class Local:
        def method(self) -> int:
            return 1

    for thing in (len, lambda: 0, Local().method, Local(), 42, "text", None):
        with pytest.raises(TypeError, match="proxy"):
            async_(thing)


def test_async_rejects_a_proxy_of_what_is_not_callable(connect_to: ConnectTo, service: AsyncService) -> None:
    """As RPyC's: at once, not when the result is waited for."""
    conn = connect_to(service)
    with pytest.raises(TypeError, match="not callable"):
        async_(conn.root.get_list())


def test_timed_result_expires_after_its_timeout(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    call = timed(conn.root.block, 0.2)
    started = time.monotonic()
    result = call()
    assert isinstance(result, AsyncResult)  # as RPyC's timed: the call itself never blocks
    with pytest.raises(AsyncResultTimeout) as info:
        result.value
    assert 0.15 <= time.monotonic() - started < 3
    assert isinstance(info.value, TimeoutError)
    assert result.expired and not result.ready
    service.gate.set()
    assert conn.root.echo("usable") == "usable"  # the late reply does not confuse anything


def test_timed_returns_the_value_in_time(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    result = timed(conn.root.echo, 5)("quick")
    assert result.value == "quick" and not result.expired
    with pytest.raises(ValueError, match="nope"):
        timed(conn.root.fail, 5)("nope").value
    assert timed(conn.root.get_adder(), 5)(1, 1).value == 2
    with pytest.raises(TypeError):
        timed(len, 1)
    for wrong in (0, -1, float("nan"), None, True, "1"):  # (checked as deadline() checks seconds)
        with pytest.raises(ValueError):
            timed(conn.root.echo, wrong)  # type: ignore[arg-type]  # what a careless caller passes


def test_many_in_flight_collected_out_of_order(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    echo = async_(conn.root.echo)
    results = [(index, echo(("item", index))) for index in range(300)]
    random.Random(1234).shuffle(results)
    for index, result in results:
        assert result.value == ("item", index)
    assert all(result.ready and not result.error for _, result in results)


def test_many_in_flight_from_several_threads(connect_to: ConnectTo, service: AsyncService) -> None:
    conn = connect_to(service)
    echo = async_(conn.root.echo)
    failures: list[BaseException] = []

    def worker(tag: int) -> None:
        try:
            pending = [(index, echo((tag, index))) for index in range(100)]
            for index, result in reversed(pending):
                assert result.value == (tag, index)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def test_pending_result_fails_when_the_connection_closes(connect_to: ConnectTo, service: AsyncService) -> None:
    conn: Connection = connect_to(service)
    result = async_(conn.root.block)()
    assert service.entered.wait(5)
    conn.close()
    assert result.ready
    assert result.error
    with pytest.raises(rpc_service.ConnectionClosedError):
        _ = result.value


class _SlowEcho(rpc_service.Service):
    async def exposed_aecho(self, value: Any) -> Any:
        await asyncio.sleep(0.005)
        return value


def test_async_requests_past_max_pending_requests_wait_for_room_instead_of_getting_cut_off() -> None:
    """Regression: 1100 async_ calls to an aio.Server (which serves them all at once) passed
    its max_pending_requests (1024): the client was cut off and every call failed. A client
    keeps at most its own max_pending_requests in flight (the same default); async_ waits."""
    limit = {"max_pending_requests": 8}

    async def main() -> None:
        async with aio.Server(_SlowEcho, protocol_config=limit) as server:
            await server.start()

            def client() -> None:
                with rpc_service.connect("127.0.0.1", server.port, config=limit) as conn:
                    aecho = rpc_service.async_(conn.root.aecho)
                    results = [aecho(index) for index in range(100)]
                    assert [result.value for result in results] == list(range(100))
                    assert not conn.closed

            await asyncio.to_thread(client)

    asyncio.run(main())


class _HeldEcho(rpc_service.Service):
    """aecho sleeps as long as asked: requests stay in flight meanwhile."""

    async def exposed_aecho(self, value: Any, seconds: float = 0.005) -> Any:
        await asyncio.sleep(seconds)
        return value

    def exposed_echo(self, value: Any) -> Any:
        return value


def _with_held_echo_server(client: Callable[[int], None]) -> None:
    async def main() -> None:
        async with aio.Server(_HeldEcho, protocol_config={"max_pending_requests": 8}) as server:
            await server.start()
            await asyncio.to_thread(client, server.port)

    asyncio.run(main())


def test_room_is_waited_for_by_every_thread_and_by_plain_calls_too() -> None:
    """Regression: two threads' async_ calls could both pass the check and then send (the
    client was cut off), and a plain call made while 8 async_ were in flight did not wait."""

    def client(port: int) -> None:
        with rpc_service.connect("127.0.0.1", port, config={"max_pending_requests": 8}) as conn:
            aecho = rpc_service.async_(conn.root.aecho)
            results: dict[int, list[Any]] = {}

            def worker(index: int) -> None:
                results[index] = [result.value for result in [aecho((index, call)) for call in range(25)]]

            run_threads(4, worker)
            assert results == {index: [(index, call) for call in range(25)] for index in range(4)}
            held = [aecho(call, 0.3) for call in range(8)]
            assert conn.root.echo(42) == 42  # waits for room, then goes
            assert [result.value for result in held] == list(range(8)) and not conn.closed

    _with_held_echo_server(client)


def test_waiting_for_room_ends_at_the_first_answer_or_at_the_deadline() -> None:
    """Regression: the wait watched the oldest request only (a 6 s call held up room that
    0.3 s calls had made), and ignored the call's deadline."""

    def client(port: int) -> None:
        with rpc_service.connect("127.0.0.1", port, config={"max_pending_requests": 8}) as conn:
            aecho = rpc_service.async_(conn.root.aecho)
            slow = aecho("slow", 6.0)
            held = [aecho(call, 0.3) for call in range(7)]
            started = time.monotonic()
            assert aecho("next").value == "next"
            assert time.monotonic() - started < 3.0  # (not the slow call's 6 s)
            held = [aecho(call, 3.0) for call in range(7)]
            started = time.monotonic()
            with pytest.raises(rpc_service.DeadlineExceeded):
                with rpc_service.deadline(0.3):
                    aecho("late")
            assert time.monotonic() - started < 2.5
            assert slow.value == "slow" and [result.value for result in held] == list(range(7))

    _with_held_echo_server(client)
