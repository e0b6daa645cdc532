"""Shared helpers for the ``rpc_protocol`` tests: connection pairs, value strategies, equality.

Owns the small toolkit the protocol test modules share: joining send buffers into bytes,
driving two :class:`rpc_protocol.Connection` objects through the handshake, a strict
(type-, sign- and NaN-aware) value equality, and hypothesis strategies for every value the
codec carries. It uses only the public API (``import rpc_protocol as p``) and holds no state.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

from hypothesis import strategies as st

import rpc_protocol as p

# -- bytes and connections -------------------------------------------------------------


def wire(buffers: Iterable[p.Buffer]) -> bytes:
    """Join the buffers returned by ``send`` / ``encode`` into the bytes on the wire."""
    return b"".join(bytes(buf) for buf in buffers)


def deliver(src: p.Connection, dst: p.Connection, event: p.Event) -> list[p.Event]:
    """``src`` sends ``event``; ``dst`` receives the bytes at once. Returns dst's events."""
    return dst.receive_data(wire(src.send(event)))


def settled_pair(
    config_a: p.ProtocolConfig | None = None,
    config_b: p.ProtocolConfig | None = None,
) -> tuple[p.Connection, p.Connection]:
    """Two connections that exchanged prefaces (state SETTLED) but no Hello yet."""
    a = p.Connection(config_a or p.ProtocolConfig())
    b = p.Connection(config_b or p.ProtocolConfig())
    _prefaces(a, b)
    return a, b


def _prefaces(a: p.Connection, b: p.Connection) -> None:
    out_a = wire(a.send(p.Preface()))
    out_b = wire(b.send(p.Preface()))
    assert a.receive_data(out_b) == [p.Preface()]
    assert b.receive_data(out_a) == [p.Preface()]


def handshake(a: p.Connection, b: p.Connection, hello_a: p.Hello = p.Hello(), hello_b: p.Hello = p.Hello()) -> None:
    """Run the whole handshake between two fresh connections; both end up OPEN."""
    _prefaces(a, b)
    out_a = wire(a.send(hello_a))
    out_b = wire(b.send(hello_b))
    assert len(a.receive_data(out_b)) == 1
    assert len(b.receive_data(out_a)) == 1
    assert a.state is p.State.OPEN and b.state is p.State.OPEN


def state(conn: p.Connection) -> p.State:
    """``conn.state``, read through a call so mypy does not keep an earlier narrowing of it."""
    return conn.state


def pair(
    config_a: p.ProtocolConfig | None = None,
    config_b: p.ProtocolConfig | None = None,
) -> tuple[p.Connection, p.Connection]:
    """Two connections that completed the handshake with each other (both OPEN)."""
    a = p.Connection(config_a or p.ProtocolConfig())
    b = p.Connection(config_b or p.ProtocolConfig())
    handshake(a, b)
    return a, b


def forged(event: p.Event) -> list[p.Buffer]:
    """The bytes of ``event`` as sent on some other open connection: what a peer that ignores
    the sequence rules (or replays frames) would send."""
    x, y = pair()
    if isinstance(event, (p.Reply, p.ErrorReply)):
        x.receive_data(wire(y.send(p.Request(event.seq, p.Op.CALL, p.BackRef(0)))))
    elif isinstance(event, p.Pong):
        x.receive_data(wire(y.send(p.Ping(event.seq))))
    return x.send(event)


# -- strict equality -------------------------------------------------------------------


#: What ``Connection.take_request`` returns the fields of a request as: seq, op, target, args,
#: kwargs, by_value, then its call context's budget and traceparent (both None without one).
TakenFields = tuple[int, p.Op, object, tuple[object, ...], dict[str, object], bool, "int | None", "str | None"]


def taken_request(fields: TakenFields) -> p.Request:
    """The Request event with the fields ``Connection.take_request`` took."""
    seq, op, target, args, kwargs, by_value, budget, traceparent = fields
    context = None if budget is None and traceparent is None else p.CallContext(budget, traceparent)
    return p.Request(seq, op, target, args, kwargs, by_value, context)


def _float_bits(value: float) -> bytes:
    return struct.pack("<d", value)


def same(left: object, right: object) -> bool:
    """Equality that also checks exact types, the sign of zero and NaN bit patterns.

    Sets are compared as multisets under this same relation (order is not significant);
    dicts pair by position, since the codec keeps insertion order.
    """
    if type(left) is not type(right):
        return False
    if isinstance(left, float) and isinstance(right, float):
        return _float_bits(left) == _float_bits(right)
    if isinstance(left, complex) and isinstance(right, complex):
        return same(left.real, right.real) and same(left.imag, right.imag)
    if isinstance(left, (tuple, list)) and isinstance(right, (tuple, list)):
        return len(left) == len(right) and all(same(x, y) for x, y in zip(left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return len(left) == len(right) and all(
            same(k1, k2) and same(v1, v2) for (k1, v1), (k2, v2) in zip(left.items(), right.items())
        )
    if isinstance(left, (frozenset, set)) and isinstance(right, (frozenset, set)):
        if len(left) != len(right):
            return False
        rest = list(right)
        for item in left:
            for index, candidate in enumerate(rest):
                if same(item, candidate):
                    del rest[index]
                    break
            else:
                return False
        return True
    if isinstance(left, slice) and isinstance(right, slice):
        return same(left.start, right.start) and same(left.stop, right.stop) and same(left.step, right.step)
    if isinstance(left, p.Ref) and isinstance(right, p.Ref):
        return left.oid == right.oid and left.type_id == right.type_id and same(left.info, right.info)
    return left == right


def same_event(left: p.Event, right: p.Event) -> bool:
    """Event equality with :func:`same` applied to the values they carry."""
    if type(left) is not type(right):
        return False
    if isinstance(left, p.Request) and isinstance(right, p.Request):
        return (
            (left.seq, left.op, left.by_value, left.context) == (right.seq, right.op, right.by_value, right.context)
            and same(left.target, right.target)
            and same(left.args, right.args)
            and same(left.kwargs, right.kwargs)
        )
    if isinstance(left, p.Reply) and isinstance(right, p.Reply):
        return left.seq == right.seq and same(left.value, right.value)
    if isinstance(left, p.ErrorReply) and isinstance(right, p.ErrorReply):
        return (left.seq, left.exc_module, left.exc_type, left.traceback) == (
            right.seq,
            right.exc_module,
            right.exc_type,
            right.traceback,
        ) and same(left.args, right.args)
    if isinstance(left, p.Hello) and isinstance(right, p.Hello):
        return (left.services, left.capabilities, left.max_frame_size) == (
            right.services,
            right.capabilities,
            right.max_frame_size,
        ) and same(left.root, right.root)
    return left == right


# -- hypothesis strategies -------------------------------------------------------------

#: Text including lone surrogates (they must round-trip through ``surrogatepass``).
texts = (
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40)
    | st.sampled_from(["", "\ud800", "\udfff", "a\udc80b", "\ud83d\ude00", "é€😀"])
    | st.sampled_from([255, 256]).map(lambda n: "x" * n)
)
#: Integers, with every encoding boundary (INT8, INT64, BIGINT byte lengths) sampled explicitly.
ints = st.integers() | st.sampled_from([-129, -128, 127, 128]) | st.integers(62, 200).flatmap(
    lambda bits: st.sampled_from([1 << bits, -(1 << bits), (1 << bits) - 1, -(1 << bits) - 1])
)
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan])

#: Every scalar that travels by value (hashable, so usable inside frozensets and as keys).
scalars: st.SearchStrategy[object] = st.one_of(
    st.none(),
    st.booleans(),
    st.just(...),
    st.just(NotImplemented),
    ints,
    floats,
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=40) | st.sampled_from([255, 256]).map(lambda n: b"\xff" * n),
)

back_refs: st.SearchStrategy[object] = st.builds(p.BackRef, st.integers(0, (1 << 64) - 1))
refs: st.SearchStrategy[object] = st.one_of(
    back_refs,
    st.builds(p.Ref, st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 32) - 1)),
    st.builds(p.Ref, st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 32) - 1), st.tuples(texts, texts)),
)

# Set elements and dict keys: never a Ref (hashing a proxy on arrival would be a remote call),
# but a BackRef is fine (the receiver hashes its own object). See test_hashed_refs.py.
hashables: st.SearchStrategy[object] = st.recursive(
    scalars | back_refs,
    lambda kids: st.lists(kids, max_size=4).map(tuple) | st.frozensets(kids, max_size=4),
    max_leaves=12,
)


def _children(kids: st.SearchStrategy[object], by_value: bool) -> st.SearchStrategy[object]:
    options: list[st.SearchStrategy[object]] = [
        st.lists(kids, max_size=5).map(tuple),
        st.frozensets(hashables, max_size=4),
    ]
    if by_value:
        options += [
            st.lists(kids, max_size=5),
            st.dictionaries(hashables, kids, max_size=4),
            st.sets(hashables, max_size=4),
        ]
    return st.one_of(options)


def values(by_value: bool = False, with_refs: bool = True, max_leaves: int = 20) -> st.SearchStrategy[object]:
    """Any value the codec carries; ``by_value`` adds list, dict and set."""
    leaves = scalars | st.builds(slice, scalars, scalars, scalars)
    if with_refs:
        leaves = leaves | refs
    return st.recursive(leaves, lambda kids: _children(kids, by_value), max_leaves=max_leaves)
