"""Registry messages in the value codec, their signatures, and the replay guard.

Every message type survives a round trip; anything malformed raises ``MessageError`` and
nothing else (fuzzed); signatures verify only with the right key and an unaltered body; the
replay guard refuses stale timestamps and repeated nonces and stays bounded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpc_protocol import ValueDecoder, ValueEncoder
from rpc_registry import MessageError, load_key
from rpc_registry._auth import ReplayGuard, check_key, sign
from rpc_registry._messages import (
    INVALID,
    MAGIC,
    MAX_MESSAGE_SIZE,
    UNSIGNED,
    VALID,
    VERSION,
    Ack,
    Body,
    ListNames,
    Nack,
    Names,
    Providers,
    Query,
    Register,
    Unregister,
    decode,
    encode,
    new_rid,
)
from tests.registry.helpers import KEY, OTHER_KEY, FakeClock

BODIES: list[Body] = [
    Register(("CHAT3", "Chat"), 18812, "10.0.0.1"),
    Register(("x",), 1, ""),
    Unregister(65535, "host.example"),
    Unregister(2, ""),
    Query("chat"),
    ListNames(),
    Ack(),
    Nack("listing is disabled"),
    Providers((("10.0.0.1", 1), ("::1", 2))),
    Providers(()),
    Names(("A", "B")),
    Names(()),
]


def envelope(*items: object) -> bytes:
    return b"".join(ValueEncoder().encode(tuple(items)))


def body_bytes(*items: object) -> bytes:
    return b"".join(ValueEncoder().encode(tuple(items)))


@pytest.mark.parametrize("body", BODIES, ids=lambda body: type(body).__name__)
@pytest.mark.parametrize("key", [None, KEY], ids=["unsigned", "signed"])
def test_round_trip(body: Body, key: bytes | None) -> None:
    rid = new_rid()
    data = encode(body, rid, key, timestamp=1234.5)
    assert len(data) <= MAX_MESSAGE_SIZE
    decoded = decode(data, KEY)
    assert decoded.body == body
    assert decoded.rid == rid
    assert decoded.timestamp == 1234.5
    assert decoded.signature == (VALID if key else UNSIGNED)


def test_the_envelope_is_a_codec_tuple_with_magic_and_version() -> None:
    value = ValueDecoder().decode(encode(Query("echo"), new_rid()))
    assert isinstance(value, tuple) and value[:2] == (MAGIC, VERSION)
    inner = ValueDecoder().decode(value[2])
    assert isinstance(inner, tuple) and inner[0] == "query" and inner[3] == "echo"


def test_signatures_verify_only_with_the_right_key_and_body() -> None:
    data = encode(Register(("a",), 1, "h"), new_rid(), KEY)
    assert decode(data, KEY).signature == VALID
    assert decode(data, OTHER_KEY).signature == INVALID
    assert decode(data, None).signature == UNSIGNED  # no key to check with
    # the same signature over another body: re-wrap a different body with the old mac
    value = ValueDecoder().decode(data)
    assert isinstance(value, tuple)
    inner, mac = value[2], value[3]
    assert isinstance(inner, bytes) and isinstance(mac, bytes)
    forged_inner = b"".join(ValueEncoder().encode(("register", b"r" * 16, 1.0, ("a",), 1, "evil")))
    assert decode(envelope(MAGIC, VERSION, forged_inner, mac), KEY).signature == INVALID
    assert decode(envelope(MAGIC, VERSION, inner, sign(KEY, inner)), KEY).signature == VALID


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "undecodable"),
        (b"\xff\x00garbage", "undecodable"),
        (b"x" * (MAX_MESSAGE_SIZE + 1), "exceeds"),
        (envelope(b"NOTREG", VERSION, b"", b""), "magic"),
        (envelope(MAGIC, VERSION, b""), "magic"),
        (envelope(MAGIC, 2, body_bytes("query", b"r" * 16, 1.0, "x"), b""), "version 2"),
        (envelope(MAGIC, VERSION, "text", b""), "malformed envelope"),
        (envelope(MAGIC, VERSION, b"", b"short-mac"), "malformed envelope"),
        (envelope(MAGIC, VERSION, body_bytes("query", b"r" * 16), b""), "malformed message body"),
        (envelope(MAGIC, VERSION, body_bytes("hack", b"r" * 16, 1.0), b""), "unknown message kind"),
        (envelope(MAGIC, VERSION, body_bytes("query", b"short", 1.0, "x"), b""), "request id"),
        (envelope(MAGIC, VERSION, body_bytes("query", b"r" * 16, 1, "x"), b""), "timestamp"),
        (envelope(MAGIC, VERSION, body_bytes("query", b"r" * 16, 1.0), b""), "takes 1 fields"),
        (envelope(MAGIC, VERSION, body_bytes("query", b"r" * 16, 1.0, ""), b""), "service name"),
        (envelope(MAGIC, VERSION, body_bytes("register", b"r" * 16, 1.0, (), 1, ""), b""), "non-empty"),
        (envelope(MAGIC, VERSION, body_bytes("register", b"r" * 16, 1.0, ("a",), 0, ""), b""), "port"),
        (envelope(MAGIC, VERSION, body_bytes("register", b"r" * 16, 1.0, ("a",), True, ""), b""), "port"),
        (envelope(MAGIC, VERSION, body_bytes("register", b"r" * 16, 1.0, ("a",), 1, "a b"), b""), "host"),
        (envelope(MAGIC, VERSION, body_bytes("providers", b"r" * 16, 1.0, (("", 1),)), b""), "host"),
        (envelope(MAGIC, VERSION, body_bytes("providers", b"r" * 16, 1.0, ("h",)), b""), "address"),
    ],
)
def test_malformed_messages_raise_message_error(data: bytes, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        decode(data, KEY)


def test_encode_refuses_what_the_receiver_would_drop() -> None:
    too_big = Register(tuple(f"{i:03d}" + "n" * 100 for i in range(100)), 1)
    for body in (Register((), 1), Register(("a",), 70000), Query(""), Query("x" * 129), Unregister(1, "bad host"), too_big):
        with pytest.raises(MessageError):
            encode(body, new_rid())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_message_error(data: bytes) -> None:
    try:
        decode(data, KEY)
    except MessageError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_messages_raise_only_message_error(data: st.DataObject) -> None:
    original = bytearray(encode(data.draw(st.sampled_from(BODIES)), new_rid(), KEY))
    for _ in range(data.draw(st.integers(1, 4))):
        original[data.draw(st.integers(0, len(original) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(original), KEY)
    except MessageError:
        pass


# -- keys and the replay guard ----------------------------------------------------------------


def test_keys_must_be_long_enough() -> None:
    assert check_key(None) is None
    assert check_key("x" * 16) == b"x" * 16
    with pytest.raises(ValueError):
        check_key(b"short")
    with pytest.raises(TypeError):
        check_key(1234)  # type: ignore[arg-type]  # the wrong type on purpose


def test_load_key_strips_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY + b"\n")
    assert load_key(path) == KEY
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError):
        load_key(path)


def test_replay_guard_refuses_stale_future_and_repeated_requests() -> None:
    clock = FakeClock(10_000.0)
    guard = ReplayGuard(max_skew=30.0, capacity=100, wallclock=clock)
    assert guard.check(b"n1", 10_000.0) is None
    assert guard.check(b"n1", 10_000.0) == "replayed request"
    assert guard.check(b"n2", 10_000.0 - 31) is not None  # too old
    assert guard.check(b"n3", 10_000.0 + 31) is not None  # too far ahead
    assert guard.check(b"n4", float("nan")) is not None
    clock.advance(29)
    assert guard.check(b"n1", 10_000.0) == "replayed request"  # still inside the window
    clock.advance(2)
    assert guard.check(b"n1", 10_000.0) is not None  # now refused as stale


def test_replay_guard_forgets_nonces_once_their_window_has_passed() -> None:
    clock = FakeClock(0.0)
    guard = ReplayGuard(max_skew=10.0, capacity=1000, wallclock=clock)
    for i in range(50):
        assert guard.check(i.to_bytes(4, "big"), clock.now) is None
    assert len(guard) == 50
    clock.advance(21)
    assert guard.check(b"later", clock.now) is None
    assert len(guard) == 1


def test_replay_guard_stays_within_its_capacity() -> None:
    clock = FakeClock(0.0)
    guard = ReplayGuard(max_skew=10.0, capacity=8, wallclock=clock)
    for i in range(100):
        assert guard.check(i.to_bytes(4, "big"), 0.0) is None
        assert len(guard) <= 8
    assert guard.check((99).to_bytes(4, "big"), 0.0) == "replayed request"
