"""Fuzzing the decoder and the connection with hostile bytes.

Owns DESIGN.md §4's promise that decoding untrusted bytes raises ``RemoteProtocolError`` and
nothing else: random bytes, truncations and single-byte corruptions of valid encodings, fed to
``ValueDecoder.decode`` and to ``Connection.receive_data`` (after a valid handshake, and from
the very first byte), plus targeted cases: huge declared lengths and counts (rejected before
anything is allocated), nesting far beyond the limit (no ``RecursionError``) and invalid UTF-8.

The example budget is kept small so the module runs in well under a minute on a slow 2-core
machine. For a long fuzzing run, raise it per test with the environment variable
``RPC_FUZZ_EXAMPLES``, for example::

    RPC_FUZZ_EXAMPLES=20000 python -m pytest tests/protocol/test_fuzz.py -o timeout=0
"""

from __future__ import annotations

import os
import struct
import sys
import tracemalloc
from collections.abc import Callable
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpc_protocol as p
from tests.protocol.helpers import pair, values, wire

EXAMPLES = int(os.environ.get("RPC_FUZZ_EXAMPLES", "500"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TAGS = [0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x09, 0x0A, 0x0C, 0x0D, 0x10, 0x11, 0x12, 0x13, 0x18, 0x19,
        0x1A, 0x1B, 0x1C, 0x1D, 0x1E, 0x20, 0x21, 0x22]  # fmt: skip
LENGTH_TAGS = [0x0A, 0x11, 0x13, 0x19, 0x1A, 0x1C, 0x1D, 0x1E]  # a u32 length or count follows


def decode_or_reject(data: bytes, decoder: p.ValueDecoder = p.ValueDecoder()) -> None:
    """Decode ``data``; a ``RemoteProtocolError`` is fine, any other exception fails the test."""
    try:
        decoder.decode(data)
    except p.RemoteProtocolError:
        pass


def feed_or_reject(conn: p.Connection, chunks: list[bytes]) -> None:
    """Feed chunks until the connection rejects them; it must then stay failed."""
    for chunk in chunks:
        try:
            conn.receive_data(chunk)
        except p.RemoteProtocolError:
            assert conn.state is p.State.FAILED
            with pytest.raises(p.RemoteProtocolError):
                conn.receive_data(b"\x00")
            with pytest.raises(p.LocalProtocolError):
                conn.send(p.Close())
            return


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


# -- the value decoder -----------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decode_or_reject(data)


@FUZZ
@given(st.sampled_from(TAGS), st.binary(max_size=64))
def test_random_bytes_after_a_valid_tag(tag: int, tail: bytes) -> None:
    decode_or_reject(bytes([tag]) + tail)
    decode_or_reject(bytes([0x18, 3, tag]) + tail)


@FUZZ
@given(values(by_value=True), st.data())
def test_truncations_and_corruptions(value: object, data: st.DataObject) -> None:
    encoded = wire(p.ValueEncoder(containers_by_value=True).encode(value))
    # Encodings are self-delimiting: a strict prefix is never a whole value.
    cut = data.draw(st.integers(0, len(encoded) - 1), label="cut")
    with pytest.raises(p.RemoteProtocolError):
        p.ValueDecoder().decode(encoded[:cut])
    with pytest.raises(p.RemoteProtocolError, match="trailing"):
        p.ValueDecoder().decode(encoded + b"\x00")
    pos = data.draw(st.integers(0, len(encoded) - 1), label="pos")
    byte = data.draw(st.integers(0, 255), label="byte")
    decode_or_reject(encoded[:pos] + bytes([byte]) + encoded[pos + 1 :])


@pytest.mark.parametrize("tag", LENGTH_TAGS)
def test_huge_lengths_are_rejected_without_allocation(tag: int) -> None:
    for declared in (0xFFFFFFFF, 0x7FFFFFFF, 1 << 20):
        data = struct.pack("<BI", tag, declared) + b"\x00" * 5  # 10 bytes in all
        tracemalloc.start()
        try:
            with pytest.raises(p.RemoteProtocolError):
                p.ValueDecoder(limits=p.CodecLimits(max_items=0xFFFFFFFF)).decode(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 256 * 1024, f"{peak} bytes allocated to reject a 10-byte value"


def test_huge_counts_are_rejected_by_the_item_limit_first() -> None:
    with pytest.raises(p.RemoteProtocolError, match="items"):
        p.ValueDecoder().decode(struct.pack("<BI", 0x1C, 0xFFFFFFFF))


@pytest.mark.parametrize("tag", [0x18, 0x1A, 0x1C, 0x1E])
def test_deep_nesting_is_a_protocol_error(tag: int) -> None:
    count = b"\x01" if tag == 0x18 else struct.pack("<I", 1)
    data = (bytes([tag]) + count) * 10_000 + b"\x00"
    for limits in (p.CodecLimits(), p.CodecLimits(max_depth=200)):
        with pytest.raises(p.RemoteProtocolError, match="deeper"):
            p.ValueDecoder(limits=limits).decode(data)


def test_deep_slices_dicts_and_typed_refs() -> None:
    layers = {
        "slice": (b"\x1b", b"\x00\x00"),
        "dict": (b"\x1d\x01\x00\x00\x00\x00", b""),
        "ref-typed": (b"\x21" + bytes(12), b""),
    }
    for opening, closing in layers.values():
        data = opening * 5_000 + b"\x02" + closing * 5_000
        with pytest.raises(p.RemoteProtocolError):
            p.ValueDecoder(limits=p.CodecLimits(max_depth=200)).decode(data)


def test_nesting_within_the_limit_on_a_nearly_full_stack() -> None:
    data = b"\x18\x01" * 199 + b"\x00"
    decoder = p.ValueDecoder(limits=p.CodecLimits(max_depth=200))
    assert decoder.decode(data) is not None

    def at_depth(n: int, action: Callable[[], object]) -> object:
        return action() if n == 0 else at_depth(n - 1, action)

    # Deep inside someone else's stack the decoder may run out of room, but it still only
    # raises the protocol's error, never RecursionError.
    headroom = sys.getrecursionlimit() - 300
    try:
        at_depth(headroom, lambda: decoder.decode(data))
    except p.RemoteProtocolError:
        pass


@pytest.mark.parametrize(
    "raw",
    [b"\xff", b"\xc0\x80", b"\xe2\x82", b"\x80", b"\xf4\x90\x80\x80", b"\xed\xa0", b"a\xfe", b"\xf8\x88\x80\x80\x80"],
)
def test_invalid_utf8_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(p.RemoteProtocolError):
        p.ValueDecoder().decode(bytes([0x10, len(raw)]) + raw)
    with pytest.raises(p.RemoteProtocolError):
        p.ValueDecoder().decode(struct.pack("<BI", 0x11, len(raw)) + raw)
    _, b = pair()
    close = struct.pack("<BBHII", 8, 0, 0, 0, len(raw)) + raw
    with pytest.raises(p.RemoteProtocolError, match="UTF-8"):
        b.receive_data(close)


@pytest.mark.parametrize(
    "hexdata",
    ["1a 01000000 1c00000000", "1e 01000000 1d00000000", "1d 01000000 1c00000000 00"]
    + (["1a 01000000 1b 00 00 00"] if sys.version_info < (3, 12) else []),  # a slice in a set: see below
)
def test_unhashable_members_are_a_protocol_error(hexdata: str) -> None:
    with pytest.raises(p.RemoteProtocolError):
        p.ValueDecoder().decode(bytes.fromhex(hexdata))


@pytest.mark.skipif(sys.version_info < (3, 12), reason="slices are hashable from Python 3.12 on")
def test_a_slice_in_a_set_decodes_where_slices_are_hashable() -> None:
    assert p.ValueDecoder().decode(bytes.fromhex("1a 01000000 1b 00 00 00")) == frozenset({slice(None, None, None)})


# -- the connection --------------------------------------------------------------------

frame_types = st.integers(0, 10)
headers = st.builds(
    lambda kind, flags, reserved, seq, payload: struct.pack("<BBHII", kind, flags, reserved, seq, len(payload)) + payload,
    frame_types,
    st.sampled_from([0, 0, 0, 1, 2, 0x80]),
    st.sampled_from([0, 0, 0, 1]),
    st.integers(0, 4) | st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=48) | st.tuples(st.integers(0, 14), st.binary(max_size=48)).map(lambda t: bytes([t[0]]) + t[1]),
)


@FUZZ
@given(st.lists(headers | st.binary(min_size=1, max_size=40), min_size=1, max_size=6), st.lists(st.integers(0, 500)))
def test_garbage_frames_after_the_handshake(frames: list[bytes], cuts: list[int]) -> None:
    a, b = pair()
    for seq in (1, 2, 3):  # give replies and pongs something to match
        b.receive_data(wire(a.send(p.Request(seq, p.Op.CALL, p.BackRef(0)))))
    a.receive_data(wire(b.send(p.Ping(4))))
    feed_or_reject(a, split(b"".join(frames), cuts))


@FUZZ
@given(
    st.binary(max_size=200) | st.binary(max_size=200).map(lambda tail: p.MAGIC + tail),
    st.booleans(),
    st.lists(st.integers(0, 300)),
)
def test_garbage_from_the_first_byte(data: bytes, preface_first: bool, cuts: list[int]) -> None:
    conn = p.Connection()
    if preface_first:
        conn.send(p.Preface())
    feed_or_reject(conn, split(data, cuts) + [b""])


def corrupt(stream: bytes, pos: int, byte: int) -> bytes:
    pos %= len(stream)
    return stream[:pos] + bytes([byte]) + stream[pos + 1 :]


@FUZZ
@given(values(), st.integers(0, 1 << 16), st.integers(0, 255), st.lists(st.integers(0, 1 << 16), max_size=4))
def test_corrupted_handshake(root: object, pos: int, byte: int, cuts: list[int]) -> None:
    sender = p.Connection()
    stream = wire(sender.send(p.Preface()))
    sender.receive_data(wire(p.Connection().send(p.Preface())))
    stream += wire(sender.send(p.Hello(services=("ECHO",), capabilities=frozenset({"x"}), root=(p.Ref(1, 1, "T"), root))))
    receiver = p.Connection()
    receiver.send(p.Preface())
    feed_or_reject(receiver, split(corrupt(stream, pos, byte), cuts))


@pytest.mark.timeout(180)  # the heaviest fuzz target: ~60 s on Python 3.10 on a loaded 2-core machine
@FUZZ
@given(
    values(),
    values(by_value=True),
    st.integers(0, 1 << 16),
    st.integers(0, 255),
    st.lists(st.integers(0, 1 << 16), max_size=4),
)
def test_corrupted_frames(value: object, result: object, pos: int, byte: int, cuts: list[int]) -> None:
    sender, receiver = pair()
    receiver.receive_data(wire(sender.send(p.Request(1, p.Op.CALL, p.BackRef(0), by_value=True))))
    stream = wire(receiver.send(p.Reply(1, ("result", result))))  # travels the other way
    receiver, sender = sender, receiver
    stream += wire(sender.send(p.Request(5, p.Op.CALLATTR, p.BackRef(1), ("m", value), {"k": value}, by_value=True)))
    stream += wire(sender.send(p.Ping(9, b"data"))) + wire(sender.send(p.Release(((1, 2),))))
    stream += wire(sender.send(p.Close("done")))
    feed_or_reject(receiver, split(corrupt(stream, pos, byte), cuts))


def test_huge_frame_lengths_are_rejected_from_the_header() -> None:
    _, b = pair()
    with pytest.raises(p.RemoteProtocolError, match="exceeds"):
        b.receive_data(struct.pack("<BBHII", 3, 0, 0, 1, 0xFFFFFFFF))


def test_huge_release_count_is_rejected_without_allocation() -> None:
    _, b = pair()
    tracemalloc.start()
    try:
        with pytest.raises(p.RemoteProtocolError, match="release"):
            b.receive_data(struct.pack("<BBHIII", 5, 0, 0, 0, 4, 0xFFFFFFFF))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
