"""The demultiplexer: many threads sharing one protocol connection over one stream.

Owns the locking and waking of a connection, and nothing about what events mean. One lock
(``_lock``) guards the protocol object, the reply slots, the inbox and the waiter table:
every ``send*`` and ``receive_data`` runs under it, and no socket I/O ever does. A second
lock (``_write_lock``, always taken *before* ``_lock``) keeps frames on the wire in the
order they were encoded.

Reading is a *role*, held by at most one thread at a time (``_reading``): the thread that
holds it reads, and under the lock hands every reply (and pong) to its slot at once,
waking that slot's waiter alone, and applies the peer's releases (in wire order with the
replies); other events (the peer's requests, pings, its Close) go to the inbox, served in order by whichever thread pumps next. A thread about to
serve one of those first gives the reading role up and wakes one waiting thread to take
it, so a slow handler (a callback) never holds up other threads' replies. A thread that
waits while another reads sleeps on a lock of its own until its reply, the role, or the
close reaches it. Nested callbacks need no extra thread: serving a request releases the
role, and a call made from the handler takes it again.

Subclasses provide ``_serve_request(request)`` and ``_dispatch(event)`` (what an inbox
event means), ``_cancel_received(seq)`` (a CANCEL, applied by the reader under the lock)
and ``_disconnected()`` (what closing means above this layer); this module must not know
about services or proxies beyond the boxer's release queue.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Final

import rpc_protocol as wire
from rpc_protocol import Event, RemoteProtocolError

from ._async import AsyncResult
from ._boxing import release_frames
from ._errors import ConnectionClosedError
from ._idle import read_into
from ._stack import refused_or_moved

if TYPE_CHECKING:
    from ._boxing import Boxer
    from ._config import Config
    from ._context import Served
    from ._streams import Stream

__all__ = ["ConnectionStats", "Demux", "Lifecycle"]

# Reads go into a small buffer at first (an idle connection costs little), the full-size
# one once a read filled the small one; large payloads are read into the protocol's buffer.
_FIRST_READ_SIZE: Final = 1024
_READ_SIZE: Final = 16 * 1024
_GONE: Final = object()
_allocate_lock: Final = threading.Lock
_monotonic: Final = time.monotonic
#: The longest a waiting thread sleeps before it looks again (a lock's wait overflows past
#: threading.TIMEOUT_MAX, and a long sync_request_timeout or deadline may lie beyond it).
_LONGEST_WAIT: Final = 86400.0
_REQUEST: Final = wire.Request
_FAILED: Final = wire.State.FAILED
# protocol states in which only Close may still be sent
_ENDED: Final = frozenset({wire.State.CLOSE_SENT, wire.State.CLOSE_RECEIVED, wire.State.CLOSED, wire.State.FAILED})


#: Callbacks nested this deep (requests served by threads waiting on calls of their own, on
#: one connection) and each further one is looked at first (``_stack.refused_or_moved``).
_NESTING_CHECKED_FROM: Final = 8


class Lifecycle(Enum):
    """Where a connection is in its life (``Connection.lifecycle``)."""

    HANDSHAKE = "handshake"  # made, hellos not yet exchanged (and on_connect not yet run)
    OPEN = "open"  # calls flow both ways
    CLOSING = "closing"  # close() was called: no new calls; the Close frame is on its way
    CLOSED = "closed"  # the stream is closed, every waiter woken; on_disconnect ran (once)


_HANDSHAKE: Final = Lifecycle.HANDSHAKE
_OPEN: Final = Lifecycle.OPEN
_CLOSING: Final = Lifecycle.CLOSING
_CLOSED: Final = Lifecycle.CLOSED


@dataclass(frozen=True)
class ConnectionStats:
    """A snapshot of what one connection did and holds (``Connection.stats``).

    ``calls_sent``: requests this side sent (pings excluded); ``calls_served``: the peer's
    requests this side answered; ``bytes_sent`` / ``bytes_received``: on the stream,
    handshake included; ``objects_lent``: distinct local objects the peer holds a proxy of;
    ``proxies_held``: distinct peer objects held here through live proxies;
    ``calls_pending``: requests of ours still waiting for their reply.
    """

    calls_sent: int
    calls_served: int
    bytes_sent: int
    bytes_received: int
    objects_lent: int
    proxies_held: int
    calls_pending: int


class Demux:
    """The thread-safe driving of a protocol connection over a stream (see the module doc)."""

    _proto: wire.Connection
    _stream: Stream
    _boxer: Boxer
    _config: Config

    def _init_demux(self) -> None:
        self._lock = _allocate_lock()
        self._write_lock = _allocate_lock()
        self._life = _HANDSHAKE
        self._reading = False  # a thread holds the reading role
        self._fast_seq = 0  # the request the fast path (_fastpath) awaits, outside _slots; 0: none
        self._slots: dict[int, AsyncResult] = {}
        self._inbox: list[Event] = []  # (a list: an empty deque costs 0.6 KiB per connection)
        self._waiting: dict[Any, AsyncResult | None] = {}  # wake lock -> what its thread waits for
        self._rbuf = bytearray(_FIRST_READ_SIZE)
        self._rview = memoryview(self._rbuf)
        self._calls_sent = 0
        self._calls_served = 0
        self._bytes_sent = 0
        self._bytes_received = 0
        self._served: dict[int, Served] = {}  # requests served with a call context, by seq (CANCEL)
        self._nested = 0  # requests being served by threads waiting on calls of their own
        self._overflow = 0  # threads serving what a waiting thread's full stack could not (_stack)

    # -- hooks for the subclass --------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        """Handle an inbox event other than a request (no lock held)."""
        raise NotImplementedError

    def _serve_request(self, request: wire.Request) -> None:
        """Serve one of the peer's requests and send its answer (no lock held)."""
        raise NotImplementedError

    def _refuse_request(self, request: wire.Request, exc: BaseException) -> None:
        """Answer one of the peer's requests with ``exc`` without serving it (no lock held)."""
        raise NotImplementedError

    def _disconnected(self, notify: bool) -> None:
        """Called once, outside every lock, after the stream is closed and waiters woken."""
        raise NotImplementedError

    def _cancel_received(self, seq: int) -> None:
        """The peer cancelled its request ``seq`` (under ``_lock``, while reading)."""
        raise NotImplementedError

    def _context_arrived(self, seq: int, context: wire.CallContext) -> None:
        """Request ``seq`` carried ``context`` and is queued, to be served later (under ``_lock``)."""
        raise NotImplementedError

    def _run_callback(self, callback: Callable[[AsyncResult], object], result: AsyncResult) -> None:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def lifecycle(self) -> Lifecycle:
        """Where the connection is in its life (see :class:`Lifecycle`)."""
        return self._life

    @property
    def closed(self) -> bool:
        life = self._life
        return life is _CLOSED or life is _CLOSING

    @property
    def stats(self) -> ConnectionStats:
        """A read-only snapshot of the connection's counters (:class:`ConnectionStats`)."""
        with self._lock:
            return ConnectionStats(
                calls_sent=self._calls_sent,
                calls_served=self._calls_served,
                bytes_sent=self._bytes_sent,
                bytes_received=self._bytes_received,
                objects_lent=self._boxer.lent,
                proxies_held=self._boxer.held,
                calls_pending=len(self._slots) + (self._fast_seq != 0),
            )

    def _mark_closing(self) -> Lifecycle | None:
        """Move to CLOSING; the state before, or None when already closing or closed."""
        with self._lock:
            life = self._life
            if life is _CLOSING or life is _CLOSED:
                return None
            self._life = _CLOSING
            return life

    def _shutdown(self, notify: bool = True) -> None:
        """Close the stream, fail every pending slot, wake every waiter; once."""
        with self._lock:
            if self._life is _CLOSED:
                return
            self._life = _CLOSED
            slots, self._slots = self._slots, {}
            waiting, self._waiting = self._waiting, {}
            self._inbox.clear()
            self._served.clear()  # (states of requests queued or taken; a handler still running pops its own)
            if slots:
                error = ConnectionClosedError("the connection closed before the reply arrived")
                for slot in slots.values():
                    slot._value, slot._is_error, slot._ready = error, True, True
            for wake in waiting:
                wake.release()
        self._stream.close()
        for slot in slots.values():
            if slot._callbacks:
                slot._run_callbacks()
        self._disconnected(notify)

    # -- sending -----------------------------------------------------------------------

    def _encode(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> list[wire.Buffer]:
        """The frame ``encode(*fields)`` (a send method of the protocol connection), after
        the releases owed to the peer. The caller holds ``_lock``."""
        boxer = self._boxer
        releases = boxer.take_releases() if boxer.releases_owed else ()
        try:
            buffers = encode(*fields)
        except BaseException as exc:
            if releases:  # still owed: they go with the next frame
                boxer.releases_owed.extendleft(reversed(releases))
            self._not_encoded(exc)
            raise
        if boxer._lent_now or boxer._typed_now:
            boxer.commit()
        if releases:
            return [*release_frames(self._proto, releases), *buffers]
        return buffers

    def _not_encoded(self, exc: BaseException) -> None:
        """A frame failed to encode with ``exc`` (under ``_lock``): forget what it lent, and
        raise ConnectionClosedError instead when closing (either side) raced with the send."""
        self._boxer.rollback()
        if isinstance(exc, wire.LocalProtocolError) and self._proto.state in _ENDED:
            raise ConnectionClosedError("the connection is closed") from None

    def _send(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> None:
        """Encode a frame (see :meth:`_encode`) and write it, in encoding order."""
        write_lock = self._write_lock  # (acquire/release: see Connection._send_reply)
        lock = self._lock
        write_lock.acquire()
        try:
            lock.acquire()
            try:
                buffers = self._encode(encode, *fields)
            finally:
                lock.release()
            self._write(buffers)
        finally:
            write_lock.release()

    def _write(self, buffers: list[wire.Buffer]) -> None:
        """Write an encoded frame (under ``_write_lock``, taken before it was encoded)."""
        try:
            self._stream.write(buffers)
        except ConnectionClosedError:
            self._shutdown(notify=self._proto.peer_hello is not None)
            raise
        self._bytes_sent += len(buffers[0]) if len(buffers) == 1 else sum(map(len, buffers))

    def _awaited(self, encode: Callable[..., list[wire.Buffer]], *fields: Any, request: bool = True) -> AsyncResult:
        """Send the frame ``encode(seq, *fields)`` under a fresh sequence number, with a
        slot for its answer (the hot path of every request). A request (not a ping) waits
        while ``max_pending_requests`` of ours are in flight (``_wait_for_room``): the peer
        cuts off a peer with more, and by default its limit is ours."""
        if self._life is not _OPEN:
            raise self._not_open()
        slot = AsyncResult(self)  # type: ignore[arg-type]  # a Demux is always a Connection
        limit = self._config.max_pending_requests if request else -1
        write_lock = self._write_lock  # (acquire/release: see Connection._send_reply)
        lock = self._lock
        while True:
            write_lock.acquire()
            try:
                lock.acquire()
                try:
                    if self._life is not _OPEN:
                        raise self._not_open()
                    room = limit < 0 or self._proto.requests_in_flight < limit
                    if room:
                        seq = self._proto.next_seq()
                        self._slots[seq] = slot
                        try:
                            buffers = self._encode(encode, seq, *fields)
                        except BaseException:
                            self._slots.pop(seq, None)
                            raise
                        self._calls_sent += 1
                finally:
                    lock.release()
                if room:
                    try:  # (the same write as in _send, inlined: the path of every call)
                        self._stream.write(buffers)
                    except ConnectionClosedError:
                        self._shutdown(notify=True)
                        raise
                    self._bytes_sent += len(buffers[0]) if len(buffers) == 1 else sum(map(len, buffers))
                    return slot
            finally:
                write_lock.release()
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Serve the connection (or let another thread) while ``max_pending_requests`` of
        ours are in flight (no lock held)."""
        raise NotImplementedError

    def _not_open(self) -> Exception:
        if self._life is _HANDSHAKE:
            return ConnectionClosedError("the connection is not open yet (calls wait until on_connect has returned)")
        return ConnectionClosedError("the connection is closed")

    def _forget(self, slot: AsyncResult) -> int | None:
        """Drop an abandoned slot: a late reply to it is discarded. Its request id, or None
        when its answer came first."""
        with self._lock:
            for seq, pending in list(self._slots.items()):
                if pending is slot:
                    del self._slots[seq]
                    return seq
        return None

    def _poll_cancels(self) -> None:
        """Read what has arrived, without waiting and without serving, when no thread is
        reading: a sync handler polling ``cancelled()`` learns of a CANCEL."""
        lock = self._lock
        with lock:
            if self._reading or self._life is not _OPEN:
                return
            self._reading = True
        try:
            self._read(_monotonic())
        except BaseException:  # nothing arrived (TimeoutError), or closing: said elsewhere
            with lock:
                self._reading = False
                if self._waiting:
                    self._wake_one()
            return
        try:  # _read returned holding the lock, the role given back
            if self._waiting:
                self._wake_one()
        finally:
            lock.release()

    # -- receiving ---------------------------------------------------------------------

    def _pump(self, slot: AsyncResult | None, deadline: float | None, once: bool = False) -> bool:
        """Serve the connection until ``slot`` is ready (or, with ``once``, until one event
        was served or one read done; with neither, until it closes).

        False when ``deadline`` passed first. Raises ConnectionClosedError when the
        connection is (or becomes) closed before ``slot`` is ready.
        """
        lock = self._lock
        lock.acquire()
        try:
            while True:
                if slot is not None and slot._ready:
                    return True
                inbox = self._inbox
                if inbox:
                    event = inbox.pop(0)
                    nested = False  # a request served while this thread waits on a call of its own
                    if type(event) is _REQUEST:
                        self._calls_served += 1
                        if slot is not None:
                            nested = True
                            self._nested += 1
                    if self._waiting and not self._reading:
                        self._wake_one()  # someone reads while this thread serves
                    lock.release()
                    try:
                        if type(event) is not _REQUEST:
                            self._dispatch(event)
                        elif nested and self._nested > _NESTING_CHECKED_FROM and refused_or_moved(self, event):
                            pass  # (answered, or passed to a thread of its own)
                        else:
                            self._serve_request(event)
                    finally:
                        del event  # its arguments (proxies) may die now, as locally
                        lock.acquire()
                        if nested:
                            self._nested -= 1
                    if once:
                        return True
                    continue
                if self._life is _CLOSED:
                    raise ConnectionClosedError("the connection is closed")
                if not self._reading:
                    self._reading = True
                    lock.release()
                    try:
                        self._read(deadline)
                    except BaseException as exc:
                        lock.acquire()
                        self._reading = False
                        if type(exc) is TimeoutError:  # the stream's, not a call's
                            return False
                        raise
                    # _read returns holding the lock, the role given back
                    if once and not inbox:  # (else: serve one of the events read)
                        return True
                    continue
                # another thread reads: wait for the reply, the role or the close
                if deadline is None:
                    remaining = -1.0
                else:
                    remaining = deadline - _monotonic()
                    if remaining <= 0:
                        return False
                wake = _allocate_lock()
                wake.acquire()
                self._waiting[wake] = slot
                if slot is not None:
                    wakers = slot._wakers
                    if wakers is None:
                        slot._wakers = [wake]
                    else:
                        wakers.append(wake)
                lock.release()
                try:
                    wake.acquire(True, remaining if remaining < _LONGEST_WAIT else _LONGEST_WAIT)  # (then looks again)
                finally:
                    lock.acquire()
                    self._waiting.pop(wake, None)
                    if slot is not None and slot._wakers:
                        try:
                            slot._wakers.remove(wake)
                        except ValueError:
                            pass
        finally:
            if self._waiting and not self._reading:
                self._wake_one()
            lock.release()

    def _wake_one(self) -> None:
        """Wake one waiting thread to take the reading role (the caller holds ``_lock``)."""
        waiting = self._waiting
        for wake in waiting:
            del waiting[wake]
            wake.release()
            return

    def _read(self, deadline: float | None) -> None:
        """Read once (no lock held; the caller holds the reading role), then, under the
        lock, deliver the replies and queue the rest. Returns holding ``_lock`` with the
        role given back; raises TimeoutError or ConnectionClosedError without the lock."""
        proto = self._proto
        lock = self._lock
        timeout = None if deadline is None else max(0.0, deadline - _monotonic())
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
                    raise self._end_of_stream()
                lock.acquire()
                try:
                    events = proto.payload_received(count)
                except BaseException:
                    lock.release()
                    raise
            else:
                # (gives back the protocol's large payload buffer once idle: only the reader touches it)
                count = read_into(self._stream, proto, self._rview, timeout)
                if not count:
                    raise self._end_of_stream()
                lock.acquire()
                try:
                    events = proto.receive_data(self._rview[:count])
                except BaseException:
                    lock.release()
                    raise
        except TimeoutError:
            raise
        except ConnectionClosedError:
            self._shutdown(notify=self._life is not _HANDSHAKE)
            raise
        except RemoteProtocolError as exc:
            self._broken(exc)
            raise
        except BaseException:
            self._lost_position()
            raise
        self._deliver(events, count)

    def _received(self, count: int) -> None:
        """Handle ``count`` bytes already read into ``_rview`` as :meth:`_read` would (the
        fast path's way back to the general one). Called holding ``_lock`` and the reading
        role; returns holding the lock with the role given back; raises without the lock."""
        try:
            events = self._proto.receive_data(self._rview[:count])
        except RemoteProtocolError as exc:
            self._lock.release()
            self._broken(exc)
            raise
        except BaseException:
            self._lock.release()
            self._lost_position()
            raise
        self._deliver(events, count)

    def _end_of_stream(self) -> ConnectionClosedError:
        """The error for a read that found the stream ended: by close() on this side (which
        shut the stream down under a reading thread), or by the peer."""
        if self._life is _CLOSING or self._life is _CLOSED:
            return ConnectionClosedError("the connection was closed on this side")
        return ConnectionClosedError("the peer closed the connection")

    def _deliver(self, events: list[Event], count: int) -> None:
        """Give the reading role back, deliver the replies and queue the rest (under ``_lock``;
        finalisers and reply callbacks run outside it, which is held again on return)."""
        lock = self._lock
        self._reading = False
        self._bytes_received += count
        if count == len(self._rbuf):
            self._grow_reads()
        if not events:
            return
        called: list[AsyncResult] | None = None
        dropped: list[object] = []
        for event in events:  # (type(...) is wire.X: narrows for mypy with no call at run time)
            if type(event) is wire.Reply:
                slot = self._fill(event.seq, event.value, False)
            elif type(event) is wire.Release:  # applied in order with the replies (a reply after it sees it done)
                self._release(event.refs, dropped)
                continue
            elif type(event) is wire.ErrorReply:
                slot = self._fill(event.seq, self._rebuild(event), True)
            elif type(event) is wire.Pong:
                slot = self._fill(event.seq, event.payload, False)
            elif type(event) is wire.Cancel:
                self._cancel_received(event.seq)
                continue
            else:
                if type(event) is _REQUEST and event.context is not None:
                    self._context_arrived(event.seq, event.context)
                self._inbox.append(event)
                continue
            if slot is not None and slot._callbacks:
                called = [slot] if called is None else [*called, slot]
        if called is not None or dropped:
            lock.release()
            try:
                del dropped  # the last references: finalisers run outside the lock
                for slot in called or ():
                    slot._run_callbacks()
            finally:
                lock.acquire()

    def _grow_reads(self) -> None:
        """A read filled the read buffer (its bytes handled): later reads get the full size."""
        if len(self._rbuf) < _READ_SIZE:
            self._rbuf = bytearray(_READ_SIZE)
            self._rview = memoryview(self._rbuf)

    def _release(self, refs: tuple[tuple[int, int], ...], dropped: list[object]) -> None:
        """Apply the peer's releases (under ``_lock``); the objects whose last reference went
        are added to ``dropped``, to be let go of outside the lock."""
        release = self._boxer.release
        for oid, count in refs:
            gone = release(oid, count)
            if gone is not None:
                dropped.append(gone)

    def _fill(self, seq: int, value: Any, is_error: bool) -> AsyncResult | None:
        """Set the slot of request ``seq`` and wake its waiters (under ``_lock``)."""
        slot = self._slots.pop(seq, None)
        if slot is None:
            return None  # its waiter gave up (timeout)
        slot._value = value
        slot._is_error = is_error
        slot._ready = True
        wakers = slot._wakers
        if wakers:
            waiting = self._waiting
            for wake in wakers:
                if waiting.pop(wake, _GONE) is not _GONE:
                    wake.release()
            wakers.clear()
        return slot

    def _rebuild(self, error: wire.ErrorReply) -> BaseException:
        raise NotImplementedError

    def _protocol_broken(self, exc: RemoteProtocolError) -> None:
        raise NotImplementedError

    def _broken(self, exc: RemoteProtocolError) -> None:
        """The peer broke the protocol (what was read, no lock held): say so, and close."""
        self._protocol_broken(exc)
        self._shutdown(notify=self._life is not _HANDSHAKE)

    def _lost_position(self) -> None:
        """Decoding what was read raised something else (no lock held): an unbox hook failed,
        and the protocol, which no longer knows where the next frame starts, failed with it.
        Close, as for bad bytes (the exception is the caller's to see)."""
        if self._proto.state is _FAILED:
            self._shutdown(notify=self._life is not _HANDSHAKE)

    def _handshake_event(self, deadline: float) -> Event:
        """During the handshake (one thread, nothing else pumping): the next event, read
        if none is queued; the events after it stay queued. TimeoutError at the deadline."""
        while not self._inbox:
            if deadline - _monotonic() <= 0:
                raise TimeoutError
            self._reading = True
            try:
                self._read(deadline)
            except BaseException:
                self._reading = False
                raise
            self._lock.release()
        return self._inbox.pop(0)
