"""OpenTelemetry tracing (the ``rpc-service[otel]`` extra), read from the SDK's in-memory
exporter: a CLIENT span per call and a SERVER span per request served, named and attributed
by the RPC semantic conventions, the W3C traceparent carried in the request so that all the
spans of a call (callbacks included) share one trace, on both drivers; failures set an ERROR
status; and without the package nothing of it is imported.
"""

from __future__ import annotations

import subprocess
import sys
import types
from typing import Any, Callable, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import rpc_service
from rpc_service import aio

from .aio.helpers import run


class TracedService(rpc_service.Service):
    def exposed_outer(self, callback: Callable[[], Any]) -> Any:
        return callback()

    def exposed_inner(self) -> str:
        return "inner"

    def exposed_fail(self) -> None:
        raise KeyError("nope")

    def exposed_fail_late(self) -> None:
        raise rpc_service.DeadlineExceeded("the handler's own")


class AsyncTracedService(rpc_service.Service):
    async def exposed_outer(self, callback: Callable[[], Any]) -> Any:
        return await callback()

    async def exposed_inner(self) -> str:
        return "inner"


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, dict[str, Any]]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield spans, {"tracing": True, "tracer_provider": provider}
    provider.shutdown()


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[tuple[str, SpanKind], ReadableSpan]:
    found: dict[tuple[str, SpanKind], ReadableSpan] = {}
    for span in spans:
        key = (span.name.rpartition("/")[2], span.kind)
        assert key not in found, key
        found[key] = span
    return found


def _check_chain(spans: tuple[ReadableSpan, ...], server_port: int) -> None:
    """outer (client -> server), its callback (server -> client), inner (client -> server):
    six spans, one trace, each SERVER span the child of its CLIENT span."""
    assert len(spans) == 6, [(span.name, span.kind) for span in spans]
    assert len({span.context.trace_id for span in spans}) == 1
    found = _by_name(spans)
    chain = [
        found[("outer", SpanKind.CLIENT)],
        found[("outer", SpanKind.SERVER)],
        found[("__call__", SpanKind.CLIENT)],
        found[("__call__", SpanKind.SERVER)],
        found[("inner", SpanKind.CLIENT)],
        found[("inner", SpanKind.SERVER)],
    ]
    assert chain[0].parent is None
    for parent, child in zip(chain, chain[1:]):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id, (parent.name, child.name)
    client = chain[0]
    assert client.attributes is not None
    assert client.attributes["rpc.system"] == "rpc" and client.attributes["rpc.method"] == "outer"
    assert client.attributes["rpc.service"] in ("TRACED", "ASYNCTRACED")
    assert client.name == f"{client.attributes['rpc.service']}/outer"
    assert client.attributes["server.address"] == "127.0.0.1" and client.attributes["server.port"] == server_port
    server = chain[1]
    assert server.attributes is not None and server.attributes["rpc.service"] == client.attributes["rpc.service"]
    assert all(span.status.status_code is not StatusCode.ERROR for span in spans)


def test_threaded_spans_share_one_trace_callbacks_included(exporter: tuple[InMemorySpanExporter, dict[str, Any]]) -> None:
    spans, config = exporter
    with rpc_service.ThreadedServer(TracedService, protocol_config=config) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config=config) as conn:
            root = conn.root
            spans.clear()
            assert root.outer(lambda: root.inner()) == "inner"
            _check_chain(spans.get_finished_spans(), server.port)
            spans.clear()
            with pytest.raises(KeyError):
                root.fail()
            failed = _by_name(spans.get_finished_spans())
            for kind in (SpanKind.CLIENT, SpanKind.SERVER):
                span = failed[("fail", kind)]
                assert span.status.status_code is StatusCode.ERROR
                assert span.attributes is not None and span.attributes["error.type"] == "KeyError"
            spans.clear()
            with pytest.raises(rpc_service.RemoteError):  # (not a builtin: a RemoteError here)
                root.fail_late()
            failed = _by_name(spans.get_finished_spans())
            # named as the package exports them, not by their private modules
            for kind, type_name in ((SpanKind.SERVER, "rpc_service.DeadlineExceeded"), (SpanKind.CLIENT, "rpc_service.RemoteError")):
                attributes = failed[("fail_late", kind)].attributes
                assert attributes is not None and attributes["error.type"] == type_name


def test_naming_an_error_runs_no_code_of_its_package(exporter: tuple[InMemorySpanExporter, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: error.type looked the class up in its package with getattr, which ran a
    lazy package's module __getattr__; it raised, and the server dropped the client."""
    spans, config = exporter
    package = types.ModuleType("lazypkg")

    def refuse(name: str) -> Any:
        raise ModuleNotFoundError(f"No module named 'lazypkg.{name}'")

    package.__getattr__ = refuse  # type: ignore[method-assign]  # PEP 562: a lazy package
    error = type("LazyError", (Exception,), {"__module__": "lazypkg.errors"})
    monkeypatch.setitem(sys.modules, "lazypkg", package)

    class Lazy(rpc_service.Service):
        def exposed_fail(self) -> None:
            raise error("boom")

        def exposed_ok(self) -> int:
            return 1

    with rpc_service.ThreadedServer(Lazy, protocol_config=config) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config=config) as conn:
            with pytest.raises(rpc_service.RemoteError, match="boom"):
                conn.root.fail()
            assert conn.root.ok() == 1  # (the connection serves on)
    failed = _by_name(spans.get_finished_spans())
    attributes = failed[("fail", SpanKind.SERVER)].attributes
    assert attributes is not None and attributes["error.type"] == "lazypkg.errors.LazyError"


def test_aio_spans_share_one_trace_callbacks_included(exporter: tuple[InMemorySpanExporter, dict[str, Any]]) -> None:
    spans, config = exporter

    async def main() -> None:
        async with aio.Server(AsyncTracedService, protocol_config=config) as server:
            await server.start()
            async with await aio.connect("127.0.0.1", server.port, config=config) as conn:
                root = conn.root

                async def callback() -> Any:
                    return await root.inner()

                spans.clear()
                assert await root.outer(callback) == "inner"
                _check_chain(spans.get_finished_spans(), server.port)

    run(main())


def test_a_traced_client_and_an_untraced_server_still_pass_the_trace_on(exporter: tuple[InMemorySpanExporter, dict[str, Any]]) -> None:
    """The server does not trace, but forwards the caller's traceparent on the callback."""
    spans, config = exporter
    with rpc_service.ThreadedServer(TracedService, protocol_config={"tracing": False}) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config=config) as conn:
            spans.clear()
            assert conn.root.outer(lambda: "x") == "x"
            found = _by_name(spans.get_finished_spans())
            outer, served = found[("outer", SpanKind.CLIENT)], found[("__call__", SpanKind.SERVER)]
            assert served.context.trace_id == outer.context.trace_id
            assert served.parent is not None and served.parent.span_id == outer.context.span_id


def test_by_default_a_configured_provider_turns_tracing_on(exporter: tuple[InMemorySpanExporter, dict[str, Any]]) -> None:
    spans, config = exporter
    auto = {"tracer_provider": config["tracer_provider"]}  # tracing=None: on, a provider being set
    with rpc_service.ThreadedServer(TracedService, protocol_config=auto) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config=auto) as conn:
            spans.clear()
            assert conn.root.inner() == "inner"
            assert {(span.name, span.kind) for span in spans.get_finished_spans()} == {
                ("TRACED/inner", SpanKind.CLIENT),
                ("TRACED/inner", SpanKind.SERVER),
            }


def test_without_opentelemetry_nothing_is_imported() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # as if the extra were not installed
        "import rpc_service\n"
        "class S(rpc_service.Service):\n"
        "    def exposed_f(self): return rpc_service.remaining()\n"
        "conn = rpc_service.connect_thread(remote_service=S)\n"
        "assert conn.root.f() is None\n"
        "with rpc_service.deadline(5): assert conn.root.f() > 4\n"
        "conn.close()\n"
        "assert 'rpc_service._otel' not in sys.modules, sorted(sys.modules)\n"
        "assert not any(name.startswith('opentelemetry.') for name in sys.modules)\n"
        "try:\n"
        "    rpc_service.connect_thread(config={'tracing': True})\n"
        "except ValueError as exc: assert 'rpc-service[otel]' in str(exc)\n"
        "else: raise AssertionError('tracing=True without opentelemetry')\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
