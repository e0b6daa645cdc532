"""The connection: a service on each side of a stream, talking the rpc protocol.

Owns what the events of one ``rpc_protocol.Connection`` mean for a service: the handshake
with a deadline (the accepting side runs ``on_connect`` before it sends its Hello, and
rejects the peer with a reason when ``on_connect`` raises), the requests proxies make, the
serving of the peer's requests, ping, close and ``on_disconnect``. Threads, locks and
reading belong to the demultiplexer it is built on (``_demux``): this module takes no lock
and touches no socket itself.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from types import CoroutineType
from typing import Any, Callable, Final, Iterator

import rpc_protocol as wire
from rpc_protocol import Event, Op, RemoteProtocolError

from ._async import AsyncResult
from ._boxing import Boxer
from ._by_value import ByValue
from ._config import Config, ConfigArg, make_config
from ._context import CURRENT, expired_error, tracer_for
from ._context_calls import ContextCalls
from ._demux import ConnectionStats, Demux, Lifecycle
from ._dispatch import HANDLERS, Dispatcher, checked_batch, describe_exception, must_propagate, rebuild_exception, unpickler
from ._errors import AsyncResultTimeout, ConnectionClosedError, ConnectionRejectedError, HandshakeTimeout
from ._exposure import Exposure
from ._fastpath import call, serve_fast
from ._proxy import Proxy
from ._service import Service, rejection
from ._streams import Stream

__all__ = ["Connection", "ConnectionStats", "Lifecycle"]

log = logging.getLogger("rpc_service")
_MAX_ITER_BATCH: Final = 8192
_BATCHED_TYPES: Final = frozenset(
    ("builtins", name)
    for name in ("list", "tuple", "dict", "set", "frozenset", "str", "bytes", "bytearray", "range")
) | {("builtins", "dict_keys"), ("builtins", "dict_values"), ("builtins", "dict_items")}
_NO_KWARGS: Final[dict[str, Any]] = {}
_MAX_REASON: Final = 500  # characters of a rejection reason sent to the peer
_monotonic: Final = time.monotonic
_current_call: Final = CURRENT.get  # None: no call context (the plain paths)
_PREFACE: Final = wire.Preface()  # (immutable: one for every handshake)
_ROOM_TURN: Final = 0.05  # seconds between looks while waiting for fewer requests in flight
_set_call: Final = CURRENT.set
_reset_call: Final = CURRENT.reset


def protocol_for(config: Config, boxer: Boxer) -> wire.Connection:
    """The sans-I/O protocol connection for ``config``'s limits, boxing through ``boxer``
    (shared by the threaded and the asyncio drivers)."""
    shared = _shared_cache(config.max_frame_size, config.max_pending_requests, config.max_depth)
    return wire.Connection(shared.config, box=boxer.box, unbox=boxer.unbox, unbox_backref=boxer.local, shared=shared)


@lru_cache(maxsize=64)
def _shared_cache(max_frame_size: int, max_pending: int, max_depth: int) -> wire.SharedCache:
    """One (frozen) protocol config for each set of limits, made once rather than per
    connection, with what the connections made with it share (what their handshakes and
    first calls decode and encode: ``rpc_protocol.SharedCache``)."""
    config = wire.ProtocolConfig(max_frame_size=max_frame_size, max_pending=max_pending, limits=wire.CodecLimits(max_depth=max_depth))
    return wire.SharedCache(config)


def shares_version(peer: wire.Preface) -> bool:
    """Whether the peer's preface announces a version this side speaks."""
    return max(peer.min_version, wire.MIN_VERSION) <= min(peer.max_version, wire.MAX_VERSION)


def refusal_preface() -> list[wire.Buffer]:
    """Our preface, for a peer with no version in common: the accepting side, which holds
    its preface until on_connect ran, sends it at once to such a peer so that the peer learns
    our range and can say why (docs/protocol.md §1). From a fresh protocol connection: the
    connection's own would fail settlement before returning the bytes."""
    return wire.Connection().send(wire.Preface())


def no_common_version(peer: wire.Preface) -> wire.HandshakeError:
    """The HandshakeError naming both version ranges, for a peer whose preface announced no
    version in common. From a fresh protocol connection that received that preface: the
    connection's own may have failed already on bytes the peer sent after it."""
    probe = wire.Connection()
    probe.receive_data(b"".join(wire.Connection().send(wire.Preface(peer.min_version, peer.max_version))))
    try:
        probe.send(wire.Preface())
    except wire.HandshakeError as exc:
        return exc
    raise AssertionError(f"{peer} shares a version with this side")  # (callers check shares_version first)


class Connection(ContextCalls, Demux):
    """One end of a connection: ``root`` is the peer's service, ``close()`` ends it.

    Made by the factories (``connect``, ``connect_stream``...) and by servers; not usually
    instantiated directly. Usable as a context manager. Any number of threads may use one
    connection at once; each gets its own replies (see ``_demux``).
    """

    def __init__(
        self,
        service: Service,
        stream: Stream,
        config: ConfigArg = None,
        *,
        credentials: Any = None,
    ) -> None:
        self._config = config = service.connection_config(make_config(config))
        self._service = service
        self._stream = stream
        self.credentials = credentials
        exposure = Exposure(config)
        self._boxer = Boxer(self, exposure)
        self._dispatcher = Dispatcher(config, exposure)
        self._proto = protocol_for(config, self._boxer)
        self._root: Any = None
        self._before_closed_ran = False
        self._before_closed_lock = threading.RLock()  # a concurrent close() waits for the hook
        self._init_demux()
        self._tracer = tracer_for(config)
        if self._tracer is not None:  # every call and request takes the traced paths (_context_calls)
            self._request = self._traced_request  # type: ignore[method-assign]  # per connection, by design
            self._serve_request = self._traced_serve  # type: ignore[method-assign]
        set_write_timeout = getattr(stream, "set_write_timeout", None)
        if set_write_timeout is not None:
            set_write_timeout(config.write_timeout)

    # -- public API --------------------------------------------------------------------

    @property
    def root(self) -> Any:
        """The peer's service (a proxy)."""
        if self._root is None:
            raise ConnectionClosedError("the connection is not open") if self.closed else RuntimeError("handshake not done")
        return self._root

    @property
    def config(self) -> Config:
        return self._config

    @property
    def service(self) -> Service:
        """This side's service object for the connection."""
        return self._service

    @property
    def peer_services(self) -> tuple[str, ...]:
        """The service names the peer announced in its handshake."""
        hello = self._proto.peer_hello
        return hello.services if hello else ()

    def __repr__(self) -> str:
        name = self._config.connid or f"{self._service.get_service_name()}<->{'/'.join(self.peer_services) or '?'}"
        return f"<rpc_service.Connection {name} over {self._stream!r} ({self._life.value})>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._stream.fileno()

    def ping(self, data: bytes = b"", timeout: float | None = None) -> None:
        """A round trip; raises if the peer does not answer (in ``timeout`` seconds)."""
        slot = self._awaited(lambda seq: self._proto.send(wire.Ping(seq, data)), request=False)
        with self._lock:
            self._calls_sent -= 1  # a ping is not a call
        slot.set_expiry(timeout)
        try:
            value = slot.value
        except AsyncResultTimeout:
            self._forget(slot)  # a late pong is dropped
            raise AsyncResultTimeout(f"the peer did not answer a ping within {timeout} s") from None
        if value != data:
            raise RemoteProtocolError("the peer answered a ping with other data")

    def serve(self, timeout: float | None = 1.0) -> bool:
        """Serve one incoming event (or read what arrived); False when nothing arrived
        within ``timeout`` seconds. Replies for other threads are delivered meanwhile."""
        return self._pump(None, None if timeout is None else _monotonic() + timeout, once=True)

    def serve_all(self) -> None:
        """Serve until the connection closes, then close it."""
        try:
            while True:  # a lone request is read and served on the fast path, the rest as usual
                if not serve_fast(self):
                    self._pump(None, None, once=True)
        except ConnectionClosedError:
            pass
        finally:
            self.close()

    def poll_all(self, timeout: float = 0) -> bool:
        """Serve every event that arrives within ``timeout`` seconds of the previous one."""
        served = False
        try:
            while self.serve(timeout):
                served = True
        except ConnectionClosedError:
            pass
        return served

    def close(self) -> None:
        """Close the connection; waiting calls fail with ConnectionClosedError."""
        if self._config.before_closed is not None:
            self._run_before_closed(self._config.before_closed)
        before = self._mark_closing()
        if before is None:
            return
        if self._write_lock.acquire(timeout=1):  # a write stuck on a peer that does not read: skip the Close
            try:
                with self._lock:
                    buffers = self._proto.send(wire.Close("closed by peer"))
                self._stream.write(buffers)
            except Exception:
                pass  # best effort: the peer may be gone already
            finally:
                self._write_lock.release()
        self._shutdown(notify=before is Lifecycle.OPEN)

    def _run_before_closed(self, hook: Callable[[Any], object]) -> None:
        """The ``before_closed`` config hook, once, while the peer's root is still usable."""
        with self._before_closed_lock:
            if self.closed or self._root is None or self._before_closed_ran:
                return
            self._before_closed_ran = True
            try:
                hook(self._root)
            except Exception:
                log.exception("%r: before_closed raised", self)

    # -- requests ----------------------------------------------------------------------

    _call = call  # proxy.method(*args, **kwargs): the fused fast path (_fastpath), else _request

    def _request(self, op: Op, target: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] = _NO_KWARGS) -> Any:
        """Send a request and wait for its reply (the hot path of every proxy operation)."""
        if _current_call() is not None:  # under a deadline, or serving a call that carried one
            return self._context_request(op, target, args, kwargs)
        slot = self._awaited(self._proto.send_request, op, target, args, kwargs)
        if slot._ready:
            if slot._is_error:
                raise slot._value
            return slot._value
        timeout = self._config.sync_request_timeout
        return self._reply(slot, None if timeout is None else _monotonic() + timeout)

    def _reply(self, slot: AsyncResult, deadline: float | None) -> Any:
        """The reply in ``slot`` once it comes (or its error, raised); AsyncResultTimeout
        and CANCEL (protocol version 2) when ``sync_request_timeout`` ends at ``deadline``
        first (a late reply is dropped)."""
        if not slot._ready and not self._pump(slot, deadline):
            self._abandon(slot)
            raise AsyncResultTimeout(f"the peer did not reply within sync_request_timeout ({self._config.sync_request_timeout} s)")
        if slot._is_error:
            raise slot._value
        return slot._value

    def _async_request(self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool = False) -> AsyncResult:
        if _current_call() is not None:
            return self._context_async_request(op, target, args, kwargs, by_value)
        return self._awaited(self._proto.send_request, op, target, args, kwargs, by_value)

    def _wait_for_room(self) -> None:
        """``_awaited``'s wait: serve the connection (or let another thread) until fewer than
        ``max_pending_requests`` of ours are in flight, looking again at least every
        ``_ROOM_TURN`` seconds (an answer to any of them makes room); at most
        ``sync_request_timeout`` (AsyncResultTimeout), or the call's deadline (DeadlineExceeded)."""
        limit = self._config.max_pending_requests
        timeout = self._config.sync_request_timeout
        end = None if timeout is None else _monotonic() + timeout
        state = _current_call()
        due = None if state is None else state.deadline
        while self._proto.requests_in_flight >= limit:
            now = _monotonic()
            if due is not None and now >= due:
                raise expired_error("the call")
            if end is not None and now >= end:
                raise AsyncResultTimeout(f"{limit} requests (max_pending_requests) stayed in flight for sync_request_timeout ({timeout} s)")
            turn = min(now + _ROOM_TURN, *(at for at in (end, due) if at is not None))
            with self._lock:
                oldest = next(iter(self._slots.values()), None)  # (None: only abandoned ones are in flight)
            self._pump(oldest, turn, once=oldest is None)

    def _wait(self, slot: AsyncResult, deadline: float | None) -> None:
        """Serve the connection (or let another thread do it) until ``slot`` is ready."""
        if not self._pump(slot, deadline):
            # The slot stays registered: an AsyncResult may still be collected later.
            # Callers that abandon the request (synchronous calls, ping) _forget it.
            raise AsyncResultTimeout("the peer did not reply in time")

    def _iterate(self, proxy: Proxy) -> Any:
        """``iter(proxy)``: the peer's iterator for the object.

        For the builtin containers (exactly ``list``, ``dict``, ``str``...), items are fetched
        in growing batches: reading ahead in those cannot change what the caller observes
        beyond what concurrent mutation would anyway. Any other iterable, generators
        included, is iterated one item per round trip, as locally.
        """
        iterator = self._request(Op.CALLATTR, proxy, ("__iter__",))
        if type(proxy)._rpc_type in _BATCHED_TYPES:
            return self._batches(iterator)
        return iterator

    def _batches(self, iterator: Any, batch: int | None = None) -> Iterator[Any]:
        """Items of the peer's ``iterator``, fetched ``batch`` at a time (doubling to a cap)."""
        batch = self._config.iter_batch if batch is None else batch
        empties = 0
        while True:
            items, exhausted, empties = checked_batch(self._request(Op.ITER_NEXT, iterator, (batch,)), empties)
            yield from items
            if exhausted:
                return
            batch = min(batch * 2, max(batch, _MAX_ITER_BATCH))

    def _reduce_proxy(self, proxy: Proxy, protocol: Any) -> Any:
        """Pickling or copying a proxy: only by value, and only when both sides allow pickle."""
        if not self._config.allow_pickle:
            raise TypeError("cannot pickle or copy a proxy: pickle is not enabled on this side (allow_pickle)")
        import pickle

        data = self._request(Op.PICKLE, proxy, (protocol if type(protocol) is int else pickle.DEFAULT_PROTOCOL,))
        if type(data) is not bytes:
            raise RemoteProtocolError("the peer answered a pickle request without bytes")
        return unpickler(self._config), (data,)

    def _run_callback(self, callback: Callable[[AsyncResult], object], result: AsyncResult) -> None:
        try:
            callback(result)
        except Exception:
            log.exception("%r: an AsyncResult callback raised", self)

    # -- what the peer's events mean (called by the demultiplexer, no lock held) ----------

    def _dispatch(self, event: Event) -> None:
        if type(event) is wire.Request:
            self._serve_request(event)
        elif type(event) is wire.Ping:
            self._send(self._proto.send, wire.Pong(event.seq, event.payload))
        elif type(event) is wire.Close:
            log.debug("%r: the peer closed: %s", self, event.reason)
            self._send_close_reply()
            self._shutdown()
            raise ConnectionClosedError("the peer closed the connection")

    def _rebuild(self, error: wire.ErrorReply) -> BaseException:
        return rebuild_exception(error)

    def _protocol_broken(self, exc: RemoteProtocolError) -> None:
        if self.closed:  # (closing here: what was read meanwhile may name objects no longer lent)
            log.debug("%r: closed, then could not read what the peer had sent: %s", self, exc)
            return
        log.warning("%r: closing, the peer broke the protocol: %s", self, exc)

    def _check_not_async(self, op: Op, target: object, args: tuple[Any, ...], coroutine: CoroutineType[Any, Any, Any]) -> None:
        """A handler returned ``coroutine``: when that is the call of an ``async def`` handler,
        which this driver cannot await, a clear TypeError for the caller (the coroutine closed)."""
        if self._dispatcher.is_async_handler(op, target, args, coroutine):
            coroutine.close()  # (never awaited: no warning later)
            raise TypeError(
                f"{coroutine.__qualname__} is an async def handler, which a threaded connection cannot "
                "await: serve the service with rpc_service.aio.Server (or make it a plain def)"
            )

    def _serve_request(self, request: wire.Request) -> None:
        if request.context is not None:
            self._serve_in_context(request.seq, request.op, request.target, request.args, request.kwargs, request.context)
            return
        if _current_call() is not None:  # a thread waiting on a call of its own under a call context serves
            self._serve_outside_context(request.seq, request.op, request.target, request.args, request.kwargs)
            return
        self._serve_call(request.seq, request.op, request.target, request.args, request.kwargs)

    def _serve_outside_context(self, seq: int, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """``_serve_call`` for a thread waiting on a call of its own under a call context:
        the request (a callback, maybe of another thread's call) is not served under it."""
        token = _set_call(None)
        try:
            self._serve_call(seq, op, target, args, kwargs)
        finally:
            _reset_call(token)

    def _refuse_request(self, request: wire.Request, exc: BaseException) -> None:
        self._served.pop(request.seq, None)  # (made when it was queued, if it carried a call context)
        self._send(self._proto.send, describe_exception(request.seq, exc, self._config))

    def _serve_call(self, seq: int, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Carry out one of the peer's requests (without a call context) and send its answer
        (the general path and the fast path both end here)."""
        try:
            value = HANDLERS[op](self._dispatcher, target, args, kwargs)
            if type(value) is CoroutineType:
                self._check_not_async(op, target, args, value)
        except BaseException as exc:  # the method's, for the caller (Ctrl-C on the main thread still stops us)
            if must_propagate(exc):
                raise
            if self.closed:
                # nobody to tell: skip formatting the traceback (unwinding deeply nested
                # callbacks after a close would format one per level)
                return
            self._send(self._proto.send, describe_exception(seq, exc, self._config))
            return
        self._send_reply(seq, value)

    def _send_reply(self, seq: int, value: object) -> None:
        """Answer request ``seq`` with what its handler returned (every request served on this
        driver ends here): ``_send(self._proto.send_reply, seq, value)``, with ``_encode``'s
        work inlined for a reply that owes no releases; a value its service marked as plain
        data (:class:`ByValue`) goes by value; one that cannot be encoded is answered with
        the EncodeError instead."""
        by_value = False
        if type(value) is ByValue:
            value, by_value = value.value, True
        write_lock = self._write_lock  # (acquire/release rather than with-statements: a
        lock = self._lock  # with-statement makes a bound method of each lock's __enter__ and __exit__)
        write_lock.acquire()
        try:
            lock.acquire()
            try:
                boxer = self._boxer
                if boxer.releases_owed:
                    buffers = self._encode(self._proto.send_reply, seq, value, by_value)
                else:
                    try:
                        buffers = self._proto.send_reply(seq, value, by_value)
                    except BaseException as exc:
                        self._not_encoded(exc)
                        raise
                    if boxer._lent_now or boxer._typed_now:
                        boxer.commit()
            finally:
                lock.release()
            self._write(buffers)
        except wire.EncodeError as exc:  # (answered once the lock is released: _send takes it)
            error = describe_exception(seq, exc, self._config)
        else:
            return
        finally:
            write_lock.release()
        self._send(self._proto.send, error)

    # -- handshake and shutdown --------------------------------------------------------

    def _handshake(self, deadline: float | None = None, *, accepting: bool = False) -> None:
        """Exchange prefaces and hellos by ``deadline`` (at most ``handshake_timeout``
        from now); on return ``root`` is usable and on_connect ran.

        The connecting side sends its preface and Hello at once and runs on_connect after
        the peer's Hello. The accepting side (``accepting``: servers) sends its preface and
        Hello together, in one write, only after on_connect returned, so that when the peer's
        factory returns, on_connect has completed (the peer reads both at once); if
        on_connect raises, the peer gets a Close saying why (ConnectionRejectedError on its
        side) and the exception propagates here. A peer with no version in common gets our
        preface at once, so that it can say why (:func:`refusal_preface`).
        """
        limit = self._config.handshake_timeout
        own = _monotonic() + limit
        if deadline is None or deadline > own:
            deadline = own
        else:
            limit = max(0.0, deadline - _monotonic())
        proto = self._proto
        ours = wire.Hello(services=self._service.get_service_aliases(), root=self._service)
        try:
            if not accepting:  # preface and Hello in one write: the peer's are not awaited first
                self._send(lambda: [*proto.send(_PREFACE), *proto.send(ours)])
            hello = self._await_hello(deadline, accepting)
            self._root = hello.root
            if accepting:
                self._accept(ours)
        except TimeoutError:
            self._shutdown(notify=False)
            raise HandshakeTimeout(f"the peer did not complete the handshake within {limit:.3g} s") from None
        except BaseException:
            self._shutdown(notify=False)
            raise
        with self._lock:
            if self._life is Lifecycle.HANDSHAKE:
                self._life = Lifecycle.OPEN
        if not accepting:
            try:
                self._service.on_connect(self)
            except BaseException:
                self._shutdown(notify=False)
                raise

    def _accept(self, ours: wire.Hello) -> None:
        """The accepting side, hellos in: run on_connect, then send our Hello (or reject)."""
        try:
            self._service.on_connect(self)
        except Exception as exc:
            reason = rejection(self._service, exc)
            if len(reason) > _MAX_REASON:
                reason = reason[: _MAX_REASON - 3] + "..."
            proto = self._proto
            try:
                self._send(lambda: [*proto.send(_PREFACE), *proto.send(wire.Close(reason))])
            except Exception:
                pass  # the peer may be gone already
            raise ConnectionRejectedError(f"rejected the client: {reason}") from exc
        self._send(lambda: [*self._proto.send(_PREFACE), *self._proto.send(ours)])

    def _await_hello(self, deadline: float, accepting: bool) -> wire.Hello:
        while True:
            event = self._handshake_event(deadline)
            if type(event) is wire.Hello:
                return event
            if type(event) is wire.Close:
                if accepting:
                    raise ConnectionClosedError(f"the peer closed the connection during the handshake: {event.reason}")
                raise ConnectionRejectedError(f"the server rejected the connection: {event.reason}")
            if type(event) is wire.Preface and accepting and not shares_version(event):
                self._send(refusal_preface)
                exc = no_common_version(event)
                self._protocol_broken(exc)  # logged before the stream closes, as bad bytes read are
                raise exc
            # a Preface: the version is settled (or, accepting, checked); anything else the state table refuses

    def _send_close_reply(self) -> None:
        try:
            self._send(self._proto.send, wire.Close("closing"))
        except Exception:
            pass

    def _disconnected(self, notify: bool) -> None:
        self._boxer.clear()
        if notify:
            try:
                self._service.on_disconnect(self)
            except Exception:
                log.exception("%r: on_disconnect raised", self)
