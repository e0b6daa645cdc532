"""``rpc-traced``: :mod:`bench.stacks.rpc` with OpenTelemetry tracing on both sides (see
:mod:`bench.stacks.rpc_context`)."""

from __future__ import annotations

import opentelemetry.sdk.trace  # noqa: F401  # ImportError (column n/a) without the SDK

from bench.stacks import rpc
from bench.stacks.rpc_context import serve_traced, tracing_config

NAME = "rpc-traced"
IDLE_NEEDS_THREAD = False
describe = rpc.describe
serve = serve_traced


def connect(port: int) -> rpc.RpcClient:
    return rpc.RpcClient(port, **tracing_config())
