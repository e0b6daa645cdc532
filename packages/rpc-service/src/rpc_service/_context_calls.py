"""Calls and serving with a call context, on the threaded driver.

Owns the paths a :class:`Connection` takes instead of its plain ones when a call context is
involved: a call made under ``deadline()`` (or inside a handler serving a call with a
context) carries the budget left, waits no longer than it, raises ``DeadlineExceeded`` at
the deadline and sends CANCEL; a request that arrived with a context is served under it
(``remaining()``, ``cancelled()``, inherited by the handler's own calls); with tracing on,
every call and every request served goes through here with its span. The plain paths in
``_connection`` only test ``CURRENT.get() is None`` / ``request.context is None`` to come
here. It takes the connection's lock only through the demultiplexer's methods.
"""

from __future__ import annotations

import time
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Callable, Final

import rpc_protocol as wire
from rpc_protocol import Op

from ._async import AsyncResult
from ._context import CURRENT, Served, expired_error, serving_state, wire_context
from ._dispatch import HANDLERS, Dispatcher, describe_exception, must_propagate
from ._demux import Lifecycle
from ._errors import AsyncResultTimeout, ConnectionClosedError, DeadlineExceeded

if TYPE_CHECKING:
    import threading

    from ._config import Config

__all__ = ["ContextCalls"]

_NO_KWARGS: Final[dict[str, Any]] = {}
_monotonic: Final = time.monotonic
_current: Final = CURRENT.get
_set_current: Final = CURRENT.set
_reset_current: Final = CURRENT.reset


class ContextCalls:
    """The call-context paths of :class:`Connection` (mixed in; see the module doc)."""

    _tracer: Any

    if TYPE_CHECKING:  # what the connection and its demultiplexer provide
        _config: Config
        _proto: wire.Connection
        _dispatcher: Dispatcher
        _lock: threading.Lock
        _served: dict[int, Served]

        @property
        def closed(self) -> bool: ...

        def _awaited(self, encode: Callable[..., list[wire.Buffer]], *fields: Any, request: bool = True) -> AsyncResult: ...

        def _pump(self, slot: AsyncResult | None, deadline: float | None, once: bool = False) -> bool: ...

        def _forget(self, slot: AsyncResult) -> int | None: ...

        def _check_not_async(self, op: Op, target: object, args: tuple[Any, ...], coroutine: CoroutineType[Any, Any, Any]) -> None: ...

        @property
        def lifecycle(self) -> Lifecycle: ...

        def _poll_cancels(self) -> None: ...

        def _send(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> None: ...

        def _send_reply(self, seq: int, value: object) -> None: ...

    # -- calls -------------------------------------------------------------------------------

    def _context_request(
        self, op: Op, target: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] = _NO_KWARGS, traceparent: str | None = None
    ) -> Any:
        """``_request`` under a call context: carry it, and wait no longer than its deadline."""
        state = CURRENT.get()
        now = _monotonic()
        end = None if state is None else state.deadline
        if end is not None and end <= now:
            raise expired_error("the call")
        slot = self._send_in_context(op, target, args, kwargs, False, wire_context(state, now, traceparent))
        return self._context_reply(slot, end, now)

    def _context_reply(self, slot: AsyncResult, end: float | None, now: float) -> Any:
        """The reply in ``slot`` of a call sent at ``now`` under a call context, waited for
        no longer than the deadline ``end`` (DeadlineExceeded and CANCEL) or
        ``sync_request_timeout`` (AsyncResultTimeout and CANCEL)."""
        if not slot._ready:
            timeout = self._config.sync_request_timeout
            by_deadline = end is not None and (timeout is None or end < now + timeout)
            if not self._pump(slot, end if by_deadline else None if timeout is None else now + timeout):
                self._abandon(slot)  # CANCEL; the late answer is dropped
                if by_deadline:
                    raise expired_error("the call")
                raise AsyncResultTimeout(f"the peer did not reply within sync_request_timeout ({timeout} s)")
        if end is not None and _monotonic() > end:
            # an answer read after the deadline is late (the callee's own deadline is the
            # same instant, so it may answer just then): a call under a deadline returns
            # before it or raises
            raise expired_error("the call")
        if slot._is_error:
            raise slot._value
        value: Any = slot._value
        return value

    def _context_async_request(self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool) -> AsyncResult:
        """``_async_request`` under a call context: the result expires at the deadline."""
        state = CURRENT.get()
        slot = self._send_in_context(op, target, args, kwargs, by_value, wire_context(state, _monotonic()))
        if state is not None and state.deadline is not None:
            slot._deadline = state.deadline
        return slot

    def _send_in_context(
        self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool, context: wire.CallContext | None
    ) -> AsyncResult:
        proto = self._proto  # (a version-1 peer gets no context)
        return self._awaited(proto.send_request, op, target, args, kwargs, by_value, context if proto.carries_context else None)

    def _traced_request(self, op: Op, target: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] = _NO_KWARGS) -> Any:
        """``_request`` with tracing on: a CLIENT span around the call, its traceparent sent."""
        tracer = self._tracer
        span, traceparent = tracer.start_client_span(self, op, args)
        try:
            value = self._context_request(op, target, args, kwargs, traceparent)
        except BaseException as exc:
            tracer.end_client_span(span, exc)
            raise
        tracer.end_client_span(span, None)
        return value

    def _abandon(self, slot: AsyncResult) -> None:
        """Give up on a request: drop its slot and tell the peer (CANCEL, protocol version
        2). The peer still answers it; the answer is dropped (docs/protocol.md, Cancel)."""
        seq = self._forget(slot)
        if seq is None or not self._proto.carries_context or self.lifecycle is not Lifecycle.OPEN:
            return
        try:
            self._send(self._proto.send, wire.Cancel(seq))
        except (wire.LocalProtocolError, ConnectionClosedError, OSError):
            pass  # answered meanwhile, or closing: nothing to cancel

    # -- serving ---------------------------------------------------------------------------

    def _cancel_received(self, seq: int) -> None:
        """The peer cancelled its request ``seq`` (under ``_lock``, while reading): a
        request served with a call context, or queued to be, learns it through ``cancelled()``."""
        served = self._served.get(seq)
        if served is not None:
            served.cancelled = True

    def _context_arrived(self, seq: int, context: wire.CallContext) -> None:
        """Request ``seq`` arrived with ``context`` and is queued, or taken by the fast path:
        its state is made and registered now (under ``_lock``), so that its deadline counts
        from its arrival, not from when a thread gets to it, and a CANCEL meanwhile is not
        lost (the fast path makes a deadline's alone itself, inlined)."""
        self._served[seq] = serving_state(context, self)

    def _traced_serve(self, request: wire.Request) -> None:
        """``_serve_request`` with tracing on: every request gets a SERVER span."""
        self._serve_in_context(request.seq, request.op, request.target, request.args, request.kwargs, request.context)

    def _serve_arrived(self, seq: int, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], served: Served) -> None:
        """``_serve_in_context`` for a request the fast path took with a deadline only, not yet
        passed (the connection does not trace), under ``served`` (registered as it was taken)."""
        token = _set_current(served)
        try:
            value = HANDLERS[op](self._dispatcher, target, args, kwargs)  # (as _serve_call runs it)
            if type(value) is CoroutineType:
                self._check_not_async(op, target, args, value)
        except BaseException as exc:  # the handler's, for the caller (as in _serve_call)
            _reset_current(token)
            self._served.pop(seq, None)
            if must_propagate(exc):
                raise
            if not self.closed:
                self._send(self._proto.send, describe_exception(seq, exc, self._config))
            return
        _reset_current(token)
        self._served.pop(seq, None)
        self._send_reply(seq, value)  # (a cancelled request is answered too: the peer drops the answer)

    def _serve_in_context(
        self, seq: int, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], context: wire.CallContext | None
    ) -> None:
        """Serve a request (these fields) that carried a call context (or any, when
        tracing): the handler runs under it, and a CANCEL for it sets ``cancelled()``."""
        queued = self._served.get(seq) if self._served else None  # (left there: a CANCEL may come any time)
        served = queued if queued is not None else serving_state(context, self)  # (queued or taken: made then, _context_arrived)
        expired = served.deadline is not None and served.deadline <= _monotonic()
        scope = None if self._tracer is None else self._tracer.server_span(self, op, args, context, served)
        token = _set_current(served)
        self._served[seq] = served  # (one dict operation: atomic; read under _lock by _cancel_received)
        error: BaseException | None = None
        try:
            if expired:
                error = DeadlineExceeded("the caller's deadline had passed when its request was served")
            else:
                value = HANDLERS[op](self._dispatcher, target, args, kwargs)  # (as _serve_call runs it)
                if type(value) is CoroutineType:
                    self._check_not_async(op, target, args, value)
        except BaseException as exc:  # the handler's, for the caller (as in _serve_request)
            if must_propagate(exc):
                raise
            error = exc
        finally:
            _reset_current(token)
            self._served.pop(seq, None)
            if scope is not None:
                scope.close()
        if served.span is not None:
            self._tracer.end_server_span(served, error)
        if error is not None:
            if not self.closed:
                self._send(self._proto.send, describe_exception(seq, error, self._config))
            return
        self._send_reply(seq, value)  # (a cancelled request is answered too: the peer drops the answer)
