"""``rpc-deadline``: :mod:`bench.stacks.rpc` (same service, server and calls) with every call
made under a deadline: each client enters ``rpc_service.deadline(3600)`` when it connects and
leaves it when it closes, so each request carries its budget and the server serves it under
the deadline (``remaining()`` set, callbacks inheriting it). Compare its column with ``rpc``'s
in the same run: what carrying a deadline costs a call (issue 15). Entering ``with deadline()``
around each single call costs more on top: ``bench/call_context.py`` measures both."""

from __future__ import annotations

from typing import Any

from bench.stacks import rpc

NAME = "rpc-deadline"
IDLE_NEEDS_THREAD = False
describe = rpc.describe
serve = rpc.serve
deadline = rpc.rpc_service.deadline

#: Longer than any run: the deadline is carried, never reached.
_BUDGET_S = 3600


class DeadlineClient(rpc.RpcClient):
    """Every call under one deadline, entered (in the connecting thread, which makes the
    calls) before connecting and left on close."""

    def __init__(self, port: int, **config: Any) -> None:
        self._deadline = deadline(_BUDGET_S)
        self._deadline.__enter__()
        try:
            super().__init__(port, **config)
        except BaseException:
            self._deadline.__exit__(None, None, None)
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._deadline.__exit__(None, None, None)


def connect(port: int) -> DeadlineClient:
    return DeadlineClient(port)
