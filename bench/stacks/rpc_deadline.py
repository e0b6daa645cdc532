"""``rpc-deadline``: :mod:`bench.stacks.rpc` (same service, server and calls) with every client
operation inside ``rpc_service.deadline(60)``: each request carries its budget and the server
serves it under the deadline (``remaining()`` set, callbacks inheriting it). Compare its
column with ``rpc``'s in the same run: what carrying a deadline costs (issue 15)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

from bench.stacks import rpc

NAME = "rpc-deadline"
IDLE_NEEDS_THREAD = False
describe = rpc.describe
serve = rpc.serve
deadline = rpc.rpc_service.deadline


class DeadlineClient(rpc.RpcClient):
    """Every operation under ``deadline(60)`` (a list's iteration included)."""

    def noop(self) -> None:
        with deadline(60):
            super().noop()

    def echo(self, data: bytes) -> Sized:
        with deadline(60):
            return super().echo(data)

    def call_back(self, fn: Callable[[], None]) -> None:
        with deadline(60):
            super().call_back(fn)

    def get_list(self) -> Iterator[int]:  # iterated by the workload as rpc's is, under the deadline
        with deadline(60):
            yield from super().get_list()


def connect(port: int) -> DeadlineClient:
    return DeadlineClient(port)
