"""``rpc-traced``: :mod:`bench.stacks.rpc` (same service, server and calls) with OpenTelemetry
tracing on both sides: every call makes a CLIENT span and every request served a SERVER span,
the W3C traceparent on the wire. Each connection traces through an SDK ``TracerProvider`` of
its own with no span processor (spans made and ended, none exported), rather than the global
one, so the other stacks measured in this process stay untraced. Importing this module raises
ImportError (column ``n/a``) without ``opentelemetry-sdk``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from bench.stacks import rpc

NAME = "rpc-traced"
IDLE_NEEDS_THREAD = False
describe = rpc.describe


def tracing_config() -> dict[str, Any]:
    """The config keys that make a connection trace (a provider of its own)."""
    return {"tracing": True, "tracer_provider": TracerProvider()}


def serve(report_port: Callable[[int], None], max_connections: int) -> None:
    rpc.serve(report_port, max_connections, **tracing_config())


def connect(port: int) -> rpc.RpcClient:
    return rpc.RpcClient(port, **tracing_config())
