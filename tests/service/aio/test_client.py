"""The async client: proxies you await, against a ThreadedServer and against aio.Server
(same wire, both ways), callbacks in both styles, errors, iteration and the helpers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import pytest

import rpc_service
from rpc_service import aio

from .helpers import Items, MixedService, run

SERVERS = ["threaded", "aio"]


@contextlib.asynccontextmanager
async def serving(kind: str, service: Any = MixedService, config: Any = None) -> AsyncIterator[int]:
    """A server of ``kind`` for ``service``; yields its port."""
    if kind == "threaded":
        server = rpc_service.ThreadedServer(service, protocol_config=config)
        server.start_in_thread()
        try:
            yield server.port
        finally:
            await asyncio.to_thread(server.close)
    else:
        async with aio.Server(service, protocol_config=config) as aserver:
            yield aserver.port


@pytest.mark.parametrize("kind", SERVERS)
def test_calls_attributes_and_repr(kind: str) -> None:
    async def main() -> None:
        async with serving(kind) as port, await aio.connect("127.0.0.1", port) as conn:
            assert isinstance(conn, aio.AsyncConnection)
            assert "AsyncConnection" in repr(conn) and "(open)" in repr(conn)
            assert not conn.closed
            assert await conn.root.echo(41) == 41
            assert await conn.root.echo(value="kw") == "kw"
            assert await conn.root.get_service_name() == "MIXED"
            items = await conn.root.items()
            assert issubclass(type(items), aio.AsyncProxy)
            assert "Items" in repr(items)  # a local repr: no round trip on the loop
            assert await items.double(4) == 8  # a described method
            assert await items.label == "items"  # an attribute (GETATTR)
            assert await items["a"] == 1
            assert await aio.len(items) == 1
            assert await aio.contains(items, "a") and not await aio.contains(items, "zz")
            await aio.setitem(items, "b", 2)
            assert await aio.len(items) == 2 and await items["b"] == 2
            assert "Items" in await aio.repr(items)
            assert "double" in await aio.dir(items)
            assert await aio.bool(items)
            assert await aio.call(items, "__len__") == 2
            await conn.ping(b"abc", timeout=5)
        assert conn.closed
        assert "(closed)" in repr(conn)

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_one_round_trip_per_call(kind: str) -> None:
    async def main() -> None:
        async with serving(kind) as port, await aio.connect("127.0.0.1", port) as conn:
            root = conn.root
            before = conn._calls_sent
            assert await root.echo(1) == 1
            items = await root.items()
            assert await items.double(3) == 6
            assert conn._calls_sent - before == 3

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_releases_beyond_one_frame_are_split(kind: str) -> None:
    """Regression: the async client sent all the releases owed in one RELEASE frame; past
    what the peer's frame limit holds (85 entries at 1 KiB) the next call failed with
    EncodeError and the releases were lost (the server kept the objects)."""

    async def main() -> None:
        async with serving(kind, config={"max_frame_size": 1024}) as port, await aio.connect("127.0.0.1", port) as conn:
            kept = [await conn.root.items() for _ in range(200)]
            assert len({id(item) for item in kept}) == 200
            del kept  # 200 releases owed: three frames' worth
            assert await conn.root.echo("still fine") == "still fine"
            assert conn._boxer.held == 1  # (the root)

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_syntax_that_cannot_await_names_the_helper(kind: str) -> None:
    async def main() -> None:
        async with serving(kind) as port, await aio.connect("127.0.0.1", port) as conn:
            items = await conn.root.items()
            with pytest.raises(TypeError, match=r"aio\.len"):
                len(items)
            with pytest.raises(TypeError, match=r"aio\.contains"):
                "a" in items  # noqa: B015
            with pytest.raises(TypeError, match=r"aio\.setitem"):
                items["x"] = 1
            with pytest.raises(TypeError, match=r"aio\.setattr"):
                items.label = "x"
            with pytest.raises(TypeError, match="async for"):
                iter(items)
            with pytest.raises(TypeError, match=r"aio\.hash"):
                hash(items)
            assert await aio.len(items) == 1  # nothing was sent by the refused operations

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_async_for_batched_and_generators(kind: str) -> None:
    async def main() -> None:
        async with serving(kind) as port, await aio.connect("127.0.0.1", port, config={"iter_batch": 16}) as conn:
            numbers = await conn.root.numbers(1000)
            before = conn._calls_sent
            assert [x async for x in numbers] == list(range(1000))
            assert conn._calls_sent - before < 10  # batched: 16, 32, 64, ...
            generator = await conn.root.count_up(5)
            assert [x async for x in generator] == [0, 1, 2, 3, 4]
            empty = await conn.root.numbers(0)
            assert [x async for x in empty] == []

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_remote_exceptions(kind: str) -> None:
    async def main() -> None:
        async with serving(kind) as port, await aio.connect("127.0.0.1", port) as conn:
            with pytest.raises(ValueError, match="boom"):
                await conn.root.fail("boom")
            if kind == "aio":  # (the threaded server does not await coroutine handlers)
                with pytest.raises(KeyError):
                    await conn.root.afail("k")
            with pytest.raises(AttributeError):
                await conn.root.no_such_method()
            with pytest.raises(AttributeError):
                await conn.root._private
            assert await conn.root.echo("still fine") == "still fine"

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_callbacks_plain_and_async(kind: str) -> None:
    async def main() -> None:
        seen: list[Any] = []

        def plain(x: int) -> int:
            seen.append(x)
            return x + 1

        async def coroutine(x: int) -> int:
            await asyncio.sleep(0)
            return x * 10

        async with serving(kind) as port, await aio.connect("127.0.0.1", port) as conn:
            assert await conn.root.call(plain, 1) == 2
            assert await conn.root.call(coroutine, 2) == 20
            assert seen == [1]
            if kind == "aio":  # an async handler awaits the client's callback proxy
                assert await conn.root.acall(plain, 5) == 6
                assert await conn.root.acall(coroutine, 3) == 30

    run(main())


def test_nested_callbacks_both_ways() -> None:
    """client -> server (async) -> client (async) -> server (plain, in a thread) -> ..."""

    class Client(rpc_service.Service):
        async def exposed_bounce(self, server_root: Any, depth: int) -> int:
            if depth == 0:
                return 0
            return 1 + int(await server_root.bounce(depth - 1))

    class Root(rpc_service.Service):
        def __init__(self) -> None:
            self.conn: Any = None

        def on_connect(self, conn: Any) -> None:
            self.conn = conn

        async def exposed_bounce(self, depth: int) -> int:
            if depth == 0:
                return 0
            return 1 + int(await self.conn.root.bounce(self, depth - 1))

        def exposed_plain_bounce(self, depth: int) -> int:
            # a plain handler in a worker thread: the client's proxy blocks here
            if depth == 0:
                return 0
            return 1 + int(self.conn.root.bounce(self, depth - 1))

    async def main() -> None:
        async with aio.Server(Root) as server:
            async with await aio.connect("127.0.0.1", server.port, service=Client) as conn:
                assert await conn.root.bounce(10) == 10
                assert await conn.root.plain_bounce(6) == 6

    run(main())


def test_connect_failures() -> None:
    async def main() -> None:
        async with aio.Server(MixedService) as server:
            port = server.port
        with pytest.raises(rpc_service.ConnectionFailedError):
            await aio.connect("127.0.0.1", port, timeout=5)
        with pytest.raises(rpc_service.ConnectionFailedError):
            await aio.unix_connect("/nonexistent/dir/sock")

    run(main())


def test_calls_after_close_and_pending_calls_fail() -> None:
    async def main() -> None:
        async with aio.Server(MixedService) as server:
            conn = await aio.connect("127.0.0.1", server.port)
            pending = asyncio.ensure_future(conn.root.aecho(1, 5.0))
            await asyncio.sleep(0.05)
            await conn.close()
            with pytest.raises(rpc_service.ConnectionClosedError):
                await pending
            with pytest.raises(rpc_service.ConnectionClosedError):
                conn.root.echo(1)
            await conn.close()  # twice is fine

    run(main())


@pytest.mark.parametrize("kind", SERVERS)
def test_large_payloads_both_ways(kind: str) -> None:
    async def main() -> None:
        async with serving(kind) as port, await aio.connect("127.0.0.1", port) as conn:
            for size in (0, 1, 70_000, 4 * 1024 * 1024 + 3):
                data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                assert await conn.root.echo(data) == data
            results = await asyncio.gather(*(conn.root.echo(bytes([i]) * 300_000) for i in range(8)))
            assert results == [bytes([i]) * 300_000 for i in range(8)]

    run(main())


class _Widget:
    class Part:
        pass


class _WidgetService(rpc_service.Service):
    def exposed_part(self) -> _Widget.Part:
        return _Widget.Part()


def test_an_async_proxys_class_reads_as_the_remote_class() -> None:
    """Regression: async proxy classes were named "AsyncProxy[module.qualname]", so
    proxy.__class__.__name__ was not the remote class's (the threaded driver's is)."""

    async def main() -> None:
        async with aio.Server(_WidgetService) as server, await aio.connect("127.0.0.1", server.port) as conn:
            part = await conn.root.part()
            cls = part.__class__
            assert (cls.__name__, cls.__qualname__, cls.__module__) == ("Part", "_Widget.Part", __name__)
            assert rpc_service.is_proxy(part) and not isinstance(part, _Widget.Part)

    run(main())
