"""The registry's messages and their bytes, in the ``rpc_protocol`` value codec.

Owns the message types (requests: register, unregister, query, list; replies: ack, nack,
providers, names), their encoding and their validation. A message is one codec value, the
*envelope* ``(MAGIC, VERSION, body, mac[, padding])``: ``body`` is the encoded tuple
``(kind, rid, timestamp, *fields)``, ``mac`` is empty, or the HMAC of ``body`` when the
sender holds a key, and the optional ``padding`` (bytes, ignored, not signed) lets a UDP
client make its request as large as the reply it wants (a UDP registry answers an unsigned
request with at most :data:`UDP_REPLY_FACTOR` times its size). ``rid`` (16 random bytes) pairs a reply with its request and is the nonce
of a signed request; ``timestamp`` is the sender's wall clock. Decoding untrusted bytes raises
:class:`MessageError` and nothing else. No pickle, no I/O, no policy (which messages must be
signed, or fresh, is the handler's business).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Final, Union

from rpc_protocol import CodecLimits, RPCError, ValueDecoder, ValueEncoder

from ._auth import MAC_SIZE, sign, verify
from ._errors import MessageError

__all__ = [
    "DEFAULT_PORT",
    "INVALID",
    "MAGIC",
    "UNSIGNED",
    "VALID",
    "VERSION",
    "MAX_MESSAGE_SIZE",
    "MAX_NAME_LENGTH",
    "PADDED_REQUEST_SIZE",
    "UDP_REPLY_FACTOR",
    "Ack",
    "Body",
    "Envelope",
    "ListNames",
    "Nack",
    "Names",
    "Providers",
    "Query",
    "Register",
    "Unregister",
    "check_name",
    "decode",
    "encode",
    "new_rid",
]

#: The registry's well-known port (RPyC's, too).
DEFAULT_PORT: Final = 18811
MAGIC: Final = b"RPCREG"
VERSION: Final = 1
#: The largest message (request or reply, datagram or TCP frame) anyone sends or accepts.
MAX_MESSAGE_SIZE: Final = 8192
#: A UDP registry's reply to an unsigned request is at most this many times the request's size.
UDP_REPLY_FACTOR: Final = 3
#: The size a UDP client pads its query and list requests to, so that a full reply may come back.
PADDED_REQUEST_SIZE: Final = -(-MAX_MESSAGE_SIZE // UDP_REPLY_FACTOR)
RID_SIZE: Final = 16
MAX_NAME_LENGTH: Final = 128
MAX_REASON_LENGTH: Final = 200

_LIMITS: Final = CodecLimits(max_depth=4, max_items=1024)
_HOST_RE: Final = re.compile(r"[A-Za-z0-9._:%\-\[\]]{1,253}\Z")  # names, IPv4, IPv6 (with a %zone)

Address = tuple[str, int]


# -- the messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register:
    """Register (or refresh) ``names`` as served at ``host:port`` (host "" = the sender's address)."""

    names: tuple[str, ...]
    port: int
    host: str = ""


@dataclass(frozen=True, slots=True)
class Unregister:
    """Withdraw every name registered for ``host:port`` (host "" = the sender's address)."""

    port: int
    host: str = ""


@dataclass(frozen=True, slots=True)
class Query:
    """Ask for every live provider of ``name``."""

    name: str


@dataclass(frozen=True, slots=True)
class ListNames:
    """Ask for every live name (answered only by a registry that allows listing); with
    ``host``, only the names of servers registered at that host."""

    host: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """A register or unregister request was applied."""


@dataclass(frozen=True, slots=True)
class Nack:
    """A request was refused; ``reason`` says why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Providers:
    """The answer to a query: ``(host, port)`` of every live provider, oldest first."""

    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class Names:
    """The answer to a list request: every live name, sorted."""

    names: tuple[str, ...]


Body = Union[Register, Unregister, Query, ListNames, Ack, Nack, Providers, Names]


#: Envelope.signature: no signature (or the receiver holds no key to check it) ...
UNSIGNED: Final = "unsigned"
#: ... a signature that verifies with the receiver's key ...
VALID: Final = "valid"
#: ... or one that does not (wrong key, or the message was altered).
INVALID: Final = "invalid"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded message: its body, request id, the sender's timestamp, and what became of
    its signature with the receiver's key (:data:`UNSIGNED`, :data:`VALID` or :data:`INVALID`)."""

    body: Body
    rid: bytes
    timestamp: float
    signature: str = UNSIGNED


def new_rid() -> bytes:
    """A fresh request id (also the nonce of a signed request)."""
    return os.urandom(RID_SIZE)


# -- field checks -------------------------------------------------------------------------


def _show(value: object, width: int) -> str:
    """A short, safe preview of a peer's value for an error message (never converts a huge
    int to decimal, which raises ValueError past 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    if isinstance(value, (tuple, list, dict, set, frozenset)):
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        return repr(value)[:width]
    except Exception:  # a peer's value must not break the error that reports it
        return f"<{type(value).__name__}>"


def check_name(value: object) -> str:
    """``value`` if it is a valid service name, else :class:`MessageError`: the one rule for
    names, which every registry client (the Redis one too) applies before asking."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH or not value.isprintable():
        raise MessageError(f"invalid service name {_show(value, 60)}")
    return value


def _names(value: object, *, empty: bool = False) -> tuple[str, ...]:
    if not isinstance(value, tuple) or not (value or empty):
        raise MessageError("names must be a non-empty tuple")
    return tuple(check_name(item) for item in value)


def _port(value: object) -> int:
    if type(value) is not int or not 0 < value < 65536:
        raise MessageError(f"invalid port {_show(value, 30)}")
    return value


def _host(value: object, *, empty: bool = True) -> str:
    if not isinstance(value, str) or not ((empty and value == "") or _HOST_RE.match(value)):
        raise MessageError(f"invalid host {_show(value, 60)}")
    return value


def _address(value: object) -> Address:
    if not isinstance(value, tuple) or len(value) != 2:
        raise MessageError("an address must be a (host, port) tuple")
    return _host(value[0], empty=False), _port(value[1])


def _reason(value: object) -> str:
    if not isinstance(value, str):
        raise MessageError("a refusal reason must be a string")
    return value[:MAX_REASON_LENGTH]


def _fields(fields: tuple[object, ...], n: int, kind: str) -> tuple[object, ...]:
    if kind == "list" and len(fields) == 0:
        return ("",)  # a list request without a host filter (as version 1 first defined it)
    if len(fields) != n:
        raise MessageError(f"{kind!r} takes {n} fields, got {len(fields)}")
    return fields


_Parser = Callable[[tuple[object, ...]], Body]

#: kind -> (class, fields of an instance in wire order, parser of the wire fields)
_KINDS: Final[dict[str, tuple[type, tuple[str, ...], _Parser]]] = {
    "register": (Register, ("names", "port", "host"), lambda f: Register(_names(f[0]), _port(f[1]), _host(f[2]))),
    "unregister": (Unregister, ("port", "host"), lambda f: Unregister(_port(f[0]), _host(f[1]))),
    "query": (Query, ("name",), lambda f: Query(check_name(f[0]))),
    "list": (ListNames, ("host",), lambda f: ListNames(_host(f[0]))),
    "ack": (Ack, (), lambda f: Ack()),
    "nack": (Nack, ("reason",), lambda f: Nack(_reason(f[0]))),
    "providers": (Providers, ("addresses",), lambda f: Providers(_addresses(f[0]))),
    "names": (Names, ("names",), lambda f: Names(_names(f[0], empty=True))),
}
_KIND_OF: Final = {cls: (kind, fields) for kind, (cls, fields, _) in _KINDS.items()}


def _addresses(value: object) -> tuple[Address, ...]:
    if not isinstance(value, tuple):
        raise MessageError("addresses must be a tuple")
    return tuple(_address(item) for item in value)


# -- bytes --------------------------------------------------------------------------------


def encode(
    body: Body, rid: bytes, key: bytes | None = None, *, timestamp: float | None = None, pad_to: int = 0
) -> bytes:
    """The bytes of one message, signed when ``key`` is given, padded to at least ``pad_to``
    bytes (at most :data:`MAX_MESSAGE_SIZE`) when that is more than it needs."""
    kind, names = _KIND_OF[type(body)]
    ts = time.time() if timestamp is None else timestamp
    fields = tuple(getattr(body, name) for name in names)
    _KINDS[kind][2](fields)  # the checks the receiver applies: refuse to send what it would drop
    if kind == "list" and fields == ("",):
        fields = ()  # no filter: the shortest form, which every version-1 registry understands
    try:
        inner = b"".join(ValueEncoder(limits=_LIMITS).encode((kind, rid, float(ts)) + fields))
        mac = b"" if key is None else sign(key, inner)
        data = b"".join(ValueEncoder(limits=_LIMITS).encode((MAGIC, VERSION, inner, mac)))
        if pad_to > len(data):
            padding = bytes(max(0, min(pad_to, MAX_MESSAGE_SIZE) - len(data) - 8))  # 8: the padding's own header
            data = b"".join(ValueEncoder(limits=_LIMITS).encode((MAGIC, VERSION, inner, mac, padding)))
    except RPCError as exc:
        raise MessageError(f"cannot encode {kind!r}: {exc}") from None
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageError(f"a {kind!r} message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return data


def decode(data: bytes, key: bytes | None = None) -> Envelope:
    """Decode and check one message; with ``key``, check its signature if there is one.

    The result says whether the signature is valid, invalid or absent; what to accept is the
    caller's decision. Anything malformed raises :class:`MessageError`.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise MessageError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        return _decode(data, key)
    except MessageError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError) as exc:  # defence in depth
        raise MessageError(f"malformed message ({type(exc).__name__})") from None


def _decode(data: bytes, key: bytes | None) -> Envelope:
    envelope = _decode_value(data)
    if not isinstance(envelope, tuple) or len(envelope) not in (4, 5) or envelope[0] != MAGIC:
        raise MessageError("not a registry message (bad magic)")
    _, version, inner, mac = envelope[:4]
    if version != VERSION:
        raise MessageError(f"unsupported registry protocol version {_show(version, 20)} (this side speaks {VERSION})")
    if not isinstance(inner, bytes) or not isinstance(mac, bytes) or len(mac) not in (0, MAC_SIZE):
        raise MessageError("malformed envelope")
    if len(envelope) == 5 and not isinstance(envelope[4], bytes):
        raise MessageError("malformed padding")
    signature = UNSIGNED
    if mac and key is not None:
        signature = VALID if verify(key, inner, mac) else INVALID
    body = _decode_value(inner)
    if not isinstance(body, tuple) or len(body) < 3:
        raise MessageError("malformed message body")
    kind, rid, timestamp = body[:3]
    entry = _KINDS.get(kind) if isinstance(kind, str) else None
    if entry is None:
        raise MessageError(f"unknown message kind {_show(kind, 30)}")
    if not isinstance(rid, bytes) or len(rid) != RID_SIZE or not isinstance(timestamp, float):
        raise MessageError("malformed request id or timestamp")
    _, wire_fields, parse = entry
    return Envelope(parse(_fields(body[3:], len(wire_fields), kind)), rid, timestamp, signature)


def _decode_value(data: bytes) -> object:
    try:
        return ValueDecoder(limits=_LIMITS).decode(data)
    except RPCError as exc:
        raise MessageError(f"undecodable message: {exc}") from None
