"""The call path: a remote call's frames sent and taken without events.

Owns the methods of :class:`Connection` that a driver's fast path uses for the commonest
exchange (a method call on a remote object, answered by a reply): ``send_call`` encodes a
CALLATTR (or CALL) request from a per-connection cache of encoded prefixes; ``take_reply`` and
``take_request`` take one complete reply (or request), and the releases before it, from a
buffer holding exactly that. It also owns ``_admits``, the one admission check these and
the general receiving path (``Connection._parse``) share. Each method writes the bytes,
makes the checks and records the state that ``send``/``receive_data`` would, or declines
(returns None) and leaves everything as it was for the general path. No I/O, no threads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._codec import NONE, TUPLE8, BackRef, Buffer
from ._decoder import trailing_bytes
from ._errors import LocalProtocolError, ProtocolError
from ._events import CallContext, Event, Op, Release, Reply, Request
from ._frames import HEADER, HEADER_SIZE, MAX_SEQ, FrameFlags, FrameType, Header
from ._messages import (
    BUDGET_BLOCK,
    HAS_BUDGET,
    RequestFields,
    decode_release,
    encode_release,
    encode_reply,
    encode_request,
    flat_kwargs,
    request_fields,
    seal_frame,
)
from ._shared import SharedCache
from ._states import State

if TYPE_CHECKING:
    from ._connection import ProtocolConfig
    from ._decoder import ValueDecoder
    from ._encoder import ValueEncoder

__all__ = ["CallPath", "Released"]

_REPLY: Final = int(FrameType.REPLY)
_REQUEST: Final = int(FrameType.REQUEST)
_RELEASE: Final = int(FrameType.RELEASE)
_CONTEXT_FLAG: Final = int(FrameFlags.CONTEXT)
_OPEN: Final = State.OPEN
_CALLATTR: Final = Op.CALLATTR
_CALL: Final = Op.CALL
_MAX_BUDGET: Final = 0xFFFFFFFFFFFFFFFF
_OP_END: Final = HEADER_SIZE + 1  # where a request's call context block goes (after the op byte)
_NONE_REPLY: Final = bytes(HEADER_SIZE) + bytes((NONE,))  # a REPLY frame of None, header left blank
_NO_KWARGS: Final = bytes((TUPLE8, 0))  # the encoded keywords of a call that has none
_MAX_PREFIXES: Final = 256  # encoded call prefixes kept per connection (then the cache starts over)

CallPrefixes = tuple[bytes, bytes, bytes, bytes | None]  # see CallPath._call_prefixes
Released = tuple[tuple[int, int], ...]  # the (oid, count) pairs of the RELEASE frames taken


class CallPath:
    """The call-path methods of :class:`Connection` (see the module doc)."""

    config: ProtocolConfig
    state: State
    _encoder: ValueEncoder
    _decoder: ValueDecoder
    _buffer: bytearray
    _header: Header | None
    _filled: int
    _pending_out: dict[int, None]  # (a dict: an empty one is a third of an empty set)
    _pending_in: dict[int, bool]
    _request_flags: int  # the REQUEST flags the settled version allows
    carries_context: bool  # the settled version has call contexts and CANCEL (2 and up)
    # (oid, name, number of arguments) -> the frames of such a call (_call_prefixes)
    _prefixes: dict[tuple[int, str | None, int], CallPrefixes]
    _shared: SharedCache | None

    def _admits(self, kind: int, flags: int, reserved: int, seq: int, length: int) -> bool:
        """The admission check of the frames calls are made of, from their raw header fields.

        True when a frame with this header may arrive now, complete: what ``parse_header``
        and ``_admit`` check passes (a REPLY to a request in flight, a REQUEST under a new
        id within ``max_pending``, a RELEASE; flags allowed, reserved zero, length within
        the limit) and it leaves the state OPEN. False decides nothing: the general path
        then checks the frame and says what is wrong with it, if anything.
        """
        if reserved or length > self.config.max_frame_size or self.state is not _OPEN:
            return False
        if kind == _REPLY:
            return not flags and seq in self._pending_out
        if kind == _REQUEST:
            pending = self._pending_in
            return not flags & ~self._request_flags and seq not in pending and len(pending) < self.config.max_pending
        return kind == _RELEASE and not flags

    # Connection's (real methods, not stubs under TYPE_CHECKING: mypyc compiles no class-level `if`)

    def send(self, event: Event) -> list[Buffer]:
        raise NotImplementedError

    def _by_value_encoder(self) -> ValueEncoder:
        raise NotImplementedError

    def _peer_frame_limit(self) -> int:
        raise NotImplementedError

    def _fail(self, error: ProtocolError) -> ProtocolError:
        raise NotImplementedError

    # -- sending ---------------------------------------------------------------------

    def send_request(
        self,
        seq: int,
        op: Op,
        target: object,
        args: tuple[object, ...] = (),
        kwargs: dict[str, object] | None = None,
        by_value: bool = False,
        context: CallContext | None = None,
    ) -> list[Buffer]:
        """``send(Request(seq, op, target, args, kwargs or {}, by_value, context))``, without
        making the event: the path every remote request takes (a ``context`` needs version 2)."""
        if self.state is not _OPEN or seq in self._pending_out or (context is not None and not self.carries_context):
            # let send() say what is wrong
            return self.send(Request(seq, op, target, args, {} if kwargs is None else kwargs, by_value, context))
        buffers = encode_request(self._encoder, seq, op, target, args, kwargs, by_value, self._peer_frame_limit(), context)
        self._pending_out[seq] = None  # a Request leaves the state OPEN (TRANSITIONS)
        return buffers

    def send_reply(self, seq: int, value: object, by_value: bool = False) -> list[Buffer]:
        """``send(Reply(seq, value))``, without making the event: the path every answer takes.

        ``by_value=True`` copies plain lists, dicts and sets in ``value`` as a request
        flagged BY_VALUE would have asked (the replier's choice: a result its service marks
        as plain data); without it the request's flag decides.
        """
        asked = self._pending_in.get(seq)
        if self.state is not _OPEN or asked is None:  # let send() say what is wrong
            return self.send(Reply(seq, value))
        if value is None:  # the commonest answer: one byte of payload, nothing to encode or check
            buf = bytearray(_NONE_REPLY)
            HEADER.pack_into(buf, 0, _REPLY, 0, 0, seq, 1)  # (seq came in a header: in range)
            buffers: list[Buffer] = [buf]
        else:
            encoder = self._by_value_encoder() if by_value or asked else self._encoder
            buffers = encode_reply(encoder, seq, value, self._peer_frame_limit())
        del self._pending_in[seq]  # a Reply leaves the state OPEN (TRANSITIONS)
        return buffers

    def send_release(self, refs: Released) -> list[Buffer]:
        """``send(Release(refs))``, without making the event: the same bytes and checks
        (the RELEASE frames a driver sends before its next frame, after proxies died)."""
        if self.state is not _OPEN:  # let send() say what is wrong
            return self.send(Release(refs))
        return encode_release(refs, self._peer_frame_limit())

    def send_call(
        self, seq: int, target: object, name: str | None, args: tuple[object, ...], kwargs: dict[str, object] | None, budget_us: int | None = None
    ) -> list[Buffer]:
        """``send_request(seq, Op.CALLATTR, target, (name, *args), kwargs)`` (with ``name``
        None: ``send_request(seq, Op.CALL, target, args, kwargs)``, a call of the target
        itself), with ``context=CallContext(budget_us)`` when ``budget_us`` is given: the
        same bytes and checks, the part before the arguments encoded once per (target, name,
        argument count) when the target is a :class:`BackRef`."""
        if (
            self.state is not _OPEN
            or seq in self._pending_out
            or type(target) is not BackRef
            or not 0 <= seq <= MAX_SEQ
            or (budget_us is not None and (not self.carries_context or type(budget_us) is not int or not 0 <= budget_us <= _MAX_BUDGET))
        ):
            return self._send_call_general(seq, target, name, args, kwargs, budget_us)
        key = (target.oid, name, len(args))
        cached = self._prefixes.get(key)
        if cached is None:
            cached = self._shared_prefixes(target, name, len(args))
            if cached is None:  # not cacheable (the general path says why, if it fails)
                return self._send_call_general(seq, target, name, args, kwargs, budget_us)
            if len(self._prefixes) >= _MAX_PREFIXES:
                self._prefixes.clear()
            self._prefixes[key] = cached
        with_args = args or kwargs
        if budget_us is None:
            buf = bytearray(cached[0] if with_args else cached[1])
            flags = 0
        else:
            frame = cached[2] if with_args else cached[3]
            if frame is None:  # (a whole frame over the peer's limit with the context block)
                return self._send_call_general(seq, target, name, args, kwargs, budget_us)
            buf = bytearray(frame)
            BUDGET_BLOCK.pack_into(buf, _OP_END, HAS_BUDGET, budget_us)
            flags = _CONTEXT_FLAG
        if with_args:
            encoder = self._encoder
            encoder.start(buf)
            try:
                for item in args:
                    encoder.write(item, 1)  # (as the tuple writer writes its items)
                if kwargs:
                    encoder.write(flat_kwargs(kwargs))
                else:  # (the empty tuple's bytes, as its writer would append them)
                    encoder._buf += _NO_KWARGS
            except BaseException:
                encoder.finish()  # (drops the part-encoded frame)
                raise
            buffers = seal_frame(encoder, buf, _REQUEST, flags, seq, self._peer_frame_limit())
        else:  # the whole frame is cached, its length checked against the peer's limit
            HEADER.pack_into(buf, 0, _REQUEST, flags, 0, seq, len(buf) - HEADER_SIZE)
            buffers = [buf]
        self._pending_out[seq] = None  # a Request leaves the state OPEN (TRANSITIONS)
        return buffers

    def _send_call_general(
        self, seq: int, target: object, name: str | None, args: tuple[object, ...], kwargs: dict[str, object] | None, budget_us: int | None
    ) -> list[Buffer]:
        context = None if budget_us is None else CallContext(budget_us)
        if name is None:
            return self.send_request(seq, _CALL, target, args, kwargs, False, context)
        return self.send_request(seq, _CALLATTR, target, (name, *args), kwargs, False, context)

    def _shared_prefixes(self, target: BackRef, name: str | None, count: int) -> CallPrefixes | None:
        """:meth:`_call_prefixes`, encoded once for all the connections sharing a cache (the
        bytes depend on nothing else: the limits are the shared config's)."""
        shared = self._shared
        if shared is None:
            return self._call_prefixes(target, name, count)
        key = (target.oid, name, count, self._peer_frame_limit())
        cached = shared.call_prefixes(key)
        if cached is None:
            cached = self._call_prefixes(target, name, count)
            if cached is not None:
                shared.keep_call_prefixes(key, cached)
        return cached

    def _call_prefixes(self, target: BackRef, name: str | None, count: int) -> CallPrefixes | None:
        """The encoded frames of a call with ``count`` arguments, headers left blank: up
        to the arguments, and whole when there are none; each without and with a call
        context block (a budget, zero until packed; the whole frame None where that
        block takes it over the peer's limit). None when the general path must encode it
        (a limit is exceeded, a value is out of range)."""
        encoder = self._encoder
        buf = bytearray(HEADER_SIZE)
        encoder.start(buf)
        try:
            buf.append(_CALL if name is None else _CALLATTR)
            encoder.write(target)
            if name is None:
                encoder.start_tuple(count, 0)
            else:
                encoder.write(name, encoder.start_tuple(count + 1, 0))
            parts = encoder.finish()
            if len(parts) != 1:  # (a name too long to sit in the frame itself)
                return None
            prefix = bytes(buf)
            encoder.start(buf)
            encoder.write(())
            seal_frame(encoder, buf, _REQUEST, 0, 0, self._peer_frame_limit())
        except ProtocolError:
            encoder.finish()
            return None
        whole = bytes(buf)
        block = bytes(BUDGET_BLOCK.size)
        with_context = whole[:_OP_END] + block + whole[_OP_END:]
        fits = len(with_context) - HEADER_SIZE <= self._peer_frame_limit()
        return prefix, whole, prefix[:_OP_END] + block + prefix[_OP_END:], with_context if fits else None

    # -- receiving -------------------------------------------------------------------

    def take_reply(self, data: Buffer, seq: int) -> tuple[object, Released] | None:
        """``receive_data(data)`` when ``data`` holds exactly the reply to request ``seq``,
        after zero or more RELEASE frames, and nothing is buffered: the reply's value and
        the releases' entries. None (nothing consumed, nothing changed) otherwise.

        Bad bytes inside those frames fail the connection and raise, as ``receive_data``
        does.
        """
        if self._buffer or self._header is not None or self._filled >= 0 or len(data) < HEADER_SIZE:
            return None
        kind, flags, reserved, frame_seq, length = HEADER.unpack_from(data, 0)
        if kind == _REPLY and frame_seq == seq and HEADER_SIZE + length == len(data):  # the reply alone
            if not self._admits(kind, flags, reserved, frame_seq, length):
                return None
            pos = 0
        else:
            pos = self._frames_before(data, _REPLY, seq)
            if pos <= 0:
                return None
        view = memoryview(data)  # (released in `finally`: a with-statement costs two bound methods)
        try:
            released = self._released(view, pos) if pos else ()
            end = len(view)
            if end == pos + HEADER_SIZE + 1 and view[pos + HEADER_SIZE] == NONE:
                value = None  # the commonest answer (as send_reply has it): nothing to decode
            else:  # (decode's work, on the whole view: one call fewer per reply)
                (value,), stop = self._decoder.decode_values(view, pos + HEADER_SIZE, end, 1)
                if stop != end:
                    raise trailing_bytes(end - stop)
        except BaseException as exc:
            raise self._taking_failed(exc)
        finally:
            view.release()
        self._pending_out.pop(seq, None)
        return value, released

    def take_request(self, data: Buffer) -> tuple[RequestFields, Released] | None:
        """``receive_data(data)`` when ``data`` holds exactly one request of the peer's,
        after zero or more RELEASE frames, and nothing is buffered: the request's fields
        (``RequestFields``: its call context as a budget and a traceparent) and the
        releases' entries. None (nothing consumed,
        nothing changed) otherwise."""
        if self._buffer or self._header is not None or self._filled >= 0 or len(data) < HEADER_SIZE:
            return None
        kind, flags, reserved, seq, length = HEADER.unpack_from(data, 0)
        if kind == _REQUEST and HEADER_SIZE + length == len(data):  # the request alone (as take_reply)
            if not self._admits(kind, flags, reserved, seq, length):
                return None
            pos = 0
        else:
            pos = self._frames_before(data, _REQUEST, -1)
            if pos < 0:
                return None
            _, flags, _, seq, _ = HEADER.unpack_from(data, pos)
        view = memoryview(data)  # (released in `finally`, as in take_reply)
        try:
            released = self._released(view, pos) if pos else ()
            fields = request_fields(view[pos + HEADER_SIZE :], seq, flags, self._decoder)
        except BaseException as exc:
            raise self._taking_failed(exc)
        finally:
            view.release()
        self._pending_in[seq] = fields[5]
        return fields, released

    def _taking_failed(self, exc: BaseException) -> BaseException:
        """What ``take_reply``/``take_request`` raise when decoding what they took raised
        ``exc``: the connection fails either way (bad bytes: as ``receive_data`` fails; an
        exception of the unbox hook: the stream position is lost along with the call, and
        the hook's exception goes on)."""
        if isinstance(exc, ProtocolError):
            return self._fail(exc)
        self._fail(LocalProtocolError("an exception in the unbox hook left the stream unreadable"))
        return exc

    def _frames_before(self, data: Buffer, kind: int, seq: int) -> int:
        """Where the last frame of ``data`` starts when ``data`` is exactly RELEASE frames
        then one frame of ``kind`` (with ``seq``, unless -1), all admitted; else -1."""
        if self._buffer or self._header is not None or self._filled >= 0:
            return -1
        end = len(data)
        pos = 0
        while end - pos >= HEADER_SIZE:
            frame_kind, flags, reserved, frame_seq, length = HEADER.unpack_from(data, pos)
            if frame_kind != kind and frame_kind != _RELEASE:  # (no admission check needed to say no)
                return -1
            stop = pos + HEADER_SIZE + length
            if stop > end or not self._admits(frame_kind, flags, reserved, frame_seq, length):
                return -1
            if frame_kind == kind:
                return pos if stop == end and (seq < 0 or frame_seq == seq) else -1
            pos = stop
        return -1

    def _released(self, view: memoryview, end: int) -> Released:
        """The entries of the (admitted, complete) RELEASE frames in ``view[:end]``."""
        entries: list[tuple[int, int]] = []
        pos = 0
        while pos < end:
            stop = pos + HEADER_SIZE + HEADER.unpack_from(view, pos)[4]
            entries += decode_release(view[pos + HEADER_SIZE : stop]).refs
            pos = stop
        return tuple(entries)
