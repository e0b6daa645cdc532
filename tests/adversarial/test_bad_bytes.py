"""Hostile bytes: peers that do not speak the protocol, or break it on purpose.

Every case runs against the ``server`` fixture (a ThreadedServer of ``TargetService``) with the
``normal_client`` connected alongside, and ends with the server's threads and fds back to the
``baseline``. A peer that breaks the protocol must be dropped, promptly and with a logged
reason (never a timeout drop, never a hang), and nobody else may notice. Frames are built by
hand with ``struct`` (``helpers.frame``) or with the sans-I/O state machine of a
:class:`~tests.adversarial.helpers.RawPeer` and then corrupted.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import tracemalloc
from typing import Callable

import pytest

import rpc_protocol as wire
from rpc_service import Connection, ThreadedServer
from tests.adversarial.helpers import Baseline, RawPeer, TargetService, assert_prompt, frame, joined, preface, value_of, wait_until
from tests.service.helpers import dropped_within

REQUEST, REPLY, ERROR, RELEASE, PING, PONG, CLOSE, HELLO = 2, 3, 4, 5, 6, 7, 8, 1
MiB = 1024 * 1024


def backref(oid: int) -> bytes:
    return b"\x22" + struct.pack("<Q", oid)


def request_payload(op: int, target: bytes, args: bytes = b"\x18\x00", kwargs: bytes = b"\x18\x00") -> bytes:
    return bytes([op]) + target + args + kwargs


def logged(caplog: pytest.LogCaptureFixture, needle: str) -> bool:
    return any(needle in record.getMessage() for record in caplog.records)


# -- not the protocol at all (before any handshake) ------------------------------------------------

OPENINGS: dict[str, tuple[bytes, str]] = {
    # name: (the first bytes the client sends, what the server's log says)
    "garbage": (b"\x00\x01\x02 this is not the protocol " * 8, "not an rpc peer"),
    "http": (b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "not an rpc peer"),
    "tls-client-hello": (bytes.fromhex("16030100a5010000a10303") + bytes(64), "not an rpc peer"),
    "png-magic": (b"\x89PNG\r\n\x1a\n", "not an rpc peer"),
    "wrong-magic": (preface(magic=b"\x89RPX"), "not an rpc peer"),
    "future-version": (preface(3, 4), "this side speaks 1..2, the peer speaks 3..4"),
    "version-zero": (preface(0, 1), "malformed preface"),
    "min-above-max": (preface(3, 2), "malformed preface"),
    "reserved-preface-field": (preface(reserved=7), "malformed preface"),
    "frame-instead-of-preface": (frame(HELLO, 0, b"\x18\x04\x18\x00\x18\x00\x09" + bytes(8) + b"\x00"), "not an rpc peer"),
    "lone-high-byte": (b"\xff", "not an rpc peer"),
}


@pytest.mark.parametrize("name", sorted(OPENINGS))
def test_non_rpc_opening_is_dropped_at_once(
    name: str,
    raw: Callable[[], socket.socket],
    normal_client: Connection,
    baseline: Baseline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, reason = OPENINGS[name]
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        sock = raw()
        start = time.monotonic()
        sock.sendall(data)
        assert dropped_within(sock, 1.5), "the server kept talking to a peer that is not speaking rpc"
        # well before the handshake deadline (2 s): refused on its bytes, not timed out
        assert time.monotonic() - start < 1.0
        assert_prompt(normal_client)
    assert logged(caplog, reason), [record.getMessage() for record in caplog.records]


def test_truncated_preface_then_end_of_stream(
    raw: Callable[[], socket.socket], normal_client: Connection, baseline: Baseline
) -> None:
    sock = raw()
    sock.sendall(wire.MAGIC[:3])  # a good start, then the client hangs up its side
    sock.shutdown(socket.SHUT_WR)
    start = time.monotonic()
    assert dropped_within(sock, 1.5)
    assert time.monotonic() - start < 1.0
    assert_prompt(normal_client)


# -- broken frames after a good handshake -----------------------------------------------------------

ROOT_OID = 1  # the server's root service is the first object it lends on a connection

BROKEN_FRAMES: dict[str, tuple[bytes, str]] = {
    # name: (bytes sent after the handshake, what the server's log says)
    "garbage-header": (b"\xee" * 64, "unknown frame type 238"),
    "frame-type-0": (frame(0), "unknown frame type 0"),
    "frame-type-10": (frame(10), "unknown frame type 10"),
    "cancel-with-payload": (frame(9, 1, b"x"), "trailing bytes"),
    "empty-call-context": (frame(REQUEST, 1, b"\x01\x00", flags=0x02), "malformed call context"),
    "frame-type-255": (frame(255, 1, b"x"), "unknown frame type 255"),
    "flags-on-reply": (frame(REPLY, 1, b"\x00", flags=1), "not valid on a REPLY"),
    "unknown-flag-on-request": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID)), flags=0x80), "not valid on a REQUEST"),
    "reserved-header-field": (frame(PING, 1, reserved=1), "reserved header field"),
    "length-over-limit": (frame(PING, 1, length=64 * MiB + 1), "exceeds the limit"),
    "second-hello": (frame(HELLO, 0, b"\x18\x04\x18\x00\x18\x00\x09" + struct.pack("<q", 1 << 26) + b"\x00"), "sent Hello in state open"),
    "unknown-op-0": (frame(REQUEST, 1, request_payload(0, backref(ROOT_OID))), "unknown request operation 0"),
    "unknown-op-14": (frame(REQUEST, 1, request_payload(14, backref(ROOT_OID))), "unknown request operation 14"),
    "unknown-op-255": (frame(REQUEST, 1, request_payload(255, backref(ROOT_OID))), "unknown request operation 255"),
    "empty-request": (frame(REQUEST, 1), "unknown request operation None"),
    "unknown-value-tag": (frame(REQUEST, 1, request_payload(3, backref(ROOT_OID), b"\x05")), "unknown value tag 0x05"),
    "reserved-value-tag-0xff": (frame(REPLY, 1, b"\xff"), "not in flight"),
    "trailing-bytes": (frame(REQUEST, 1, request_payload(6, backref(ROOT_OID)) + b"\x00"), "trailing bytes"),
    "args-not-a-tuple": (frame(REQUEST, 1, request_payload(6, backref(ROOT_OID), args=b"\x00")), "malformed request arguments"),
    "kwargs-odd-length": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID), kwargs=b"\x18\x01\x00")), "malformed request arguments"),
    "kwargs-name-not-str": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID), kwargs=b"\x18\x02\x08\x01\x00")), "names must be strings"),
    "reply-never-requested": (frame(REPLY, 99, b"\x00"), "request #99, which is not in flight"),
    "error-never-requested": (
        frame(ERROR, 7, b"\x18\x04\x10\x01m\x10\x01E\x18\x00\x10\x00"),
        "request #7, which is not in flight",
    ),
    "pong-without-ping": (frame(PONG, 5), "ping #5, which was never sent"),
    "release-length-mismatch": (frame(RELEASE, 0, struct.pack("<IQI", 2, 1, 1)), "release frame length"),
    "release-count-4-billion": (frame(RELEASE, 0, struct.pack("<I", 0xFFFFFFFF)), "release frame length"),
    "close-not-utf8": (frame(CLOSE, 0, b"\xff\xfe"), "not UTF-8"),
    "backref-to-object-never-lent": (frame(REQUEST, 1, request_payload(6, backref(424242))), "#424242, which is not lent"),
    "ref-of-undescribed-type": (
        frame(REQUEST, 1, request_payload(2, backref(ROOT_OID), b"\x18\x02\x10\x04echo\x20" + struct.pack("<QI", 5, 77))),
        "unknown type #77",
    ),
    "malformed-type-descriptor": (
        frame(REQUEST, 1, request_payload(2, backref(ROOT_OID), b"\x18\x02\x10\x04echo\x21" + struct.pack("<QI", 5, 1) + b"\x18\x01\x10\x01x")),
        "malformed type descriptor",
    ),
    "descriptor-with-dunder-method": (
        frame(
            REQUEST,
            1,
            request_payload(
                2,
                backref(ROOT_OID),
                b"\x18\x02\x10\x04echo\x21" + struct.pack("<QI", 5, 1) + b"\x18\x05\x10\x01m\x10\x01T\x18\x01\x10\x08__init__\x18\x00\x10\x00",
            ),
        ),
        "malformed type descriptor",
    ),
    # regression: the error message's repr of the descriptor called the proxy's __repr__, a
    # remote call made while decoding under the connection's lock: the thread hung for good
    "descriptor-holding-a-reference": (
        frame(
            REQUEST,
            1,
            request_payload(
                2,
                backref(ROOT_OID),
                b"\x18\x02\x10\x04echo\x21" + struct.pack("<QI", 5, 1) + b"\x18\x05\x10\x01m\x10\x01T\x18\x01\x21"
                + struct.pack("<QI", 6, 2) + b"\x18\x05\x10\x01m\x10\x01I\x18\x00\x18\x00\x10\x00" + b"\x18\x00\x10\x00",
            ),
        ),
        "not shown: it holds references",
    ),
    # regression: showing it in the error message raised ValueError (an int past str()'s limit)
    "descriptor-with-a-huge-int": (
        frame(
            REQUEST,
            1,
            request_payload(
                2,
                backref(ROOT_OID),
                b"\x18\x02\x10\x04echo\x21" + struct.pack("<QI", 5, 1) + b"\x18\x05\x10\x01m\x10\x01T\x18\x01"
                + b"\x0a" + struct.pack("<I", 2100) + b"\x01" * 2100 + b"\x18\x00\x10\x00",
            ),
        ),
        "malformed type descriptor",
    ),
    "ref-as-set-element": (
        frame(REQUEST, 1, request_payload(2, backref(ROOT_OID), b"\x18\x02\x10\x04echo\x1a\x01\x00\x00\x00\x20" + struct.pack("<QI", 5, 1))),
        "cannot be a set element",
    ),
    "deep-nesting": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID), b"\x18\x01" * 5000 + b"\x00")), "nested deeper than 64"),
    "count-past-end": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID), b"\x19" + struct.pack("<I", 1 << 20) + b"\x00" * 5)), "container truncated"),
    "items-over-limit": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID), b"\x1c" + struct.pack("<I", (1 << 20) + 1))), "exceeds the limit of 1048576"),
    "bytes-claiming-4-gib": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID), b"\x13\xff\xff\xff\xff" + b"\x00" * 8)), "value truncated"),
    "invalid-utf8-str": (frame(REQUEST, 1, request_payload(3, backref(ROOT_OID), b"\x18\x01\x10\x02\xc0\x80")), "malformed value"),
    # regression: a plain value as target let the peer run safe special methods on values and
    # operands of its choosing ("{0._secret}".format(root), "x" * 10**9): refused unread
    "plain-str-target": (
        frame(REQUEST, 1, request_payload(2, b"\x10\x01x", b"\x18\x02\x10\x07__mul__\x09" + struct.pack("<q", 10**9))),
        "target must be a reference",
    ),
    "plain-int-target": (frame(REQUEST, 1, request_payload(7, b"\x08\x03")), "target must be a reference"),
    "unhashable-set-member": (frame(REQUEST, 1, request_payload(1, backref(ROOT_OID), b"\x1a\x01\x00\x00\x00\x1c\x00\x00\x00\x00")), "malformed value"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_FRAMES))
def test_broken_frame_drops_only_that_client(
    name: str,
    raw_peer: Callable[[], RawPeer],
    normal_client: Connection,
    baseline: Baseline,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, reason = BROKEN_FRAMES[name]
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        peer = raw_peer()
        peer.handshake()
        assert value_of(peer.call_root("echo", "first")) == "first"  # a working connection...
        start = time.monotonic()
        peer.sock.sendall(data)  # ...until this
        assert dropped_within(peer.sock, 2.0), f"the server did not drop a peer that sent {name}"
        assert time.monotonic() - start < 1.5
        assert_prompt(normal_client)
    assert logged(caplog, "broke the protocol"), [record.getMessage() for record in caplog.records]
    assert logged(caplog, reason), [record.getMessage() for record in caplog.records]


def test_truncated_frame_then_end_of_stream(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, service: TargetService
) -> None:
    peer = raw_peer()
    peer.handshake()
    _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("echo", "x" * 100))
    peer.sock.sendall(data[: len(data) // 2])  # half a frame...
    peer.sock.shutdown(socket.SHUT_WR)  # ...and the client is gone
    assert dropped_within(peer.sock, 1.5)
    assert_prompt(normal_client)
    # on_disconnect runs after the connection is closed: the peer may see the drop first
    assert wait_until(lambda: service.disconnects >= 1, 3.0)


def test_truncated_frame_then_silence_bothers_nobody(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline
) -> None:
    """Half a frame and then nothing: that client waits alone; everyone else is served."""
    peers = [raw_peer() for _ in range(3)]
    for peer in peers:
        peer.handshake()
        _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("echo", b"y" * 5000))
        peer.sock.sendall(data[:20])
    for _ in range(5):
        assert_prompt(normal_client, within=0.5)
    for peer in peers:  # it is still its own connection: it completes the frame and is answered
        peer.sock.sendall(data[20:])
    assert all(value_of(peer.answer(1)) == b"y" * 5000 for peer in peers)


# -- sizes announced in headers ---------------------------------------------------------------------


def test_oversized_length_header_is_rejected_before_allocation(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, caplog: pytest.LogCaptureFixture
) -> None:
    peer = raw_peer()
    peer.handshake()
    tracemalloc.start()
    try:
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="rpc_service"):
            peer.sock.sendall(frame(REQUEST, 1, length=0xFFFFFFFF))  # 12 bytes claiming 4 GiB
            assert dropped_within(peer.sock, 2.0)
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, f"rejecting a 12-byte header took {elapsed:.2f} s"
    assert peak < MiB, f"{peak} bytes allocated (by every thread) while rejecting a 12-byte header"
    assert logged(caplog, "4294967295 bytes exceeds the limit")
    assert_prompt(normal_client)


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_announced_frame_within_the_limit_commits_no_memory_until_sent(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, server: ThreadedServer
) -> None:
    """Headers announcing 60 MiB each (allowed: the limit is 64 MiB), then one payload byte
    and silence. The server may wait for the rest, but must not commit 60 MiB per header:
    four such clients would otherwise cost 240 MiB for 52 bytes sent."""
    before = _rss()
    peers = [raw_peer() for _ in range(4)]
    for peer in peers:
        peer.handshake()
        peer.sock.sendall(frame(REQUEST, 1, b"\x02", length=60 * MiB))
    assert_prompt(normal_client)
    time.sleep(0.3)  # let every server thread get to its read
    grown = _rss() - before
    assert grown < 40 * MiB, f"the server's memory grew by {grown // MiB} MiB for 4 headers"


# -- sequence ids -----------------------------------------------------------------------------------

CALLBACK = wire.Ref(1, 1, ("client", "Callback", (), ("__call__",), ""))


def test_duplicate_request_id_in_flight_is_dropped(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, caplog: pytest.LogCaptureFixture
) -> None:
    peer = raw_peer()
    peer.handshake()
    # request #1 makes the server call us back, so #1 is still in flight while we answer...
    seq, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("call", CALLBACK, 1))
    peer.sock.sendall(data)
    callback = peer.wait_for(wire.Request)
    assert isinstance(callback, wire.Request) and callback.op is wire.Op.CALL
    # ...and we reuse #1 for a new request instead of replying
    with caplog.at_level(logging.INFO, logger="rpc_service"):
        peer.sock.sendall(frame(REQUEST, seq, request_payload(6, backref(ROOT_OID))))
        assert dropped_within(peer.sock, 2.0)
    assert logged(caplog, f"reused request id #{seq}")
    assert_prompt(normal_client)


def test_request_ids_may_be_reused_once_answered(raw_peer: Callable[[], RawPeer], baseline: Baseline) -> None:
    peer = raw_peer()
    peer.handshake()
    for value in range(3):  # the same id, each time after its reply: legal
        peer.sock.sendall(joined(peer.proto.send(wire.Request(7, wire.Op.CALLATTR, peer.root_ref, ("echo", value)))))
        answer = peer.answer(7)
        assert isinstance(answer, wire.Reply) and answer.value == value


@pytest.mark.parametrize("how", ["wrong-seq", "twice", "pong-for-a-request"])
def test_unexpected_reply_to_a_callback_is_dropped(
    how: str, raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, service: TargetService
) -> None:
    peer = raw_peer()
    peer.handshake()
    _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("call", CALLBACK, 1))
    peer.sock.sendall(data)
    callback = peer.wait_for(wire.Request)
    assert isinstance(callback, wire.Request)
    if how == "wrong-seq":
        peer.sock.sendall(frame(REPLY, callback.seq + 1000, b"\x00"))
    elif how == "twice":
        good = frame(REPLY, callback.seq, b"\x08\x05")
        peer.sock.sendall(good + good)
    else:
        peer.sock.sendall(frame(PONG, callback.seq))
    assert dropped_within(peer.sock, 2.0)
    assert_prompt(normal_client)


def test_requests_before_the_hello_are_refused(raw: Callable[[], socket.socket], normal_client: Connection, baseline: Baseline) -> None:
    sock = raw()
    sock.sendall(preface() + frame(REQUEST, 1, request_payload(6, backref(ROOT_OID))))
    assert dropped_within(sock, 1.5)
    assert_prompt(normal_client)


def test_frames_after_close_are_ignored_then_dropped(raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline) -> None:
    peer = raw_peer()
    peer.handshake()
    peer.sock.sendall(frame(CLOSE, 0, b"bye") + frame(REQUEST, 1, request_payload(6, backref(ROOT_OID))) + b"\xee" * 100)
    assert dropped_within(peer.sock, 1.5)
    assert_prompt(normal_client)


def test_release_of_objects_never_lent_is_harmless(raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline) -> None:
    peer = raw_peer()
    peer.handshake()
    entries = [(oid, 0xFFFFFFFF) for oid in (0, 2, 3, 2**64 - 1)]
    peer.sock.sendall(frame(RELEASE, 0, struct.pack("<I", len(entries)) + b"".join(struct.pack("<QI", *e) for e in entries)))
    assert value_of(peer.call_root("echo", "after release")) == "after release"
    # releasing the root itself only hurts this peer: its next use of the root is refused
    peer.sock.sendall(frame(RELEASE, 0, struct.pack("<IQI", 1, ROOT_OID, 0xFFFFFFFF)))
    peer.sock.sendall(frame(REQUEST, 50, request_payload(6, backref(ROOT_OID))))
    assert dropped_within(peer.sock, 1.5)
    assert_prompt(normal_client)
