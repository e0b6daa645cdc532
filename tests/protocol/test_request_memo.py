"""Request bodies decoded once: a call repeated with the same arguments (``decode_call``).

A connection keeps the decoded arguments of the last few request bodies whose target is a
BACKREF, their only reference, and whose arguments are scalars, keyed by the body's bytes, so
the same call again is not decoded again. These tests check that nothing a peer could observe
changes: every request, repeated or not, gives the event a fresh connection gives; the target
(and any other reference) is looked up anew each time (a released object is refused as
before); no mutable value is shared between two requests; and what is kept stays bounded.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rpc_protocol as p
from tests.protocol.helpers import handshake, pair, same_event, taken_request, values, wire
from tests.protocol.test_call_context import contexts

_args = st.lists(values(with_refs=False, max_leaves=4), max_size=3).map(tuple)
_kwargs = st.dictionaries(st.text(max_size=4), values(with_refs=False, max_leaves=3), max_size=2)
_calls = st.tuples(st.integers(0, 3), st.sampled_from([p.Op.CALLATTR, p.Op.CALL]), _args, _kwargs, st.booleans(), st.none() | contexts)


def _request(seq: int, call: tuple[int, p.Op, tuple[object, ...], dict[str, object], bool, p.CallContext | None]) -> p.Request:
    oid, op, args, kwargs, by_value, context = call
    return p.Request(seq, op, p.BackRef(oid), ("m", *args) if op is p.Op.CALLATTR else args, kwargs, by_value, context)


@settings(max_examples=200, deadline=None)
@given(calls=st.lists(_calls, min_size=1, max_size=6), repeats=st.lists(st.integers(0, 5), min_size=1, max_size=12), taken=st.lists(st.booleans(), min_size=18, max_size=18))
def test_repeated_calls_decode_as_a_fresh_connection_decodes_them(
    calls: list[tuple[int, p.Op, tuple[object, ...], dict[str, object], bool, p.CallContext | None]], repeats: list[int], taken: list[bool]
) -> None:
    """Each call sent, then some of them again, through receive_data or take_request
    (alternating as drawn): every event is the one a connection that saw none before makes."""
    sender, receiver = pair()
    sequence = calls + [calls[index % len(calls)] for index in repeats]
    for seq, (call, take) in enumerate(zip(sequence, taken), start=100):
        data = wire(sender.send(_request(seq, call)))
        if take:
            fields = receiver.take_request(data)
            assert fields is not None
            got = taken_request(fields[0])
        else:
            [got] = receiver.receive_data(data)  # type: ignore[assignment]  # one Request
        fresh_sender, fresh = pair()
        [expected] = fresh.receive_data(wire(fresh_sender.send(_request(seq, call))))
        assert same_event(got, expected)
        receiver.send_reply(seq, None)  # (answered: its seq is free again)


def _lending_pair(lent: dict[int, object]) -> tuple[p.Connection, p.Connection]:
    """A sender and a receiver whose BACKREFs are looked up in ``lent`` (as a driver's
    boxer does: an object not lent is refused)."""

    def local(oid: int) -> object:
        try:
            return lent[oid]
        except KeyError:
            raise p.RemoteProtocolError(f"object #{oid} is not lent") from None

    sender = p.Connection()
    receiver = p.Connection(unbox_backref=local)
    handshake(sender, receiver)
    return sender, receiver


def test_the_target_of_a_repeated_call_is_looked_up_each_time() -> None:
    """Regression guard: the kept body must not keep the target, or an object the peer
    released (or one lent under the same id later) would still be reached."""
    first, second = object(), object()
    lent: dict[int, object] = {7: first}
    sender, receiver = _lending_pair(lent)

    def call(seq: int) -> bytes:
        return wire(sender.send(p.Request(seq, p.Op.CALLATTR, p.BackRef(7), ("m", 1, "x"))))

    assert receiver.receive_data(call(1))[0].target is first  # type: ignore[union-attr]  # a Request
    receiver.send_reply(1, None)
    lent[7] = second  # the id lent again, to another object
    fields = receiver.take_request(call(2))
    assert fields is not None and fields[0][2] is second
    receiver.send_reply(2, None)
    del lent[7]  # released
    try:
        receiver.receive_data(call(3))
    except p.RemoteProtocolError as exc:
        assert "not lent" in str(exc)
    else:
        raise AssertionError("a call on a released object was accepted")
    assert receiver.state is p.State.FAILED


def _forged_request(seq: int, args: tuple[object, ...], flat: tuple[object, ...]) -> bytes:
    """A CALLATTR frame on BACKREF 0 whose arguments hold lists, dicts or sets by value (no
    driver sends such arguments, they go by reference; a peer may)."""
    encode = p.ValueEncoder(containers_by_value=True).encode
    payload = bytes((p.Op.CALLATTR,)) + wire(encode(p.BackRef(0))) + wire(encode(args)) + wire(encode(flat))
    return struct.pack("<BBHII", 2, 0, 0, seq, len(payload)) + payload  # docs/protocol.md §3


def test_no_mutable_value_is_shared_between_two_requests() -> None:
    """Lists, dicts and sets are decoded anew for every request (a handler may change its
    arguments), and so is every keywords dict."""
    _, receiver = pair()
    for flat in (("k", 1), ("k", [1])):
        got = []
        for seq in (1, 2):
            data = _forged_request(seq, ("m", [1], {"a": 2}, {3}), flat)
            if seq == 1:
                [request] = receiver.receive_data(data)
                assert isinstance(request, p.Request)
                got.append((request.args, request.kwargs))
            else:
                fields = receiver.take_request(data)
                assert fields is not None
                got.append((fields[0][3], fields[0][4]))
            receiver.send_reply(seq, None)
        (args1, kwargs1), (args2, kwargs2) = got
        for index in (1, 2, 3):
            assert args1[index] == args2[index] and args1[index] is not args2[index]
        assert kwargs1 == kwargs2 and kwargs1 is not kwargs2
        assert kwargs1["k"] is not kwargs2["k"] or type(kwargs1["k"]) is int
    sender = pair()[0]
    scalar_calls = []
    for seq in (3, 4):
        fields = receiver.take_request(wire(sender.send(p.Request(seq, p.Op.CALLATTR, p.BackRef(0), ("m", 1), {"k": "v"}))))
        assert fields is not None
        scalar_calls.append(fields[0])
        receiver.send_reply(seq, None)
    assert scalar_calls[0][4] == scalar_calls[1][4] == {"k": "v"} and scalar_calls[0][4] is not scalar_calls[1][4]


def test_what_is_kept_stays_bounded() -> None:
    """A peer sending ever new bodies cannot grow what a connection keeps (semi-private:
    the decoder's table is not in the API)."""
    sender, receiver = pair()
    for seq in range(1, 500):
        receiver.receive_data(wire(sender.send(p.Request(seq, p.Op.CALLATTR, p.BackRef(0), ("m", seq)))))
        receiver.send_reply(seq, None)
        assert len(receiver._decoder._calls) <= 32
    long_args = ("m", "x" * 200)
    receiver.receive_data(wire(sender.send(p.Request(500, p.Op.CALLATTR, p.BackRef(0), long_args))))
    assert all(len(body) <= 128 for body in receiver._decoder._calls)


def test_a_call_whose_arguments_are_references_is_decoded_each_time() -> None:
    """Regression (review of the change that added the memo): arguments that the hooks
    turned into scalars (a lent str, a handle) were kept with the body, so a later request
    skipped the hooks: an argument the peer had released was still delivered. A body is
    kept only when its target was its one reference."""
    lent: dict[int, object] = {7: object(), 8: "a lent str"}
    calls: list[object] = []

    def local(oid: int) -> object:
        calls.append(oid)
        try:
            return lent[oid]
        except KeyError:
            raise p.RemoteProtocolError(f"object #{oid} is not lent") from None

    def unbox(ref: p.Ref | p.BackRef) -> object:
        calls.append(ref)
        return 12345  # (a hook may make a scalar of a reference)

    sender = p.Connection()
    receiver = p.Connection(unbox=unbox, unbox_backref=local)
    handshake(sender, receiver)
    for seq in (1, 2):
        calls.clear()
        data = wire(sender.send(p.Request(seq, p.Op.CALLATTR, p.BackRef(7), ("m", p.BackRef(8), p.Ref(9, 1)))))
        fields = receiver.take_request(data) if seq == 2 else None
        if fields is None:
            [request] = receiver.receive_data(data)
            assert isinstance(request, p.Request) and request.args == ("m", "a lent str", 12345)
        else:
            assert fields[0][3] == ("m", "a lent str", 12345)
        assert calls == [7, 8, p.Ref(9, 1)]
        receiver.send_reply(seq, None)
    del lent[8]  # released
    with pytest.raises(p.RemoteProtocolError, match="not lent"):
        receiver.receive_data(wire(sender.send(p.Request(3, p.Op.CALLATTR, p.BackRef(7), ("m", p.BackRef(8), p.Ref(9, 1))))))


def test_connections_sharing_a_cache_share_what_they_keep() -> None:
    """Connections made with one SharedCache keep call bodies in it: a body one decoded is
    not decoded again by another, whose own hook still looks its target up (its object,
    not the first connection's); what is shared stays bounded."""
    config = p.ProtocolConfig()
    shared = p.SharedCache(config)
    objects = [object(), object()]
    receivers = []
    for obj in objects:
        sender = p.Connection(config)
        receiver = p.Connection(config, unbox_backref=lambda oid, obj=obj: obj, shared=shared)  # type: ignore[misc]  # (a default binds obj)
        handshake(sender, receiver)
        [request] = receiver.receive_data(wire(sender.send(p.Request(1, p.Op.CALLATTR, p.BackRef(7), ("m", 1, "x")))))
        assert isinstance(request, p.Request) and request.target is obj and request.args == ("m", 1, "x")
        receivers.append((sender, receiver))
    assert len(shared.calls) == 1
    sender, receiver = receivers[0]
    for seq in range(2, 400):
        receiver.receive_data(wire(sender.send(p.Request(seq, p.Op.CALLATTR, p.BackRef(0), ("m", seq)))))
        receiver.send_reply(seq, None)
        assert len(shared.calls) <= 256
    # a decoder with other limits decodes under them: it keeps its own
    assert p.ValueDecoder(limits=p.CodecLimits(max_depth=8), shared=shared)._calls is not shared.calls
