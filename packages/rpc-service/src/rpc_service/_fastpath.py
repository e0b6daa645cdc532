"""The fused fast path of the threaded driver: a method call and its reply, a lone request served.

Owns :func:`call` (``Connection._call``: ``proxy.method(...)`` sent as a CALLATTR request,
or ``proxy(...)`` as a CALL, whose reply the calling thread reads and takes itself, with no
``AsyncResult``, inbox or wake-up lock; a lone request read instead, the peer calling back
while it serves the call, is served on the spot before the reply is read; under a deadline
the call carries the budget and waits no longer) and
:func:`serve_fast` (one turn of ``Connection.serve_all``: a lone request read, carried out
and answered on the spot, under its call context if it carried one). Both start only when
:func:`_fast_ok` finds the connection quiet, and hand over to the general path (``_demux``),
in a state it takes up as its own, as soon as anything is unusual: another thread reading
or waiting, events queued, releases owed, a frame split across reads, several frames, a
request where the reply was expected, an error. They make no check of their own on the
bytes: the protocol's ``send_call``/``take_reply``/``take_request`` share their admission
check with ``receive_data``. The locks are the demultiplexer's, taken in its order (``_write_lock``
before ``_lock``), and the reading role is taken and given back as ``_pump`` does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from rpc_protocol import CallContext, Op, RemoteProtocolError

from ._async import AsyncResult
from ._context import CURRENT, MAX_SECONDS, Served, expired_error
from ._demux import _NESTING_CHECKED_FROM, Lifecycle
from ._errors import ConnectionClosedError
from ._idle import read_into

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["call", "serve_fast"]

_OPEN: Final = Lifecycle.OPEN
_CLOSED: Final = Lifecycle.CLOSED
_CALLATTR: Final = Op.CALLATTR
_CALL: Final = Op.CALL
_monotonic: Final = time.monotonic
_current_call: Final = CURRENT.get  # None: no call context
_new_tuple: Final = tuple.__new__
_new_object: Final = object.__new__
_MAX_BUDGET: Final = int(MAX_SECONDS * 1_000_000)
#: A callback is served on the fast path only this shallow (``_pump`` checks deeper ones).
_INLINE_NESTING: Final = _NESTING_CHECKED_FROM


def _fast_ok(conn: Connection) -> bool:
    """The one entry check of the fast path (``call`` makes it under ``_lock``; ``serve_fast`` too).

    The connection is open, no other thread reads or waits on it, nothing is queued for
    serving, no ``async_`` request is in flight (the general path waits while too many are:
    ``_awaited``), and the connection does not trace (every call and request gets a span there,
    on the context paths: ``_context_calls``).
    """
    return conn._life is _OPEN and not conn._reading and not conn._waiting and not conn._inbox and not conn._slots and conn._tracer is None


def call(
    conn: Connection, target: object, name: str | None, args: tuple[Any, ...], kwargs: dict[str, Any], op: Op = _CALLATTR
) -> Any:
    """``conn._request(Op.CALLATTR, target, (name, *args), kwargs)`` (with ``name`` None:
    ``conn._request(op, target, args, kwargs)``), fused when the connection is quiet: the
    same frame on the wire, the same reply or exception. Under a deadline (and no trace to
    pass on) the request carries the budget left, the wait ends at the deadline and
    ``DeadlineExceeded`` is raised there, as on the context path (``_context_calls``)."""
    state = _current_call()
    end: float | None = None
    budget: int | None = None  # the microseconds left, for a peer that takes call contexts
    if state is not None:
        end = state.deadline
        if end is None or state.traceparent is not None:
            return _general(conn, op, target, name, args, kwargs)
        left = end - _monotonic()
        if left <= 0:
            raise expired_error("the call")
        budget = int(left * 1_000_000) if left < MAX_SECONDS else _MAX_BUDGET  # (a peer's budget may be longer)
    proto = conn._proto
    lock = conn._lock
    write_lock = conn._write_lock
    write_lock.acquire()  # (the general path would wait for it too, to send)
    lock.acquire()
    if not _fast_ok(conn):
        lock.release()
        write_lock.release()
        return _general(conn, op, target, name, args, kwargs)
    seq = proto.next_seq()
    if not proto.carries_context:
        budget = None
    boxer = conn._boxer
    owed = bool(boxer.releases_owed)
    try:
        if owed:  # they go first, as on the general path
            if name is None and op is not _CALL:
                buffers = conn._encode(proto.send_request, seq, op, target, args, kwargs, False, _context(budget))
            else:
                buffers = conn._encode(proto.send_call, seq, target, name, args, kwargs, budget)
        else:  # (_encode's work, for a frame that owes nothing)
            if name is None and op is not _CALL:
                buffers = proto.send_request(seq, op, target, args, kwargs, False, _context(budget))
            else:
                buffers = proto.send_call(seq, target, name, args, kwargs, budget)
            if boxer._lent_now or boxer._typed_now:
                boxer.commit()
    except BaseException as exc:
        if not owed:
            boxer.rollback()
        lock.release()
        write_lock.release()
        if not owed and isinstance(exc, Exception):  # the general path encodes it again and says what is wrong
            return _general(conn, op, target, name, args, kwargs)
        raise
    conn._calls_sent += 1
    conn._fast_seq = seq  # (counted in stats.calls_pending)
    conn._reading = True  # this thread reads its own reply
    lock.release()
    try:
        conn._stream.write(buffers)
        conn._bytes_sent += len(buffers[0]) if len(buffers) == 1 else sum(map(len, buffers))
    except BaseException as exc:
        write_lock.release()
        conn._fast_seq = 0
        _give_back(conn)
        if isinstance(exc, ConnectionClosedError):
            conn._shutdown(notify=True)
        raise
    write_lock.release()

    timeout = conn._config.sync_request_timeout
    now = sent = _monotonic()
    deadline = None if timeout is None else now + timeout  # sync_request_timeout's
    limit = deadline if end is None or (deadline is not None and deadline < end) else end  # what ends a read
    while True:
        if limit is not None:
            timeout = limit - now if limit > now else 0.0
        try:
            if proto.holds_large_buffer:  # (read_into releases it once idle)
                count = read_into(conn._stream, proto, conn._rview, timeout)
            else:
                count = conn._stream.read_into(conn._rview, timeout)
        except Exception:
            count = 0  # a timeout, a lost stream: the general path reads again and reports it
        except BaseException:
            conn._fast_seq = 0
            _give_back(conn)
            raise
        lock.acquire()
        conn._fast_seq = 0
        request = None
        if count:
            view = conn._rview[:count]
            try:
                taken = proto.take_reply(view, seq)
                if taken is None and conn._nested < _INLINE_NESTING:  # a callback, maybe: served here
                    request = proto.take_request(view)
            except BaseException as exc:
                lock.release()
                _failed(conn, exc)
                raise
            if taken is not None:
                conn._reading = False
                conn._bytes_received += count
                if count == len(conn._rbuf):
                    conn._grow_reads()
                value, released = taken
                if released:
                    dropped: list[object] = []
                    conn._release(released, dropped)
                if conn._waiting:
                    conn._wake_one()
                lock.release()
                if end is not None and _monotonic() > end:
                    raise expired_error("the call")  # (late: as on the context path)
                return value
        # Anything else: a slot for the reply, and the general path takes over from here,
        # after serving a lone request (the peer calling back while it serves ours) right here.
        slot = AsyncResult(conn)
        if conn._life is not _CLOSED:  # (closed: every slot has been failed; _pump says so)
            conn._slots[seq] = slot
        if request is not None:
            conn._nested += 1  # (as _pump counts a request served while a thread waits)
            try:
                _serve_taken(conn, count, request)  # (gives back the lock)
            except BaseException:
                with lock:
                    conn._nested -= 1
                raise
            now = _monotonic()
            lock.acquire()
            conn._nested -= 1
            if slot._ready or conn._slots.get(seq) is not slot or (limit is not None and now >= limit):
                lock.release()  # (answered meanwhile, closed, or out of time: the general path says which)
                break
            del conn._slots[seq]
            if not _fast_ok(conn):  # (someone else reads or waits now: the general path)
                conn._slots[seq] = slot
                lock.release()
                break
            conn._fast_seq = seq
            conn._reading = True  # this thread reads its reply again
            lock.release()
            continue
        if count:
            try:
                conn._received(count)
            except BaseException:
                _give_back(conn)
                raise
        else:
            conn._reading = False
        if conn._waiting:  # the role is free: the reply may be in already (no _pump then), and a
            conn._wake_one()  # request just queued must not wait for a reader nobody woke
        lock.release()
        break
    if end is None:
        return conn._reply(slot, deadline)
    return conn._context_reply(slot, end, sent)  # (its timeouts count from the sending)


def _context(budget: int | None) -> CallContext | None:
    return None if budget is None else _new_tuple(CallContext, (budget, None))


def _general(conn: Connection, op: Op, target: object, name: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return conn._request(op, target, args if name is None else (name, *args), kwargs)


def serve_fast(conn: Connection, timeout: float | None = None) -> bool:
    """Read once and, if that brought exactly one request (after releases), serve it here.

    False, having done nothing, when the connection is not quiet (see :func:`_fast_ok`):
    the caller then serves it the general way. Bytes that are not a lone request are
    handed to the general path (queued for serving, replies delivered) and True returned.
    TimeoutError when nothing arrived within ``timeout`` seconds.
    """
    lock = conn._lock
    proto = conn._proto
    lock.acquire()
    if not _fast_ok(conn) or proto.receiving_large_payload:  # (read into the payload's own buffer)
        lock.release()
        return False
    conn._reading = True
    lock.release()
    try:
        if proto.holds_large_buffer:  # (read_into releases it once idle)
            count = read_into(conn._stream, proto, conn._rview, timeout)
        else:
            count = conn._stream.read_into(conn._rview, timeout)
    except TimeoutError:
        _give_back(conn)
        raise
    except Exception:
        count = 0  # the general path reads again and reports it
    except BaseException:
        _give_back(conn)
        raise
    lock.acquire()
    if not count:
        conn._reading = False
        lock.release()
        return False
    try:
        taken = proto.take_request(conn._rview[:count])
    except BaseException as exc:
        lock.release()
        _failed(conn, exc)
        raise
    if taken is None:
        try:
            conn._received(count)
        except BaseException:
            _give_back(conn)
            raise
        if conn._waiting:  # (the role is free again)
            conn._wake_one()
        lock.release()
        return True
    _serve_taken(conn, count, taken)
    return True


def _serve_taken(conn: Connection, count: int, taken: tuple[Any, Any]) -> None:
    """Serve the lone request ``take_request`` took from the ``count`` bytes read (the caller
    holds ``_lock``, and the reading role, both given back here)."""
    conn._reading = False
    conn._bytes_received += count
    conn._calls_served += 1
    if count == len(conn._rbuf):
        conn._grow_reads()
    fields, released = taken
    dropped: list[object] = []
    if released:
        conn._release(released, dropped)
    seq, op, target, args, kwargs, _, budget, traceparent = fields
    del fields, taken
    # A call context's state is made and registered now, under the lock (as for a queued
    # request): a CANCEL another thread reads before the handler starts finds it.
    served: Served | None = None
    context: CallContext | None = None
    if budget and traceparent is None:  # a deadline only: Served(end, None, conn) without its __init__ frame
        served = _new_object(Served)
        served.deadline = _monotonic() + budget / 1_000_000
        served.served = served.traceparent = served.span = None
        served.cancelled = False
        served.conn = conn
        conn._served[seq] = served  # (read under _lock by _cancel_received)
    elif budget is not None or traceparent is not None:  # (rarer: a trace, or no time left)
        context = CallContext(budget, traceparent)
        conn._context_arrived(seq, context)
    if conn._waiting:
        conn._wake_one()  # someone reads while this thread serves
    conn._lock.release()
    del dropped  # the last references: finalisers run outside the lock
    if served is not None:
        conn._serve_arrived(seq, op, target, args, kwargs, served)
    elif context is not None:  # (its state is found registered, as a queued request's)
        conn._serve_in_context(seq, op, target, args, kwargs, context)
    elif _current_call() is None:
        conn._serve_call(seq, op, target, args, kwargs)
    else:  # a thread waiting on a call under a call context: the callback is not under it
        conn._serve_outside_context(seq, op, target, args, kwargs)


def _give_back(conn: Connection) -> None:
    """Give the reading role back (no lock held), waking a waiting thread to take it."""
    with conn._lock:
        conn._reading = False
        if conn._waiting:
            conn._wake_one()


def _failed(conn: Connection, exc: BaseException) -> None:
    """The protocol refused what was read (no lock held): as ``_read`` reports it."""
    _give_back(conn)
    if isinstance(exc, RemoteProtocolError):
        conn._broken(exc)
    else:
        conn._lost_position()
