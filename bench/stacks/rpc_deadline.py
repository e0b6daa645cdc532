"""``rpc-deadline``: :mod:`bench.stacks.rpc` (same service, server and calls) with every call
made under a deadline: each client has a context of its own (``contextvars``) in which
``rpc_service.deadline(3600)`` was entered when it connected, and makes every call in it, so
each request carries its budget and the server serves it under the deadline (``remaining()``
set, callbacks inheriting it). Compare its column with ``rpc``'s in the same run: what
carrying a deadline costs a call (issue 15). Entering ``with deadline()`` around each single
call costs more on top: ``bench/call_context.py`` measures both. (A context per client, not
the caller's: clients closed in any order, or never, leave no deadline behind.)"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sized
from typing import Any

from bench.stacks import rpc

NAME = "rpc-deadline"
IDLE_NEEDS_THREAD = False
describe = rpc.describe
serve = rpc.serve
deadline = rpc.rpc_service.deadline

#: Longer than any run: the deadline is carried, never reached.
_BUDGET_S = 3600


_plain = rpc.RpcClient


class DeadlineClient(_plain):
    """Every operation run in the client's own context, under its deadline."""

    def __init__(self, port: int, **config: Any) -> None:
        self._context = contextvars.copy_context()
        self._context.run(deadline(_BUDGET_S).__enter__)  # (left when the context is dropped)
        self._context.run(_plain.__init__, self, port, **config)

    def noop(self) -> None:
        self._context.run(_plain.noop, self)  # (the base class's method: no super() object per call)

    def echo(self, data: bytes) -> Sized:
        return self._context.run(_plain.echo, self, data)

    def call_back(self, fn: Callable[[], None]) -> None:
        self._context.run(_plain.call_back, self, fn)

    def get_list(self) -> list[int]:
        """The remote list iterated (by reference, in batches, as rpc's) in the context; the
        workload then walks the copy (each step through the context would cost more than it)."""
        return self._context.run(self._iterated)

    def _iterated(self) -> list[int]:
        return [item for item in _plain.get_list(self)]


def connect(port: int) -> DeadlineClient:
    return DeadlineClient(port)
