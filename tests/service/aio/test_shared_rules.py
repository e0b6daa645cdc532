"""aio.Server keeps the threaded driver's rules: results marked by value arrive as plain data,
a remote context manager sees the caller's exception, a handler's BaseException reaches the
caller as an error (the server keeps serving), and peer-described types get bounded classes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Iterator

import pytest

import rpc_service
from rpc_service import aio

from .helpers import run


class Rules(rpc_service.Service):
    def __init__(self) -> None:
        self.seen: list[str] = []

    @rpc_service.by_value
    def exposed_plain_data(self) -> dict[str, list[int]]:
        return {"a": [1, 2], "b": []}

    @rpc_service.by_value
    async def exposed_plain_data_async(self) -> list[int]:
        await asyncio.sleep(0)
        return [3, 4]

    def exposed_by_reference(self) -> list[int]:
        return [5]

    def exposed_guarded(self) -> Any:
        @contextlib.contextmanager
        def guard() -> Iterator[str]:
            try:
                yield "inside"
            except ValueError as exc:
                self.seen.append(f"caught {exc}")
                raise
            finally:
                self.seen.append("cleaned up")

        return guard()

    def exposed_stop(self) -> None:
        raise KeyboardInterrupt("not from a real Ctrl-C")

    async def exposed_stop_async(self) -> None:
        raise SystemExit(3)

    def exposed_echo(self, value: Any) -> Any:
        return value


def _with_server(client: Any) -> Rules:
    service = Rules()

    async def main() -> None:
        async with aio.Server(service) as server:
            await asyncio.to_thread(client, server.port)

    run(main())
    return service


def test_by_value_results_arrive_as_plain_data() -> None:
    def client(port: int) -> None:
        with rpc_service.connect("127.0.0.1", port) as conn:
            data = conn.root.plain_data()
            assert type(data) is dict and data == {"a": [1, 2], "b": []}
            assert type(data["a"]) is list
            assert conn.root.plain_data_async() == [3, 4]
            assert type(conn.root.plain_data_async()) is list
            assert rpc_service.is_proxy(conn.root.by_reference())

    _with_server(client)


def test_remote_context_manager_sees_the_callers_exception() -> None:
    def client(port: int) -> None:
        with rpc_service.connect("127.0.0.1", port) as conn:
            with pytest.raises(ValueError, match="boom"):
                with conn.root.guarded() as value:
                    assert value == "inside"
                    raise ValueError("boom")

    service = _with_server(client)
    assert service.seen == ["caught boom", "cleaned up"]


def test_a_handlers_base_exception_reaches_the_caller_and_serving_goes_on() -> None:
    def client(port: int) -> None:
        with rpc_service.connect("127.0.0.1", port) as conn:
            for name in ("stop", "stop_async"):
                with pytest.raises(rpc_service.RemoteError):
                    getattr(conn.root, name)()
                assert conn.root.echo(name) == name

    _with_server(client)
