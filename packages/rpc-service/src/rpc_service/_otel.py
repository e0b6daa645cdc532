"""OpenTelemetry tracing of calls: a CLIENT span per call, a SERVER span per request served.

Owns everything that touches ``opentelemetry`` (the API only: the ``rpc-service[otel]``
extra). Imported by ``_context.tracer_for`` only when tracing is on for a connection, so a
process without the extra never imports it. Spans follow OpenTelemetry's RPC semantic
conventions: named ``{rpc.service}/{rpc.method}``, with ``rpc.system`` "rpc",
``rpc.service``, ``rpc.method``, ``server.address``/``server.port`` and, on failure, an
ERROR status and ``error.type``. The caller's span travels to the peer as the W3C
``traceparent`` of the request's call context, so the peer's SERVER span (and the spans
of the calls its handler makes, callbacks included) joins the caller's trace. It sends
nothing itself and knows nothing of the wire beyond the traceparent text.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import rpc_protocol as wire
from rpc_protocol import Op

from .__about__ import __version__
from ._context import Served

__all__ = ["Tracer"]

_SYSTEM = "rpc"
_UNKNOWN = object()
_PROVIDER_NAMED = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ  # (the API loads the provider it names)


def provider_configured() -> bool:
    """Whether a real tracer provider is set globally (not the API's default stand-in)."""
    # (asked on every new connection: while the API's global is unset and the environment
    # named no provider when this module was imported, the answer is no without the API's
    # own calls; os.environ's `in` raises and catches a KeyError per look)
    if not _PROVIDER_NAMED and getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None:
        return False
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _method(op: Op, args: tuple[Any, ...]) -> str:
    """The ``rpc.method`` of a request: the method name of a method call, else the operation."""
    if op is Op.CALLATTR and args and type(args[0]) is str:
        return args[0]
    return "__call__" if op is Op.CALL else op.name.lower()


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C traceparent naming ``span`` as the parent (None for an invalid span)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parent_context(traceparent: str | None) -> otel_context.Context:
    """The context whose span is the remote caller's (an empty one: a new trace)."""
    if traceparent is None:
        return otel_context.Context()
    _, trace_id, span_id, flags = traceparent.split("-")  # checked by rpc_protocol
    remote = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16)))
    return trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context())


def _address(conn: Any, peer: bool) -> dict[str, Any]:
    """``server.address``/``server.port`` of a connection: the peer's (client spans) or
    this side's (server spans), from its socket or transport; empty when it has neither."""
    address: Any = None
    transport = getattr(conn, "_transport", None)
    if transport is not None:
        address = transport.get_extra_info("peername" if peer else "sockname")
    else:
        sock = getattr(getattr(conn, "_stream", None), "sock", None)
        if isinstance(sock, socket.socket):
            try:
                address = sock.getpeername() if peer else sock.getsockname()
            except OSError:
                address = None
    if isinstance(address, tuple) and len(address) >= 2:
        return {"server.address": str(address[0]), "server.port": int(address[1])}
    if isinstance(address, str) and address:
        return {"server.address": address}
    return {}


class _Scope:
    """The SERVER span made current on this thread until ``close()``."""

    __slots__ = ("_token",)

    def __init__(self, ctx: otel_context.Context) -> None:
        self._token = otel_context.attach(ctx)

    def close(self) -> None:
        otel_context.detach(self._token)


class Tracer:
    """One connection's tracing (see the module doc); ``provider`` None: the global one."""

    def __init__(self, provider: Any = None) -> None:
        self._tracer = (provider or trace.get_tracer_provider()).get_tracer("rpc_service", __version__)
        self._client_attrs: dict[str, Any] | None = None
        self._server_attrs: dict[str, Any] | None = None

    def _attributes(self, conn: Any, client: bool) -> dict[str, Any]:
        attrs = self._client_attrs if client else self._server_attrs
        if attrs is None:
            if client:
                services = conn.peer_services
                service = services[0] if services else "?"
            else:
                service = conn.service.get_service_name()
            attrs = {"rpc.system": _SYSTEM, "rpc.service": service, **_address(conn, peer=client)}
            if client:
                self._client_attrs = attrs
            else:
                self._server_attrs = attrs
        return attrs

    def start_client_span(self, conn: Any, op: Op, args: tuple[Any, ...]) -> tuple[trace.Span, str | None]:
        """Start the CLIENT span of one call: the span, and the traceparent its request carries."""
        attrs = self._attributes(conn, client=True)
        method = _method(op, args)
        span = self._tracer.start_span(
            f"{attrs['rpc.service']}/{method}", kind=SpanKind.CLIENT, attributes={**attrs, "rpc.method": method}
        )
        return span, traceparent_of(span)

    @staticmethod
    def end_client_span(span: trace.Span, error: BaseException | None) -> None:
        if error is not None:
            _failed(span, error)
        span.end()

    @staticmethod
    def attach(ctx: otel_context.Context) -> None:
        """Make ``ctx`` current in the running context (a copy, discarded with its task)."""
        otel_context.attach(ctx)

    def start_server_span(
        self, conn: Any, op: Op, args: tuple[Any, ...], context: wire.CallContext | None, served: Served
    ) -> otel_context.Context:
        """Start the SERVER span of a request (kept in ``served``); the context in which
        its handler runs (the span current, so the handler's calls are its children)."""
        attrs = self._attributes(conn, client=False)
        method = _method(op, args)
        span = self._tracer.start_span(
            f"{attrs['rpc.service']}/{method}",
            context=parent_context(context.traceparent if context is not None else None),
            kind=SpanKind.SERVER,
            attributes={**attrs, "rpc.method": method},
        )
        served.span = span
        return trace.set_span_in_context(span)

    def server_span(self, conn: Any, op: Op, args: tuple[Any, ...], context: wire.CallContext | None, served: Served) -> _Scope:
        """The SERVER span of a request, current on this thread until the scope closes."""
        return _Scope(self.start_server_span(conn, op, args, context, served))

    @staticmethod
    def end_server_span(served: Served, error: BaseException | None) -> None:
        span, served.span = served.span, None
        if span is None:
            return
        if error is not None:
            _failed(span, error)
        span.end()


def _failed(span: trace.Span, exc: BaseException) -> None:
    span.set_attribute("error.type", _type_name(type(exc)))
    span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))


def _type_name(cls: type) -> str:
    """A class's full name as its users spell it: a builtin's bare, one its package exports
    (``rpc_service.DeadlineExceeded``) under the package, not its private module."""
    module = getattr(cls, "__module__", None)
    name = cls.__qualname__
    if type(module) is not str or module == "builtins":
        return name
    package = module.partition(".")[0]
    if module != package and "." not in name:
        exported = getattr(sys.modules.get(package), "__dict__", None)  # (no lookup: a module's
        if type(exported) is dict and exported.get(name) is cls:  # __getattr__ may import or raise)
            module = package
    return f"{module}.{name}"
