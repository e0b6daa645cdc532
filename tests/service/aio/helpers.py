"""Shared pieces of the asyncio-driver tests: running a coroutine with a bound, and the
services the tests expose (async and plain handlers side by side)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, TypeVar

import rpc_service

T = TypeVar("T")


def run(coro: Awaitable[T], limit: float = 30.0) -> T:
    """Run ``coro`` on a fresh event loop, failing if it takes more than ``limit`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


class Items:
    """A plain object with a public attribute, a method and container specials."""

    def __init__(self) -> None:
        self.exposed_label = "items"
        self.data: dict[Any, Any] = {"a": 1}

    def exposed_double(self, x: int) -> int:
        return 2 * x

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.data


class MixedService(rpc_service.Service):
    """Plain and ``async def`` handlers; records which thread ran each."""

    def __init__(self) -> None:
        self.threads: dict[str, int] = {}

    def exposed_echo(self, value: Any) -> Any:
        self.threads["echo"] = threading.get_ident()
        return value

    async def exposed_aecho(self, value: Any, delay: float = 0.0) -> Any:
        self.threads["aecho"] = threading.get_ident()
        if delay:
            await asyncio.sleep(delay)
        return value

    def exposed_call(self, func: Callable[..., Any], *args: Any) -> Any:
        """A plain handler: the proxy it gets blocks (it runs in a worker thread)."""
        return func(*args)

    async def exposed_acall(self, func: Callable[..., Any], *args: Any) -> Any:
        """An async handler: the proxy it gets is awaitable."""
        return await func(*args)

    def exposed_items(self) -> Items:
        return Items()

    def exposed_numbers(self, count: int) -> list[int]:
        return list(range(count))

    def exposed_count_up(self, count: int) -> Any:
        return (i for i in range(count))

    def exposed_fail(self, message: str) -> None:
        raise ValueError(message)

    async def exposed_afail(self, message: str) -> None:
        raise KeyError(message)

    def exposed_block(self, event_waiter: Callable[[], Any]) -> str:
        event_waiter()
        return "unblocked"
