"""Each connection of an aio.Server holds at most ``threads_per_connection`` threads of the
shared handler pool: a client whose plain handlers all block stalls only itself, new
connections are admitted (authenticator, plain hooks) outside that pool, and its further
handlers queue in order, nested callbacks still running on its own threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

import rpc_service
from rpc_service import aio

from .helpers import run

_BOUND = 5.0  # seconds: a generous bound on "promptly" (never a timing measurement)
HANDLER_THREADS = 256  # the default handler pool of an aio.Server (see the README)


class Blocking(rpc_service.Service):
    """``block()`` waits for the test's event (bounded); ``echo`` plain, ``aecho`` async."""

    release = threading.Event()
    entered = 0
    connected = 0
    lock = threading.Lock()

    def on_connect(self, conn: Any) -> None:  # a plain hook: runs in a worker thread
        with Blocking.lock:
            Blocking.connected += 1

    def exposed_block(self, tag: int) -> int:
        with Blocking.lock:
            Blocking.entered += 1
        Blocking.release.wait(20)
        return tag

    def exposed_echo(self, value: Any) -> Any:
        return value

    async def exposed_aecho(self, value: Any) -> Any:
        return value


@pytest.fixture(autouse=True)
def _fresh_counts() -> Any:
    Blocking.release = threading.Event()
    Blocking.entered = Blocking.connected = 0
    yield
    Blocking.release.set()  # (a failed test leaves no handler blocked)


async def _until(predicate: Callable[[], bool], what: str, limit: float = _BOUND) -> None:
    """Wait (bounded, polling on the loop the server shares) until ``predicate()``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not predicate():
        assert loop.time() < end, f"not within {limit} s: {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _occupied(server: aio.Server, calls: int) -> AsyncIterator[list[asyncio.Future[Any]]]:
    """A client with ``calls`` calls of ``block`` in flight, once its whole share is
    blocked; on exit they are released and every one must have answered its tag."""
    hog = await aio.connect("127.0.0.1", server.port)
    pending = [asyncio.ensure_future(hog.root.block(i)) for i in range(calls)]
    try:
        share = min(calls, server.threads_per_connection)
        await _until(lambda: Blocking.entered >= share, f"{share} handlers blocked")
        yield pending
    finally:
        Blocking.release.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), _BOUND * 2)
        await hog.close()
    assert outcomes == list(range(calls))


def test_a_client_blocking_its_whole_share_does_not_stall_another_client() -> None:
    async def main() -> None:
        async with aio.Server(Blocking) as server:
            share = server.threads_per_connection
            assert 1 <= share < 256  # well below the default pool
            async with _occupied(server, HANDLER_THREADS + 8) as pending:  # more than the whole pool
                async with await aio.connect("127.0.0.1", server.port) as other:
                    assert await asyncio.wait_for(other.root.echo(42), _BOUND) == 42  # a plain handler too
                    assert await asyncio.wait_for(other.root.aecho(43), _BOUND) == 43
                assert Blocking.entered == share  # the hog's other calls wait for its own threads
                assert not any(call.done() for call in pending)

    run(main())


def test_the_share_protects_a_small_pool_and_new_connections_are_admitted_beside_it() -> None:
    """A pool of 6 threads, 3 per connection: one client's blocked handlers leave 3 for
    the rest. A share as big as the whole pool still leaves the authenticator and a new
    client's plain on_connect running (they never wait for the handler pool)."""

    def authenticator(sock: socket.socket) -> tuple[socket.socket, Any]:
        return sock, "ok"

    async def main() -> None:
        pool = concurrent.futures.ThreadPoolExecutor(6)
        try:
            server = aio.Server(Blocking, executor=pool, authenticator=authenticator)
            server.threads_per_connection = 3
            async with server:
                async with _occupied(server, 10):
                    async with await aio.connect("127.0.0.1", server.port) as other:
                        assert await asyncio.wait_for(other.root.echo(1), _BOUND) == 1
                    assert Blocking.entered == 3

            Blocking.release.clear()
            Blocking.entered = Blocking.connected = 0
            server = aio.Server(Blocking, executor=pool, authenticator=authenticator)
            server.threads_per_connection = 6  # one client may take the whole pool
            async with server:
                async with _occupied(server, 8):
                    other = await asyncio.wait_for(aio.connect("127.0.0.1", server.port), _BOUND)
                    async with other:
                        assert Blocking.connected == 2  # its plain on_connect ran
                        assert await asyncio.wait_for(other.root.aecho(2), _BOUND) == 2
        finally:
            pool.shutdown(wait=False)

    run(main())


def test_calls_beyond_the_share_run_in_arrival_order() -> None:
    order: list[int] = []

    class Ordered(rpc_service.Service):
        def exposed_first(self) -> None:
            Blocking.release.wait(20)

        def exposed_record(self, i: int) -> None:
            order.append(i)

    async def main() -> None:
        server = aio.Server(Ordered)
        server.threads_per_connection = 1
        async with server, await aio.connect("127.0.0.1", server.port) as conn:
            first = asyncio.ensure_future(conn.root.first())
            calls = [asyncio.ensure_future(conn.root.record(i)) for i in range(20)]
            await asyncio.sleep(0.05)  # (not needed for the outcome: queued either way)
            assert order == []
            Blocking.release.set()
            await asyncio.wait_for(asyncio.gather(first, *calls), _BOUND)
            assert order == list(range(20))

    run(main())


class _Bouncer(rpc_service.Service):
    """A plain handler calling its client back, ``depth`` levels of callbacks in all."""

    def exposed_bounce(self, back: Callable[[int], Any], depth: int) -> int:
        return 0 if depth == 0 else 1 + int(back(depth - 1))  # blocks: a worker thread


def test_nested_plain_callbacks_go_deeper_than_the_share() -> None:
    """A plain handler waiting for its client runs the client's nested calls on its own
    thread meanwhile: chains deeper than the share (several at once) complete."""

    async def main() -> None:
        server = aio.Server(_Bouncer)
        server.threads_per_connection = 2
        async with server, await aio.connect("127.0.0.1", server.port) as conn:

            async def back(depth: int) -> int:
                return int(await conn.root.bounce(back, depth))

            chain: Callable[[int], Awaitable[Any]] = lambda depth: conn.root.bounce(back, depth)
            assert await asyncio.wait_for(chain(12), _BOUND * 2) == 12
            assert await asyncio.wait_for(asyncio.gather(*(chain(5) for _ in range(4))), _BOUND * 2) == [5] * 4

    run(main())


def test_nested_plain_callbacks_go_deeper_than_a_small_executor() -> None:
    """Regression: with executor= of 2 threads and the default share of 16, a chain of plain
    callbacks 3 server levels deep waited out sync_request_timeout (nested jobs went to the
    full executor instead of a waiting share thread). The share is never larger than a
    ThreadPoolExecutor."""

    async def main() -> None:
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            async with aio.Server(_Bouncer, executor=executor) as server, await aio.connect("127.0.0.1", server.port) as conn:

                async def back(depth: int) -> int:
                    return int(await conn.root.bounce(back, depth))

                assert await asyncio.wait_for(conn.root.bounce(back, 9), _BOUND) == 9

    run(main())


def test_plain_callbacks_nested_past_the_stack_fail_at_once_and_the_connection_serves_on() -> None:
    """One thread for the client's handlers: a chain too deep for its stack ends in
    RecursionError for the caller (as with the threaded driver), not in a queue."""

    async def main() -> None:
        server = aio.Server(_Bouncer)
        server.threads_per_connection = 1
        async with server, await aio.connect("127.0.0.1", server.port) as conn:

            async def back(depth: int) -> int:
                return int(await conn.root.bounce(back, depth))

            with pytest.raises(RecursionError, match="nested too deeply"):
                await asyncio.wait_for(conn.root.bounce(back, 1000), _BOUND * 2)
            assert await asyncio.wait_for(conn.root.bounce(back, 20), _BOUND) == 20

    run(main())


def test_a_plain_handler_raising_stopiteration_is_answered() -> None:
    class Stops(rpc_service.Service):
        def exposed_stop(self) -> None:
            raise StopIteration(5)

    async def main() -> None:
        async with aio.Server(Stops) as server, await aio.connect("127.0.0.1", server.port) as conn:
            with pytest.raises(RuntimeError, match="StopIteration"):  # (as the peer raised it, on the loop)
                await asyncio.wait_for(conn.root.stop(), _BOUND)
            await asyncio.wait_for(conn.ping(), _BOUND)  # the connection serves on

    run(main())


def test_threads_per_connection_must_be_positive() -> None:
    async def main() -> None:
        server = aio.Server(Blocking)
        server.threads_per_connection = 0
        with pytest.raises(ValueError, match="threads_per_connection"):
            await server.start()
        await server.close()

    run(main())
