"""The exception tree shared by every layer of the rpc stack.

This module owns the root class :class:`RPCError`; the upper packages subclass it
(``rpc_service`` adds connection, timeout and remote-exception errors). It must not
import anything but the standard library and must not hold state::

    RPCError                      root of every error the stack raises
    └── ProtocolError             the wire contract was broken
        ├── LocalProtocolError    *we* misused the protocol (bad state, value too big, ...)
        │   └── EncodeError       a value cannot be encoded (unsupported type, limits)
        └── RemoteProtocolError   the *peer* sent something malformed or out of place
            └── HandshakeError    no common protocol version, or not an rpc peer at all

Decoding untrusted bytes only ever raises :class:`RemoteProtocolError` (or a subclass):
never ``IndexError``, ``struct.error``, ``RecursionError``, ``UnicodeError`` or
``MemoryError``.
"""

from __future__ import annotations

__all__ = [
    "RPCError",
    "ProtocolError",
    "LocalProtocolError",
    "EncodeError",
    "RemoteProtocolError",
    "HandshakeError",
]


class RPCError(Exception):
    """Root of every exception raised by the rpc packages."""


class ProtocolError(RPCError):
    """The wire protocol was violated, by one side or the other."""


class LocalProtocolError(ProtocolError):
    """This side tried something the protocol does not allow (a bug or misuse here)."""


class EncodeError(LocalProtocolError):
    """A value cannot be put on the wire: unsupported type, too deep or too large."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are malformed, oversized or not valid in this state."""


class HandshakeError(RemoteProtocolError):
    """The handshake failed: not an rpc peer, or no protocol version in common."""
