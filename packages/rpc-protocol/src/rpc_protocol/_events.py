"""Events: what a connection sends and receives, as plain frozen values.

Owns the event classes and the request operation codes. Events carry Python values
(already unboxed on receipt); they hold no bytes, no state and no behaviour. What each
operation means to the receiving object is the service layer's business; the table in
``docs/protocol.md`` lists the arguments each one carries.
"""

from __future__ import annotations

import builtins  # dataclass fields say builtins.object: mypyc's dataclasses cannot resolve a bare `object`
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, Union

from ._frames import MAX_VERSION, MIN_VERSION

__all__ = [
    "Op",
    "Preface",
    "Hello",
    "CallContext",
    "Request",
    "Reply",
    "ErrorReply",
    "Release",
    "Ping",
    "Pong",
    "Close",
    "Cancel",
    "Event",
]


class Op(IntEnum):
    """What a :class:`Request` asks the target object to do."""

    CALL = 1  # target(*args, **kwargs)
    CALLATTR = 2  # getattr(target, args[0])(*args[1:], **kwargs)
    GETATTR = 3  # getattr(target, args[0])
    SETATTR = 4  # setattr(target, args[0], args[1])
    DELATTR = 5  # delattr(target, args[0])
    DIR = 6  # dir(target)
    HASH = 7  # hash(target)
    REPR = 8  # repr(target)
    STR = 9  # str(target)
    INSTANCECHECK = 10  # isinstance(args[0], target)
    ITER_NEXT = 11  # up to args[0] items from the iterator target: (items, exhausted)
    INSPECT = 12  # the type descriptor of target
    PICKLE = 13  # pickle.dumps(target, args[0]); only when both sides allow pickle


@dataclass(frozen=True, slots=True)
class Preface:
    """The 8 bytes that open each direction: magic and the supported version range."""

    min_version: int = MIN_VERSION
    max_version: int = MAX_VERSION


@dataclass(frozen=True, slots=True)
class Hello:
    """Sent once by each side after the prefaces: what this side offers."""

    services: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()
    max_frame_size: int = 64 * 1024 * 1024
    root: builtins.object = None


class CallContext(NamedTuple):
    """What a request carries about its call (version 2, REQUEST flag CONTEXT).

    ``budget_us``: the microseconds the caller will still wait for the answer (0: none
    left), or None for no deadline. ``traceparent``: a W3C trace-context ``traceparent``
    of version ``00`` (``"00-<32 hex>-<16 hex>-<2 hex>"``, lower case, ids not all zero), or
    None. At least one of the two is set (a request without either carries no context).
    An immutable named tuple rather than a dataclass: one is made per call that carries a
    deadline, and a tuple is several times cheaper to make.
    """

    budget_us: int | None = None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    seq: int
    op: Op
    target: builtins.object
    args: tuple[object, ...] = ()
    kwargs: dict[str, object] = field(default_factory=dict)
    by_value: bool = False
    context: CallContext | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    seq: int
    value: builtins.object = None


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The request ``seq`` raised: the exception's module, type name, args and traceback."""

    seq: int
    exc_module: str
    exc_type: str
    args: tuple[object, ...] = ()
    traceback: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """The sender dropped proxies: ``(oid, count)`` pairs of the receiver's objects."""

    refs: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Pong:
    seq: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Close:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    """Version 2: the sender gave up on its request ``seq`` (still in flight); the receiver
    may stop working on it, and still answers it once (the sender drops that answer)."""

    seq: int


Event = Union[Preface, Hello, Request, Reply, ErrorReply, Release, Ping, Pong, Close, Cancel]
