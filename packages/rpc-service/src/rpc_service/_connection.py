"""The connection: a service on each side of a stream, talking the rpc protocol.

Owns the driving of one ``rpc_protocol.Connection`` over one stream: the handshake with a
deadline, sending (one frame at a time, releases piggybacked), and receiving through a
*reader role* that one thread holds at a time. Whichever thread waits for a reply reads
and dispatches for everyone: replies are handed to the threads waiting for them, requests
from the peer are served inline (so nested callbacks A→B→A→B work without extra threads).
Closing wakes every waiter with :class:`ConnectionClosedError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Final, Iterator

import rpc_protocol as wire
from rpc_protocol import Event, Op, RemoteProtocolError

from ._async import AsyncResult
from ._boxing import Boxer
from ._by_value import ByValue
from ._config import Config, ConfigArg, make_config
from ._dispatch import HANDLERS, Dispatcher, checked_batch, describe_exception, must_propagate, rebuild_exception, unpickler
from ._errors import AsyncResultTimeout, ConnectionClosedError
from ._exposure import Exposure
from ._idle import read_into
from ._proxy import Proxy
from ._service import Service
from ._streams import Stream

__all__ = ["Connection"]

log = logging.getLogger("rpc_service")
_READ_SIZE: Final = 16 * 1024  # small frames; large payloads are read into the protocol's buffer
_MAX_ITER_BATCH: Final = 8192
_BATCHED_TYPES: Final = frozenset(
    ("builtins", name)
    for name in ("list", "tuple", "dict", "set", "frozenset", "str", "bytes", "bytearray", "range")
) | {("builtins", "dict_keys"), ("builtins", "dict_values"), ("builtins", "dict_items")}
_NO_KWARGS: Final[dict[str, Any]] = {}
_FAILED: Final = wire.State.FAILED
# protocol states in which only Close may still be sent
_ENDED: Final = frozenset({wire.State.CLOSE_SENT, wire.State.CLOSE_RECEIVED, wire.State.CLOSED, wire.State.FAILED})


class Connection:
    """One end of a connection: ``root`` is the peer's service, ``close()`` ends it.

    Made by the factories (``connect``, ``connect_stream``...) and by servers; not usually
    instantiated directly. Usable as a context manager.
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
        self._proto = wire.Connection(
            wire.ProtocolConfig(
                max_frame_size=config.max_frame_size,
                max_pending=config.max_pending_requests,
                limits=wire.CodecLimits(max_depth=config.max_depth),
            ),
            box=self._boxer.box,
            unbox=self._boxer.unbox,
        )
        self._send_lock = threading.Lock()
        # _cond's lock, taken directly where nobody waits (Condition.__enter__ is Python code)
        self._cond_lock = threading.Lock()
        self._cond = threading.Condition(self._cond_lock)
        self._reader: int | None = None  # thread ident holding the reader role
        self._waiting = 0  # threads waiting on _cond
        self._slots: dict[int, AsyncResult] = {}
        self._inbox: deque[Event] = deque()
        self._rbuf = bytearray(_READ_SIZE)
        self._rview = memoryview(self._rbuf)
        self._root: Any = None
        self._closed = False
        self._close_lock = threading.Lock()
        self._disconnected = False
        self._before_closed_ran = False
        self._before_closed_lock = threading.RLock()  # a concurrent close() waits for the hook

    # -- public API --------------------------------------------------------------------

    @property
    def root(self) -> Any:
        """The peer's service (a proxy)."""
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
        """This side's service object for the connection."""
        return self._service

    @property
    def peer_services(self) -> tuple[str, ...]:
        """The service names the peer announced in its handshake."""
        hello = self._proto.peer_hello
        return hello.services if hello else ()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        name = self._config.connid or f"{self._service.get_service_name()}<->{'/'.join(self.peer_services) or '?'}"
        return f"<rpc_service.Connection {name} over {self._stream!r} ({state})>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._stream.fileno()

    def ping(self, data: bytes = b"", timeout: float | None = None) -> None:
        """A round trip; raises if the peer does not answer (in ``timeout`` seconds)."""
        slot = self._awaited(lambda seq: self._proto.send(wire.Ping(seq, data)))
        slot.set_expiry(timeout)
        try:
            value = slot.value
        except AsyncResultTimeout:
            self._forget(slot)  # a late pong is dropped by _deliver
            raise AsyncResultTimeout(f"the peer did not answer a ping within {timeout} s") from None
        if value != data:
            raise RemoteProtocolError("the peer answered a ping with other data")

    def serve(self, timeout: float | None = 1.0) -> bool:
        """Serve one incoming event; False when none arrived within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        outer = self._take_reader(deadline)
        if outer is False:
            return False
        try:
            return self._step(deadline)
        finally:
            if outer is None:
                self._drop_reader()

    def serve_all(self) -> None:
        """Serve until the connection closes, then close it."""
        try:
            # The reader role is kept throughout: replies for other threads are still
            # delivered to them, as every reader does.
            outer = self._take_reader(None)
            try:
                while not self._closed:
                    self._step(None)
            finally:
                if outer is None:
                    self._drop_reader()
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
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._send_lock.acquire(timeout=1):
            try:
                self._stream.write(self._proto.send(wire.Close("closed by peer")))
            except Exception:
                pass  # best effort: the peer may be gone already
            finally:
                self._send_lock.release()
        self._shutdown()

    def _run_before_closed(self, hook: Callable[[Any], object]) -> None:
        """The ``before_closed`` config hook, once, while the peer's root is still usable."""
        with self._before_closed_lock:
            if self._closed or self._root is None or self._before_closed_ran:
                return
            self._before_closed_ran = True
            try:
                hook(self._root)
            except Exception:
                log.exception("%r: before_closed raised", self)

    # -- requests ----------------------------------------------------------------------

    def _request(self, op: Op, target: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] = _NO_KWARGS) -> Any:
        """Send a request and wait for its reply (the hot path of every proxy operation)."""
        slot = self._awaited(self._proto.send_request, op, target, args, kwargs)
        timeout = self._config.sync_request_timeout
        try:
            self._wait(slot, None if timeout is None else time.monotonic() + timeout)
        except AsyncResultTimeout:
            self._forget(slot)  # a late reply is dropped by _deliver
            raise AsyncResultTimeout(f"the peer did not reply within sync_request_timeout ({timeout} s)") from None
        if slot._is_error:
            raise slot._value
        return slot._value

    def _async_request(self, op: Op, target: object, args: tuple[Any, ...], kwargs: dict[str, Any], by_value: bool = False) -> AsyncResult:
        return self._awaited(self._proto.send_request, op, target, args, kwargs, by_value)

    def _awaited(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> AsyncResult:
        """Send the frame ``encode(seq, *fields)`` under a fresh sequence number, with a
        slot for its answer."""
        if self._closed:
            raise ConnectionClosedError("the connection is closed")
        slot = AsyncResult(self)
        with self._send_lock:
            seq = self._proto.next_seq()
            self._slots[seq] = slot
            try:
                self._send_locked(encode, seq, *fields)
            except BaseException:
                self._slots.pop(seq, None)  # (a failed write may have closed and emptied _slots)
                raise
        return slot

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

    # -- sending -----------------------------------------------------------------------

    def _send(self, event: Event) -> None:
        with self._send_lock:
            self._send_locked(self._proto.send, event)

    def _send_locked(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> None:
        """Write the frame ``encode(*fields)`` (a send method of the protocol connection),
        after the releases owed to the peer. The caller holds the send lock."""
        boxer = self._boxer
        releases = boxer.take_releases() if boxer.releases_owed else ()
        try:
            buffers = encode(*fields)
        except BaseException as exc:
            boxer.rollback()
            if isinstance(exc, wire.LocalProtocolError) and self._proto.state in _ENDED:
                # closing (either side) raced with this send: report it as closed
                raise ConnectionClosedError("the connection is closed") from None
            if releases:
                self._stream.write(self._release_frames(releases))
            raise
        boxer.commit()
        if releases:
            buffers = [*self._release_frames(releases), *buffers]
        try:
            self._stream.write(buffers)
        except ConnectionClosedError:
            # the stream is unusable: close for everyone (on_disconnect only if the handshake was done)
            self._shutdown(notify=self._proto.peer_hello is not None)
            raise

    def _release_frames(self, releases: tuple[tuple[int, int], ...]) -> list[wire.Buffer]:
        """RELEASE frames for ``releases``, as many as the peer's frame limit needs (each
        entry is 12 bytes after a 4-byte count, docs/protocol.md §4)."""
        hello = self._proto.peer_hello
        per_frame = ((hello.max_frame_size if hello else 1024) - 4) // 12
        if len(releases) <= per_frame:
            return self._proto.send(wire.Release(releases))
        buffers: list[wire.Buffer] = []
        for start in range(0, len(releases), per_frame):
            buffers += self._proto.send(wire.Release(releases[start : start + per_frame]))
        return buffers

    # -- the reader role ---------------------------------------------------------------

    def _take_reader(self, deadline: float | None, slot: AsyncResult | None = None) -> int | None | bool:
        """Become the reader (or stay it, when nested). Returns the previous holder (None
        or this thread), or False when ``slot`` became ready or the deadline passed first."""
        me = threading.get_ident()
        with self._cond_lock:
            while True:
                if slot is not None and slot._ready:
                    return False
                if self._reader is None or self._reader == me:
                    outer = self._reader
                    self._reader = me
                    return outer
                if self._closed:
                    raise ConnectionClosedError("the connection is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._waiting += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiting -= 1

    def _drop_reader(self) -> None:
        with self._cond_lock:
            self._reader = None
            if self._waiting:
                self._cond.notify_all()

    def _wait(self, slot: AsyncResult, deadline: float | None) -> None:
        """Serve the connection (or let another thread do it) until ``slot`` is ready."""
        while not slot._ready:
            outer = self._take_reader(deadline, slot)
            if outer is False:
                if slot._ready:
                    return
                self._expire(slot)
            try:
                while not slot._ready:
                    if not self._step(deadline):
                        self._expire(slot)
            finally:
                if outer is None:
                    self._drop_reader()

    def _expire(self, slot: AsyncResult) -> None:
        # The slot stays registered: an AsyncResult may still be collected later. Callers
        # that abandon the request (synchronous calls, ping) _forget it.
        raise AsyncResultTimeout("the peer did not reply in time")

    def _forget(self, slot: AsyncResult) -> None:
        with self._send_lock:
            for seq, pending in list(self._slots.items()):
                if pending is slot:
                    del self._slots[seq]

    def _step(self, deadline: float | None) -> bool:
        """Dispatch one event, reading first if none is queued. False on timeout."""
        if not self._inbox:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._read(timeout)
            except TimeoutError:
                return False
        if self._inbox:
            try:
                event = self._inbox.popleft()
            except IndexError:  # emptied by a close() on another thread: the next read reports it
                return True
            self._dispatch(event)
        return True

    def _read(self, timeout: float | None) -> None:
        if self._closed:
            raise ConnectionClosedError("the connection is closed")
        proto = self._proto
        try:
            if proto.state is _FAILED and proto.error is not None:  # bad bytes came after the events just served
                raise proto.error
            payload = proto.payload_buffer()
            if payload is not None:  # a large payload: read straight into the protocol's buffer
                try:
                    count = self._stream.read_into(payload, timeout)
                finally:
                    payload.release()
                if not count:
                    raise ConnectionClosedError("the peer closed the connection")
                self._inbox.extend(proto.payload_received(count))
                return
            count = read_into(self._stream, proto, self._rview, timeout)  # (releases large buffers once idle)
            if not count:
                raise ConnectionClosedError("the peer closed the connection")
            self._inbox.extend(proto.receive_data(self._rview[:count]))
        except ConnectionClosedError:
            self._shutdown()
            raise
        except RemoteProtocolError as exc:
            log.warning("%r: closing, the peer broke the protocol: %s", self, exc)
            self._shutdown()
            raise

    # -- dispatch ----------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        if type(event) is wire.Request:
            self._serve_request(event)
        elif type(event) is wire.Reply:
            self._deliver(event.seq, event.value, False)
        elif type(event) is wire.ErrorReply:
            self._deliver(event.seq, rebuild_exception(event), True)
        elif type(event) is wire.Release:
            for oid, count in event.refs:
                self._boxer.release(oid, count)
        elif type(event) is wire.Ping:
            self._send(wire.Pong(event.seq, event.payload))
        elif type(event) is wire.Pong:
            self._deliver(event.seq, event.payload, False)
        elif type(event) is wire.Close:
            log.debug("%r: the peer closed: %s", self, event.reason)
            self._send_close_reply()
            self._shutdown()
            raise ConnectionClosedError("the peer closed the connection")

    def _deliver(self, seq: int, value: Any, is_error: bool) -> None:
        slot = self._slots.pop(seq, None)
        if slot is None:
            return  # its waiter gave up (timeout)
        slot._set(value, is_error)
        with self._cond_lock:  # read _waiting under the lock: a waiter between its check and wait() counts
            if self._waiting:
                self._cond.notify_all()

    def _serve_request(self, request: wire.Request) -> None:
        seq = request.seq
        try:
            value = HANDLERS[request.op](self._dispatcher, request.target, request.args, request.kwargs)
        except BaseException as exc:  # the method's, for the caller (Ctrl-C on the main thread still stops us)
            if must_propagate(exc):
                raise
            if self.closed:  # no one to tell: skip formatting a traceback (deep when callbacks nested, O(depth²) to unwind)
                raise ConnectionClosedError("the connection is closed") from exc
            self._send(describe_exception(seq, exc, self._config))
            return
        try:
            with self._send_lock:
                if type(value) is ByValue:  # a result its service marked as plain data (_by_value)
                    self._send_locked(self._proto.send_reply, seq, value.value, True)
                else:
                    self._send_locked(self._proto.send_reply, seq, value)
        except wire.EncodeError as exc:
            self._send(describe_exception(seq, exc, self._config))

    # -- handshake and shutdown --------------------------------------------------------

    def _handshake(self) -> None:
        """Exchange prefaces and hellos; on return ``root`` is usable and on_connect ran."""
        deadline = time.monotonic() + self._config.handshake_timeout
        proto = self._proto
        ours = wire.Hello(services=self._service.get_service_aliases(), root=self._service)
        try:
            with self._send_lock:  # preface and Hello in one write: the peer's are not awaited first
                self._send_locked(lambda: [*proto.send(wire.Preface()), *proto.send(ours)])
            self._await_event(wire.Preface, deadline)
            hello = self._await_event(wire.Hello, deadline)
            assert isinstance(hello, wire.Hello)
            self._root = hello.root
        except TimeoutError:
            self._shutdown(notify=False)
            raise TimeoutError(f"the peer did not complete the handshake within {self._config.handshake_timeout} s") from None
        except BaseException:
            self._shutdown(notify=False)
            raise
        self._service.on_connect(self)

    def _await_event(self, kind: type, deadline: float) -> Event:
        while True:
            while self._inbox:
                event = self._inbox.popleft()
                if type(event) is kind:
                    return event
                self._dispatch(event)  # e.g. a Close instead of a Hello
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._read(remaining)

    def _send_close_reply(self) -> None:
        try:
            self._send(wire.Close("closing"))
        except Exception:
            pass

    def _shutdown(self, notify: bool = True) -> None:
        """Release everything; wake every waiter; run on_disconnect once."""
        with self._close_lock:
            self._closed = True
            first = not self._disconnected
            self._disconnected = True
        if not first:
            return
        self._stream.close()
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot._set(ConnectionClosedError("the connection closed before the reply arrived"), True)
        with self._cond:
            self._cond.notify_all()
        self._boxer.clear()
        self._inbox.clear()
        if notify:
            try:
                self._service.on_disconnect(self)
            except Exception:
                log.exception("%r: on_disconnect raised", self)
