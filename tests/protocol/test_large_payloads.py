"""Large payloads: gathered in the connection's own reusable buffer, fed either way.

Payloads of 256 KiB and more are collected in a dedicated buffer. The I/O layer may write
into it directly (``payload_buffer`` / ``payload_received``) or keep calling
``receive_data``; both give the same events, in any split.
"""

from __future__ import annotations

import pytest

import rpc_protocol as p
from tests.protocol.helpers import pair, wire

BIG = bytes(range(256)) * 4096  # 1 MiB


def _request_bytes(sender: p.Connection, value: object) -> bytes:
    return wire(sender.send(p.Request(sender.next_seq(), p.Op.CALL, p.BackRef(0), (value,))))


def test_payload_buffer_is_none_for_small_frames() -> None:
    a, b = pair()
    data = _request_bytes(a, b"small")
    assert b.payload_buffer() is None
    (event,) = b.receive_data(data)
    assert isinstance(event, p.Request) and event.args == (b"small",)


@pytest.mark.parametrize("first", [1, 12, 13, 4096, 300_000])
def test_a_large_payload_filled_through_payload_buffer(first: int) -> None:
    a, b = pair()
    data = _request_bytes(a, BIG) + _request_bytes(a, b"next")
    assert b.receive_data(data[:first]) == []
    pos = first
    events: list[p.Event] = []
    for _ in range(10_000):  # bounded: each step writes up to 64 KiB
        view = b.payload_buffer()
        if view is None:
            break
        assert len(view) == b.bytes_needed
        count = min(len(view), 65536)
        view[:count] = data[pos : pos + count]
        view.release()
        pos += count
        events += b.payload_received(count)
    events += b.receive_data(data[pos:])
    assert [event.args for event in events if isinstance(event, p.Request)] == [(BIG,), (b"next",)]


@pytest.mark.parametrize("chunk", [1000, 65536, 1 << 20])
def test_a_large_payload_fed_through_receive_data_in_chunks(chunk: int) -> None:
    a, b = pair()
    data = _request_bytes(a, BIG) + _request_bytes(a, BIG[:300_000]) + _request_bytes(a, 7)
    events: list[p.Event] = []
    for start in range(0, len(data), chunk):
        events += b.receive_data(data[start : start + chunk])
    assert [event.args for event in events if isinstance(event, p.Request)] == [(BIG,), (BIG[:300_000],), (7,)]


def test_the_payload_buffer_is_reused_between_frames() -> None:
    a, b = pair()
    first = b.receive_data(_request_bytes(a, BIG)[:100])
    view = b.payload_buffer()
    assert first == [] and view is not None
    address = view.obj
    view.release()
    b.receive_data(_request_bytes(a, BIG)[100:])
    b.send(p.Reply(1))
    b.receive_data(_request_bytes(a, BIG)[:100])
    again = b.payload_buffer()
    assert again is not None and again.obj is address
    again.release()


def test_end_of_stream_in_a_large_payload_is_an_error() -> None:
    a, b = pair()
    b.receive_data(_request_bytes(a, BIG)[:5000])
    with pytest.raises(p.RemoteProtocolError, match="middle of a frame"):
        b.receive_data(b"")


def test_payload_received_must_match_the_payload_under_way() -> None:
    a, b = pair()
    with pytest.raises(p.LocalProtocolError):
        b.payload_received(10)
    b.receive_data(_request_bytes(a, BIG)[:5000])
    with pytest.raises(p.LocalProtocolError):
        b.payload_received(len(BIG))  # more than is missing


def test_a_malformed_large_payload_fails_the_connection() -> None:
    a, b = pair()
    data = bytearray(_request_bytes(a, BIG))
    data[12] = 0xEE  # the op byte
    with pytest.raises(p.RemoteProtocolError):
        b.receive_data(bytes(data))
    assert b.state is p.State.FAILED
    assert b.payload_buffer() is None
