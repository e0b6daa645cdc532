"""The asyncio driver of the stack under test: ``rpc_service.aio`` on both ends.

This module owns the ``rpc-aio`` adapter: an ``aio.Server`` whose handlers are ``async def``
(the natural shape of a service written for it), and a client that awaits
``conn.root.noop()`` on an event loop of its own. The harness's client interface is
synchronous, so each operation is one ``loop.run_until_complete(...)`` on a loop kept per
thread: that adds the loop's own start/stop cost (a task, a few µs) to every timed call, which
a program living on the loop does not pay. Public names only (DESIGN.md §3).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sized
from typing import Any, Coroutine

import rpc_service as _rpc_service_module

from bench.stacks.base import HOST, server_list

rpc_service: Any = _rpc_service_module
aio: Any = getattr(rpc_service, "aio", None)
if aio is None:
    try:
        from rpc_service import aio as _aio  # type: ignore[attr-defined,unused-ignore]  # absent before issue 14

        aio = _aio
    except ImportError as exc:
        raise ImportError(f"rpc_service.aio is missing: {exc}") from None

NAME = "rpc-aio"
IDLE_NEEDS_THREAD = False

_CONFIG: dict[str, Any] = {"sync_request_timeout": 120}
_local = threading.local()


def describe() -> dict[str, str]:
    return {"version": str(getattr(rpc_service, "__version__", "?")), "server": "rpc_service.aio.Server (async def handlers)"}


class BenchService(rpc_service.Service):  # type: ignore[misc]  # subclass of Any
    async def exposed_noop(self) -> None:
        return None

    async def exposed_echo(self, data: bytes) -> bytes:
        return data

    async def exposed_call_back(self, fn: Any) -> None:
        await fn()

    async def exposed_get_list(self) -> list[int]:
        return server_list()


def serve(report_port: Callable[[int], None], max_connections: int) -> None:
    async def main() -> None:
        server: Any = aio.Server(BenchService, hostname=HOST, port=0, protocol_config=dict(_CONFIG), backlog=4096)
        await server.start()
        report_port(int(server.port))
        await server.serve_forever()

    asyncio.run(main())


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None:
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return _loop().run_until_complete(coro)


class RpcAioClient:
    def __init__(self, port: int) -> None:
        self._loop = _loop()
        self._conn: Any = self._loop.run_until_complete(aio.connect(HOST, port, config=dict(_CONFIG)))

    def noop(self) -> None:
        self._loop.run_until_complete(self._conn.root.noop())

    def echo(self, data: bytes) -> Sized:
        result: Sized = self._loop.run_until_complete(self._conn.root.echo(data))
        return result

    def call_back(self, fn: Callable[[], None]) -> None:
        self._loop.run_until_complete(self._conn.root.call_back(fn))

    def get_list(self) -> Iterable[int]:
        async def fetch() -> list[int]:
            remote = await self._conn.root.get_list()
            return [x async for x in remote]

        result: list[int] = self._loop.run_until_complete(fetch())
        return result

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._conn.close())
        except Exception:  # the server may be gone already
            pass


def connect(port: int) -> RpcAioClient:
    return RpcAioClient(port)
