"""``rpc-deadline``: :mod:`bench.stacks.rpc` with every call under ``deadline(60)`` (see
:mod:`bench.stacks.rpc_context`)."""

from __future__ import annotations

from bench.stacks import rpc
from bench.stacks.rpc_context import DeadlineClient

NAME = "rpc-deadline"
IDLE_NEEDS_THREAD = False
describe = rpc.describe
serve = rpc.serve


def connect(port: int) -> DeadlineClient:
    return DeadlineClient(port)
