"""Regressions: references never end up hashed while decoding, and tiny frame limits are refused.

Hashing a proxy is a remote call; doing one from inside the decoder would deadlock the
connection. So sets, frozensets and dict keys holding references cross as a reference to
the whole container, and a peer that sends such a value anyway is a protocol error.
"""

from __future__ import annotations

import pytest

import rpc_protocol as p


class Thing:
    pass


def test_a_frozenset_holding_an_object_is_boxed_whole() -> None:
    boxed: list[object] = []

    def box(value: object) -> p.Ref:
        boxed.append(value)
        return p.Ref(len(boxed), 1, ("info",))

    value = frozenset({1, Thing()})
    decoded = p.ValueDecoder().decode(b"".join(p.ValueEncoder(box).encode(value)))
    assert boxed == [value]
    assert decoded == p.Ref(1, 1, ("info",))


def test_a_dict_with_an_object_key_is_boxed_whole_but_object_values_are_not() -> None:
    boxed: list[object] = []

    def box(value: object) -> p.Ref:
        boxed.append(value)
        return p.Ref(len(boxed), 1, ("info",))

    encoder = p.ValueEncoder(box, containers_by_value=True)
    thing = Thing()
    by_key = {thing: 1}
    assert p.ValueDecoder().decode(b"".join(encoder.encode(by_key))) == p.Ref(1, 1, ("info",))
    assert boxed == [by_key]
    decoded = p.ValueDecoder().decode(b"".join(encoder.encode({"k": thing})))
    assert decoded == {"k": p.Ref(2, 1, ("info",))}
    assert boxed == [by_key, thing]


def test_plain_nested_sets_still_travel_by_value() -> None:
    value = frozenset({(1, "a"), frozenset({2.5, b"x"}), None})
    assert p.ValueDecoder().decode(b"".join(p.ValueEncoder().encode(value))) == value


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x1A, 1, 0, 0, 0, 0x20]) + bytes(12),  # FROZENSET { REF }
        bytes([0x1E, 1, 0, 0, 0, 0x18, 1, 0x20]) + bytes(12),  # SET { (REF,) }
        bytes([0x1D, 1, 0, 0, 0, 0x20]) + bytes(12) + bytes([0x00]),  # DICT { REF: None }
    ],
    ids=["frozenset", "nested-in-set", "dict-key"],
)
def test_a_reference_in_a_hashed_position_is_refused_without_unboxing(data: bytes) -> None:
    unboxed: list[object] = []

    def unbox(ref: p.Ref | p.BackRef) -> object:
        unboxed.append(ref)
        return ref

    with pytest.raises(p.RemoteProtocolError, match="set element or dict key"):
        p.ValueDecoder(unbox).decode(data)
    assert unboxed == []


def test_a_reference_as_a_dict_value_is_fine_and_the_flag_resets() -> None:
    decoder = p.ValueDecoder()
    with pytest.raises(p.RemoteProtocolError):
        decoder.decode(bytes([0x1A, 1, 0, 0, 0, 0x20]) + bytes(12))
    value = bytes([0x1D, 1, 0, 0, 0, 0x10, 1]) + b"k" + bytes([0x20]) + bytes(12)
    assert decoder.decode(value) == {"k": p.Ref(0, 0)}


def test_a_hello_announcing_a_tiny_frame_limit_is_refused() -> None:
    a, b = p.Connection(), p.Connection()
    b.receive_data(b"".join(a.send(p.Preface())))
    a.receive_data(b"".join(b.send(p.Preface())))
    hello = bytearray(b"".join(a.send(p.Hello())))
    # HELLO payload: (capabilities, services, max_frame_size INT64, root); patch the limit to 100
    index = hello.index(bytes([0x09]) + (64 * 1024 * 1024).to_bytes(8, "little"))
    hello[index + 1 : index + 9] = (100).to_bytes(8, "little")
    with pytest.raises(p.RemoteProtocolError, match="malformed hello"):
        b.receive_data(bytes(hello))


def test_an_unsolicited_reply_is_refused_before_its_payload_is_unboxed() -> None:
    unboxed: list[object] = []

    def unbox(ref: p.Ref | p.BackRef) -> object:
        unboxed.append(ref)
        return ref

    a, b = p.Connection(), p.Connection(unbox=unbox)
    b.receive_data(b"".join(a.send(p.Preface())))
    a.receive_data(b"".join(b.send(p.Preface())))
    b.receive_data(b"".join(a.send(p.Hello())))
    a.receive_data(b"".join(b.send(p.Hello())))
    # a forged REPLY #9 (never requested) whose value is a typed reference
    payload = bytes([0x21]) + (5).to_bytes(8, "little") + (1).to_bytes(4, "little") + bytes([0x10, 1]) + b"T"
    header = bytes([3, 0, 0, 0]) + (9).to_bytes(4, "little") + len(payload).to_bytes(4, "little")
    with pytest.raises(p.RemoteProtocolError, match="not in flight"):
        b.receive_data(header + payload)
    assert unboxed == []
