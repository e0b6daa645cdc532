"""Fuzzing the whole receive path: the value codec, the frame decoder, a served connection,
and a live server fed hostile frames.

The targets live in ``fuzz/targets.py`` (shared with the atheris entry point, see
``fuzz/README.md``); here hypothesis drives them with structured inputs -- well-formed frames
from a real sender, hand-made headers, random bytes -- then corrupts them (byte flips,
truncation, arbitrary splits). A target fails only if something other than the protocol's own
error escapes, or a connection is left open or holding objects.

The live-server case sends each example's frames to the ``server`` fixture over a real socket
and checks that the server only ever drops the bad client: no thread dies with an exception,
nothing is logged at ERROR, the normal client keeps being served, and the server's threads
and fds come back to the baseline.

The example budget keeps the module well under a minute on a 2-core machine. For a long run
raise it with ``RPC_FUZZ_EXAMPLES`` (the same variable as ``tests/protocol/test_fuzz.py``)::

    RPC_FUZZ_EXAMPLES=50000 python -m pytest tests/adversarial/test_fuzz.py -o timeout=0 -p no:cacheprovider
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from datetime import timedelta
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rpc_protocol as wire
from fuzz.targets import FuzzService, client_prologue, frames_target, seeds, service_target, value_target
from fuzz.targets import _open_pair as open_pair
from rpc_service import Connection, ThreadedServer
from tests.adversarial.helpers import Baseline, RawPeer, frame, joined
from tests.protocol.helpers import hashables, same, values

EXAMPLES = int(os.environ.get("RPC_FUZZ_EXAMPLES", "500"))
LIVE_EXAMPLES = max(20, EXAMPLES // 5)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    database=None,
)
LIVE = settings(FUZZ, max_examples=LIVE_EXAMPLES)

METHODS = ["echo", "make", "numbers", "mapping", "count", "call", "fail", "Thing", "get_name",
           "__class__", "__dict__", "_x", "secret", "exposed_echo", "__iter__", "__len__", "__getitem__"]  # fmt: skip

# -- building hostile streams -------------------------------------------------------------------

small_values = values(by_value=True, max_leaves=8)
targets = st.sampled_from([wire.BackRef(1)] * 4 + [wire.BackRef(2), wire.BackRef(0)]) | st.builds(wire.BackRef, st.integers(0, 2**64 - 1))
requests = st.builds(
    lambda op, target, name, args, kwargs, by_value: wire.Request(0, op, target, (name, *args), kwargs, by_value),
    st.sampled_from(list(wire.Op)),
    targets,
    st.sampled_from(METHODS) | st.text(max_size=8),
    st.lists(small_values, max_size=3),
    st.dictionaries(st.sampled_from(["a", "value", "self", "k"]), small_values, max_size=2),
    st.booleans(),
)
raw_frames = st.builds(
    lambda kind, flags, seq, payload, lie: frame(kind, seq, payload, flags=flags, length=None if lie is None else lie),
    st.integers(0, 10),
    st.sampled_from([0, 0, 0, 1, 0x80]),
    st.integers(0, 6) | st.integers(0, 2**32 - 1),
    st.binary(max_size=40) | small_values.map(lambda v: b"\x00" + _encoded(v)),
    st.none() | st.none() | st.integers(0, 2**32 - 1),
)
other_events = st.one_of(
    st.builds(lambda seq, v: ("reply", seq, v), st.integers(1, 5), small_values),
    st.builds(lambda seq: ("error", seq), st.integers(1, 5)),
    st.builds(lambda payload: wire.Ping(0, payload), st.binary(max_size=16)),
    st.builds(lambda refs: wire.Release(tuple(refs)), st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2**32 - 1)), max_size=3)),
    st.builds(wire.Close, st.text(max_size=10)),
)
pieces = st.one_of(requests, requests, other_events, raw_frames, st.binary(min_size=1, max_size=24))


def _encoded(value: object) -> bytes:
    try:
        return joined(wire.ValueEncoder(containers_by_value=True).encode(value))
    except wire.EncodeError:
        return b"\x00"


def encode_stream(sender: wire.Connection, items: list[Any]) -> bytes:
    """What a sender would put on the wire for ``items`` (what it cannot send is skipped)."""
    out = b""
    for item in items:
        if isinstance(item, bytes):
            out += item
            continue
        if isinstance(item, tuple):  # replies by hand: the sender need not have been asked
            kind, seq, *rest = item
            payload = _encoded(rest[0]) if kind == "reply" else _encoded(("builtins", "ValueError", ("x",), ""))
            out += frame(3 if kind == "reply" else 4, seq, payload)
            continue
        try:
            if isinstance(item, wire.Request):
                item = wire.Request(sender.next_seq(), item.op, item.target, item.args, item.kwargs, item.by_value)
            elif isinstance(item, wire.Ping):
                item = wire.Ping(sender.next_seq(), item.payload)
            out += joined(sender.send(item))
        except (wire.EncodeError, wire.LocalProtocolError):
            continue
    return out


@st.composite
def corrupted(draw: st.DrawFn, stream: bytes) -> bytes:
    """``stream`` with a few byte flips and perhaps cut short."""
    data = bytearray(stream)
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if data and draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def splits() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=7)


# -- the targets, driven by hypothesis ------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300) | st.sampled_from(seeds()).flatmap(corrupted) | small_values.map(_encoded).flatmap(corrupted))
def test_value_decoder(data: bytes) -> None:
    value_target(data)


@FUZZ
@given(st.integers(0, 7), splits(), st.lists(pieces, min_size=1, max_size=6), st.data())
def test_frame_decoder_after_a_handshake(mode: int, sizes: bytes, items: list[Any], data: st.DataObject) -> None:
    config = wire.ProtocolConfig(max_frame_size=1024, max_pending=4, limits=wire.CodecLimits(max_depth=8, max_items=64)) if mode & 2 else wire.ProtocolConfig()
    peer, _ = open_pair(config)
    stream = encode_stream(peer, items)
    if mode & 1:  # from the first byte instead
        stream = joined(wire.Connection().send(wire.Preface())) + stream
    stream = data.draw(corrupted(stream), label="stream")
    frames_target(bytes([mode, len(sizes)]) + sizes + stream)


@FUZZ
@given(splits(), st.lists(pieces, min_size=1, max_size=6), st.data())
def test_served_connection(sizes: bytes, items: list[Any], data: st.DataObject) -> None:
    client, _ = client_prologue()
    stream = data.draw(corrupted(encode_stream(client, items)), label="stream")
    service_target(bytes([len(sizes)]) + sizes + stream)


# -- regressions found by the cases and the fuzzers ---------------------------------------------------


def test_regression_seeds_and_known_crashers() -> None:
    """Inputs that once broke something, kept so they never do again."""
    modulus = (1 << 61) - 1
    flood = b"\x1a" + struct.pack("<I", 2000) + b"".join(
        b"\x0a\x0c\x00\x00\x00" + (k * modulus).to_bytes(12, "little") for k in range(1, 2001)
    )
    start = time.monotonic()
    with pytest.raises(wire.RemoteProtocolError, match="hash flooding"):
        wire.ValueDecoder().decode(flood)
    assert time.monotonic() - start < 0.5
    for seed in seeds():
        value_target(seed)
        frames_target(seed)
        service_target(seed)


def test_a_large_payload_commits_memory_only_as_its_bytes_arrive() -> None:
    """A header announcing 60 MiB used to allocate (and zero) 60 MiB before any payload byte."""
    peer, us = open_pair(wire.ProtocolConfig())
    before = _rss()
    us.receive_data(frame(2, 1, b"\x01\x22", length=60 * 1024 * 1024))
    view = us.payload_buffer()
    assert view is not None and len(view) == us.bytes_needed == 60 * 1024 * 1024 - 2
    view.release()
    grown = _rss() - before
    assert grown < 16 * 1024 * 1024, f"{grown >> 20} MiB committed for a 14-byte frame start"


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("count", [255, 256])
def test_sets_at_the_collision_limit_decode(count: int) -> None:
    modulus = (1 << 61) - 1
    items = [k * modulus for k in range(1, count + 2)]  # count + 1 items: count collisions
    decoded = wire.ValueDecoder().decode(_encoded(frozenset(items)))
    assert decoded == frozenset(items)


def test_collisions_that_would_cost_too_much_to_compare_are_refused() -> None:
    """Regression: 256 keys sharing a hash (within the count limit), each holding the same
    30 000-item tuple, made a 15 MB frame whose set took ~6 s of comparisons under the GIL."""
    modulus = (1 << 61) - 1
    heavy = tuple(range(3000))
    keys = frozenset((heavy, 1 + k * modulus) for k in range(256))
    big_ints = frozenset((1 << 40000) * modulus + k * modulus for k in range(128))  # 128 colliding 40 000-bit ints
    for value in (keys, big_ints, {key: None for key in keys}):
        encoded = _encoded(value)
        start = time.monotonic()
        with pytest.raises(wire.RemoteProtocolError, match="cost too much to compare"):
            wire.ValueDecoder().decode(encoded)
        assert time.monotonic() - start < 1.0


def test_a_few_cheap_collisions_are_fine() -> None:
    for value in (frozenset({(-1,), (-2,)}), frozenset({-1, -2}), {(-1,): 1, (-2,): 2}, frozenset({(1, -1), (1, -2), 0.0, 0})):
        assert wire.ValueDecoder().decode(_encoded(value)) == value


@given(st.frozensets(hashables, max_size=30))
@settings(max_examples=50, database=None)
def test_real_sets_never_trip_the_collision_limit(value: frozenset[object]) -> None:
    assert same(wire.ValueDecoder().decode(_encoded(value)), value)


# -- a live server fed random frames --------------------------------------------------------------------


class Watch:
    """Collects what must never happen on the server: a thread dying of an exception, or an
    ERROR log record."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def excepthook(self, args: threading.ExceptHookArgs) -> None:
        with self._lock:
            self.failures.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")


# What a server may give as the reason for dropping a client; anything else is a bug in it.
DROP_REASONS = frozenset({"RemoteProtocolError", "HandshakeError", "ConnectionClosedError", "TimeoutError"})


class ErrorHandler(logging.Handler):
    """Fails on errors and warnings other than "the peer broke the protocol", and on a client
    dropped for a reason other than the protocol's."""

    def __init__(self, watch: Watch) -> None:
        super().__init__(logging.DEBUG)
        self.watch = watch

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or (record.levelno >= logging.WARNING and "broke the protocol" not in str(record.msg)):
            self.watch.failures.append(f"logged: {record.getMessage()}")
        elif "dropped" in str(record.msg) and isinstance(record.args, tuple) and len(record.args) >= 2:
            if record.args[1] not in DROP_REASONS:
                self.watch.failures.append(f"dropped for an unexpected reason: {record.getMessage()}")


@pytest.fixture
def watch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Watch]:
    watched = Watch()
    monkeypatch.setattr(threading, "excepthook", watched.excepthook)
    handler = ErrorHandler(watched)
    logger = logging.getLogger("rpc_service")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield watched
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)


@pytest.fixture
def service() -> FuzzService:  # (overrides the suite's TargetService: every method here is quick)
    return FuzzService()


def exchange(sock: socket.socket, data: bytes, idle: float = 0.15) -> bool:
    """Send ``data`` (the server may hang up midway), then read until the server hangs up
    (True) or stays quiet for ``idle`` seconds (False). Bounded: at most 50 reads."""
    try:
        sock.sendall(data)
    except OSError:
        return True
    for _ in range(50):
        sock.settimeout(idle)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


@LIVE
@given(items=st.lists(pieces, min_size=1, max_size=5), handshake=st.booleans(), data=st.data())
def test_live_server_only_drops_the_bad_client(
    items: list[Any],
    handshake: bool,
    data: st.DataObject,
    server: ThreadedServer,
    normal_client: Connection,
    baseline: Baseline,
    watch: Watch,
) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        peer = RawPeer(sock)
        if handshake:
            peer.handshake()
            stream = encode_stream(peer.proto, items)
        else:
            stream = joined(wire.Connection().send(wire.Preface())) + encode_stream(client_prologue()[0], items)
        exchange(sock, data.draw(corrupted(stream), label="stream"))
    finally:
        sock.close()
    assert normal_client.root.echo(("still", "served")) == ("still", "served")
    assert not watch.failures, watch.failures


def test_live_server_after_the_fuzzing_is_back_to_baseline(server: ThreadedServer, normal_client: Connection, baseline: Baseline) -> None:
    """(The live fuzz test above shares one server across examples; this checks a fresh one
    ends clean after a burst of the same kind of traffic.)"""
    for seed in seeds():
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            exchange(sock, joined(wire.Connection().send(wire.Preface())) + seed, idle=0.05)
        finally:
            sock.close()
    assert normal_client.root.echo(1) == 1

