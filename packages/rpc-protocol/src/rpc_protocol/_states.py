"""The connection's state table: which event may be sent or received in which state.

Owns the states and the transitions, kept as data in one table (``TRANSITIONS``) so the
whole lifecycle is readable in one place and drawn in ``docs/protocol.md``. It decides
nothing about bytes, sequence numbers or values.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType
from typing import Final, Literal

from ._events import Cancel, Close, ErrorReply, Hello, Ping, Pong, Preface, Release, Reply, Request

__all__ = ["State", "SEND", "RECV", "TRANSITIONS"]

SEND: Final = "send"
RECV: Final = "recv"
Direction = Literal["send", "recv"]


class State(Enum):
    # (hashed by identity, as members compare: Enum's own __hash__ is a Python function,
    # called for every state-table lookup)
    __hash__ = object.__hash__

    START = "start"  # nothing sent or received
    PREFACE_SENT = "preface-sent"  # our preface is out, the peer's not yet in
    PREFACE_RECEIVED = "preface-received"  # the peer's preface is in, ours not yet out
    SETTLED = "settled"  # both prefaces exchanged: the version is settled
    EARLY_HELLO_SENT = "early-hello-sent"  # our preface and Hello are out, the peer's preface not yet in
    EARLY_HELLO_RECEIVED = "early-hello-received"  # the peer's preface and Hello are in, our preface not yet out
    HELLO_SENT = "hello-sent"
    HELLO_RECEIVED = "hello-received"
    OPEN = "open"  # both hellos exchanged: requests flow both ways
    CLOSE_SENT = "close-sent"  # we said Close; the peer's traffic in flight is still read
    CLOSE_RECEIVED = "close-received"  # the peer said Close; we may only answer Close
    CLOSED = "closed"
    FAILED = "failed"  # a protocol error occurred; nothing more may be sent or received


_TRAFFIC: Final = (Request, Reply, ErrorReply, Release, Ping, Pong, Cancel)  # Cancel: version 2 only

_table: dict[tuple[State, str, type], State] = {
    (State.START, SEND, Preface): State.PREFACE_SENT,
    (State.START, RECV, Preface): State.PREFACE_RECEIVED,
    (State.PREFACE_SENT, RECV, Preface): State.SETTLED,
    (State.PREFACE_RECEIVED, SEND, Preface): State.SETTLED,
    # A Hello may follow its side's preface at once (its layout is the same in every version)
    (State.PREFACE_SENT, SEND, Hello): State.EARLY_HELLO_SENT,
    (State.EARLY_HELLO_SENT, RECV, Preface): State.HELLO_SENT,
    (State.PREFACE_RECEIVED, RECV, Hello): State.EARLY_HELLO_RECEIVED,
    (State.EARLY_HELLO_RECEIVED, SEND, Preface): State.HELLO_RECEIVED,
    (State.SETTLED, SEND, Hello): State.HELLO_SENT,
    (State.SETTLED, RECV, Hello): State.HELLO_RECEIVED,
    (State.HELLO_SENT, RECV, Hello): State.OPEN,
    (State.HELLO_RECEIVED, SEND, Hello): State.OPEN,
    (State.CLOSE_SENT, RECV, Hello): State.CLOSE_SENT,
    (State.CLOSE_SENT, RECV, Close): State.CLOSED,
    (State.CLOSE_RECEIVED, SEND, Close): State.CLOSED,
}
for _state in (State.SETTLED, State.HELLO_SENT, State.HELLO_RECEIVED, State.OPEN):
    _table[(_state, SEND, Close)] = State.CLOSE_SENT
    _table[(_state, RECV, Close)] = State.CLOSE_RECEIVED
for _event in _TRAFFIC:
    _table[(State.OPEN, SEND, _event)] = State.OPEN
    _table[(State.OPEN, RECV, _event)] = State.OPEN
    _table[(State.CLOSE_SENT, RECV, _event)] = State.CLOSE_SENT

TRANSITIONS: Final = MappingProxyType(_table)
del _table, _state, _event
