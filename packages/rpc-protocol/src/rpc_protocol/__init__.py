"""rpc_protocol: the sans-I/O wire layer of the rpc stack.

Bytes in, events out; events in, bytes out. This package owns the value codec, the frame
layout, the handshake and the connection state machine. It performs no I/O and imports
nothing outside the standard library (no socket, ssl, selectors or threading), so the
folder can be vendored into another project as is. The byte-level specification lives in
``docs/protocol.md``.

The same version ships as a pure-Python wheel and, for some platforms, as a wheel compiled
with mypyc (faster, same behaviour; :data:`COMPILED` tells which one is installed).
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES as _EXTENSION_SUFFIXES

from . import _calls
from .__about__ import __version__
from ._codec import BackRef, Buffer, CodecLimits, Ref
from ._decoder import ValueDecoder, check_hash_collisions
from ._encoder import ValueEncoder
from ._connection import HANDSHAKE_FRAME_LIMIT, Connection, ProtocolConfig
from ._errors import (
    EncodeError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RPCError,
)
from ._events import CallContext, Cancel, Close, ErrorReply, Event, Hello, Op, Ping, Pong, Preface, Release, Reply, Request
from ._frames import CONTEXT_VERSION, HEADER_SIZE, MAGIC, MAX_VERSION, MIN_VERSION, PREFACE_SIZE, FrameFlags, FrameType
from ._shared import SharedCache
from ._states import State

#: True when this package was installed from the mypyc-compiled wheel, False for pure Python.
COMPILED: bool = _calls.__file__.endswith(tuple(_EXTENSION_SUFFIXES))

__all__ = [
    "__version__",
    "COMPILED",
    # codec
    "BackRef",
    "Buffer",
    "CodecLimits",
    "Ref",
    "ValueDecoder",
    "ValueEncoder",
    "check_hash_collisions",
    # connection
    "Connection",
    "HANDSHAKE_FRAME_LIMIT",
    "ProtocolConfig",
    "SharedCache",
    "State",
    # events
    "CallContext",
    "Cancel",
    "Close",
    "ErrorReply",
    "Event",
    "Hello",
    "Op",
    "Ping",
    "Pong",
    "Preface",
    "Release",
    "Reply",
    "Request",
    # frames
    "CONTEXT_VERSION",
    "FrameFlags",
    "FrameType",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_VERSION",
    "MIN_VERSION",
    "PREFACE_SIZE",
    # errors
    "EncodeError",
    "HandshakeError",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "RPCError",
]
