"""The sans-I/O connection: bytes in, events out; events in, bytes out.

Owns one side of a connection's protocol state: the handshake and version settlement, the
framing of received bytes, the state table checks, and sequence-number bookkeeping
(replies only to requests in flight, no duplicate request ids, a bound on requests in
flight). It performs no I/O, starts no threads and is not thread-safe: the caller
serialises ``send`` and ``receive_data``. Symmetric: after the handshake either side may
send requests.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from typing import Callable, Final

from ._calls import CallPath, CallPrefixes
from ._codec import DEFAULT_LIMITS, BoxHook, Buffer, CodecLimits, Ref, UnboxHook
from ._decoder import ValueDecoder
from ._encoder import ValueEncoder
from ._errors import HandshakeError, LocalProtocolError, ProtocolError, RemoteProtocolError
from ._events import Cancel, Close, ErrorReply, Event, Hello, Ping, Pong, Preface, Release, Reply, Request
from ._frames import (
    CONTEXT_VERSION, HEADER, HEADER_SIZE, MAX_SEQ, MIN_FRAME_LIMIT, PREFACE_SIZE, FrameFlags, FrameType, Header, pack_preface, parse_header, parse_preface,
)
from ._messages import decode_payload, decode_release, decode_request, encode_frame
from ._shared import MAX_HELLO_KEPT, SharedCache
from ._states import RECV, SEND, TRANSITIONS, State

__all__ = ["Connection", "ProtocolConfig"]

_DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024
#: The largest frame taken before the peer's Hello (a Hello, or a Close saying why not): a
#: peer that has not even said who it is cannot make this side buffer max_frame_size bytes.
HANDSHAKE_FRAME_LIMIT: Final = 256 * 1024
# Payloads at least this long are gathered in a buffer of their own, which the I/O layer may
# fill directly (payload_buffer); one up to _KEEP_LARGE bytes is kept for the next one.
_LARGE_PAYLOAD: Final = 256 * 1024
# A read holding a peer's preface and HELLO frame, looked up whole in the SharedCache: longer
# than those two headers, at most as long as a Hello it keeps (see _parse)
_HANDSHAKE_MIN: Final = PREFACE_SIZE + HEADER_SIZE
_HANDSHAKE_KEPT: Final = PREFACE_SIZE + HEADER_SIZE + MAX_HELLO_KEPT
_KEEP_LARGE: Final = 16 * 1024 * 1024
_EVENT_OF: Final[dict[FrameType, type]] = {
    FrameType.HELLO: Hello,
    FrameType.REQUEST: Request,
    FrameType.REPLY: Reply,
    FrameType.ERROR: ErrorReply,
    FrameType.RELEASE: Release,
    FrameType.PING: Ping,
    FrameType.PONG: Pong,
    FrameType.CLOSE: Close,
    FrameType.CANCEL: Cancel,
}

_REPLY: Final = int(FrameType.REPLY)
_REQUEST: Final = int(FrameType.REQUEST)
_REQUEST_FLAGS: Final = int(FrameFlags.BY_VALUE)
_CONTEXT_FLAG: Final = int(FrameFlags.CONTEXT)
# Frame types whose arrival leaves an OPEN connection OPEN, read off the state table once.
_OPEN_TRAFFIC: Final = frozenset(
    kind for kind, event in _EVENT_OF.items() if TRANSITIONS.get((State.OPEN, RECV, event)) is State.OPEN
)


def _lazy_buffer(size: int) -> bytearray | mmap.mmap:
    """A zeroed, writable buffer whose memory is committed only as it is written.

    An anonymous mapping, not ``bytearray(size)`` (which writes every byte at once): a
    header announcing a frame of up to the limit must not cost that much memory before
    the peer has sent the bytes.
    """
    try:
        return mmap.mmap(-1, size)
    except (OSError, ValueError):  # e.g. strict overcommit: fall back to plain memory
        return bytearray(size)


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """Limits one side enforces on what it receives.

    ``max_frame_size`` is checked against every header before its payload is read and is
    announced to the peer in our Hello; ``max_pending`` bounds the peer's requests that
    we have not answered yet.
    """

    max_frame_size: int = _DEFAULT_MAX_FRAME
    max_pending: int = 1024
    limits: CodecLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        if self.max_frame_size < MIN_FRAME_LIMIT or self.max_frame_size > 0xFFFFFFFF:
            raise ValueError("max_frame_size must be between 1 KiB and 4 GiB - 1")
        if self.max_pending < 1:
            raise ValueError("max_pending must be at least 1")


class Connection(CallPath):
    """One side of a connection, as a state machine.

    ``box``, ``unbox`` and ``unbox_backref`` are the value codec's hooks (see
    :class:`ValueEncoder` and :class:`ValueDecoder`): the service layer uses them to turn
    objects into references and references into proxies (or back into its own objects).
    ``shared``, a :class:`SharedCache` made for ``config`` (or an equal config), is what
    this connection shares with the others made with it (what their handshakes and first
    calls decode and encode: see :mod:`._shared`).
    """

    def __init__(
        self,
        config: ProtocolConfig = ProtocolConfig(),
        *,
        box: BoxHook | None = None,
        unbox: UnboxHook | None = None,
        unbox_backref: Callable[[int], object] | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        if shared is not None and shared.config is not config and shared.config != config:
            raise ValueError("a SharedCache serves the connections of the config it was made for")
        self.config = config
        self._shared = shared
        self.state = State.START
        self.version: int | None = None
        self.peer_hello: Hello | None = None
        self._our_range: tuple[int, int] | None = None
        self._peer_range: tuple[int, int] | None = None
        self._encoder = ValueEncoder(box, config.limits, shared=shared)
        self._box = box
        self._values_encoder: ValueEncoder | None = None  # (by_value_encoder(): made on first use)
        self._decoder = ValueDecoder(unbox, config.limits, unbox_backref, shared=shared)
        self._buffer = bytearray()
        self._header: Header | None = None
        self._payload: bytearray | mmap.mmap | None = None  # the large-payload buffer, reused
        self._filled = -1  # bytes of a large payload gathered so far; -1: none under way
        self._error: ProtocolError | None = None
        self._pending_out: dict[int, None] = {}  # requests of ours in flight (a dict: smaller than a set)
        self._pending_in: dict[int, bool] = {}  # seq -> reply wanted by value
        self._pings: dict[int, None] = {}
        self._next_seq = 1
        self._request_flags = _REQUEST_FLAGS  # the REQUEST flags the settled version allows
        # Whether the settled version has call contexts and CANCEL (version 2 and up).
        self.carries_context = False
        self._prefixes: dict[tuple[int, str | None, int], CallPrefixes] = {}

    def __repr__(self) -> str:
        return f"<rpc_protocol.Connection state={self.state.value} version={self.version}>"

    @property
    def error(self) -> ProtocolError | None:
        """What failed the connection (state FAILED), else None. ``receive_data`` returns
        the events completed before bad bytes and raises this on its next call: a caller
        about to wait for more bytes checks it first."""
        return self._error

    # -- sending ---------------------------------------------------------------------

    def next_seq(self) -> int:
        """A sequence number not used by any request or ping of ours still in flight."""
        seq = self._next_seq
        while seq in self._pending_out or seq in self._pings:
            seq = seq % MAX_SEQ + 1
        self._next_seq = seq % MAX_SEQ + 1
        return seq

    def send(self, event: Event) -> list[Buffer]:
        """Return the buffers that put ``event`` on the wire, to be written in order."""
        state = self._check(SEND, type(event))
        if type(event) is Preface:
            if not 1 <= event.min_version <= event.max_version <= 0xFF:
                raise LocalProtocolError(f"invalid version range {event.min_version}..{event.max_version}")
            self._our_range = (event.min_version, event.max_version)
            data = pack_preface(event.min_version, event.max_version)
            if self._peer_range is not None:
                try:
                    self._settle()
                except HandshakeError as exc:
                    self._fail(exc)
                    raise
            self.state = state
            return [data]
        encoder = self._encoder
        if type(event) is Request:
            if event.seq in self._pending_out:
                raise LocalProtocolError(f"request #{event.seq} is already in flight")
            if event.context is not None and not self.carries_context:
                raise LocalProtocolError(f"protocol version {self.version} carries no call context")
        elif type(event) is Cancel:
            if not self.carries_context:
                raise LocalProtocolError(f"protocol version {self.version} has no CANCEL")
            if event.seq not in self._pending_out:
                raise LocalProtocolError(f"request #{event.seq} is not in flight: nothing to cancel")
        elif type(event) is Reply or type(event) is ErrorReply:
            if event.seq not in self._pending_in:
                raise LocalProtocolError(f"no request #{event.seq} of the peer's is waiting for a reply")
            if self._pending_in[event.seq]:
                encoder = self._by_value_encoder()
        elif type(event) is Hello:
            buffers = self._hello_frame(event)
            self.state = state
            return buffers
        buffers = encode_frame(event, encoder, self._peer_frame_limit())
        if type(event) is Request:
            self._pending_out[event.seq] = None
        elif type(event) is Reply or type(event) is ErrorReply:
            del self._pending_in[event.seq]
        elif type(event) is Ping:
            self._pings[event.seq] = None
        self.state = state
        return buffers

    def _by_value_encoder(self) -> ValueEncoder:
        """The encoder of replies asked for by value (lists, dicts and sets copied), made
        on first use: most connections never need one."""
        encoder = self._values_encoder
        if encoder is None:
            encoder = self._values_encoder = ValueEncoder(self._box, self.config.limits, containers_by_value=True, shared=self._shared)
        return encoder

    def _hello_frame(self, event: Hello) -> list[Buffer]:
        """The HELLO frame of ``event``, announcing our ``max_frame_size``. Its root is
        boxed on every connection; with a shared cache the frame is encoded once for a root
        that boxes to the same reference (a fresh connection's first, with one descriptor)."""
        encoder = self._encoder
        limit = self._peer_frame_limit()
        ref = encoder.reference(event.root)
        max_frame_size = self.config.max_frame_size
        shared = self._shared
        key: tuple[object, ...] | None = None
        info: object = None
        if shared is not None and type(ref) is Ref and ref.info is not None:
            info = ref.info
            key = (event.services, event.capabilities, max_frame_size, ref.oid, ref.type_id, id(info))
            try:
                frame = shared.hello_frame(key, info)
            except TypeError:  # (unhashable services: the encoder says what is wrong)
                frame = key = None
            if frame is not None and len(frame) - HEADER_SIZE <= limit:
                return [frame]
        buffers = encode_frame(Hello(event.services, event.capabilities, max_frame_size, ref), encoder, limit)
        if key is not None and shared is not None and len(buffers) == 1:
            shared.keep_hello_frame(key, info, bytes(buffers[0]))
        return buffers

    def _peer_frame_limit(self) -> int:
        """The largest frame the peer accepts: what its Hello announced, 64 MiB until then."""
        hello = self.peer_hello
        return hello.max_frame_size if hello else _DEFAULT_MAX_FRAME

    def _check(self, direction: str, kind: type) -> State:
        if self._error is not None and direction == SEND:
            raise LocalProtocolError(f"the connection failed earlier: {self._error}")
        try:
            return TRANSITIONS[(self.state, direction, kind)]
        except KeyError:
            pass
        if direction == SEND:
            raise LocalProtocolError(f"cannot send {kind.__name__} in state {self.state.value}")
        raise RemoteProtocolError(f"the peer sent {kind.__name__} in state {self.state.value}")

    def _settle(self) -> None:
        assert self._our_range is not None and self._peer_range is not None
        (our_low, our_high), (peer_low, peer_high) = self._our_range, self._peer_range
        version = min(our_high, peer_high)
        if version < max(our_low, peer_low):
            raise HandshakeError(
                f"no protocol version in common: this side speaks {our_low}..{our_high}, "
                f"the peer speaks {peer_low}..{peer_high}"
            )
        self.version = version
        if version >= CONTEXT_VERSION:
            self._request_flags = _REQUEST_FLAGS | _CONTEXT_FLAG
            self.carries_context = True

    # -- receiving -------------------------------------------------------------------

    @property
    def bytes_needed(self) -> int:
        """How many more bytes complete the next preface, header or frame (at least 1)."""
        if self._peer_range is None:
            want = PREFACE_SIZE
        elif self._header is None:
            want = HEADER_SIZE
        elif self._filled >= 0:
            return self._header.length - self._filled
        else:
            want = HEADER_SIZE + self._header.length
        return max(1, want - len(self._buffer))

    def payload_buffer(self) -> memoryview | None:
        """While a large payload is arriving: a writable view of the part still missing.

        The view lies inside this connection's own buffer, so the I/O layer can read into
        it directly (no intermediate copy); release the view, then report the bytes written
        with :meth:`payload_received`. None when no large payload is under way.
        """
        if self._filled < 0 or self._payload is None or self._header is None:
            return None
        return memoryview(self._payload)[self._filled : self._header.length]

    @property
    def requests_in_flight(self) -> int:
        """Requests of ours the peer has not answered yet (a cancelled one until its answer
        comes): what the peer counts against its ``max_pending``."""
        return len(self._pending_out)

    @property
    def receiving_large_payload(self) -> bool:
        """Whether a large payload is arriving (read it into :meth:`payload_buffer`)."""
        return self._filled >= 0

    @property
    def holds_large_buffer(self) -> bool:
        """Whether a large-payload buffer is kept for the next large frame (none under way)."""
        return self._payload is not None and self._filled < 0

    def release_buffers(self) -> None:
        """Drop the buffer kept for large payloads; call it when the connection is idle.

        A frame under way keeps its buffer; the next large frame allocates a new one.
        """
        if self._filled < 0:
            self._payload = None

    def payload_received(self, count: int) -> list[Event]:
        """``count`` bytes were written into the view from :meth:`payload_buffer`."""
        if self._error is not None:
            raise self._error
        if self._filled < 0 or self._header is None or not 0 < count <= self._header.length - self._filled:
            raise LocalProtocolError(f"payload_received({count}) does not match the payload under way")
        self._filled += count
        return self._finish_payload() if self._filled == self._header.length else []

    def _start_payload(self, header: Header, partial: memoryview) -> None:
        if self._payload is None or len(self._payload) < header.length:
            self._payload = _lazy_buffer(header.length)
        self._payload[: len(partial)] = partial
        self._filled = len(partial)

    def _finish_payload(self) -> list[Event]:
        header, payload = self._header, self._payload
        assert header is not None and payload is not None
        try:
            with memoryview(payload) as whole, whole[: header.length] as view:
                state = self._admit(header)
                event = decode_payload(header, view, self._decoder, self._shared)
        except ProtocolError as exc:
            raise self._fail(exc)
        except BaseException:
            self._fail(LocalProtocolError("an exception in the unbox hook left the stream unreadable"))
            raise
        self._header = None
        self._filled = -1
        if len(payload) > _KEEP_LARGE:
            self._payload = None
        self._commit(event, state)
        return [event]

    def receive_data(self, data: Buffer) -> list[Event]:
        """Feed bytes read from the peer; return the events they complete.

        ``b""`` means the peer closed its side. On malformed input this raises
        :class:`RemoteProtocolError` (after first returning any events completed before
        the bad bytes) and the connection is failed for good.
        """
        if self._error is not None:
            raise self._error
        if not data:
            if self._buffer or self._filled >= 0:
                raise self._fail(RemoteProtocolError("the stream ended in the middle of a frame"))
            self.state = State.CLOSED
            return []
        if self.state is State.CLOSED:
            raise self._fail(RemoteProtocolError("the peer sent data after the connection closed"))
        events: list[Event] = []
        if self._filled >= 0:  # a large payload under way: these bytes continue it
            assert self._payload is not None and self._header is not None
            take = min(len(data), self._header.length - self._filled)
            with memoryview(data) as view:
                self._payload[self._filled : self._filled + take] = view[:take]
                self._filled += take
                if self._filled == self._header.length:
                    events = self._finish_payload()
                if take == len(data):
                    return events
                data = bytes(view[take:])
        source: Buffer
        if self._buffer:
            self._buffer += data
            source = self._buffer
        else:
            source = data
        with memoryview(source) as view:
            try:
                pos = self._parse(view, events)
            except ProtocolError as exc:
                self._fail(exc)
                if not events:
                    raise
                return events
            except BaseException:
                # raised by the unbox hook: the stream position is lost along with this call
                self._fail(LocalProtocolError("an exception in the unbox hook left the stream unreadable"))
                raise
        if source is self._buffer:
            del self._buffer[:pos]
        elif pos < len(source):
            self._buffer = bytearray(source[pos:])
        return events

    def _fail(self, error: ProtocolError) -> ProtocolError:
        self._error = error
        self.state = State.FAILED
        self._buffer = bytearray()
        self._payload = None
        self._filled = -1
        return error

    def _parse(self, view: memoryview, events: list[Event]) -> int:
        shared = self._shared
        # (asked through a method: a test of self._peer_range here would narrow it to None for
        # the rest of the method, in mypy's eyes and in the checks mypyc compiles from them)
        if shared is not None and _HANDSHAKE_MIN < len(view) <= _HANDSHAKE_KEPT and self._awaiting_preface():
            # The peer's preface and Hello in one read, as every peer sends them: bytes some
            # connection sharing the cache received before need not be parsed again
            data = bytes(view)
            kept = shared.handshake(data)
            if kept is not None:
                self._take_handshake(kept, events)
                return len(view)
            pos = self._parse_from(view, events)
            if pos == len(view) and len(events) == 2 and type(events[1]) is Hello and self._peer_range is not None:
                shared.keep_handshake(data, self._peer_range)
            return pos
        return self._parse_from(view, events)

    def _awaiting_preface(self) -> bool:
        return self._peer_range is None

    def _preface_received(self, state: State, peer_range: tuple[int, int], events: list[Event]) -> None:
        """The peer's preface announced ``peer_range`` (``state``: what receiving it leads to,
        checked by the caller first): settle the version if ours is out, then its event."""
        self._peer_range = peer_range
        if self._our_range is not None:
            self._settle()
        self.state = state
        events.append(Preface(*peer_range))

    def _take_handshake(self, kept: tuple[tuple[int, int], Hello], events: list[Event]) -> None:
        """Receive a kept preface and Hello (see _parse) as _parse_from receives them: the same
        checks, the same events, the same state; the root unboxed by this connection's hook."""
        peer_range, hello = kept
        self._preface_received(self._check(RECV, Preface), peer_range, events)
        state = self._check(RECV, Hello)
        event = Hello(hello.services, hello.capabilities, hello.max_frame_size, self._decoder.unboxed(hello.root))
        self._commit(event, state)
        events.append(event)

    def _parse_from(self, view: memoryview, events: list[Event]) -> int:
        pos = 0
        end = len(view)
        max_frame = self.config.max_frame_size
        while pos < end:
            event: Event
            if self._peer_range is None:
                if end - pos < PREFACE_SIZE:
                    if view[pos] != 0x89:  # fail fast on a peer that is not speaking rpc
                        parse_preface(bytes(view[pos:end]).ljust(PREFACE_SIZE, b"\0"))
                    break
                state = self._check(RECV, Preface)
                self._preface_received(state, parse_preface(view[pos : pos + PREFACE_SIZE]), events)
                pos += PREFACE_SIZE
                continue
            header = self._header
            if header is None:
                if end - pos < HEADER_SIZE:
                    break
                # The frames every call makes (and the releases after callbacks), when the
                # check the call path shares (_admits) passes; otherwise the general path
                # below checks the frame and says what is wrong.
                kind, flags, reserved, seq, length = HEADER.unpack_from(view, pos)
                stop = pos + HEADER_SIZE + length
                if stop <= end and self._admits(kind, flags, reserved, seq, length):
                    payload = view[pos + HEADER_SIZE : stop]
                    if kind == _REPLY:
                        events.append(Reply(seq, self._decoder.decode(payload)))
                        self._pending_out.pop(seq, None)
                    elif kind == _REQUEST:
                        request = decode_request(payload, seq, flags, self._decoder)
                        self._pending_in[seq] = request.by_value
                        events.append(request)
                    else:
                        events.append(decode_release(payload))
                    pos = stop
                    continue
                limit = max_frame if self.peer_hello is not None else min(max_frame, HANDSHAKE_FRAME_LIMIT)  # (before its Hello, a peer is a stranger)
                header = self._header = parse_header(view, pos, limit)
            stop = pos + HEADER_SIZE + header.length
            if stop > end:
                if header.length >= _LARGE_PAYLOAD:
                    self._start_payload(header, view[pos + HEADER_SIZE : end])
                    return end
                break
            state = self._admit(header)  # state and sequence checks come before decoding
            event = decode_payload(header, view[pos + HEADER_SIZE : stop], self._decoder, self._shared)
            self._header = None
            pos = stop
            self._commit(event, state)
            if type(event) is not Cancel or event.seq in self._pending_in:  # else: answered already
                events.append(event)
        return pos

    def _admit(self, header: Header) -> State:
        """Check, from the header alone, that this frame may arrive now; return the next state.

        Done before the payload is decoded, so a frame out of place never reaches the unbox
        hook (no proxies are made for an unsolicited reply).
        """
        if self.state is State.OPEN and header.kind in _OPEN_TRAFFIC:
            state = State.OPEN
        else:
            state = self._check(RECV, _EVENT_OF[header.kind])
        kind, seq = header.kind, header.seq
        if (kind is FrameType.CANCEL or header.flags & _CONTEXT_FLAG) and not self.carries_context:
            raise RemoteProtocolError(f"the peer sent a version-2 {kind.name} frame on a version-{self.version} connection")
        if kind is FrameType.REQUEST:
            if state is State.OPEN:
                if seq in self._pending_in:
                    raise RemoteProtocolError(f"the peer reused request id #{seq} while it was in flight")
                if len(self._pending_in) >= self.config.max_pending:
                    raise RemoteProtocolError(f"the peer has more than {self.config.max_pending} requests in flight")
        elif kind is FrameType.REPLY or kind is FrameType.ERROR:
            if seq not in self._pending_out:
                raise RemoteProtocolError(f"the peer replied to request #{seq}, which is not in flight")
        elif kind is FrameType.PONG:
            if seq not in self._pings:
                raise RemoteProtocolError(f"the peer answered ping #{seq}, which was never sent")
        return state

    def _commit(self, event: Event, state: State) -> None:
        """Record a received, admitted event."""
        if type(event) is Request:
            if state is State.OPEN:
                self._pending_in[event.seq] = event.by_value
        elif type(event) is Reply or type(event) is ErrorReply:
            self._pending_out.pop(event.seq, None)
        elif type(event) is Pong:
            self._pings.pop(event.seq, None)
        elif type(event) is Hello:
            self.peer_hello = event
        self.state = state
