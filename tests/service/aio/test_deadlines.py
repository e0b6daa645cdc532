"""Deadlines and cancellation on the asyncio driver.

The same promises as on the threaded driver (``tests/service/test_deadlines.py``), where
the loop is involved: ``DeadlineExceeded`` from a loop timer within 50 ms of the deadline
while an ``async def`` handler is busy, whose task is then cancelled by the CANCEL frame; a
cancelled client task (``asyncio.wait_for``) sends CANCEL too, seen by a plain handler in its
worker thread through ``cancelled()``; the 3-hop chain client -> server -> client callback
-> server; the connection keeps serving; and a threaded client against an ``aio.Server``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable

import pytest

import rpc_service
from rpc_service import DeadlineExceeded, aio

from .helpers import run

_CONFIG = {"tracing": False}


class BusyService(rpc_service.Service):
    def __init__(self) -> None:
        self.record: dict[str, Any] = {}
        self.done = threading.Event()

    async def exposed_busy(self) -> str:
        self.record["busy budget"] = rpc_service.remaining()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.record["busy"] = "cancelled"
            self.done.set()
            raise
        self.record["busy"] = "finished"
        self.done.set()
        return "finished"

    def exposed_plain_busy(self) -> str:
        end = time.monotonic() + 5
        try:
            while time.monotonic() < end:
                if rpc_service.cancelled():
                    self.record["plain"] = "cancelled"
                    return "cancelled"
                time.sleep(0.002)
            self.record["plain"] = "finished"
            return "finished"
        finally:
            self.done.set()

    async def exposed_hop1(self, callback: Callable[[], Awaitable[Any]]) -> Any:
        self.record["hop1"] = rpc_service.remaining()
        await asyncio.sleep(0.03)
        return await callback()

    async def exposed_hop3(self) -> str:
        self.record["hop3"] = rpc_service.remaining()
        return await self.exposed_busy()

    async def exposed_remaining(self) -> float | None:
        return rpc_service.remaining()

    def exposed_plain_remaining(self) -> float | None:
        return rpc_service.remaining()

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_call(self, func: Callable[[], Any]) -> Any:
        return func()


def test_deadline_exceeded_within_50_ms_and_the_handler_task_is_cancelled() -> None:
    service = BusyService()

    async def main() -> None:
        async with aio.Server(service) as server:
            await server.start()
            async with await aio.connect("127.0.0.1", server.port, config=_CONFIG) as conn:
                assert await conn.root.remaining() is None
                with rpc_service.deadline(5):
                    left = await conn.root.remaining()
                    plain_left = await conn.root.plain_remaining()  # a plain handler, in a worker thread
                assert left is not None and 4 < left <= 5 and plain_left is not None and 4 < plain_left <= 5
                start = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    with rpc_service.deadline(0.3):
                        await conn.root.busy()
                late = time.monotonic() - (start + 0.3)
                assert late < 0.05, f"DeadlineExceeded came {late * 1000:.0f} ms after the deadline"
                assert await asyncio.to_thread(service.done.wait, 5)
                assert service.record["busy"] == "cancelled"
                assert await conn.root.echo("still serving") == "still serving"

    run(main())


def test_a_cancelled_task_sends_cancel_to_a_plain_handler() -> None:
    service = BusyService()

    async def main() -> None:
        async with aio.Server(service) as server:
            await server.start()
            async with await aio.connect("127.0.0.1", server.port, config=_CONFIG) as conn:
                with rpc_service.deadline(30):  # far away: only CANCEL can tell the handler
                    with pytest.raises(asyncio.TimeoutError):
                        await asyncio.wait_for(conn.root.plain_busy(), 0.2)
                assert await asyncio.to_thread(service.done.wait, 5)
                assert service.record["plain"] == "cancelled"
                service.done.clear()
                task = asyncio.ensure_future(conn.root.busy())  # no deadline at all: CANCEL still goes
                await asyncio.sleep(0.1)
                task.cancel()
                assert await asyncio.to_thread(service.done.wait, 5)
                assert service.record["busy"] == "cancelled"
                assert await conn.root.echo(1) == 1

    run(main())


def test_three_hops_the_budget_shrinks_and_the_innermost_is_cancelled() -> None:
    service = BusyService()
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with aio.Server(service) as server:
            await server.start()
            async with await aio.connect("127.0.0.1", server.port, config=_CONFIG) as conn:

                async def callback() -> Any:  # hop 2, served on the client's loop
                    seen["hop2"] = rpc_service.remaining()
                    await asyncio.sleep(0.03)
                    return await conn.root.hop3()

                start = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    with rpc_service.deadline(0.6):
                        await conn.root.hop1(callback)
                assert time.monotonic() - start < 0.6 + 0.05
                assert await asyncio.to_thread(service.done.wait, 5)
                assert await conn.root.echo(3) == 3

    run(main())
    hop1, hop2, hop3 = service.record["hop1"], seen["hop2"], service.record["hop3"]
    assert 0.6 >= hop1 > hop2 > hop3 > 0, (hop1, hop2, hop3)
    assert service.record["busy"] == "cancelled"


def test_a_threaded_client_against_an_aio_server() -> None:
    service = BusyService()

    async def main() -> None:
        async with aio.Server(service) as server:
            await server.start()

            def client() -> None:
                with rpc_service.connect("127.0.0.1", server.port, config=_CONFIG) as conn:
                    with pytest.raises(DeadlineExceeded):
                        with rpc_service.deadline(0.2):
                            conn.root.busy()
                    assert service.done.wait(5)
                    assert conn.root.echo(2) == 2

            await asyncio.to_thread(client)
            assert service.record["busy"] == "cancelled"

    run(main())


def test_a_deadline_around_connect_does_not_cling_to_the_connection() -> None:
    """The transport's callbacks keep the context they were made in: connect() and start()
    make them outside any call context, so later requests see only their own."""

    async def main() -> None:
        with rpc_service.deadline(30):
            server = aio.Server(BusyService())
            await server.start()
            conn = await aio.connect("127.0.0.1", server.port, config=_CONFIG)
        async with server, conn:
            assert await conn.root.remaining() is None
            assert await conn.root.call(rpc_service.remaining) is None  # a callback served by the client

    run(main())


def test_an_endless_deadline_on_the_asyncio_driver() -> None:
    """As on the threaded driver: infinity and huge numbers are the longest deadline, in
    ``async def`` and plain handlers alike, with a very long ``sync_request_timeout``."""

    async def main() -> None:
        async with aio.Server(BusyService()) as server:
            await server.start()
            config = {**_CONFIG, "sync_request_timeout": 1e12}
            async with await aio.connect("127.0.0.1", server.port, config=config) as conn:
                for seconds in (float("inf"), 1e300, 10**400):
                    with rpc_service.deadline(seconds):
                        lefts = await asyncio.wait_for(asyncio.gather(conn.root.remaining(), conn.root.plain_remaining()), 5)
                    assert all(left is not None and left > 1e12 for left in lefts), lefts

    run(main())


class _TimingOut(rpc_service.Service):
    async def exposed_busy(self) -> None:
        await asyncio.sleep(5)

    async def exposed_own_timeout(self) -> None:
        raise TimeoutError("the handler's own")

    def exposed_plain_calls(self, callback: Callable[[], Any]) -> str:
        try:
            callback()
        except Exception as exc:  # a plain handler uses blocking proxies
            return type(exc).__name__
        return "returned"


def test_blocking_use_keeps_deadline_exceeded_and_a_remote_timeout_error() -> None:
    """Regression: a blocking call on an aio connection (from another thread, or a plain
    handler on aio.Server) turned DeadlineExceeded and the peer's own TimeoutError into
    AsyncResultTimeout (from Python 3.11 the wait's timeout is that same class)."""

    async def main() -> None:
        async with aio.Server(_TimingOut()) as server:
            await server.start()
            async with await aio.connect("127.0.0.1", server.port, config=_CONFIG) as conn:

                def from_a_thread() -> list[type[BaseException]]:
                    raised: list[type[BaseException]] = []
                    for call, seconds in ((conn.root.busy, 0.2), (conn.root.own_timeout, None)):
                        try:
                            if seconds is None:
                                call()
                            else:
                                with rpc_service.deadline(seconds):
                                    call()
                        except BaseException as exc:
                            raised.append(type(exc))
                    return raised

                raised = await asyncio.to_thread(from_a_thread)
                assert raised[0] is DeadlineExceeded
                assert raised[1] is TimeoutError  # (the builtin's name, rebuilt on this side)

                async def own_timeout() -> None:
                    raise TimeoutError("the callback's own")

                assert await conn.root.plain_calls(own_timeout) == "TimeoutError"

    run(main())


class _SelfCancelling(rpc_service.Service):
    async def exposed_cancelled_inside(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # (its own doing: no CANCEL came from the caller)
        await asyncio.sleep(5)

    async def exposed_ok(self) -> int:
        return 1


def test_a_handler_cancelled_by_its_own_doing_is_reported_as_such() -> None:
    """Regression: an ``async def`` handler that ended cancelled without a CANCEL from the
    caller was answered as ConnectionClosedError (the connection being open)."""

    async def main() -> None:
        async with aio.Server(_SelfCancelling()) as server:
            await server.start()
            async with await aio.connect("127.0.0.1", server.port, config=_CONFIG) as conn:
                with pytest.raises(rpc_service.RemoteError) as info:
                    await asyncio.wait_for(conn.root.cancelled_inside(), 5)
                assert info.value.remote_type.endswith("CancelledError")
                assert await conn.root.ok() == 1

    run(main())
