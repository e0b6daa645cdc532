"""The asyncio connection: the sans-I/O protocol driven by an ``asyncio.BufferedProtocol``.

Owns :class:`AsyncConnection`. Everything that touches the protocol object, the boxer's
tables or the reply futures runs on the connection's event loop, so no lock is needed:
bytes arrive in ``buffer_updated`` and become events at once; a reply completes its
caller's future (a cancelled caller's reply is dropped); the peer's requests go to
``_serving`` (async handlers on the loop, plain ones in worker threads, where proxies
block: their calls are handed to the loop through ``_blocking``). It shares the wire, the
boxing, the dispatch table, the exposure rules and the errors with the threaded driver;
it never blocks the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Final, Iterator

import rpc_protocol as wire
from rpc_protocol import Event, Op, RemoteProtocolError

from .._boxing import Boxer, release_frames
from .._config import Config, ConfigArg, make_config
from .._connection import _BATCHED_TYPES, _MAX_ITER_BATCH, no_common_version, protocol_for, refusal_preface, shares_version
from .._context import CURRENT, Served, expired_error, tracer_for
from .._dispatch import Dispatcher, checked_batch, rebuild_exception
from .._errors import AsyncResultTimeout, ConnectionClosedError, ConnectionRejectedError, HandshakeTimeout
from .._exposure import Exposure
from .._service import Service, rejection
from ._context_calls import AsyncContextCalls, CallFuture
from ._proxy import AsyncProxy, make_async_proxy_class
from ._serving import HANDLER_THREADS, Serving
from ._threads import ThreadShare

__all__ = ["AsyncConnection", "HANDLER_THREADS"]

log = logging.getLogger("rpc_service.aio")
_NO_KWARGS: Final[dict[str, Any]] = {}
_MAX_REASON: Final = 500
_READ_SIZE: Final = 16 * 1024  # small frames; large payloads are read into the protocol's buffer
_REPLY: Final = wire.Reply
_ERROR_REPLY: Final = wire.ErrorReply
_REQUEST: Final = wire.Request
_RELEASE: Final = wire.Release
_PONG: Final = wire.Pong
_CANCEL: Final = wire.Cancel
_current_call: Final = CURRENT.get  # None: no call context (the plain paths)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of ``future`` as seen (no "exception was never retrieved" log)."""
    if not future.cancelled():
        future.exception()


class _RemoteStopIteration(RuntimeError):
    """The peer raised StopIteration (a future cannot hold one): re-raised as itself on
    worker threads; on the loop, where a coroutine could not raise it anyway, as this."""

    def __init__(self, stop: StopIteration) -> None:
        super().__init__(f"the peer raised StopIteration{stop.args!r}")
        self.stop = stop


class AsyncConnection(AsyncContextCalls, Serving, asyncio.BufferedProtocol):
    """One end of a connection driven by asyncio: ``root`` is the peer's service (an async
    proxy), ``await close()`` ends it; ``async with`` closes it on exit.

    Made by :func:`aio.connect`, :func:`aio.unix_connect` and :class:`aio.Server`. Any number
    of tasks may share one connection; each awaits its own reply.
    """

    def __init__(
        self,
        service: Service,
        config: ConfigArg = None,
        *,
        accepting: bool = False,
        executor: concurrent.futures.Executor | None = None,
        credentials: Any = None,
        read_buffer: memoryview | None = None,
    ) -> None:
        self._config = config = service.connection_config(make_config(config))
        self._service = service
        self._accepting = accepting
        self._executor = executor
        self._owns_executor = False
        self._threads: ThreadShare | None = None  # made on the first plain handler (_serving)
        # threads of the pool the peer's plain handlers may hold at once (aio.Server sets a
        # share of its pool, shared by every connection); the plain hooks' executor
        self._thread_limit: int = HANDLER_THREADS
        self._hook_executor: concurrent.futures.Executor | None = None
        self.credentials = credentials
        exposure = self._exposure = Exposure(config)
        self._boxer = Boxer(self, exposure, make_async_proxy_class)  # type: ignore[arg-type]  # duck-types Connection
        self._dispatcher = Dispatcher(config, exposure)
        self._proto = protocol_for(config, self._boxer)
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._transport: asyncio.Transport | None = None
        self._root: Any = None
        self._open = False
        self._closed = False
        self._slots: dict[int, asyncio.Future[Any]] = {}
        self._room: asyncio.Future[None] | None = None  # set when fewer requests are in flight (_when_room)
        self._tasks: set[asyncio.Future[Any]] = set()
        self._hello: asyncio.Future[wire.Hello] = self._loop.create_future()
        self._hello.add_done_callback(_retrieved)  # a handshake given up on may still fail it
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._paused: asyncio.Future[None] | None = None
        self._calls_sent = 0
        self._calls_served = 0
        self._bytes_received = 0
        # where reads land; a server lends one buffer to all its connections (see Server)
        self._rview = memoryview(bytearray(_READ_SIZE)) if read_buffer is None else read_buffer
        self._payload_view: memoryview | None = None
        self._on_made: Callable[[AsyncConnection], None] | None = None  # set by aio.Server
        self._served: dict[int, Served] = {}  # requests served with a call context (CANCEL, spans)
        self._handler_tasks: dict[int, asyncio.Future[Any]] = {}  # async handlers suspended, by seq (CANCEL)
        self._tracer = tracer_for(config)
        if self._tracer is not None:  # every call and request takes the traced paths (_context_calls)
            self._start = self._traced_start  # type: ignore[method-assign]  # per connection, by design
            self._serve = self._traced_serve  # type: ignore[method-assign]

    # -- public API --------------------------------------------------------------------

    @property
    def root(self) -> Any:
        """The peer's service (an async proxy)."""
        if self._root is None:
            raise ConnectionClosedError("the connection is not open") if self._closed else RuntimeError("handshake not done")
        return self._root

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def config(self) -> Config:
        return self._config

    @property
    def service(self) -> Service:
        return self._service

    @property
    def peer_services(self) -> tuple[str, ...]:
        hello = self._proto.peer_hello
        return hello.services if hello else ()

    def __repr__(self) -> str:
        name = self._config.connid or f"{self._service.get_service_name()}<->{'/'.join(self.peer_services) or '?'}"
        peer = self._transport.get_extra_info("peername") if self._transport is not None else None
        state = "closed" if self._closed else "open" if self._open else "handshake"
        return f"<rpc_service.aio.AsyncConnection {name} with {peer!r} ({state})>"

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def ping(self, data: bytes = b"", timeout: float | None = None) -> None:
        """A round trip; raises if the peer does not answer (in ``timeout`` seconds)."""
        self._check_open()
        seq = self._proto.next_seq()
        future = self._slots[seq] = self._loop.create_future()
        self._write(self._encode(self._proto.send, wire.Ping(seq, data)))
        try:
            value = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self._slots.pop(seq, None)
            raise AsyncResultTimeout(f"the peer did not answer a ping within {timeout} s") from None
        if value != data:
            raise RemoteProtocolError("the peer answered a ping with other data")

    async def close(self) -> None:
        """Close the connection; pending calls fail with ConnectionClosedError."""
        if not self._closed and self._transport is not None:
            try:
                self._write(self._proto.send(wire.Close("closed by peer")))
            except Exception:
                pass  # best effort
            self._transport.close()
            self._shutdown()
        if self._transport is not None:
            await asyncio.shield(self._lost)

    # -- the asyncio.Protocol side -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._on_made is not None:
            self._on_made(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where asyncio reads into: straight into the protocol's buffer while a large
        payload arrives (no copy), else a small reusable buffer (no 256 KiB allocation
        per read, as ``data_received`` would cost)."""
        stale, self._payload_view = self._payload_view, None
        if stale is not None:  # the last read into it failed (would block): not reported
            stale.release()
        payload = self._proto.payload_buffer()
        if payload is not None:
            self._payload_view = payload
            return payload
        return self._rview

    def buffer_updated(self, nbytes: int) -> None:
        payload, self._payload_view = self._payload_view, None
        self._bytes_received += nbytes
        try:
            if payload is not None:
                payload.release()
                events = self._proto.payload_received(nbytes)
            else:
                events = self._proto.receive_data(self._rview[:nbytes])
        except RemoteProtocolError as exc:
            log.warning("%r: closing, the peer broke the protocol: %s", self, exc)
            self._abort(exc)
            return
        self._events(events)
        if self._proto.error is not None:  # bad bytes after the events just handled
            log.warning("%r: closing, the peer broke the protocol: %s", self, self._proto.error)
            self._abort(self._proto.error)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        payload, self._payload_view = self._payload_view, None
        if payload is not None:
            payload.release()
        self._shutdown()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = self._loop.create_future()

    def resume_writing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    # -- events --------------------------------------------------------------------------

    def _events(self, events: list[Event]) -> None:
        slots = self._slots
        room = self._room
        if room is not None and not room.done():  # calls wait for fewer in flight (_when_room)
            self._loop.call_soon(self._wake_room)
        for event in events:
            kind = type(event)
            if kind is _REPLY:
                future = slots.pop(event.seq, None)  # type: ignore[union-attr]
                if future is not None and not future.done():  # else: its caller gave up
                    future.set_result(event.value)  # type: ignore[union-attr]
            elif kind is _ERROR_REPLY:
                future = slots.pop(event.seq, None)  # type: ignore[union-attr]
                if future is not None and not future.done():
                    exc = rebuild_exception(event)  # type: ignore[arg-type]
                    if isinstance(exc, StopIteration):  # a future cannot hold StopIteration
                        exc = _RemoteStopIteration(exc)
                    future.set_exception(exc)
            elif kind is _REQUEST:
                self._calls_served += 1
                if event.context is None:  # type: ignore[union-attr]
                    self._serve(event)  # type: ignore[arg-type]
                else:
                    self._serve_in_context(event)  # type: ignore[arg-type]
            elif kind is _RELEASE:
                for oid, count in event.refs:  # type: ignore[union-attr]
                    self._boxer.release(oid, count)
            elif kind is _PONG:
                future = slots.pop(event.seq, None)  # type: ignore[union-attr]
                if future is not None and not future.done():
                    future.set_result(event.payload)  # type: ignore[union-attr]
            elif kind is _CANCEL:
                self._cancel_received(event.seq)  # type: ignore[union-attr]
            elif kind is wire.Ping:
                self._write(self._encode(self._proto.send, wire.Pong(event.seq, event.payload)))  # type: ignore[union-attr]
            elif kind is wire.Hello:
                if not self._hello.done():
                    self._hello.set_result(event)  # type: ignore[arg-type]
            elif kind is wire.Close:
                reason = event.reason  # type: ignore[union-attr]
                if not self._hello.done():
                    error: Exception = (
                        ConnectionClosedError(f"the peer closed the connection during the handshake: {reason}")
                        if self._accepting
                        else ConnectionRejectedError(f"the server rejected the connection: {reason}")
                    )
                    self._hello.set_exception(error)
                log.debug("%r: the peer closed: %s", self, reason)
                try:
                    self._write(self._proto.send(wire.Close("closing")))
                except Exception:
                    pass
                if self._transport is not None:
                    self._transport.close()
                self._shutdown()
                return
            elif kind is wire.Preface and self._accepting and not shares_version(event):  # type: ignore[arg-type]
                self._write(refusal_preface())
                exc = no_common_version(event)  # type: ignore[arg-type]  # (a Preface: kind is its type)
                log.warning("%r: closing, the peer broke the protocol: %s", self, exc)
                if not self._hello.done():
                    self._hello.set_exception(exc)
                if self._transport is not None:
                    self._transport.close()  # (not abort: our preface goes out first)
                self._shutdown()
                return
            # else a Preface: the version is settled (or, accepting, checked)

    def _abort(self, exc: BaseException) -> None:
        if not self._hello.done():
            self._hello.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()
        self._shutdown()

    def _wake_room(self) -> None:
        """Wake the calls waiting for fewer requests in flight, if there are now (or closed)."""
        room = self._room
        if room is not None and not room.done() and (
            self._closed or self._proto.requests_in_flight < self._config.max_pending_requests
        ):
            room.set_result(None)

    def _shutdown(self) -> None:
        """Fail every pending call and run on_disconnect (once)."""
        if self._closed:
            return
        self._closed = True
        was_open, self._open = self._open, False
        self._wake_room()  # (they fail: closed)
        slots, self._slots = self._slots, {}
        for future in slots.values():
            if not future.done():
                future.set_exception(ConnectionClosedError("the connection closed before the reply arrived"))
        if not self._hello.done():
            self._hello.set_exception(ConnectionClosedError("the peer closed the connection during the handshake"))
        self.resume_writing()
        for task in list(self._tasks):  # handlers still running: nobody waits for their replies
            if isinstance(task, asyncio.Task):
                task.cancel()
        if self._threads is not None:  # plain handlers not started yet: nobody waits for them
            self._threads.close()
        self._boxer.clear()
        if was_open:
            self._run_hook(self._service.on_disconnect, "on_disconnect")
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False)  # queued work (on_disconnect) still runs

    # -- sending -------------------------------------------------------------------------

    def _encode(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> list[wire.Buffer]:
        """The frame ``encode(*fields)`` after the releases owed to the peer (as ``_demux``)."""
        boxer = self._boxer
        releases = boxer.take_releases() if boxer.releases_owed else ()
        try:
            buffers = encode(*fields)
        except BaseException:
            boxer.rollback()
            if releases:
                boxer.releases_owed.extendleft(reversed(releases))
            raise
        boxer.commit()
        if releases:
            return [*release_frames(self._proto, releases), *buffers]
        return buffers

    def _write(self, buffers: list[wire.Buffer]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosedError("the connection is closed")
        transport.writelines(buffers)

    def _check_open(self) -> None:
        if not self._open:
            raise ConnectionClosedError("the connection is closed" if self._closed else "the connection is not open yet")

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _start(
        self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool = False, name: str | None = None
    ) -> Awaitable[Any]:
        """Send a request now (on the loop); the awaitable of its reply. With ``name``, the
        request is the call ``target.name(*args, **kwargs)`` (``op`` CALLATTR). With
        ``max_pending_requests`` of ours in flight (the peer cuts off a peer with more, and
        by default its limit is ours), the request waits for an answer first."""
        if self._proto.requests_in_flight >= self._config.max_pending_requests and self._open:
            return asyncio.ensure_future(self._when_room(op, target, args, kwargs, by_value, name), loop=self._loop)
        if _current_call() is not None:  # under a deadline, or serving a call that carried one
            return self._start_in_context(op, target, args if name is None else (name, *args), kwargs, by_value)
        if not self._open:
            self._check_open()
        proto = self._proto
        if name is not None:  # (the protocol encodes a call from a cached prefix)
            future = self._sent(proto.send_call, target, name, args, kwargs)
        else:
            future = self._sent(proto.send_request, op, target, args, kwargs, by_value)
        if self._paused is not None:  # the transport's buffer is full: the caller waits for it too
            return self._after_drain(future)
        return future

    def _sent(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> CallFuture:
        """Send the request ``encode(seq, *fields)`` (a send method of the protocol connection)
        under a fresh sequence number; its future, in the reply slots (cancelling it sends CANCEL)."""
        seq = self._proto.next_seq()
        future = CallFuture(loop=self._loop)
        future._rpc_conn = self
        future._rpc_seq = seq
        self._slots[seq] = future
        try:
            self._write(self._encode(encode, seq, *fields))
        except BaseException:
            del self._slots[seq]
            raise
        self._calls_sent += 1
        return future

    async def _when_room(
        self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool, name: str | None
    ) -> Any:
        """``_start(...)``'s reply, the request sent once fewer than ``max_pending_requests``
        of ours are in flight (``_events`` wakes the waiters as answers come); under a
        deadline, DeadlineExceeded when it passes first."""
        state = _current_call()
        due = None if state is None else state.deadline
        while self._proto.requests_in_flight >= self._config.max_pending_requests:
            self._check_open()
            room = self._room
            if room is None or room.done():
                room = self._room = self._loop.create_future()
            if due is None:
                await asyncio.shield(room)  # (one waiter cancelled: the others still wait on it)
                continue
            left = due - time.monotonic()
            if left <= 0:
                raise expired_error("the call")
            try:
                await asyncio.wait_for(asyncio.shield(room), left)
            except asyncio.TimeoutError:
                raise expired_error("the call") from None
        return await self._start(op, target, args, kwargs, by_value, name)

    def _after_drain(self, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """The call's outcome once the transport's buffer drained (a Task: a future too)."""
        return asyncio.ensure_future(self._drained(future), loop=self._loop)

    async def _drained(self, future: asyncio.Future[Any]) -> Any:
        paused = self._paused
        if paused is not None:
            try:
                await asyncio.shield(paused)
            except asyncio.CancelledError:
                future.cancel()  # (the call itself: CANCEL is sent)
                raise
        return await future

    def _request(self, op: Op, target: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] = _NO_KWARGS) -> Any:
        """A proxy operation: on the loop, an awaitable; on another thread, the value (blocking)."""
        if threading.get_ident() == self._loop_thread:
            return self._start(op, target, args, kwargs)
        return self._blocking(op, target, args, kwargs)

    def _call(self, target: object, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``proxy.method(*args, **kwargs)``: as ``_request(Op.CALLATTR, target, (name, *args), kwargs)``."""
        if threading.get_ident() == self._loop_thread:
            return self._start(Op.CALLATTR, target, args, kwargs, False, name)
        return self._blocking(Op.CALLATTR, target, (name, *args), kwargs)

    def _blocking(self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A request from a worker thread: sent by the loop, waited for here."""
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def chain(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                result.cancel()
            elif future.exception() is not None:
                exc = future.exception()
                result.set_exception(exc.stop if isinstance(exc, _RemoteStopIteration) else exc)
            else:
                result.set_result(future.result())

        started: list[asyncio.Future[Any]] = []

        def start() -> None:  # (run in a copy of this thread's context: its deadline applies)
            try:
                awaitable = self._start(op, target, args, kwargs)
            except BaseException as exc:
                result.set_exception(exc)
                return
            future = asyncio.ensure_future(awaitable)
            started.append(future)
            future.add_done_callback(chain)

        try:
            self._loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop is closed
            raise ConnectionClosedError("the connection's event loop is closed") from None
        timeout = self._config.sync_request_timeout
        threads = self._threads
        try:
            if threads is not None:  # (a thread of this connection's share serves it meanwhile)
                return threads.wait(result, timeout)
            return result.result(timeout)
        except (concurrent.futures.TimeoutError, TimeoutError):
            if result.done():  # the request's own outcome (DeadlineExceeded, the peer's TimeoutError),
                return result.result(0)  # not the wait's (they are one class from Python 3.11 on)
            if started:  # CANCEL (protocol version 2); a late reply is dropped
                self._loop.call_soon_threadsafe(started[0].cancel)
            raise AsyncResultTimeout(f"the peer did not reply within sync_request_timeout ({timeout} s)") from None

    # -- iteration and pickling (what the shared proxy code asks of a connection) ----------

    def _iterate(self, proxy: AsyncProxy) -> Any:
        """``iter(proxy)`` on a worker thread (blocking; batched for builtin containers)."""
        iterator = self._blocking(Op.CALLATTR, proxy, ("__iter__",), _NO_KWARGS)
        return self._batches(iterator, type(proxy)._rpc_type in _BATCHED_TYPES)

    def _batches(self, iterator: Any, batched: bool) -> Iterator[Any]:
        batch = self._config.iter_batch if batched else 1
        empties = 0
        while True:
            items, exhausted, empties = checked_batch(self._blocking(Op.ITER_NEXT, iterator, (batch,), _NO_KWARGS), empties)
            yield from items
            if exhausted:
                return
            if batched:
                batch = min(batch * 2, max(batch, _MAX_ITER_BATCH))

    async def _aiterate(self, proxy: AsyncProxy) -> AsyncIterator[Any]:
        """``async for item in proxy``: batched for builtin containers, else one item per
        round trip (as the threaded driver)."""
        iterator = await self._start(Op.CALLATTR, proxy, ("__iter__",), _NO_KWARGS)
        batched = type(proxy)._rpc_type in _BATCHED_TYPES
        batch = self._config.iter_batch if batched else 1
        empties = 0
        while True:
            items, exhausted, empties = checked_batch(await self._start(Op.ITER_NEXT, iterator, (batch,), _NO_KWARGS), empties)
            for item in items:
                yield item
            if exhausted:
                return
            if batched:
                batch = min(batch * 2, max(batch, _MAX_ITER_BATCH))

    def _reduce_proxy(self, proxy: AsyncProxy, protocol: Any) -> Any:
        raise TypeError("cannot pickle or copy an async proxy")

    # -- handshake -------------------------------------------------------------------------

    async def _handshake(self) -> None:
        """Exchange prefaces and hellos within ``handshake_timeout``; on return ``root`` is
        usable and on_connect ran (on the accepting side, before our preface and Hello were sent)."""
        limit = self._config.handshake_timeout
        proto = self._proto
        ours = wire.Hello(services=self._service.get_service_aliases(), root=self._service)
        try:
            if not self._accepting:  # preface and Hello in one write (accepting: both after on_connect)
                self._write([*proto.send(wire.Preface()), *self._encode(proto.send, ours)])
            try:
                hello = await asyncio.wait_for(asyncio.shield(self._hello), limit)
            except asyncio.TimeoutError:
                raise HandshakeTimeout(f"the peer did not complete the handshake within {limit:.3g} s") from None
            self._root = hello.root
            if self._accepting:
                try:
                    await self._call_hook(self._service.on_connect)
                except Exception as exc:
                    reason = rejection(self._service, exc)[:_MAX_REASON]
                    try:
                        self._write([*proto.send(wire.Preface()), *proto.send(wire.Close(reason))])
                    except Exception:
                        pass
                    raise ConnectionRejectedError(f"rejected the client: {reason}") from exc
                self._write([*proto.send(wire.Preface()), *self._encode(proto.send, ours)])
            self._open = not self._closed
            if not self._accepting:
                await self._call_hook(self._service.on_connect)
        except BaseException:
            if self._transport is not None:
                self._transport.close()
            self._open = False
            self._shutdown()
            raise
