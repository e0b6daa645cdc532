"""Version 2 of the wire: the call context on REQUEST and the CANCEL frame.

Covers what ``docs/protocol.md`` says about them beyond the golden vectors: both sending
paths (``send(Request(...))`` and ``send_request(..., context)``) write the same bytes for any
context (hypothesis); malformed context blocks fail with ``RemoteProtocolError`` only;
a connection settled at version 1 neither sends nor accepts either; and the request-id
bookkeeping stays sound when CANCEL and answers cross (hypothesis state machine).
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import rpc_protocol as p
from tests.protocol.helpers import handshake, pair, same_event, wire

_ids = st.binary(min_size=16, max_size=16).filter(any)
_parents = st.binary(min_size=8, max_size=8).filter(any)
traceparents = st.builds(lambda t, s, f: f"00-{t.hex()}-{s.hex()}-{f:02x}", _ids, _parents, st.integers(0, 255))
contexts = st.builds(
    p.CallContext,
    budget_us=st.none() | st.integers(0, 2**64 - 1),
    traceparent=st.none() | traceparents,
).filter(lambda c: c.budget_us is not None or c.traceparent is not None)


def v1_pair() -> tuple[p.Connection, p.Connection]:
    """An open pair where ``a`` speaks version 1 only: settled at 1."""
    a, b = p.Connection(), p.Connection()
    out_a = wire(a.send(p.Preface(1, 1)))
    out_b = wire(b.send(p.Preface()))
    a.receive_data(out_b)
    b.receive_data(out_a)
    a.receive_data(wire(b.send(p.Hello())))
    b.receive_data(wire(a.send(p.Hello())))
    assert a.version == b.version == 1 and a.state is b.state is p.State.OPEN
    return a, b


@settings(max_examples=200, deadline=None)
@given(
    context=contexts,
    args=st.tuples(st.integers(), st.text(max_size=5)),
    by_value=st.booleans(),
    cut=st.integers(0, 200),
)
def test_both_paths_write_the_same_bytes_and_any_split_reads_back(
    context: p.CallContext, args: tuple[int, str], by_value: bool, cut: int
) -> None:
    a1, b = pair()
    a2, _ = pair()
    event = p.Request(9, p.Op.CALL, p.BackRef(3), args, {"k": 1}, by_value, context)
    data = wire(a1.send(event))
    assert wire(a2.send_request(9, p.Op.CALL, p.BackRef(3), args, {"k": 1}, by_value, context)) == data
    cut = min(max(cut, 1), len(data) - 1)  # (an empty chunk would mean end of stream)
    got = b.receive_data(data[:cut]) + b.receive_data(data[cut:])
    assert len(got) == 1 and same_event(got[0], event) and got[0].context == context  # type: ignore[union-attr]  # a Request


@pytest.mark.parametrize(
    "context",
    [
        p.CallContext(),
        p.CallContext(budget_us=-1),
        p.CallContext(budget_us=2**64),
        p.CallContext(traceparent="00-" + "0" * 32 + "-" + "1" * 16 + "-01"),
        p.CallContext(traceparent="00-" + "1" * 32 + "-" + "0" * 16 + "-01"),
        p.CallContext(traceparent="00-" + "A" * 32 + "-" + "1" * 16 + "-01"),
        p.CallContext(traceparent="01-" + "1" * 32 + "-" + "1" * 16 + "-01"),
        p.CallContext(traceparent="00-" + "1" * 32 + "-" + "1" * 16 + "-0g"),
        p.CallContext(traceparent="00-" + "1" * 32 + "-" + "1" * 16),
    ],
)
def test_invalid_contexts_are_refused_on_send(context: p.CallContext) -> None:
    a, _ = pair()
    with pytest.raises(p.EncodeError):
        a.send(p.Request(1, p.Op.CALL, p.BackRef(0), context=context))
    with pytest.raises(p.EncodeError):
        a.send_request(1, p.Op.CALL, p.BackRef(0), (), None, False, context)
    assert a.next_seq() == 1  # nothing went in flight


@settings(max_examples=300, deadline=None)
@given(block=st.binary(max_size=40))
def test_any_context_block_decodes_or_fails_with_a_protocol_error(block: bytes) -> None:
    _, b = pair()
    payload = b"\x01" + block + bytes.fromhex("22 0000000000000000 1800 1800".replace(" ", ""))
    frame = struct.pack("<BBHII", 2, 0x02, 0, 1, len(payload)) + payload
    try:
        events = b.receive_data(frame)
    except p.RemoteProtocolError:
        assert b.state is p.State.FAILED
    else:
        assert len(events) == 1 and isinstance(events[0], p.Request) and events[0].context is not None


def test_a_version_1_connection_sends_no_context_and_no_cancel() -> None:
    a, b = v1_pair()
    assert not a.carries_context and not b.carries_context
    with pytest.raises(p.LocalProtocolError, match="version 1"):
        b.send(p.Request(1, p.Op.CALL, p.BackRef(0), context=p.CallContext(budget_us=1)))
    with pytest.raises(p.LocalProtocolError, match="version 1"):
        b.send_request(1, p.Op.CALL, p.BackRef(0), (), None, False, p.CallContext(budget_us=1))
    a.receive_data(wire(b.send(p.Request(1, p.Op.CALL, p.BackRef(0)))))  # plain requests still flow
    with pytest.raises(p.LocalProtocolError, match="CANCEL"):
        b.send(p.Cancel(1))
    assert b.receive_data(wire(a.send_reply(1, "ok"))) == [p.Reply(1, "ok")]


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack("<BBHII", 9, 0, 0, 1, 0),  # CANCEL
        struct.pack("<BBHII", 2, 2, 0, 1, 11) + bytes.fromhex("01 01 0100000000000000 00".replace(" ", "")),
    ],
    ids=["cancel", "context-flag"],
)
def test_a_version_1_connection_refuses_version_2_frames(frame: bytes) -> None:
    a, _ = v1_pair()
    with pytest.raises(p.RemoteProtocolError, match="version-1"):
        a.receive_data(frame)
    assert a.state is p.State.FAILED


def test_cancel_keeps_the_id_in_flight_until_the_answer() -> None:
    a, b = pair()
    seq = a.next_seq()
    b.receive_data(wire(a.send_request(seq, p.Op.CALL, p.BackRef(0))))
    assert b.receive_data(wire(a.send(p.Cancel(seq)))) == [p.Cancel(seq)]
    assert b.receive_data(wire(a.send(p.Cancel(seq)))) == [p.Cancel(seq)]  # redundant, allowed
    assert a.next_seq() != seq  # still in flight: never reused before its answer
    assert a.receive_data(wire(b.send(p.ErrorReply(seq, "x", "Cancelled")))) == [p.ErrorReply(seq, "x", "Cancelled")]
    with pytest.raises(p.LocalProtocolError, match="not in flight"):
        a.send(p.Cancel(seq))


def test_a_cancel_that_crossed_the_answer_is_ignored() -> None:
    a, b = pair()
    b.receive_data(wire(a.send_request(1, p.Op.CALL, p.BackRef(0))))
    answer = wire(b.send_reply(1, None))
    cancel = wire(a.send(p.Cancel(1)))
    assert b.receive_data(cancel) == []  # answered already: no event, no error
    assert a.receive_data(answer) == [p.Reply(1, None)]
    assert b.state is a.state is p.State.OPEN


class CancelCrossing(RuleBasedStateMachine):
    """Requests from ``a`` to ``b``; ``a`` cancels, ``b`` answers, bytes are delivered in any
    interleaving. Every request is answered exactly once; no CANCEL is ever an error."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = p.Connection(), p.Connection()
        handshake(self.a, self.b)
        self.to_b: list[bytes] = []
        self.to_a: list[bytes] = []
        self.sent: set[int] = set()
        self.live: set[int] = set()  # a's requests not yet answered (as a sees it)
        self.answers: dict[int, int] = {}
        self.waiting: list[int] = []  # requests b received and has not answered
        self.answered_by_b: set[int] = set()

    @precondition(lambda self: len(self.sent) < 40)
    @rule(context=st.none() | contexts)
    def request(self, context: p.CallContext | None) -> None:
        seq = self.a.next_seq()
        assert seq not in self.live
        if context is None:
            self.to_b.append(wire(self.a.send_request(seq, p.Op.CALL, p.BackRef(0))))
        else:
            self.to_b.append(wire(self.a.send_request(seq, p.Op.CALL, p.BackRef(0), (), None, False, context)))
        self.sent.add(seq)
        self.live.add(seq)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        seq = data.draw(st.sampled_from(sorted(self.live)))
        self.to_b.append(wire(self.a.send(p.Cancel(seq))))

    @precondition(lambda self: self.waiting)
    @rule(data=st.data(), error=st.booleans())
    def answer(self, data: st.DataObject, error: bool) -> None:
        seq = data.draw(st.sampled_from(self.waiting))
        self.waiting.remove(seq)
        self.answered_by_b.add(seq)
        event = p.ErrorReply(seq, "m", "Cancelled") if error else p.Reply(seq, seq)
        self.to_a.append(wire(self.b.send(event)))

    @precondition(lambda self: self.to_b)
    @rule()
    def deliver_to_b(self) -> None:
        for event in self.b.receive_data(self.to_b.pop(0)):
            if isinstance(event, p.Request):
                self.waiting.append(event.seq)
            else:
                assert isinstance(event, p.Cancel)
                assert event.seq in self.waiting  # only for requests awaiting b's answer

    @precondition(lambda self: self.to_a)
    @rule()
    def deliver_to_a(self) -> None:
        for event in self.a.receive_data(self.to_a.pop(0)):
            assert isinstance(event, (p.Reply, p.ErrorReply))
            self.answers[event.seq] = self.answers.get(event.seq, 0) + 1
            self.live.discard(event.seq)

    @invariant()
    def exactly_once(self) -> None:
        assert all(count == 1 for count in self.answers.values())
        assert self.a.state is self.b.state is p.State.OPEN

    def teardown(self) -> None:
        while self.to_b or self.to_a or self.waiting:
            if self.to_b:
                self.deliver_to_b()
            elif self.waiting:
                seq = self.waiting.pop(0)
                self.to_a.append(wire(self.b.send_reply(seq, None)))
            else:
                self.deliver_to_a()
        assert set(self.answers) == self.sent and not self.live


TestCancelCrossing = CancelCrossing.TestCase
TestCancelCrossing.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
