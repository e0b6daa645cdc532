"""A Hypothesis mix of what tasks do to one async connection at once: calls answered after
varied delays, callbacks into the client (async and plain), calls cancelled mid-flight and
errors. Every call that is not cancelled gets its own answer; the connection stays usable."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpc_service import aio

from .helpers import MixedService, run

ACTION = st.tuples(
    st.sampled_from(["aecho", "echo", "callback", "acallback", "cancel", "fail"]),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=3),  # delay in hundredths of a second
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(ACTION, min_size=1, max_size=30))
def test_mixed_concurrent_operations(actions: list[tuple[str, int, int]]) -> None:
    async def one(conn: aio.AsyncConnection, kind: str, value: int, delay: int) -> Any:
        root = conn.root
        if kind == "aecho":
            return await root.aecho(value, delay / 100)
        if kind == "echo":
            return await root.echo(value)
        if kind == "callback":
            return await root.call(lambda x: x, value)
        if kind == "acallback":

            async def back(x: int) -> int:
                await asyncio.sleep(delay / 100)
                return x

            return await root.acall(back, value)
        if kind == "fail":
            try:
                await root.fail(str(value))
            except ValueError as exc:
                return int(exc.args[0])
            raise AssertionError("no error")
        raise AssertionError(kind)

    async def main() -> None:
        async with aio.Server(MixedService) as server, await aio.connect("127.0.0.1", server.port) as conn:
            tasks: list[tuple[Any, int | None]] = []
            for kind, value, delay in actions:
                if kind == "cancel":
                    task = asyncio.ensure_future(conn.root.aecho(value, 0.05 + delay / 100))
                    asyncio.get_running_loop().call_later(delay / 200, task.cancel)
                    tasks.append((task, None))
                else:
                    tasks.append((asyncio.ensure_future(one(conn, kind, value, delay)), value))
            for task, expected in tasks:
                if expected is None:
                    try:
                        await task
                    except asyncio.CancelledError:
                        pass
                else:
                    assert await task == expected
            assert await conn.root.echo("healthy") == "healthy"
            await asyncio.sleep(0.1)  # late replies of cancelled calls arrive and are dropped
            assert not conn._slots

    run(main())
