"""Frame layout: the connection preface and the fixed frame header.

Owns the byte layout that precedes every payload (tables in ``docs/protocol.md``) and the
validation of a header *before* its payload is read: known type, flags allowed for that
type, reserved bits zero, length within the receiver's maximum. It knows nothing about
payload contents, values or connection state.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Final, NamedTuple

from ._errors import HandshakeError, RemoteProtocolError

__all__ = [
    "MAGIC",
    "MIN_VERSION",
    "MAX_VERSION",
    "CONTEXT_VERSION",
    "PREFACE_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "FrameType",
    "FrameFlags",
    "Header",
    "pack_preface",
    "parse_preface",
    "parse_header",
]

MAGIC: Final = b"\x89RPC"
MIN_VERSION: Final = 1
MAX_VERSION: Final = 2
CONTEXT_VERSION: Final = 2  # the first version with call contexts (REQUEST flag CONTEXT) and CANCEL

_PREFACE = struct.Struct("<4sBBH")
HEADER: Final = struct.Struct("<BBHII")  # type, flags, reserved (0), seq, payload length
PREFACE_SIZE: Final = _PREFACE.size  # 8
HEADER_SIZE: Final = HEADER.size  # 12
MAX_SEQ: Final = 0xFFFFFFFF
MIN_FRAME_LIMIT: Final = 1024  # no side may announce a smaller maximum frame size


class FrameType(IntEnum):
    """The first header byte: what the payload holds."""

    HELLO = 1
    REQUEST = 2
    REPLY = 3
    ERROR = 4
    RELEASE = 5
    PING = 6
    PONG = 7
    CLOSE = 8
    CANCEL = 9  # version 2: the sender gave up on a request of its own still in flight


class FrameFlags(IntFlag):
    """The second header byte."""

    NONE = 0
    BY_VALUE = 0x01  # REQUEST only: encode plain containers of the result by value
    CONTEXT = 0x02  # REQUEST only, version 2: a call context follows the op byte


# Indexed by the raw type byte: the FrameType, and the flag bits allowed on it.
_KINDS: Final = tuple(FrameType(n) if n in FrameType._value2member_map_ else None for n in range(256))
_ALLOWED_FLAGS: Final = tuple(
    int(FrameFlags.BY_VALUE | FrameFlags.CONTEXT) if kind is FrameType.REQUEST else 0 for kind in _KINDS
)


class Header(NamedTuple):
    kind: FrameType
    flags: int  # FrameFlags bits
    seq: int
    length: int


def pack_preface(min_version: int, max_version: int) -> bytes:
    return _PREFACE.pack(MAGIC, min_version, max_version, 0)


def parse_preface(data: bytes | memoryview) -> tuple[int, int]:
    """Return the (min, max) protocol versions announced by an 8-byte preface."""
    magic, low, high, reserved = _PREFACE.unpack(data)
    if magic != MAGIC:
        raise HandshakeError(f"the peer is not an rpc peer: it opened with {bytes(data[:4])!r}, not {MAGIC!r}")
    if reserved or low > high or low == 0:
        raise HandshakeError(f"malformed preface: versions {low}..{high}, reserved field {reserved}")
    return low, high


def parse_header(data: bytes | bytearray | memoryview, pos: int, max_frame_size: int) -> Header:
    """Validate and return the header at ``data[pos:pos + HEADER_SIZE]``."""
    raw_kind, flags, reserved, seq, length = HEADER.unpack_from(data, pos)
    kind = _KINDS[raw_kind]
    if kind is None:
        raise RemoteProtocolError(f"unknown frame type {raw_kind}")
    if flags & ~_ALLOWED_FLAGS[raw_kind]:
        raise RemoteProtocolError(f"flags 0x{flags:02x} are not valid on a {kind.name} frame")
    if reserved:
        raise RemoteProtocolError("reserved header field is not zero")
    if length > max_frame_size:
        raise RemoteProtocolError(f"{kind.name} frame of {length} bytes exceeds the limit of {max_frame_size}")
    return Header(kind, flags, seq, length)
