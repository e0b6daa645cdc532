"""Many tasks on one connection, slow handlers, cancellation and thousands of idle
connections on one aio.Server (one loop, no thread per client)."""

from __future__ import annotations

import asyncio
import random
import resource
import time


import pytest

import rpc_service
from rpc_service import aio

from .helpers import MixedService, run


@pytest.mark.parametrize("kind", ["aio", "threaded"])
def test_1000_concurrent_calls_from_100_tasks_each_reply_to_its_caller(kind: str) -> None:
    async def caller(conn: aio.AsyncConnection, task: int, rng: random.Random) -> None:
        async def one(i: int) -> None:
            value = (task, i)
            if kind == "aio":  # varied delays: replies come back out of order
                got = await conn.root.aecho(value, rng.random() * 0.02)
            else:
                got = await conn.root.echo(value)
            assert got == value

        await asyncio.gather(*(one(i) for i in range(10)))

    async def main() -> None:
        rng = random.Random(14)
        if kind == "aio":
            async with aio.Server(MixedService) as server, await aio.connect("127.0.0.1", server.port) as conn:
                await asyncio.gather(*(caller(conn, task, rng) for task in range(100)))
                assert conn._calls_sent >= 1000 and not conn._slots
        else:
            threaded = rpc_service.ThreadedServer(MixedService)
            threaded.start_in_thread()
            try:
                async with await aio.connect("127.0.0.1", threaded.port) as conn:
                    await asyncio.gather(*(caller(conn, task, rng) for task in range(100)))
                    assert not conn._slots
            finally:
                await asyncio.to_thread(threaded.close)

    run(main())


def test_a_slow_async_handler_does_not_delay_other_connections() -> None:
    async def main() -> None:
        async with aio.Server(MixedService) as server:
            slow_conn = await aio.connect("127.0.0.1", server.port)
            fast_conn = await aio.connect("127.0.0.1", server.port)
            slow = asyncio.ensure_future(slow_conn.root.aecho("slow", 3.0))
            await asyncio.sleep(0.05)  # the slow call is in the handler now
            started = time.monotonic()
            for i in range(20):
                assert await fast_conn.root.aecho(i) == i
                assert await fast_conn.root.echo(i) == i
            assert time.monotonic() - started < 1.5  # generous: far below the slow call's 3 s
            assert not slow.done()
            # and on the same connection, too
            assert await slow_conn.root.echo("meanwhile") == "meanwhile"
            assert not slow.done()
            slow.cancel()
            await slow_conn.close()
            await fast_conn.close()

    run(main())


def test_cancelling_a_call_abandons_it_and_the_connection_keeps_working() -> None:
    async def main() -> None:
        async with aio.Server(MixedService) as server, await aio.connect("127.0.0.1", server.port) as conn:
            task = asyncio.ensure_future(conn.root.aecho("late", 0.3))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(conn.root.aecho("late too", 0.3), 0.05)
            assert await conn.root.echo("next") == "next"
            await asyncio.sleep(0.5)  # the late replies arrive and are dropped
            assert not conn._slots
            assert await conn.root.echo("after") == "after"
            await conn.ping()

    run(main())


def test_blocking_proxies_in_worker_threads_share_the_connection() -> None:
    """Plain handlers in worker threads call back into the client at the same time."""

    async def main() -> None:
        async with aio.Server(MixedService) as server, await aio.connect("127.0.0.1", server.port) as conn:

            async def slow_double(x: int) -> int:
                await asyncio.sleep(0.01)
                return 2 * x

            results = await asyncio.gather(*(conn.root.call(slow_double, i) for i in range(16)))
            assert results == [2 * i for i in range(16)]

    run(main())


@pytest.mark.timeout(120)
def test_2000_idle_connections_on_one_server() -> None:
    wanted = 2000
    needed = 2 * wanted + 200  # both ends live in this process
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))

    async def main() -> None:
        async with aio.Server(MixedService, backlog=4096) as server:
            conns: list[aio.AsyncConnection] = []
            try:
                for _ in range(wanted // 200):
                    conns += await asyncio.gather(*(aio.connect("127.0.0.1", server.port) for _ in range(200)))
                for _ in range(500):  # the last handshakes finish on the server's side
                    if len(server.connections) == wanted:
                        break
                    await asyncio.sleep(0.01)
                assert len(server.connections) == wanted
                sample = conns[:: wanted // 20]
                assert await asyncio.gather(*(c.root.echo(i) for i, c in enumerate(sample))) == list(range(len(sample)))
            finally:
                await asyncio.gather(*(c.close() for c in conns))
            for _ in range(500):
                if not server.connections:
                    break
                await asyncio.sleep(0.01)
            assert not server.connections

    try:
        run(main(), limit=100)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))




def test_async_handlers_that_suspend_yield_and_fail() -> None:
    class Steps(rpc_service.Service):
        async def exposed_steps(self, fail: bool) -> int:
            await asyncio.sleep(0)  # a bare yield
            await asyncio.sleep(0.01)  # a future
            if fail:
                raise ValueError("after suspending")
            return 3

    async def main() -> None:
        async with aio.Server(Steps) as server, await aio.connect("127.0.0.1", server.port) as conn:
            assert await conn.root.steps(False) == 3
            with pytest.raises(ValueError, match="after suspending"):
                await conn.root.steps(True)
            assert await asyncio.gather(*(conn.root.steps(False) for _ in range(50))) == [3] * 50

    run(main())


def test_running_async_handlers_are_cancelled_when_the_client_goes() -> None:
    outcome: list[str] = []

    class Slow(rpc_service.Service):
        async def exposed_slow(self) -> None:
            try:
                await asyncio.sleep(10)
                outcome.append("finished")
            except asyncio.CancelledError:
                outcome.append("cancelled")
                raise

    async def main() -> None:
        async with aio.Server(Slow) as server:
            conn = await aio.connect("127.0.0.1", server.port)
            pending = asyncio.ensure_future(conn.root.slow())
            await asyncio.sleep(0.05)
            await conn.close()
            with pytest.raises(rpc_service.ConnectionClosedError):
                await pending
            for _ in range(300):
                if outcome:
                    break
                await asyncio.sleep(0.01)
            assert outcome == ["cancelled"]

    run(main())


def test_many_plain_handlers_calling_plain_callbacks_at_once() -> None:
    """40 plain handlers block on 40 plain client callbacks at the same time: each side's
    plain code needs threads of its own (the loop's default executor has only a few)."""

    def slow_identity(x: int) -> int:
        time.sleep(0.02)
        return x

    async def main() -> None:
        async with aio.Server(MixedService) as server, await aio.connect("127.0.0.1", server.port) as conn:
            results = await asyncio.gather(*(conn.root.call(slow_identity, i) for i in range(40)))
            assert results == list(range(40))

    run(main(), limit=20)


def test_calls_past_max_pending_requests_wait_for_answers_instead_of_getting_cut_off() -> None:
    """Regression: gathering more calls than the server's max_pending_requests got the client
    cut off ("the peer has more than 1024 requests in flight") and every call failed. The
    client keeps at most its own max_pending_requests in flight (the same default); the rest
    wait for answers. Closing meanwhile fails the waiting calls too."""
    limit = {"max_pending_requests": 8}

    async def main() -> None:
        async with aio.Server(MixedService, protocol_config=limit) as server:
            async with await aio.connect("127.0.0.1", server.port, config=limit) as conn:
                values = await asyncio.wait_for(asyncio.gather(*(conn.root.aecho(i, 0.005) for i in range(100))), 30)
                assert values == list(range(100)) and not conn.closed
            conn = await aio.connect("127.0.0.1", server.port, config=limit)
            calls = [conn.root.aecho(i, 5.0) for i in range(20)]
            assert all(isinstance(call, asyncio.Future) for call in calls)  # (waiting ones too)
            await asyncio.sleep(0.1)  # 8 in flight, 12 waiting for room
            await conn.close()
            outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10)
            assert all(isinstance(outcome, rpc_service.ConnectionClosedError) for outcome in outcomes), outcomes

    run(main())


def test_a_call_is_a_future_while_the_write_buffer_is_full_too() -> None:
    """Regression: a call made while the transport's buffer was full returned a coroutine
    (asyncio.create_task and add_done_callback needed to know); it is a Future as always."""

    async def main() -> None:
        async with aio.Server(MixedService) as server, await aio.connect("127.0.0.1", server.port) as conn:
            big = conn.root.echo(b"x" * (8 << 20))  # more than the transport buffers unpaused
            small = conn.root.echo(1)
            assert isinstance(big, asyncio.Future) and isinstance(small, asyncio.Future)
            done: list[object] = []
            small.add_done_callback(lambda future: done.append(future.result()))
            assert await asyncio.wait_for(small, 30) == 1 and len(await asyncio.wait_for(big, 30)) == 8 << 20
            await asyncio.sleep(0)
            assert done == [1]

    run(main())
