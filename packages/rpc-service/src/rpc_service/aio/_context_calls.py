"""Calls and serving with a call context, on the asyncio driver.

Owns the paths an :class:`AsyncConnection` takes instead of its plain ones when a call
context is involved: a call started under ``deadline()`` (or inside a handler serving a
call with a context) carries the budget left, fails with ``DeadlineExceeded`` at the
deadline (a loop timer, not the peer) and sends CANCEL; a request that arrived with a
context is served under it (``remaining()``, ``cancelled()``, inherited by the handler's
calls; an ``async def`` handler's task is cancelled on CANCEL); with tracing on, every call
and request goes through here with its span. Also :class:`CallFuture`, the future of every
call: cancelling it (a cancelled task awaiting it) sends CANCEL. Runs on the loop only.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Final

import rpc_protocol as wire
from rpc_protocol import Op

from .._context import CURRENT, Served, expired_error, serving_state, wire_context
from .._errors import ConnectionClosedError, DeadlineExceeded
from ._serving import Serving


__all__ = ["AsyncContextCalls", "CallFuture"]

_NO_KWARGS: Final[dict[str, Any]] = {}
_monotonic: Final = time.monotonic


class CallFuture(asyncio.Future):  # type: ignore[type-arg]  # (asyncio.Future[Any] is not subclassable at run time on 3.10)
    """The reply of one call. Cancelling it (its awaiting task was cancelled, or
    ``asyncio.wait_for`` gave up) drops the slot and tells the peer (CANCEL)."""

    __slots__ = ("_rpc_conn", "_rpc_seq")
    _rpc_conn: AsyncContextCalls
    _rpc_seq: int

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._rpc_conn._abandon(self._rpc_seq, self)
        return True


class AsyncContextCalls:
    """The call-context paths of :class:`AsyncConnection` (mixed in; see the module doc)."""

    _tracer: Any
    _served: dict[int, Served]
    _handler_tasks: dict[int, asyncio.Future[Any]]

    if TYPE_CHECKING:  # what the connection provides
        _slots: dict[int, asyncio.Future[Any]]
        _open: bool
        _proto: wire.Connection
        _loop: asyncio.AbstractEventLoop
        _paused: asyncio.Future[None] | None

        def _encode(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> list[wire.Buffer]: ...

        def _write(self, buffers: list[wire.Buffer]) -> None: ...

        def _check_open(self) -> None: ...

        def _sent(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> CallFuture: ...

        def _after_drain(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]: ...

        def _reply_error(self, seq: int, exc: BaseException) -> None: ...

    # -- calls -------------------------------------------------------------------------------

    def _abandon(self, seq: int, future: asyncio.Future[Any]) -> None:
        """Give up on request ``seq``: drop its slot, send CANCEL (protocol version 2)."""
        if self._slots.get(seq) is not future:
            return  # answered already
        del self._slots[seq]
        if self._open and self._proto.carries_context:
            try:
                self._write(self._encode(self._proto.send, wire.Cancel(seq)))
            except (wire.LocalProtocolError, ConnectionClosedError):
                pass

    def _start_in_context(
        self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool = False
    ) -> Awaitable[Any]:
        """``_start`` under a call context (see the module doc)."""
        future = self._send_in_context(op, target, args, kwargs, by_value, None)
        if self._paused is not None:
            return self._after_drain(future)
        return future

    def _send_in_context(
        self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool, traceparent: str | None
    ) -> CallFuture:
        if not self._open:
            self._check_open()
        state = CURRENT.get()
        now = _monotonic()
        end = None if state is None else state.deadline
        if end is not None and end <= now:
            raise expired_error("the call")
        proto = self._proto  # (a version-1 peer gets no context)
        context = wire_context(state, now, traceparent) if proto.carries_context else None
        future = self._sent(proto.send_request, op, target, args, kwargs, by_value, context)
        if end is not None:
            timer = self._loop.call_later(end - now, self._expire, future)
            future.add_done_callback(lambda _: timer.cancel())
        return future

    def _expire(self, future: CallFuture) -> None:
        """The deadline of a call passed: fail it now and send CANCEL."""
        if not future.done():
            self._abandon(future._rpc_seq, future)
            future.set_exception(expired_error("the call"))

    def _traced_start(
        self,
        op: Op,
        target: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] = _NO_KWARGS,
        by_value: bool = False,
        name: str | None = None,
    ) -> Awaitable[Any]:
        """``_start`` with tracing on: a CLIENT span until the reply (or the failure)."""
        if name is not None:  # (a method call: CALLATTR with the name first)
            args = (name, *args)
        tracer = self._tracer
        span, traceparent = tracer.start_client_span(self, op, args)
        try:
            future = self._send_in_context(op, target, args, kwargs, by_value, traceparent)
        except BaseException as exc:
            tracer.end_client_span(span, exc)
            raise
        future.add_done_callback(lambda done: tracer.end_client_span(span, _outcome(done)))
        if self._paused is not None:
            return self._after_drain(future)
        return future

    # -- serving ---------------------------------------------------------------------------

    def _traced_serve(self, request: wire.Request) -> None:
        self._serve_in_context(request)

    def _serve_in_context(self, request: wire.Request) -> None:
        """Serve a request that carried a call context (or any, when tracing): its handler
        runs in a copy of the loop's context where the call state (and the SERVER span) is
        current; a CANCEL sets ``cancelled()`` and cancels an ``async def`` handler's task."""
        seq = request.seq
        served = serving_state(request.context)
        context = contextvars.copy_context()
        context.run(CURRENT.set, served)
        if self._tracer is not None:
            context.run(self._tracer.attach, self._tracer.start_server_span(self, request.op, request.args, request.context, served))
        self._served[seq] = served  # until answered (_answered)
        if served.deadline is not None and served.deadline <= _monotonic():
            self._reply_error(seq, DeadlineExceeded("the caller's deadline had passed when its request arrived"))
            return
        context.run(Serving._serve, self, request)  # type: ignore[arg-type]  # self is an AsyncConnection

    def _cancel_received(self, seq: int) -> None:
        """The peer cancelled its request ``seq``: ``cancelled()`` turns true for it, and an
        ``async def`` handler's task (with a call context or without) is cancelled."""
        served = self._served.get(seq)
        if served is not None:
            served.cancelled = True
        task = self._handler_tasks.get(seq)
        if task is not None:
            task.cancel()

    def _answered(self, seq: int, error: BaseException | None) -> None:
        """Request ``seq`` is being answered: forget it, end its span (``_reply*`` call it)."""
        served = self._served.pop(seq, None)
        if served is not None and served.span is not None:
            self._tracer.end_server_span(served, error)


def _outcome(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()
