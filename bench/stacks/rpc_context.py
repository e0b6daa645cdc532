"""The stack under test with a call context on every call: ``rpc-deadline`` and ``rpc-traced``.

This module owns two variants of :mod:`bench.stacks.rpc` (same service, same server, same
calls) that measure what a call context costs (issue 15):

* ``rpc-deadline`` (:mod:`bench.stacks.rpc_deadline`): every client operation runs under
  ``rpc_service.deadline(60)``, so each request carries its budget and the server serves it
  under the deadline (``remaining()`` set, callbacks inheriting it);
* ``rpc-traced`` (:mod:`bench.stacks.rpc_traced`): client and server connections trace
  through an OpenTelemetry SDK ``TracerProvider`` (no span processor: spans are made and
  ended, nothing is exported), so every call makes a CLIENT span and every request served a
  SERVER span, with the W3C traceparent on the wire. Importing it raises ImportError
  (column ``n/a``) without ``opentelemetry-sdk``.

Compare their columns with ``rpc`` in the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

from bench.stacks import rpc

rpc_service: Any = rpc.rpc_service


class DeadlineClient(rpc.RpcClient):
    """Every operation under ``deadline(60)`` (a list's iteration included)."""

    def noop(self) -> None:
        with rpc_service.deadline(60):
            super().noop()

    def echo(self, data: bytes) -> Sized:
        with rpc_service.deadline(60):
            return super().echo(data)

    def call_back(self, fn: Callable[[], None]) -> None:
        with rpc_service.deadline(60):
            super().call_back(fn)

    def get_list(self) -> Iterator[int]:  # iterated by the workload as rpc's is, under the deadline
        with rpc_service.deadline(60):
            yield from super().get_list()


def tracing_config() -> dict[str, Any]:
    """The config keys that trace a connection through an SDK tracer provider of its own
    (no span processor); ImportError without opentelemetry-sdk. A provider per connection
    rather than the global one, so the other stacks measured in this process stay untraced."""
    from opentelemetry.sdk.trace import TracerProvider

    return {"tracing": True, "tracer_provider": TracerProvider()}


def serve_traced(report_port: Callable[[int], None], max_connections: int) -> None:
    rpc.serve(report_port, max_connections, **tracing_config())
