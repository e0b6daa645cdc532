"""A randomised model of two connected peers, driven by hypothesis' stateful testing.

Owns the end-to-end property of the connection state machine: whatever interleaving of
requests, replies, error replies, pings, pongs, releases and closes the two sides produce, and
however the bytes in flight are chunked on delivery, every event arrives intact and in order in
each direction, and each side's ``state`` follows the lifecycle the spec draws. The rule
bodies only do what the protocol allows; any exception is a failure.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import rpc_protocol as p
from tests.protocol.helpers import pair, same_event, values, wire

SIDES = st.integers(0, 1)
NAMES = st.text(alphabet="abcxyz_", min_size=1, max_size=6)
OIDS = st.integers(0, (1 << 64) - 1)
COUNTS = st.integers(0, (1 << 32) - 1)
SMALL = values(max_leaves=4)
SMALL_BY_VALUE = values(by_value=True, max_leaves=4)
AFTER_SEND_CLOSE = {p.State.OPEN: p.State.CLOSE_SENT, p.State.CLOSE_RECEIVED: p.State.CLOSED}
AFTER_RECV_CLOSE = {p.State.OPEN: p.State.CLOSE_RECEIVED, p.State.CLOSE_SENT: p.State.CLOSED}


class TwoPeers(RuleBasedStateMachine):
    """Side 0 and side 1 of one connection, with the bytes each has sent but not delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.conns = pair()
        self.in_flight = [bytearray(), bytearray()]  # bytes sent by side i, not yet delivered
        self.expected: list[list[p.Event]] = [[], []]  # events sent by side i, not yet received
        self.to_answer: list[list[p.Request]] = [[], []]  # requests side i received, unanswered
        self.to_pong: list[list[p.Ping]] = [[], []]  # pings side i received, unanswered
        self.model = [p.State.OPEN, p.State.OPEN]
        self.sent = 0
        self.quiet_steps = 0

    def _send(self, side: int, event: p.Event) -> None:
        self.in_flight[side] += wire(self.conns[side].send(event))
        self.expected[side].append(event)
        self.sent += 1

    def _open_sides(self) -> list[int]:
        return [side for side in (0, 1) if self.conns[side].state is p.State.OPEN]

    def _owing(self, pending: list[list[p.Request]] | list[list[p.Ping]]) -> list[int]:
        return [side for side in self._open_sides() if pending[side]]

    # -- what a side may send (preconditions keep hypothesis from picking no-op steps) --

    @precondition(lambda self: self._open_sides())
    @rule(
        data=st.data(),
        op=st.sampled_from(p.Op),
        args=st.lists(SMALL, max_size=3).map(tuple),
        kwargs=st.dictionaries(NAMES, SMALL, max_size=2),
        by_value=st.booleans(),
    )
    def request(
        self, data: st.DataObject, op: p.Op, args: tuple[object, ...], kwargs: dict[str, object], by_value: bool
    ) -> None:
        side = data.draw(st.sampled_from(self._open_sides()), label="side")
        conn = self.conns[side]
        self._send(side, p.Request(conn.next_seq(), op, p.BackRef(side), args, kwargs, by_value))

    @precondition(lambda self: self._owing(self.to_answer))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        side = data.draw(st.sampled_from(self._owing(self.to_answer)), label="side")
        pending = self.to_answer[side]
        req = pending.pop(data.draw(st.integers(0, len(pending) - 1), label="which"))
        values = SMALL_BY_VALUE if req.by_value else SMALL
        if data.draw(st.booleans(), label="fails"):
            args = data.draw(st.lists(values, max_size=2).map(tuple), label="args")
            self._send(side, p.ErrorReply(req.seq, "builtins", "ValueError", args, "Traceback: ..."))
        else:
            self._send(side, p.Reply(req.seq, data.draw(values, label="value")))

    @precondition(lambda self: self._open_sides())
    @rule(data=st.data(), payload=st.binary(max_size=16))
    def ping(self, data: st.DataObject, payload: bytes) -> None:
        side = data.draw(st.sampled_from(self._open_sides()), label="side")
        self._send(side, p.Ping(self.conns[side].next_seq(), payload))

    @precondition(lambda self: self._owing(self.to_pong))
    @rule(data=st.data())
    def pong(self, data: st.DataObject) -> None:
        side = data.draw(st.sampled_from(self._owing(self.to_pong)), label="side")
        pending = self.to_pong[side]
        ping = pending.pop(data.draw(st.integers(0, len(pending) - 1), label="which"))
        self._send(side, p.Pong(ping.seq, ping.payload))

    @precondition(lambda self: self._open_sides())
    @rule(data=st.data(), refs=st.lists(st.tuples(OIDS, COUNTS), max_size=5).map(tuple))
    def release(self, data: st.DataObject, refs: tuple[tuple[int, int], ...]) -> None:
        side = data.draw(st.sampled_from(self._open_sides()), label="side")
        self._send(side, p.Release(refs))

    @initialize(quiet_steps=st.integers(0, 40))
    def plan_closing(self, quiet_steps: int) -> None:
        """No Close before this many events were sent, so that traffic builds up first."""
        self.quiet_steps = quiet_steps

    @precondition(lambda self: self.sent >= self.quiet_steps and any(s in AFTER_SEND_CLOSE for s in self.model))
    @rule(side=SIDES, reason=st.text(max_size=10))
    def close(self, side: int, reason: str) -> None:
        if self.model[side] in AFTER_SEND_CLOSE:
            self._send(side, p.Close(reason))
            self.model[side] = AFTER_SEND_CLOSE[self.model[side]]

    # -- the network -------------------------------------------------------------------

    @precondition(lambda self: any(self.in_flight))
    @rule(side=SIDES, size=st.integers(1, 64) | st.integers(1, 4096))
    def deliver(self, side: int, size: int) -> None:
        """Deliver up to ``size`` of the bytes side ``side`` sent to the other side."""
        chunk = bytes(self.in_flight[side][:size])
        del self.in_flight[side][:size]
        if chunk:
            self._received(1 - side, self.conns[1 - side].receive_data(chunk))

    @rule()
    def deliver_everything(self) -> None:
        for side in (0, 1):
            self.deliver(side, len(self.in_flight[side]))

    def _received(self, side: int, events: list[p.Event]) -> None:
        sent = self.expected[1 - side]
        for event in events:
            assert sent, f"side {side} received {event!r}, which nobody sent"
            want = sent.pop(0)
            assert same_event(event, want), (event, want)
            if isinstance(event, p.Request) and self.model[side] is p.State.OPEN:
                self.to_answer[side].append(event)
            elif isinstance(event, p.Ping) and self.model[side] is p.State.OPEN:
                self.to_pong[side].append(event)
            elif isinstance(event, p.Close):
                self.model[side] = AFTER_RECV_CLOSE[self.model[side]]
                self.to_answer[side].clear()
                self.to_pong[side].clear()

    @invariant()
    def states_follow_the_model(self) -> None:
        assert [conn.state for conn in self.conns] == self.model
        for side in (0, 1):
            if self.model[side] is p.State.CLOSED:
                assert not self.in_flight[1 - side] and not self.expected[1 - side]

    def teardown(self) -> None:
        self.deliver_everything()  # everything still in flight arrives intact, in order
        assert self.expected == [[], []]
        self.states_follow_the_model()


TwoPeers.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestTwoPeers = pytest.mark.timeout(180)(TwoPeers.TestCase)  # 100 runs of 50 steps: slow on 3.10 under load
