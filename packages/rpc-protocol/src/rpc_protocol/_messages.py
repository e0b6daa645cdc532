"""Message payloads: one event <-> the payload bytes of one frame.

Owns the payload layout of each frame type (see ``docs/protocol.md``): values go through
the value codec, fixed fields through ``struct``. It checks that decoded payloads have the
right shape (a tuple of args, string keys, a whole number of release entries) and raises
:class:`RemoteProtocolError` otherwise. It keeps no connection state: sequence numbers and
legal orderings are the state machine's job.
"""

from __future__ import annotations

import struct
from typing import Any, Final, TypeGuard

from ._codec import BACKREF, REF, REF_TYPED, Buffer
from ._decoder import ValueDecoder
from ._encoder import ValueEncoder
from ._errors import EncodeError, RemoteProtocolError
from ._events import CallContext, Cancel, Close, ErrorReply, Event, Hello, Op, Ping, Pong, Release, Reply, Request
from ._frames import HEADER, HEADER_SIZE, MAX_SEQ, MIN_FRAME_LIMIT, FrameFlags, FrameType, Header
from ._shared import MAX_HELLO_KEPT, SharedCache

__all__ = [
    "BUDGET_BLOCK", "HAS_BUDGET",
    "encode_frame", "encode_request", "encode_reply", "flat_kwargs", "seal_frame",
    "decode_hello", "decode_payload", "decode_release", "decode_request", "request_fields", "RequestFields",
]

_U32 = struct.Struct("<I")
_RELEASE_ENTRY = struct.Struct("<QI")
_OPS: Final = tuple(Op(n) if n in Op._value2member_map_ else None for n in range(256))
_BY_VALUE: Final = int(FrameFlags.BY_VALUE)
_REQUEST: Final = int(FrameType.REQUEST)  # (plain ints: struct packs them without calling __index__)
_REPLY: Final = int(FrameType.REPLY)
_CONTEXT: Final = int(FrameFlags.CONTEXT)
# The call context block after a CONTEXT request's op byte: which fields follow, then each.
HAS_BUDGET: Final = 0x01
_HAS_TRACE: Final = 0x02
_U64 = struct.Struct("<Q")
BUDGET_BLOCK: Final = struct.Struct("<BQ")  # the block of a context with a budget only
_TRACE = struct.Struct("<16s8sB")  # trace-id, parent-id, trace-flags (W3C traceparent version 00)
_NO_ID: Final = bytes(16)
_unpack_u64: Final = _U64.unpack_from


def encode_frame(event: Event, encoder: ValueEncoder, max_frame_size: int) -> list[Buffer]:
    """Encode ``event`` (anything but a Preface) as a header followed by its payload."""
    if type(event) is Request:
        return encode_request(
            encoder, event.seq, event.op, event.target, event.args, event.kwargs, event.by_value, max_frame_size, event.context
        )
    if type(event) is Reply:
        return encode_reply(encoder, event.seq, event.value, max_frame_size)
    if type(event) is Release:
        return encode_release(event.refs, max_frame_size)
    # frames of bytes, no values: made without the encoder
    if type(event) is Close:
        return [_frame_of_bytes(FrameType.CLOSE, 0, event.reason.encode("utf-8", "surrogatepass"), max_frame_size)]
    if type(event) is Cancel:
        return [_frame_of_bytes(FrameType.CANCEL, event.seq, b"", max_frame_size)]
    if type(event) is Ping or type(event) is Pong:
        payload: object = event.payload
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise EncodeError(f"a {type(event).__name__}'s payload must be bytes, not {type(payload).__name__}")
        return [_frame_of_bytes(FrameType.PING if type(event) is Ping else FrameType.PONG, event.seq, payload, max_frame_size)]
    buf = bytearray(HEADER_SIZE)
    kind: FrameType
    encoder.start(buf)
    if type(event) is ErrorReply:
        kind = FrameType.ERROR
        encoder.write((event.exc_module, event.exc_type, event.args, event.traceback))
    elif type(event) is Hello:
        kind = FrameType.HELLO
        encoder.write((tuple(sorted(event.capabilities)), event.services, event.max_frame_size, event.root))
    else:
        encoder.finish()
        raise EncodeError(f"{type(event).__name__} is not a frame event")
    return seal_frame(encoder, buf, kind, 0, event.seq if type(event) is ErrorReply else 0, max_frame_size)


def _frame_of_bytes(kind: int, seq: int, payload: Buffer, max_frame_size: int) -> bytearray:
    """The frame of ``kind`` whose payload is ``payload`` itself."""
    buf = bytearray(HEADER_SIZE)
    buf += payload
    _seal(buf, kind, 0, seq, len(buf) - HEADER_SIZE, max_frame_size)
    return buf


def encode_request(
    encoder: ValueEncoder,
    seq: int,
    op: Op,
    target: object,
    args: tuple[object, ...],
    kwargs: dict[str, object] | None,
    by_value: bool,
    max_frame_size: int,
    context: CallContext | None = None,
) -> list[Buffer]:
    """The frame of a Request with these fields (the event itself need not exist); with a
    ``context``, flagged CONTEXT and its block after the op byte (version 2)."""
    if type(op) is not Op and not (type(op) is int and 0 <= op < 256 and _OPS[op] is not None):
        raise EncodeError(f"{op!r} is not a request operation")
    buf = bytearray(HEADER_SIZE)
    encoder.start(buf)
    buf.append(op)
    flags = _BY_VALUE if by_value else 0
    if context is not None:
        buf += encode_context(context)
        flags |= _CONTEXT
    at = len(buf)
    encoder.write(target)
    if len(buf) <= at or (buf[at] != BACKREF and buf[at] != REF and buf[at] != REF_TYPED):
        encoder.finish()  # (drops the part-encoded frame)
        raise EncodeError(f"a request's target must be a reference, not a plain value ({type(target).__name__})")
    encoder.write(args)
    encoder.write(flat_kwargs(kwargs))
    return seal_frame(encoder, buf, _REQUEST, flags, seq, max_frame_size)


def flat_kwargs(kwargs: dict[Any, object] | None) -> tuple[object, ...]:
    """Keyword arguments as they travel: a flat tuple of names and values (the names are
    checked here: ``Any``, so that compiled code does not check them first, with TypeError)."""
    if not kwargs:
        return ()
    flat = tuple(item for pair in kwargs.items() for item in pair)
    if not all(type(name) is str for name in flat[::2]):
        raise EncodeError("keyword argument names must be str")
    return flat


def encode_context(context: CallContext) -> bytes:
    """The call context block (docs/protocol.md §4); EncodeError for an empty or invalid one."""
    budget: object = context[0]  # (object, not int | None: the checks below run compiled too)
    traceparent = context[1]
    if traceparent is None and type(budget) is int and 0 <= budget <= 0xFFFFFFFFFFFFFFFF:
        return BUDGET_BLOCK.pack(HAS_BUDGET, budget)  # (the common case: a deadline only)
    present = (0 if budget is None else HAS_BUDGET) | (0 if traceparent is None else _HAS_TRACE)
    if not present:
        raise EncodeError("a call context needs a budget or a traceparent")
    out = bytearray((present,))
    if budget is not None:
        if type(budget) is not int or not 0 <= budget <= 0xFFFFFFFFFFFFFFFF:
            raise EncodeError(f"call budget {budget!r} is not a whole number of microseconds in 0..2**64-1")
        out += _U64.pack(budget)
    if traceparent is not None:
        out += _pack_traceparent(traceparent)
    return bytes(out)


def _pack_traceparent(text: str) -> bytes:
    if not (
        type(text) is str
        and len(text) == 55
        and text.startswith("00-")
        and text[35] == "-"
        and text[52] == "-"
        and text == text.lower()
        and text.isascii()
    ):
        raise EncodeError(f"{text!r:.80} is not a version-00 W3C traceparent")
    try:
        trace_id, parent_id, flags = bytes.fromhex(text[3:35]), bytes.fromhex(text[36:52]), bytes.fromhex(text[53:55])
    except ValueError:
        raise EncodeError(f"{text!r} is not a version-00 W3C traceparent") from None
    if trace_id == _NO_ID or parent_id == _NO_ID[:8]:
        raise EncodeError(f"{text!r}: all-zero trace or parent ids are invalid")
    return _TRACE.pack(trace_id, parent_id, flags[0])


def _decode_context(payload: memoryview, pos: int, end: int) -> tuple[int | None, str | None, int]:
    """The call context block at ``payload[pos:]``: its budget and traceparent (one or
    both set), and the position after it."""
    if pos >= end:
        raise RemoteProtocolError("call context truncated")
    present = payload[pos]
    pos += 1
    if not present or present & ~(HAS_BUDGET | _HAS_TRACE):
        raise RemoteProtocolError(f"malformed call context (fields 0x{present:02x})")
    budget: int | None = None
    traceparent: str | None = None
    if present & HAS_BUDGET:
        if end - pos < 8:
            raise RemoteProtocolError("call context truncated")
        budget = _U64.unpack_from(payload, pos)[0]
        pos += 8
    if present & _HAS_TRACE:
        if end - pos < _TRACE.size:
            raise RemoteProtocolError("call context truncated")
        trace_id, parent_id, flags = _TRACE.unpack_from(payload, pos)
        if trace_id == _NO_ID or parent_id == _NO_ID[:8]:
            raise RemoteProtocolError("call context with an all-zero trace or parent id")
        traceparent = f"00-{trace_id.hex()}-{parent_id.hex()}-{flags:02x}"
        pos += _TRACE.size
    return budget, traceparent, pos


def encode_reply(encoder: ValueEncoder, seq: int, value: object, max_frame_size: int) -> list[Buffer]:
    """The frame of a Reply with these fields (the event itself need not exist)."""
    buf = bytearray(HEADER_SIZE)
    encoder.start(buf)
    encoder.write(value)
    return seal_frame(encoder, buf, _REPLY, 0, seq, max_frame_size)


def encode_release(refs: tuple[tuple[int, int], ...], max_frame_size: int) -> list[Buffer]:
    """The RELEASE frame of ``refs``: a count, then each (oid, count) entry."""
    length = 4 + _RELEASE_ENTRY.size * len(refs)
    buf = bytearray(HEADER_SIZE + length)
    _U32.pack_into(buf, HEADER_SIZE, len(refs))
    pos = HEADER_SIZE + 4
    try:
        for oid, count in refs:
            _RELEASE_ENTRY.pack_into(buf, pos, oid, count)
            pos += _RELEASE_ENTRY.size
    except struct.error:
        raise EncodeError("release entry out of range") from None
    if length > max_frame_size:
        raise EncodeError(f"RELEASE frame of {length} bytes exceeds the peer's limit of {max_frame_size}")
    HEADER.pack_into(buf, 0, FrameType.RELEASE, 0, 0, 0, length)
    return [buf]


def seal_frame(encoder: ValueEncoder, buf: bytearray, kind: int, flags: int, seq: int, max_frame_size: int) -> list[Buffer]:
    """Finish the encoding that began with the header-sized ``buf``; fill the header in
    (``kind``: a :class:`FrameType`, passed as a plain int on the hot paths)."""
    parts = encoder.finish()
    _seal(buf, kind, flags, seq, (len(buf) if len(parts) == 1 else sum(map(len, parts))) - HEADER_SIZE, max_frame_size)
    return parts


def _seal(buf: bytearray, kind: int, flags: int, seq: int, length: int, max_frame_size: int) -> None:
    """Check a frame's length and sequence number, then fill its header in."""
    if length > max_frame_size:
        raise EncodeError(f"{FrameType(kind).name} frame of {length} bytes exceeds the peer's limit of {max_frame_size}")
    if not 0 <= seq <= MAX_SEQ:
        raise EncodeError(f"sequence number {seq} out of range")
    HEADER.pack_into(buf, 0, kind, flags, 0, seq, length)


def decode_payload(header: Header, payload: memoryview, decoder: ValueDecoder, shared: SharedCache | None = None) -> Event:
    """Turn a validated header and its complete payload into an event (``shared``: see
    :func:`decode_hello`)."""
    kind = header.kind
    if kind is FrameType.REQUEST:
        return decode_request(payload, header.seq, header.flags, decoder)
    if kind is FrameType.REPLY:
        return Reply(header.seq, decoder.decode(payload))
    if kind is FrameType.ERROR:
        fields = decoder.decode(payload)
        if (
            type(fields) is not tuple
            or len(fields) != 4
            or not all(type(fields[i]) is want for i, want in ((0, str), (1, str), (2, tuple), (3, str)))
        ):
            raise RemoteProtocolError("malformed error reply")
        return ErrorReply(header.seq, *fields)
    if kind is FrameType.HELLO:
        return decode_hello(payload, decoder, shared)
    if kind is FrameType.RELEASE:
        return decode_release(payload)
    if kind is FrameType.PING:
        return Ping(header.seq, bytes(payload))
    if kind is FrameType.PONG:
        return Pong(header.seq, bytes(payload))
    if kind is FrameType.CANCEL:
        _expect_end(0, len(payload))
        return Cancel(header.seq)
    try:
        return Close(str(payload, "utf-8", "surrogatepass"))
    except UnicodeDecodeError:
        raise RemoteProtocolError("close reason is not UTF-8") from None


def decode_hello(payload: memoryview, decoder: ValueDecoder, shared: SharedCache | None = None) -> Hello:
    """The Hello in a HELLO frame's payload. With ``shared``, a payload decoded before (by
    any connection sharing it) is not decoded and checked again: only its root is unboxed,
    by ``decoder``'s hook, as decoding it would."""
    limits = decoder.limits
    if shared is None or len(payload) > MAX_HELLO_KEPT or not shared.serves(limits):
        return _hello(decoder.decode(payload))
    key = bytes(payload)
    kept = shared.hello(key)
    if kept is None:
        try:
            fresh = _hello(ValueDecoder(limits=limits).decode(key))  # (references left as they are)
        except RemoteProtocolError:
            fresh = None
        if fresh is None or not shared.keep_hello(key, fresh):
            return _hello(decoder.decode(payload))  # (says what is wrong, if anything)
        kept = fresh
    return Hello(kept.services, kept.capabilities, kept.max_frame_size, decoder.unboxed(kept.root))


def _hello(fields: object) -> Hello:
    if type(fields) is not tuple or len(fields) != 4:
        raise RemoteProtocolError("malformed hello")
    capabilities, services, max_frame_size, root = fields
    if not (_strings(capabilities) and _strings(services) and type(max_frame_size) is int and max_frame_size >= MIN_FRAME_LIMIT):
        raise RemoteProtocolError("malformed hello")
    return Hello(services, frozenset(capabilities), max_frame_size, root)


def decode_request(payload: memoryview, seq: int, flags: int, decoder: ValueDecoder) -> Request:
    """The Request in a REQUEST frame's payload (header fields ``seq`` and ``flags``)."""
    seq, op, target, args, kwargs, by_value, budget, traceparent = request_fields(payload, seq, flags, decoder)
    context = None if budget is None and traceparent is None else CallContext(budget, traceparent)
    return Request(seq, op, target, args, kwargs, by_value, context)


# A Request's fields: seq, op, target, args, kwargs, by_value, then its call context's
# (budget_us, traceparent: both None without one), not made into a CallContext (per call)
RequestFields = tuple[int, Op, object, tuple[object, ...], dict[str, object], bool, int | None, str | None]


def request_fields(payload: memoryview, seq: int, flags: int, decoder: ValueDecoder) -> RequestFields:
    """The fields of the Request in a REQUEST frame's payload (see :data:`RequestFields`)."""
    end = len(payload)
    op = _OPS[payload[0]] if end else None
    if op is None:
        raise RemoteProtocolError(f"unknown request operation {payload[0] if end else None}")
    budget: int | None = None
    traceparent: str | None = None
    pos = 1
    if flags & _CONTEXT:
        if end >= 10 and payload[1] == HAS_BUDGET:  # (the common case: a deadline only)
            budget, pos = _unpack_u64(payload, 2)[0], 10
        else:
            budget, traceparent, pos = _decode_context(payload, 1, end)
    if pos >= end or (payload[pos] != BACKREF and payload[pos] != REF and payload[pos] != REF_TYPED):
        # (a plain value as target would let the peer run safe special methods on values of
        # its choosing, with operands of its choosing: str.format reading attributes, "x" * 10**9)
        raise RemoteProtocolError("a request's target must be a reference (BACKREF, REF or REF_TYPED), not a plain value")
    target, args, flat = decoder.decode_call(payload, pos, end)
    if type(args) is not tuple or type(flat) is not tuple or len(flat) % 2:
        raise RemoteProtocolError("malformed request arguments")
    kwargs: dict[str, object] = {}
    if flat:
        keys = flat[::2]
        if not all(type(key) is str for key in keys):
            raise RemoteProtocolError("keyword argument names must be strings")
        kwargs = dict(zip(keys, flat[1::2]))
    return seq, op, target, args, kwargs, bool(flags & _BY_VALUE), budget, traceparent


def decode_release(payload: memoryview) -> Release:
    """The Release in a RELEASE frame's payload."""
    end = len(payload)
    if end < 4:
        raise RemoteProtocolError("release frame truncated")
    count = _U32.unpack_from(payload, 0)[0]
    if end != 4 + count * _RELEASE_ENTRY.size:
        raise RemoteProtocolError("release frame length does not match its entry count")
    return Release(tuple(_RELEASE_ENTRY.iter_unpack(payload[4:])))


def _strings(value: object) -> TypeGuard[tuple[str, ...]]:
    return type(value) is tuple and all(type(item) is str for item in value)


def _expect_end(pos: int, end: int) -> None:
    if pos != end:
        raise RemoteProtocolError(f"{end - pos} trailing bytes after the payload")
