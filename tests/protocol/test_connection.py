"""The sans-I/O ``Connection``: handshake, framing, sequence rules, limits and the lifecycle.

Owns the behaviour of one side's state machine as driven through its public API (``send``,
``receive_data``, ``bytes_needed``, ``state``): version settlement and its errors, framing
independent of how bytes are chunked, the request/reply/ping bookkeeping, the frame-size and
in-flight limits, and Close in both directions. The randomised two-peer model lives in
``test_stateful.py``; byte layouts are checked by ``test_golden.py``.
"""

from __future__ import annotations

import struct
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rpc_protocol as p
from tests.protocol.helpers import deliver, forged, handshake, pair, same_event, settled_pair, state, values, wire

CALL = p.Op.CALL


def request(seq: int, *args: object, by_value: bool = False) -> p.Request:
    return p.Request(seq, CALL, p.BackRef(0), args, by_value=by_value)


# -- handshake -------------------------------------------------------------------------


@pytest.mark.parametrize("a_first", [True, False])
def test_handshake(a_first: bool) -> None:
    a, b = p.Connection(), p.Connection(p.ProtocolConfig(max_frame_size=4096))
    out_a = wire(a.send(p.Preface()))
    assert out_a == p.MAGIC + bytes([1, 2, 0, 0]) and a.state is p.State.PREFACE_SENT
    if a_first:
        assert b.receive_data(out_a) == [p.Preface(1, 2)] and b.state is p.State.PREFACE_RECEIVED
        assert a.receive_data(wire(b.send(p.Preface()))) == [p.Preface(1, 2)]
    else:
        assert a.receive_data(wire(b.send(p.Preface()))) == [p.Preface(1, 2)]
        assert b.receive_data(out_a) == [p.Preface(1, 2)]
    assert a.state is b.state is p.State.SETTLED and a.version == b.version == 2
    hello_b = p.Hello(services=("ECHO",), capabilities=frozenset({"x"}), max_frame_size=1, root=p.Ref(1, 2, "T"))
    (got,) = deliver(b, a, hello_b)
    assert (a.state, b.state) == (p.State.HELLO_RECEIVED, p.State.HELLO_SENT)
    assert got == p.Hello(("ECHO",), frozenset({"x"}), 4096, p.Ref(1, 2, "T"))  # b's configured limit
    assert a.peer_hello == got
    assert deliver(a, b, p.Hello()) == [p.Hello(max_frame_size=64 * 1024 * 1024)]
    assert a.state is b.state is p.State.OPEN


def test_early_hello_makes_the_handshake_one_round_trip() -> None:
    """Each side writes its preface and Hello at once; one delivery each way opens both."""
    a, b = p.Connection(), p.Connection(p.ProtocolConfig(max_frame_size=4096))
    out_a = wire([*a.send(p.Preface()), *a.send(p.Hello(services=("A",)))])
    assert a.state is p.State.EARLY_HELLO_SENT and a.version is None
    out_b = wire([*b.send(p.Preface()), *b.send(p.Hello(services=("B",)))])
    assert a.receive_data(out_b) == [p.Preface(1, 2), p.Hello(("B",), max_frame_size=4096)]
    assert b.receive_data(out_a) == [p.Preface(1, 2), p.Hello(("A",))]
    assert a.state is b.state is p.State.OPEN and a.version == b.version == 2


def test_a_peer_s_early_hello_may_arrive_before_our_preface_is_sent() -> None:
    a, b = p.Connection(), p.Connection()
    early = wire([*b.send(p.Preface()), *b.send(p.Hello(services=("B",)))])
    for byte in early:  # any chunking
        a.receive_data(bytes([byte]))
    assert a.state is p.State.EARLY_HELLO_RECEIVED and a.peer_hello == p.Hello(("B",))
    with pytest.raises(p.LocalProtocolError):
        a.send(p.Hello())  # still our preface first
    assert b.receive_data(wire(a.send(p.Preface()))) == [p.Preface(1, 2)]
    assert state(a) is p.State.HELLO_RECEIVED and a.version == 2
    assert deliver(a, b, p.Hello()) == [p.Hello()]
    assert state(a) is state(b) is p.State.OPEN


def test_an_early_hello_does_not_hide_a_version_mismatch() -> None:
    a, b = p.Connection(), p.Connection()
    a.send(p.Preface(1, 1))
    a.send(p.Hello())
    with pytest.raises(p.HandshakeError, match="2..3"):
        a.receive_data(wire(b.send(p.Preface(2, 3))))
    assert a.state is p.State.FAILED


def test_error_tells_a_failure_that_came_after_returned_events() -> None:
    a, b = p.Connection(), p.Connection()
    a.send(p.Preface())
    assert a.error is None
    bad_request = wire(b.send(p.Preface())) + struct.pack("<BBHII", 2, 0, 0, 1, 1) + b"\x01"  # a REQUEST before any Hello
    assert a.receive_data(bad_request) == [p.Preface(1, 2)]  # the preface still counts
    assert state(a) is p.State.FAILED and isinstance(a.error, p.RemoteProtocolError)
    with pytest.raises(p.RemoteProtocolError) as caught:
        a.receive_data(b"")
    assert caught.value is a.error


@pytest.mark.parametrize("receive_first", [True, False])
def test_version_mismatch_names_both_ranges(receive_first: bool) -> None:
    conn, peer = p.Connection(), p.Connection()
    peer_preface = wire(peer.send(p.Preface(2, 3)))
    with pytest.raises(p.HandshakeError) as caught:
        if receive_first:
            conn.receive_data(peer_preface)
            conn.send(p.Preface(1, 1))
        else:
            conn.send(p.Preface(1, 1))
            conn.receive_data(peer_preface)
    assert "1..1" in str(caught.value) and "2..3" in str(caught.value)
    assert conn.state is p.State.FAILED
    with pytest.raises(p.LocalProtocolError):
        conn.send(p.Hello())
    with pytest.raises(p.HandshakeError):
        conn.receive_data(b"\x01")


def test_version_settles_on_the_highest_common_version() -> None:
    a, b = p.Connection(), p.Connection()
    b.receive_data(wire(a.send(p.Preface(1, 3))))
    a.receive_data(wire(b.send(p.Preface(2, 5))))
    assert a.version == b.version == 3


@pytest.mark.parametrize("preface", [p.Preface(0, 1), p.Preface(2, 1), p.Preface(1, 256), p.Preface(-1, 1)])
def test_invalid_local_preface_is_refused(preface: p.Preface) -> None:
    conn = p.Connection()
    with pytest.raises(p.LocalProtocolError):
        conn.send(preface)
    assert conn.state is p.State.START


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"GET ", b"G", b"\x00" * 8])
def test_non_rpc_peer_is_rejected_at_once(data: bytes) -> None:
    conn = p.Connection()
    with pytest.raises(p.HandshakeError, match="not an rpc peer"):
        conn.receive_data(data)
    assert conn.state is p.State.FAILED


@pytest.mark.parametrize("raw", [p.MAGIC + b"\x00\x01\x00\x00", p.MAGIC + b"\x02\x01\x00\x00", p.MAGIC + b"\x01\x01\x01\x00"])
def test_malformed_preface(raw: bytes) -> None:
    with pytest.raises(p.HandshakeError, match="malformed"):
        p.Connection().receive_data(raw)


def test_hello_root_goes_through_the_hooks() -> None:
    thing = object()
    a = p.Connection(box=lambda obj: p.Ref(9, 1, "Service"))
    b = p.Connection(unbox=lambda ref: thing if ref == p.Ref(9, 1, "Service") else ref)
    handshake(a, b, hello_a=p.Hello(root=object()))
    assert b.peer_hello is not None and b.peer_hello.root is thing


# -- framing ---------------------------------------------------------------------------


def _script(a: p.Connection, b: p.Connection) -> tuple[bytes, list[p.Event]]:
    """A stream from a to b covering every frame type, and the events it must produce."""
    a.receive_data(wire(b.send(request(1))) + wire(b.send(p.Ping(2, b"pp"))))
    events: list[p.Event] = [
        request(7, "x" * 300, b"y" * 70_000, by_value=True),
        p.Reply(1, (1.5, None)),
        p.Pong(2, b"pp"),
        p.Release(((1, 1), (2, 3))),
        p.Ping(8, b"ping"),
        p.Close("bye"),
    ]
    return b"".join(wire(a.send(event)) for event in events), events


def test_same_events_for_every_chunking() -> None:
    a, b = p.Connection(), p.Connection()
    b.send(p.Preface())
    opening = wire(a.send(p.Preface()))
    a.receive_data(wire(p.Connection().send(p.Preface())))
    opening += wire(a.send(p.Hello(services=("ECHO",), root=p.Ref(1, 1, ("T",)))))
    got: list[p.Event] = []
    for i in range(len(opening)):  # the handshake, one byte at a time
        got += b.receive_data(opening[i : i + 1])
    assert got == [p.Preface(), p.Hello(services=("ECHO",), root=p.Ref(1, 1, ("T",)))]
    a.receive_data(wire(b.send(p.Hello())))
    stream, events = _script(a, b)
    got = []
    for i in range(len(stream)):  # then every frame type, one byte at a time
        got += b.receive_data(stream[i : i + 1])
    assert got == events and b.state is p.State.CLOSE_RECEIVED


def test_several_frames_in_one_chunk_and_odd_splits() -> None:
    a, b = pair()
    stream, events = _script(a, b)
    assert b.receive_data(stream) == events
    for cut in (1, 11, 12, 13, 100, len(stream) - 1):
        a, b = pair()
        stream, events = _script(a, b)
        assert b.receive_data(memoryview(stream)[:cut]) + b.receive_data(bytearray(stream[cut:])) == events


def test_bytes_needed() -> None:
    a, b = p.Connection(), p.Connection()
    assert b.bytes_needed == p.PREFACE_SIZE
    preface = wire(a.send(p.Preface()))
    b.receive_data(preface[:3])
    assert b.bytes_needed == 5
    b.receive_data(preface[3:])
    assert b.bytes_needed == p.HEADER_SIZE
    a.receive_data(wire(b.send(p.Preface())))
    frame = wire(a.send(p.Hello(services=("S" * 50,))))
    b.receive_data(frame[:5])
    assert b.bytes_needed == p.HEADER_SIZE - 5
    b.receive_data(frame[5:14])
    assert b.bytes_needed == len(frame) - 14
    b.receive_data(frame[14:-1])
    assert b.bytes_needed == 1
    assert len(b.receive_data(frame[-1:])) == 1 and b.bytes_needed == p.HEADER_SIZE


def test_events_before_bad_bytes_are_returned_first() -> None:
    a, b = pair()
    good = wire(a.send(p.Ping(1)))
    assert b.receive_data(good + b"\xff" * 12) == [p.Ping(1)]
    assert b.state is p.State.FAILED
    with pytest.raises(p.RemoteProtocolError, match="unknown frame type"):
        b.receive_data(b"")
    with pytest.raises(p.LocalProtocolError, match="failed earlier"):
        b.send(p.Pong(1))


def test_eof() -> None:
    a, b = pair()
    b.receive_data(wire(a.send(p.Ping(1, b"abc")))[:13])
    with pytest.raises(p.RemoteProtocolError, match="middle of a frame"):
        b.receive_data(b"")
    assert b.state is p.State.FAILED
    conn = p.Connection()
    conn.receive_data(p.MAGIC)
    with pytest.raises(p.RemoteProtocolError):
        conn.receive_data(b"")
    a, b = pair()
    assert b.receive_data(b"") == [] and b.state is p.State.CLOSED
    with pytest.raises(p.RemoteProtocolError, match="after the connection closed"):
        b.receive_data(b"\x00")


def test_oversized_header_is_rejected_before_its_payload() -> None:
    _, b = pair(config_b=p.ProtocolConfig(max_frame_size=1024))
    header = struct.pack("<BBHII", p.FrameType.PING, 0, 0, 1, 1025)
    with pytest.raises(p.RemoteProtocolError, match="1025 bytes exceeds the limit of 1024"):
        b.receive_data(header)  # only the 12 header bytes: the payload never arrives


def test_before_the_peers_hello_a_frame_is_at_most_the_handshake_limit() -> None:
    """Regression: a stranger could announce a 64 MiB Hello and make the accepting side
    buffer it (40 such connections: 2.6 GB) before knowing who it was."""
    limit = p.HANDSHAKE_FRAME_LIMIT
    a = p.Connection()
    a.send(p.Preface())
    stranger = p.Connection()
    header = struct.pack("<BBHII", p.FrameType.HELLO, 0, 0, 0, limit + 1)
    assert a.receive_data(b"".join(bytes(part) for part in stranger.send(p.Preface())) + header) == [p.Preface()]
    assert a.state is p.State.FAILED  # (the events before the bad bytes come first, then the error)
    with pytest.raises(p.RemoteProtocolError, match=f"{limit + 1} bytes exceeds the limit of {limit}"):
        a.receive_data(b"")
    a, b = pair()  # after the Hellos: max_frame_size again
    assert deliver(a, b, p.Ping(1, b"x" * (limit + 1))) == [p.Ping(1, b"x" * (limit + 1))]


def test_frame_over_the_peers_limit_is_refused_at_send() -> None:
    a, b = pair(config_b=p.ProtocolConfig(max_frame_size=1024))
    with pytest.raises(p.EncodeError, match="limit of 1024"):
        a.send(request(1, b"x" * 1024))
    assert a.state is p.State.OPEN
    assert b.receive_data(wire(a.send(request(1, b"x" * 1000)))) == [request(1, b"x" * 1000)]  # seq 1 still free
    with pytest.raises(p.EncodeError):
        a.send(p.Ping(2, b"x" * 1025))
    assert deliver(a, b, p.Ping(2, b"x" * 1024)) == [p.Ping(2, b"x" * 1024)]


@pytest.mark.parametrize("size", [1023, 1 << 32])
def test_protocol_config_is_validated(size: int) -> None:
    with pytest.raises(ValueError):
        p.ProtocolConfig(max_frame_size=size)
    with pytest.raises(ValueError):
        p.ProtocolConfig(max_pending=0)


# -- requests, replies and their sequence numbers --------------------------------------


def test_out_of_order_replies() -> None:
    a, b = pair()
    requests = [request(seq, seq * 10) for seq in (1, 2, 3)]
    assert b.receive_data(b"".join(wire(a.send(r)) for r in requests)) == requests
    replies: list[p.Event] = [p.Reply(3, "three"), p.ErrorReply(2, "builtins", "KeyError", ("k",), "tb"), p.Reply(1)]
    assert a.receive_data(b"".join(wire(b.send(r)) for r in replies)) == replies
    with pytest.raises(p.RemoteProtocolError, match="not in flight"):
        a.receive_data(wire(forged(p.Reply(1))))


@pytest.mark.parametrize("reply", [p.Reply(5), p.ErrorReply(5, "m", "T")])
def test_reply_to_an_unknown_seq_is_rejected(reply: p.Event) -> None:
    _, b = pair()
    with pytest.raises(p.RemoteProtocolError, match="#5"):
        b.receive_data(wire(forged(reply)))


def test_duplicate_request_seq_while_in_flight() -> None:
    a, b = pair()
    deliver(a, b, request(4))
    with pytest.raises(p.LocalProtocolError, match="already in flight"):
        a.send(request(4))
    with pytest.raises(p.RemoteProtocolError, match="reused request id #4"):
        b.receive_data(wire(forged(request(4))))
    a, b = pair()
    deliver(a, b, request(4))
    deliver(b, a, p.Reply(4))
    assert deliver(a, b, request(4)) == [request(4)]  # answered: the id may be used again


def test_max_pending() -> None:
    a, b = pair(config_b=p.ProtocolConfig(max_pending=3))
    for seq in (1, 2, 3):
        deliver(a, b, request(seq))
    deliver(b, a, p.Reply(2))
    deliver(a, b, request(4))
    with pytest.raises(p.RemoteProtocolError, match="more than 3 requests"):
        deliver(a, b, request(5))


def test_requests_in_flight_counts_ours_until_answered() -> None:
    """What the peer counts against its max_pending: ours sent and not answered yet."""
    a, b = pair()
    assert a.requests_in_flight == 0
    for seq in (1, 2, 3):
        deliver(a, b, request(seq))
    assert (a.requests_in_flight, b.requests_in_flight) == (3, 0)
    deliver(b, a, p.Reply(2))
    deliver(b, a, p.ErrorReply(3, "builtins", "ValueError"))
    assert a.requests_in_flight == 1


def test_local_misuse() -> None:
    a, b = pair()
    for event in (p.Reply(1), p.ErrorReply(1, "m", "T")):
        with pytest.raises(p.LocalProtocolError, match="no request #1"):
            a.send(event)
    deliver(b, a, request(1))
    deliver(a, b, p.Reply(1))
    with pytest.raises(p.LocalProtocolError):
        a.send(p.Reply(1))  # answered already
    with pytest.raises(p.EncodeError, match="sequence number"):
        a.send(request(1 << 32))
    with pytest.raises(p.EncodeError):
        a.send(p.Release(((-1, 1),)))
    with pytest.raises(p.LocalProtocolError):
        a.send(p.Hello())
    with pytest.raises(p.LocalProtocolError):
        a.send(p.Preface())


@pytest.mark.parametrize("steps", [0, 1, 2])
def test_no_traffic_before_the_handshake(steps: int) -> None:
    a, b = p.Connection(), p.Connection()
    if steps >= 1:
        b.receive_data(wire(a.send(p.Preface())))
        a.receive_data(wire(b.send(p.Preface())))
    if steps >= 2:
        a.send(p.Hello())
    for event in (request(1), p.Ping(1), p.Release(()), p.Reply(1)):
        with pytest.raises(p.LocalProtocolError, match="cannot send"):
            a.send(event)
    x, y = settled_pair()
    with pytest.raises(p.RemoteProtocolError, match="sent Request in state settled"):
        y.receive_data(wire(forged(request(1))))


def test_by_value_flag_makes_the_reply_carry_containers() -> None:
    a, b = pair()
    deliver(a, b, request(1))
    with pytest.raises(p.EncodeError, match="list"):
        b.send(p.Reply(1, [1, 2]))
    (flagged,) = deliver(a, b, request(2, by_value=True))
    assert isinstance(flagged, p.Request) and flagged.by_value
    value = [1, {"k": {2}}, (3, [4])]
    (reply,) = deliver(b, a, p.Reply(2, value))
    assert reply == p.Reply(2, value) and isinstance(reply, p.Reply) and type(reply.value) is list
    deliver(a, b, request(3, by_value=True))
    assert deliver(b, a, p.ErrorReply(3, "m", "T", ([1],))) == [p.ErrorReply(3, "m", "T", ([1],))]


def test_replier_may_send_containers_by_value_unasked() -> None:
    a, b = pair()
    deliver(a, b, request(1))
    value = [1, {"k": {2}}, (3, [4])]
    (reply,) = a.receive_data(wire(b.send_reply(1, value, by_value=True)))
    assert reply == p.Reply(1, value) and isinstance(reply, p.Reply) and type(reply.value) is list
    deliver(a, b, request(2))
    with pytest.raises(p.EncodeError, match="list"):
        b.send_reply(2, [1])  # without it, the request's (absent) flag decides
    deliver(a, b, request(3, by_value=True))
    assert a.receive_data(wire(b.send_reply(3, {"x": [1]}, by_value=False))) == [p.Reply(3, {"x": [1]})]


def test_send_keeps_large_bytes_uncopied() -> None:
    a, b = pair()
    big = b"\x5a" * (256 * 1024)
    buffers = a.send(request(1, "before", big, "after"))
    assert len(buffers) == 3 and buffers[1] is big  # header + tags, the payload itself, the rest
    assert b.receive_data(wire(buffers)) == [request(1, "before", big, "after")]


def test_next_seq_skips_ids_in_flight() -> None:
    a, b = pair()
    deliver(a, b, request(1))
    deliver(a, b, p.Ping(2))
    seqs = [a.next_seq() for _ in range(5)]
    assert seqs == [3, 4, 5, 6, 7]


def test_release_batches() -> None:
    a, b = pair()
    refs = tuple((oid, oid % 7 + 1) for oid in range(0, 1 << 64, (1 << 64) // 500))
    assert deliver(a, b, p.Release(refs)) == [p.Release(refs)]
    assert deliver(b, a, p.Release(())) == [p.Release(())]
    with pytest.raises(p.EncodeError):
        a.send(p.Release(((1, 1 << 32),)))


def test_ping_pong() -> None:
    a, b = pair()
    assert deliver(a, b, p.Ping(1, b"\x00data")) == [p.Ping(1, b"\x00data")]
    assert deliver(b, a, p.Pong(1, b"\x00data")) == [p.Pong(1, b"\x00data")]
    with pytest.raises(p.RemoteProtocolError, match="ping #1"):
        deliver(b, a, p.Pong(1))  # answered already
    _, c = pair()
    with pytest.raises(p.RemoteProtocolError, match="never sent"):
        c.receive_data(wire(forged(p.Pong(9))))


# -- closing ---------------------------------------------------------------------------


@pytest.mark.parametrize("closer", [0, 1])
def test_close_in_both_directions(closer: int) -> None:
    conns = pair()
    first, second = conns[closer], conns[1 - closer]
    deliver(second, first, request(1))  # first owes second a reply...
    deliver(first, second, request(2))  # ...and second owes first one
    out = wire(first.send(p.Close("done")))
    assert first.state is p.State.CLOSE_SENT
    with pytest.raises(p.LocalProtocolError):
        first.send(p.Reply(1))
    assert deliver(second, first, p.Reply(2, "late")) == [p.Reply(2, "late")]  # still read
    assert second.receive_data(out) == [p.Close("done")] and second.state is p.State.CLOSE_RECEIVED
    with pytest.raises(p.LocalProtocolError):
        second.send(p.Ping(3))
    assert deliver(second, first, p.Close()) == [p.Close()]
    assert state(first) is state(second) is p.State.CLOSED
    assert first.receive_data(b"") == []
    with pytest.raises(p.LocalProtocolError):
        first.send(p.Close())


def test_simultaneous_close() -> None:
    a, b = pair()
    out_a, out_b = wire(a.send(p.Close("a"))), wire(b.send(p.Close("b")))
    assert a.receive_data(out_b) == [p.Close("b")] and b.receive_data(out_a) == [p.Close("a")]
    assert a.state is b.state is p.State.CLOSED


def test_close_during_the_handshake() -> None:
    a, b = settled_pair()
    assert deliver(a, b, p.Close("no thanks")) == [p.Close("no thanks")]
    assert b.state is p.State.CLOSE_RECEIVED
    assert same_event(deliver(b, a, p.Close())[0], p.Close())
    assert state(a) is state(b) is p.State.CLOSED


def test_nothing_after_close_is_accepted() -> None:
    a, b = pair()
    stream = wire(a.send(p.Close())) + wire(forged(p.Ping(1)))
    assert b.receive_data(stream) == [p.Close()]
    assert b.state is p.State.FAILED


# -- hooks -----------------------------------------------------------------------------


def test_a_failing_unbox_hook_fails_the_connection() -> None:
    def unbox(ref: p.Ref | p.BackRef) -> object:
        if ref.oid == 2:
            raise LookupError("no object #2")
        return ref

    a = p.Connection()
    b = p.Connection(unbox=unbox)
    handshake(a, b)
    stream = b"".join(wire(a.send(p.Request(seq, CALL, p.BackRef(seq)))) for seq in (1, 2, 3))
    with pytest.raises(LookupError):
        b.receive_data(stream)
    # The stream position was lost with the exception: the connection must not carry on
    # decoding from the middle of the chunk.
    assert b.state is p.State.FAILED
    with pytest.raises(p.ProtocolError):
        b.receive_data(wire(a.send(p.Request(4, CALL, p.BackRef(4)))))


@pytest.mark.parametrize("hook", ["unbox", "unbox_backref"])
def test_a_failing_backref_hook_fails_the_connection(hook: str) -> None:
    """BackRefs go to ``unbox_backref`` (their oid) when it is given: the same failure either way."""

    def by_oid(oid: int) -> object:
        if oid == 2:
            raise LookupError("no object #2")
        return ("object", oid)

    a = p.Connection()
    if hook == "unbox":
        b = p.Connection(unbox=lambda ref: by_oid(ref.oid))
    else:
        b = p.Connection(unbox=lambda ref: pytest.fail(f"unbox called with {ref}"), unbox_backref=by_oid)
    handshake(a, b)
    [request] = b.receive_data(wire(a.send(p.Request(1, CALL, p.BackRef(1), (p.BackRef(3), (7, p.BackRef(4)))))))
    assert isinstance(request, p.Request)
    assert (request.target, request.args) == (("object", 1), (("object", 3), (7, ("object", 4))))
    with pytest.raises(LookupError):
        b.receive_data(wire(a.send(p.Request(2, CALL, p.BackRef(2)))))
    assert b.state is p.State.FAILED


# -- the call path without events ------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    seq=st.integers(1, 0xFFFFFFFF),
    op=st.sampled_from(list(p.Op)),
    args=st.lists(values(with_refs=False, max_leaves=5), max_size=4).map(tuple),
    kwargs=st.dictionaries(st.text(max_size=5), values(with_refs=False, max_leaves=3), max_size=3),
    by_value=st.booleans(),
    reply=values(with_refs=False, max_leaves=5),
)
def test_send_request_and_send_reply_match_the_events(
    seq: int, op: p.Op, args: tuple[object, ...], kwargs: dict[str, object], by_value: bool, reply: object
) -> None:
    """The event-free call path writes the very bytes of send(Request) / send(Reply), and
    the receiving side reads them back as those events, with the same bookkeeping."""
    fast_a, fast_b = pair()
    slow_a, slow_b = pair()
    fast = wire(fast_a.send_request(seq, op, p.BackRef(7), args, kwargs, by_value))
    slow = wire(slow_a.send(p.Request(seq, op, p.BackRef(7), args, kwargs, by_value)))
    assert fast == slow
    slow_b.receive_data(slow)
    (request,) = fast_b.receive_data(fast)
    assert same_event(request, p.Request(seq, op, p.BackRef(7), args, kwargs, by_value))
    fast_answer = wire(fast_b.send_reply(seq, reply))
    assert fast_answer == wire(slow_b.send(p.Reply(seq, reply)))
    assert same_event(fast_a.receive_data(fast_answer)[0], p.Reply(seq, reply))
    with pytest.raises(p.LocalProtocolError):  # answered: the same rules as send()
        fast_b.send_reply(seq, reply)


@pytest.mark.parametrize("seq", [1, 255, 256, 0xFFFFFFFF])
def test_send_reply_of_none_is_the_events_frame(seq: int) -> None:
    """A reply of None (written without the encoder) is send(Reply(seq, None))'s frame."""
    fast_a, fast_b = pair()
    slow_a, slow_b = pair()
    fast_b.receive_data(wire(fast_a.send_request(seq, CALL, p.BackRef(7))))
    slow_b.receive_data(wire(slow_a.send_request(seq, CALL, p.BackRef(7))))
    answer = wire(fast_b.send_reply(seq, None))
    assert answer == wire(slow_b.send(p.Reply(seq, None)))
    assert fast_a.receive_data(answer) == [p.Reply(seq, None)]
    with pytest.raises(p.LocalProtocolError):  # answered
        fast_b.send_reply(seq, None)


def test_send_request_refuses_what_send_refuses() -> None:
    a, b = settled_pair()
    with pytest.raises(p.LocalProtocolError, match="cannot send Request"):
        a.send_request(1, CALL, p.BackRef(0))
    a, b = pair()
    a.send_request(1, CALL, p.BackRef(0))
    with pytest.raises(p.LocalProtocolError, match="already in flight"):
        a.send_request(1, CALL, p.BackRef(0))
    with pytest.raises(p.LocalProtocolError, match="no request #5"):
        a.send_reply(5, None)


def test_the_accepting_side_sends_its_hello_last_in_one_round_trip() -> None:
    """docs/protocol.md §1: the connecting side writes preface and Hello at once; the
    accepting side writes its preface at once and its Hello only after the peer's Hello
    (and its own setting up). Both end OPEN; the connecting side waited one round trip."""
    client, server = p.Connection(), p.Connection()
    opening = wire([*client.send(p.Preface()), *client.send(p.Hello(services=("C",)))])
    server_preface = wire(server.send(p.Preface()))
    assert server.receive_data(opening) == [p.Preface(1, 2), p.Hello(("C",))]
    assert server.state is p.State.HELLO_RECEIVED  # on_connect runs here, before our Hello
    assert client.receive_data(server_preface) == [p.Preface(1, 2)]
    assert client.state is p.State.HELLO_SENT
    assert deliver(server, client, p.Hello(services=("S",))) == [p.Hello(("S",))]
    assert state(client) is state(server) is p.State.OPEN


def test_the_accepting_side_may_refuse_with_close_instead_of_its_hello() -> None:
    client, server = p.Connection(), p.Connection()
    opening = wire([*client.send(p.Preface()), *client.send(p.Hello(services=("C",)))])
    client.receive_data(wire(server.send(p.Preface())))
    server.receive_data(opening)
    reason = "on_connect failed: PermissionError: no"
    assert deliver(server, client, p.Close(reason)) == [p.Close(reason)]
    assert server.state is p.State.CLOSE_SENT and client.state is p.State.CLOSE_RECEIVED
    with pytest.raises(p.LocalProtocolError):
        client.send(p.Request(client.next_seq(), CALL, p.BackRef(0), ()))


# Compiled (rpc_protocol.COMPILED), an event's typed fields refuse the wrong types when it is made.
_WRONG_TYPE_COMPILED = pytest.mark.skipif(p.COMPILED, reason="compiled, the event checks its field types")


@pytest.mark.parametrize(
    "make",
    [
        lambda: p.Request(1, p.Op.CALL, None),  # a plain value as target: the peer would fail the connection
        lambda: p.Request(1, p.Op.CALL, (1, 2)),
        lambda: p.Request(1, p.Op.CALL, b"x" * 100_000),
        lambda: p.Request(1, p.Op.CALL, p.BackRef(1), (), {1: 2}),  # type: ignore[dict-item]  # the wrong key type is the test
        pytest.param(lambda: p.Request(1, 99, p.BackRef(1)), marks=_WRONG_TYPE_COMPILED),  # type: ignore[arg-type]  # an unknown op is the test
        pytest.param(lambda: p.Ping(1, "str"), marks=_WRONG_TYPE_COMPILED),  # type: ignore[arg-type]  # a str payload is the test
    ],
)
def test_what_the_peer_would_refuse_is_refused_at_send(make: Callable[[], p.Event]) -> None:
    """Regression: these were sent, and the peer failed the connection (RemoteProtocolError),
    or send() raised a bare TypeError; now EncodeError, nothing recorded, still usable."""
    event = make()
    a, b = pair()
    with pytest.raises(p.EncodeError):
        a.send(event)
    if type(event) is p.Request:
        with pytest.raises(p.EncodeError):
            a.send_request(event.seq, event.op, event.target, event.args, event.kwargs)
    assert a.state is p.State.OPEN
    assert deliver(a, b, p.Request(1, p.Op.CALL, p.BackRef(1), (), {"k": 1})) == [p.Request(1, p.Op.CALL, p.BackRef(1), (), {"k": 1})]
    assert deliver(a, b, p.Ping(2, b"ok")) == [p.Ping(2, b"ok")]
