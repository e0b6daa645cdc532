"""The call path (``send_call``, ``take_reply``, ``take_request``) against the general path.

Property tests: ``send_call`` writes exactly the bytes of ``send_request``/``send(Request)``
(cached prefix or not), and ``take_reply``/``take_request`` accept exactly what
``receive_data`` accepts: fed the same (valid, mutated or unrelated) bytes, two identical
connections agree: a frame taken gives the events ``receive_data`` gives and the same
bookkeeping; a frame declined leaves the connection as it was (``receive_data`` then does what
it would have); a frame refused fails both.
"""

from __future__ import annotations

import struct
from typing import Callable, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rpc_protocol as p
from tests.protocol.helpers import pair, same, same_event, taken_request, values, wire
from tests.protocol.test_call_context import contexts, v1_pair

_HEADER = struct.Struct("<BBHII")  # docs/protocol.md §3
IN_FLIGHT = (1, 2, 3)  # the requests of ours each test connection waits on
PEER_IN_FLIGHT = (40,)  # a request of the peer's each test connection has not answered


def _scene(config: p.ProtocolConfig | None = None) -> tuple[p.Connection, p.Connection]:
    """``a`` with requests 1..3 in flight to ``b``, and ``b``'s request 40 unanswered by
    ``a``; the same every time it is made."""
    a, b = pair(config)
    for seq in IN_FLIGHT:
        b.receive_data(wire(a.send_request(seq, p.Op.CALL, p.BackRef(9))))
    for seq in PEER_IN_FLIGHT:
        a.receive_data(wire(b.send_request(seq, p.Op.CALL, p.BackRef(9))))
    return a, b


def _frame(kind: int, seq: int, payload: bytes, flags: int = 0, reserved: int = 0) -> bytes:
    return _HEADER.pack(kind, flags, reserved, seq, len(payload)) + payload


def _release(*refs: tuple[int, int]) -> bytes:
    return _frame(5, 0, struct.pack("<I", len(refs)) + b"".join(struct.pack("<QI", *ref) for ref in refs))


def _snapshot(conn: p.Connection) -> tuple[object, ...]:
    """What receiving may change (semi-private: the sequence bookkeeping)."""
    return (conn.state, conn.error, conn.bytes_needed, set(conn._pending_out), dict(conn._pending_in))


# -- sending ---------------------------------------------------------------------------

call_args = st.lists(values(with_refs=False, max_leaves=5), max_size=4).map(tuple)
call_kwargs = st.dictionaries(st.text(max_size=5), values(with_refs=False, max_leaves=3), max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(1, 0xFFFFFFFF),
    oid=st.integers(0, 2**64 - 1),
    name=st.none() | st.text(max_size=300),
    args=call_args,
    kwargs=call_kwargs,
    again=call_args,
    budgets=st.lists(st.none() | st.integers(0, 2**64 - 1), min_size=4, max_size=4),
)
def test_send_call_writes_the_bytes_of_send_request(
    seq: int,
    oid: int,
    name: str | None,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    again: tuple[object, ...],
    budgets: list[int | None],
) -> None:
    """With or without a budget (a call context spliced into the cached prefix); a method
    (CALLATTR) or, with ``name`` None, the target itself (CALL)."""
    fast, _ = pair()
    slow, _ = pair()
    target = p.BackRef(oid)
    op, op_args = _op_args(name, args)
    assert wire(fast.send_call(seq, target, name, args, kwargs, budgets[0])) == wire(
        slow.send(p.Request(seq, op, target, op_args, kwargs, context=_context(budgets[0])))
    )
    # again, from the cache (same name; other arguments, none, and the same count)
    for later, other in enumerate((again, (), tuple(reversed(args)))):
        other_seq = seq % 0xFFFFFFF0 + 1 + later
        budget = budgets[later + 1]
        op, op_args = _op_args(name, other)
        assert wire(fast.send_call(other_seq, target, name, other, {}, budget)) == wire(
            slow.send_request(other_seq, op, target, op_args, None, False, _context(budget))
        )


def _op_args(name: str | None, args: tuple[object, ...]) -> tuple[p.Op, tuple[object, ...]]:
    """The op and arguments of the request ``send_call(..., name, args, ...)`` stands for."""
    return (p.Op.CALL, args) if name is None else (p.Op.CALLATTR, (name, *args))


@settings(max_examples=100, deadline=None)
@given(
    refs=st.lists(st.tuples(st.integers(-1, 2**64), st.integers(-1, 2**32)), max_size=120).map(tuple),
    max_frame=st.sampled_from([1024, 4096]),
)
def test_send_release_writes_the_bytes_of_send_release_events(refs: tuple[tuple[int, int], ...], max_frame: int) -> None:
    """The same frame, or the same error (an entry out of range, over the peer's limit)."""
    outcomes: list[object] = []
    for fast in (True, False):
        conn, _ = pair(None, p.ProtocolConfig(max_frame_size=max_frame))
        try:
            outcomes.append(wire(conn.send_release(refs) if fast else conn.send(p.Release(refs))))
        except p.ProtocolError as exc:
            outcomes.append((type(exc), str(exc)))
    assert outcomes[0] == outcomes[1]


def test_send_release_outside_open_says_what_send_says() -> None:
    a, _ = pair()
    a.send(p.Close("bye"))
    with pytest.raises(p.LocalProtocolError):
        a.send_release(((1, 1),))


def _context(budget: int | None) -> p.CallContext | None:
    return None if budget is None else p.CallContext(budget)


# Compiled (rpc_protocol.COMPILED), send_call's typed parameter takes only an int or None
# (a float is mypyc's TypeError at the call) and holds True as the int 1, as mypyc does.
_WRONG_TYPE_COMPILED = pytest.mark.skipif(p.COMPILED, reason="compiled, the call checks the declared type")


@pytest.mark.parametrize(
    "budget", [-1, 2**64, pytest.param(1.5, marks=_WRONG_TYPE_COMPILED), pytest.param(True, marks=_WRONG_TYPE_COMPILED)]
)
def test_send_call_refuses_a_budget_send_request_refuses(budget: object) -> None:
    for count in (0, 1):  # the whole frame cached, or its prefix
        fast, _ = pair()
        args = (1,) * count
        for _ in range(2):  # (encoded, then cached)
            with pytest.raises(p.EncodeError, match="budget"):
                fast.send_call(1, p.BackRef(3), "m", args, {}, budget)  # type: ignore[arg-type]  # the wrong types are the test
        with pytest.raises(p.EncodeError, match="budget"):
            fast.send_request(1, p.Op.CALLATTR, p.BackRef(3), ("m", *args), None, False, p.CallContext(budget))  # type: ignore[arg-type]  # as above
        assert wire(fast.send_call(1, p.BackRef(3), "m", args, {})) == wire(pair()[0].send_request(1, p.Op.CALLATTR, p.BackRef(3), ("m", *args)))


def test_send_call_with_a_budget_to_a_version_1_peer_says_what_send_says() -> None:
    old, _ = v1_pair()
    with pytest.raises(p.LocalProtocolError):
        old.send_call(1, p.BackRef(0), "m", (), {}, 5)
    assert old.send_call(1, p.BackRef(0), "m", (), {})  # nothing was recorded


@settings(max_examples=100, deadline=None)
@given(name=st.none() | st.text(max_size=5), count=st.integers(0, 300), max_items=st.integers(4, 260), max_frame=st.sampled_from([1024, 4096]))
def test_send_call_refuses_what_send_request_refuses(name: str | None, count: int, max_items: int, max_frame: int) -> None:
    """Limits (items, the peer's frame size) and sequence rules: the same error, or none."""
    config = p.ProtocolConfig(limits=p.CodecLimits(max_items=max_items))
    fast, fast_peer = pair(config, p.ProtocolConfig(max_frame_size=max_frame))
    slow, _ = pair(config, p.ProtocolConfig(max_frame_size=max_frame))
    args = tuple(b"x" * 10 for _ in range(count))
    outcomes: list[object] = []
    sends: list[Callable[[], list[p.Buffer]]] = [
        lambda: fast.send_call(1, p.BackRef(3), name, args, {}),
        lambda: slow.send_request(1, _op_args(name, args)[0], p.BackRef(3), _op_args(name, args)[1]),
    ]
    for send in sends:
        try:
            outcomes.append(wire(send()))
        except p.ProtocolError as exc:
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]
    for seq in (1, 2):  # in flight, or (after a refusal) free on both
        outcomes = []
        for conn in (fast, slow):
            try:
                outcomes.append(wire(conn.send_request(seq, p.Op.CALLATTR, p.BackRef(3), ("m",))))
            except p.ProtocolError as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1]


def test_send_call_outside_open_says_what_send_says() -> None:
    a = p.Connection()
    with pytest.raises(p.LocalProtocolError, match="cannot send Request"):
        a.send_call(1, p.BackRef(0), "m", (), {})
    a, _ = pair()
    a.send_call(1, p.BackRef(0), "m", (), {})
    with pytest.raises(p.LocalProtocolError, match="already in flight"):
        a.send_call(1, p.BackRef(0), "m", (), {})


# -- receiving -------------------------------------------------------------------------

_frame_kinds = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 255])
_seqs = st.sampled_from([*IN_FLIGHT, *PEER_IN_FLIGHT, 0, 4, 41, 2**32 - 1])


_call_contexts = st.none() | contexts


@st.composite
def _frames(draw: st.DrawFn) -> bytes:
    """One frame, likely well formed (a reply, a request, a release), maybe not."""
    which = draw(st.sampled_from(["reply", "request", "release", "other"]))
    if which == "reply":
        payload = wire(p.ValueEncoder().encode(draw(values(with_refs=False, max_leaves=4))))
        frame = _frame(3, draw(_seqs), payload)
    elif which == "request":
        _, peer = pair()
        frame = wire(
            peer.send_request(
                draw(_seqs) or 1,
                p.Op.CALLATTR,
                p.BackRef(1),
                ("m", *draw(call_args)),
                draw(call_kwargs),
                draw(st.booleans()),
                draw(_call_contexts),
            )
        )
    elif which == "release":
        frame = _release(*draw(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)), max_size=3)))
    else:
        frame = _frame(draw(_frame_kinds), draw(_seqs), draw(st.binary(max_size=20)), draw(st.sampled_from([0, 1, 2])), draw(st.sampled_from([0, 0, 1])))
    return frame


@st.composite
def _data(draw: st.DrawFn) -> bytes:
    """A few frames back to back, maybe mutated (a byte changed, cut short, extended)."""
    data = b"".join(draw(st.lists(_frames(), min_size=1, max_size=3)))
    mutation = draw(st.sampled_from(["none", "none", "flip", "cut", "extend"]))
    if mutation == "flip" and data:
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1 :]
    elif mutation == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif mutation == "extend":
        data += draw(st.binary(min_size=1, max_size=8))
    return data


def _general(conn: p.Connection, data: bytes) -> tuple[list[p.Event], bool]:
    """What receive_data makes of ``data``: the events, and whether it refused the bytes
    (raised now, or failed the connection for the next call)."""
    try:
        events = conn.receive_data(data)
    except p.ProtocolError:
        return [], True
    return events, conn.error is not None


def _check_same(fast: p.Connection, slow: p.Connection) -> None:
    """The same state, and the same sequence bookkeeping (semi-private: not in the API)."""
    assert fast.state is slow.state
    assert (fast.error is None) == (slow.error is None)
    if fast.error is None:
        assert fast._pending_out == slow._pending_out
        assert fast._pending_in == slow._pending_in


T = TypeVar("T")


def _take_against_general(
    take: Callable[[p.Connection], tuple[T, tuple[tuple[int, int], ...]] | None], data: bytes
) -> tuple[p.Connection, p.Connection, T, p.Event] | None:
    """``take`` (a call-path method, on a fresh scene) against ``receive_data`` (on another)
    fed ``data``. Where the call path refuses or declines, checks that it agrees with the
    general path (the bytes refused by both; declined with nothing changed, the general path
    then making the same events, the same bookkeeping) and returns None. Where it takes a
    frame, checks the releases it took are the general path's events before that frame and
    returns both connections, what it took and the general path's last event."""
    fast, _ = _scene()
    slow, _ = _scene()
    try:
        taken = take(fast)
    except p.ProtocolError:
        _, refused = _general(slow, data)
        assert refused  # the general path refuses the bytes too
        assert fast.state is p.State.FAILED
        return None
    expected, refused = _general(slow, data)
    if taken is None:  # declined: nothing changed, and the general path does the rest
        assert _snapshot(fast) == _snapshot(_scene()[0])
        got, got_refused = _general(fast, data)
        assert got_refused == refused
        assert len(got) == len(expected) and all(same_event(x, y) for x, y in zip(got, expected))
        _check_same(fast, slow)
        return None
    value, released = taken
    assert not refused
    assert all(type(event) is p.Release for event in expected[:-1])
    assert released == tuple(ref for event in expected[:-1] for ref in event.refs)  # type: ignore[union-attr]  # Releases
    return fast, slow, value, expected[-1]


@settings(max_examples=400, deadline=None)
@given(data=_data(), seq=st.sampled_from([*IN_FLIGHT, 7]))
def test_take_reply_accepts_exactly_what_receive_data_accepts(data: bytes, seq: int) -> None:
    result = _take_against_general(lambda conn: conn.take_reply(data, seq), data)
    if result is not None:
        fast, slow, value, last = result
        assert last == p.Reply(seq, last.value) and same(value, last.value)  # type: ignore[union-attr]  # a Reply
        _check_same(fast, slow)


@settings(max_examples=400, deadline=None)
@given(data=_data())
def test_take_request_accepts_exactly_what_receive_data_accepts(data: bytes) -> None:
    result = _take_against_general(lambda conn: conn.take_request(data), data)
    if result is not None:
        fast, slow, fields, last = result
        assert same_event(taken_request(fields), last)
        for conn in (fast, slow):  # now waiting for our answer: the same on both
            conn.send_reply(fields[0], None)
        _check_same(fast, slow)


@settings(max_examples=200, deadline=None)
@given(target=values(with_refs=False, max_leaves=3), op=st.sampled_from(list(p.Op)), context=st.booleans())
def test_a_request_whose_target_is_a_plain_value_is_refused_by_both_paths(target: object, op: p.Op, context: bool) -> None:
    """Regression: a plain value as target (not a reference to an object the receiver lent)
    was accepted, so a peer could run safe special methods on values and operands of its
    choosing ("{0._secret}".format(root) under allow_public_attrs, "x" * 10**9)."""
    encode = p.ValueEncoder().encode  # (forged: send_request itself refuses such a target)
    block = struct.pack("<BQ", 1, 1000) if context else b""  # (HAS_BUDGET, the budget)
    payload = bytes((op,)) + block + wire(encode(target)) + wire(encode(("format",))) + wire(encode(()))
    data = _frame(2, 5, payload, p.FrameFlags.CONTEXT if context else 0)
    with pytest.raises(p.EncodeError, match="target must be a reference"):
        pair()[0].send_request(5, op, target, ("format",), {}, False, p.CallContext(1000) if context else None)
    fast, _ = _scene()
    slow, _ = _scene()
    with pytest.raises(p.RemoteProtocolError, match="target must be a reference"):
        fast.take_request(data)
    with pytest.raises(p.RemoteProtocolError, match="target must be a reference"):
        slow.receive_data(data)
    assert fast.state is slow.state is p.State.FAILED


def test_take_reply_takes_the_reply_and_releases_before_it() -> None:
    a, _ = _scene()
    data = _release((5, 1)) + _release((6, 2), (7, 1)) + _frame(3, 2, wire(p.ValueEncoder().encode("ok")))
    assert a.take_reply(data, 2) == ("ok", ((5, 1), (6, 2), (7, 1)))
    assert a.take_reply(_frame(3, 2, b"\x00"), 2) is None  # answered already: the general path refuses it
    with pytest.raises(p.RemoteProtocolError):
        a.receive_data(_frame(3, 2, b"\x00"))


def test_take_reply_declines_while_a_frame_is_under_way() -> None:
    a, _ = _scene()
    whole = _frame(3, 1, b"\x00")
    assert a.receive_data(whole[:5]) == []
    assert a.take_reply(whole[5:], 1) is None
    assert a.receive_data(whole[5:]) == [p.Reply(1, None)]


def test_take_reply_refuses_a_malformed_reply_as_receive_data_does() -> None:
    a, _ = _scene()
    with pytest.raises(p.RemoteProtocolError):
        a.take_reply(_frame(3, 1, b"\xff"), 1)
    assert a.state is p.State.FAILED
    with pytest.raises(p.RemoteProtocolError):
        a.receive_data(b"")


def test_take_reply_refuses_bytes_after_the_value_as_receive_data_does() -> None:
    trailing = _frame(3, 1, b"\x00\x00\x00")  # None, then two bytes too many
    fast, _ = _scene()
    slow, _ = _scene()
    with pytest.raises(p.RemoteProtocolError, match="2 trailing bytes after a value"):
        fast.take_reply(trailing, 1)
    with pytest.raises(p.RemoteProtocolError, match="2 trailing bytes after a value"):
        slow.receive_data(trailing)
    assert fast.state is slow.state is p.State.FAILED


@pytest.mark.skipif(not p.COMPILED, reason="the compiled build's own checks")
def test_compiled_send_call_checks_its_argument_types() -> None:
    fast, _ = pair()
    with pytest.raises(TypeError):
        fast.send_call(1, p.BackRef(3), "m", (), {}, 1.5)  # type: ignore[arg-type]  # the wrong type is the test
    with pytest.raises(p.EncodeError, match="budget"):  # a wrong type inside a CallContext is still ours to refuse
        fast.send_request(1, p.Op.CALLATTR, p.BackRef(3), ("m",), None, False, p.CallContext(True))
