"""Hardening (issue 13): what one peer may make a server spend in memory. Each server runs in
its own process (``hardening_child.py``), which measures its own RSS and peak.

- Item 2: a type descriptor with a million method names (one ~9 MiB request) built a proxy
  class of ~0.55 GiB, kept after disconnect in a process-wide cache. Descriptors are bounded,
  and proxy classes live only while a connection or proxy uses them.
- Item 5: 16 MiB of 5-byte empty sets took a server to a ~792 MiB peak (~48x the frame).
  A frame's decoding has a total budget, so it costs a small constant factor of its size.
- Item 10: lent objects per connection are capped (``max_lent_objects``), with a clear error.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import Connection
from tests.adversarial.helpers import RawPeer, child_env, frame
from tests.adversarial.leak_child import record_figures

CHILD = str(Path(__file__).resolve().parent / "hardening_child.py")
CLIENT_CONFIG: dict[str, Any] = {"sync_request_timeout": 30.0}
MIB = 1024


@pytest.fixture
def child_server() -> Iterator[Callable[..., int]]:
    """Starts ``hardening_child.py`` with a protocol_config; returns its port."""
    children: list[subprocess.Popen[str]] = []

    def start(config: dict[str, Any] | None = None) -> int:
        child = subprocess.Popen(
            [sys.executable, CHILD, json.dumps(config or {})], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        children.append(child)
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.stderr.read() if child.stderr else line
        return int(line)

    yield start
    for child in children:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=10)


def measure(port: int) -> Connection:
    return rpc_service.connect("127.0.0.1", port, config=CLIENT_CONFIG)


def hostile(port: int) -> RawPeer:
    peer = RawPeer(socket.create_connection(("127.0.0.1", port), timeout=30))
    peer.handshake()
    return peer


def hostile_frame(port: int, base: int, peer: RawPeer, data: bytes) -> tuple[str, float]:
    """``peer`` sends ``data`` and hangs up: what the server answered (see :func:`send_or_closed`)
    and how far its peak RSS grew above ``base`` (MiB), checked to be still serving."""
    outcome = send_or_closed(peer, data)
    peer.sock.close()
    with measure(port) as conn:
        peak = conn.root.peak()
        assert conn.root.echo("still serving") == "still serving"
    return outcome, (peak - base) / MIB


def send_or_closed(peer: RawPeer, data: bytes) -> str:
    """Send ``data``; return what the server answered: 'error', 'reply' or 'closed'."""
    try:
        peer.sock.sendall(data)
        peer.sock.settimeout(30)
        while True:
            chunk = peer.sock.recv(65536)
            if not chunk:
                return "closed"
            for event in peer.proto.receive_data(chunk):
                if isinstance(event, wire.ErrorReply):
                    return "error"
                if isinstance(event, wire.Reply):
                    return "reply"
                if isinstance(event, wire.Close):
                    return "closed"
    except (ConnectionError, wire.ProtocolError):
        return "closed"


# -- item 2: descriptor bombs and the proxy-class cache ------------------------------------------


def test_a_million_method_descriptor_is_refused_cheaply(child_server: Callable[..., int]) -> None:
    port = child_server({"max_frame_size": 64 * 1024 * 1024})
    with measure(port) as conn:
        base = conn.root.reset_peak()
    names = tuple(f"m{index}" for index in range(1_000_000))
    peer = hostile(port)
    bomb = wire.Ref(1, 1, ("hostile", "Bomb", names, (), ""))
    _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("echo", bomb))
    outcome = send_or_closed(peer, data)
    peer.sock.close()
    with measure(port) as conn:
        peak = conn.root.peak()
        classes = conn.root.proxy_classes()
    grown = (peak - base) / MIB
    record_figures("hardening_descriptor_bomb", {"request_mib": round(len(data) / 2**20, 1), "peak_growth_mib": round(grown, 1), "outcome": outcome})
    assert outcome in ("error", "closed")
    assert grown < 160, f"the server's peak grew by {grown:.0f} MiB for a {len(data) / 2**20:.1f} MiB request"
    assert classes < 10


def test_proxy_classes_do_not_outlive_their_connections(child_server: Callable[..., int]) -> None:
    port = child_server()
    kinds = [type(f"Kind{index}", (), {f"exposed_m{j}": (lambda self: None) for j in range(20)}) for index in range(300)]
    with measure(port) as conn:
        before = conn.root.proxy_classes()
        for kind in kinds:
            conn.root.echo(kind())
        during = conn.root.proxy_classes()
    with measure(port) as conn:
        # the server notices the disconnect on its own thread: wait for it (bounded)
        deadline = time.monotonic() + 10
        while (after := conn.root.proxy_classes()) > before + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    record_figures("hardening_proxy_class_cache", {"before": before, "during": during, "after_disconnect": after})
    assert during >= 300  # the server really built them...
    assert after <= before + 2, f"{after - before} proxy classes outlived their connection"  # ...and let them go


def test_descriptors_within_the_bounds_still_work() -> None:
    """A class with more methods than a descriptor may name: the rest work by attribute lookup."""

    class Wide(rpc_service.Service):
        pass

    for index in range(1500):
        setattr(Wide, f"exposed_m{index}", lambda self, index=index: index)
    server = rpc_service.ThreadedServer(Wide, port=0)
    thread = server.start_in_thread()
    try:
        with rpc_service.connect("127.0.0.1", server.port, config=CLIENT_CONFIG) as conn:
            assert conn.root.m0() == 0 and conn.root.m1499() == 1499 and conn.root.m999() == 999
    finally:
        server.close()
        thread.join(timeout=10)


# -- item 5: decode amplification ----------------------------------------------------------------


def test_a_frame_of_empty_sets_costs_a_small_factor_of_its_size(child_server: Callable[..., int]) -> None:
    port = child_server({"max_frame_size": 32 * 1024 * 1024})
    with measure(port) as conn:
        base = conn.root.reset_peak()
    peer = hostile(port)
    marker = b"\x12\x08" + b"M" * 8  # BYTES8 of 8 bytes: replaced by the hostile list below
    count = 8 * 1024 * 1024 // 10  # two lists (each within max_items) of empty sets: 8 MiB in all
    one_list = b"\x1c" + struct.pack("<I", count) + (b"\x1e" + struct.pack("<I", 0)) * count  # LIST of empty SETs
    hostile_list = b"\x18\x02" + one_list + one_list  # TUPLE8 of the two
    seq, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("echo", b"M" * 8))
    kind, flags, reserved, _, _ = struct.unpack_from("<BBHII", data)
    payload = data[12:].replace(marker, hostile_list)
    outcome, grown = hostile_frame(port, base, peer, frame(kind, seq, payload, flags=flags, reserved=reserved))
    frame_mib = len(payload) / 2**20
    record_figures("hardening_decode_amplification", {"frame_mib": round(frame_mib, 1), "peak_growth_mib": round(grown, 1), "factor": round(grown / frame_mib, 1), "outcome": outcome})
    assert outcome in ("error", "closed")
    assert grown < 24 * frame_mib, f"decoding a {frame_mib:.0f} MiB frame grew the server's peak by {grown:.0f} MiB"


def test_a_frame_of_distinct_references_is_bounded_by_max_proxies(child_server: Callable[..., int]) -> None:
    """Each distinct reference makes a proxy (~600 bytes) out of 13 bytes: 2 x 600 000 of them
    (16 MiB) would cost the server ~700 MiB. It stops at ``max_proxies`` and drops the peer."""
    port = child_server({"max_frame_size": 32 * 1024 * 1024})
    with measure(port) as conn:
        base = conn.root.reset_peak()
    peer = hostile(port)
    count = 1_200_000  # in two tuples (each within max_items)
    descriptor = ("builtins", "object", (), (), "object")
    refs = [wire.Ref(1, 77, descriptor), *(wire.Ref(oid, 77) for oid in range(2, count + 1))]
    _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("echo", (tuple(refs[: count // 2]), tuple(refs[count // 2 :]))))
    outcome, grown = hostile_frame(port, base, peer, data)
    frame_mib = len(data[12:]) / 2**20
    record_figures("hardening_reference_amplification", {"frame_mib": round(frame_mib, 1), "peak_growth_mib": round(grown, 1), "outcome": outcome})
    assert outcome == "closed"
    assert grown < 120, f"a {frame_mib:.0f} MiB frame of references grew the server's peak by {grown:.0f} MiB"


def test_max_proxies_is_configurable_and_validated() -> None:
    with pytest.raises(ValueError, match="max_proxies"):
        rpc_service.Config(max_proxies=0)

    class Lender(rpc_service.Service):
        def exposed_lend(self, count: int) -> tuple[object, ...]:
            return tuple(object() for _ in range(count))  # a tuple crosses by value, its items by reference

    server = rpc_service.ThreadedServer(Lender, port=0)
    thread = server.start_in_thread()
    try:
        with rpc_service.connect("127.0.0.1", server.port, config={"max_proxies": 5}) as conn:
            first = conn.root.lend(4)  # the root and 4 objects: 5 proxies
            assert len(first) == 4
        with rpc_service.connect("127.0.0.1", server.port, config={"max_proxies": 5}) as conn:
            with pytest.raises(rpc_service.RPCError):
                conn.root.lend(10)  # the reply is refused and the connection closes
            assert conn.closed
    finally:
        server.close()
        thread.join(timeout=10)


# -- item 10: lent objects per connection --------------------------------------------------------


def test_lent_objects_are_capped_per_connection(child_server: Callable[..., int]) -> None:
    port = child_server()  # the default max_lent_objects (100 000)
    with measure(port) as conn:
        base = conn.root.rss()
    held: list[Any] = []
    refused_at = None
    with measure(port) as conn:
        for batch in range(130):  # 130 000 objects asked for, 1000 per request
            try:
                held.extend(conn.root.lend(1000))
            except rpc_service.RemoteError as exc:
                assert exc.remote_type == "rpc_service._errors.LentObjectsLimitError"
                assert "max_lent_objects=100000" in str(exc)
                refused_at = batch
                break
        with measure(port) as other:
            grown = (other.root.rss() - base) / MIB
            lent = other.root.lent_here()
            assert other.root.echo("others unaffected") == "others unaffected"
        del held[: len(held) // 2]  # released: lending works again
        import gc

        gc.collect()
        assert len(conn.root.lend(1000)) == 1000
    record_figures("hardening_lent_cap", {"lent": lent, "refused_at_request": refused_at, "server_rss_growth_mib": round(grown, 1)})
    assert refused_at == 99  # the service itself is one of the 100 000 the client holds
    assert lent == 99_000


def test_max_lent_objects_is_configurable(child_server: Callable[..., int]) -> None:
    port = child_server({"max_lent_objects": 10})
    with measure(port) as conn:
        first = conn.root.lend(9)  # (and the service itself: 10)
        with pytest.raises(rpc_service.RemoteError, match="max_lent_objects=10"):
            conn.root.lend(1)
        assert conn.root.echo(5) == 5  # plain values need no lending
        del first
    with pytest.raises(ValueError):
        rpc_service.Config(max_lent_objects=0)


def test_a_client_over_its_own_cap_gets_a_local_error() -> None:
    server = rpc_service.ThreadedServer(rpc_service.Service, port=0)
    thread = server.start_in_thread()
    try:
        with rpc_service.connect("127.0.0.1", server.port, config={"max_lent_objects": 2}) as conn:
            with pytest.raises(rpc_service.LentObjectsLimitError):
                conn.root.__eq__((object(), object(), object()))
    finally:
        server.close()
        thread.join(timeout=10)


# -- item 15: buffers of an idle connection --------------------------------------------------------


def test_an_idle_connection_gives_back_its_large_buffers(child_server: Callable[..., int]) -> None:
    port = child_server()
    blob = b"\xab" * (15 * 1024 * 1024)  # (frames up to 16 MiB keep their buffer for the next)
    with measure(port) as probe, measure(port) as conn:
        base = probe.root.rss()
        assert conn.root.echo(blob) == blob  # one 16 MiB frame each way, then the connection idles
        time.sleep(1.5)  # > IDLE_RELEASE (1 s)
        deadline = time.monotonic() + 10  # (a loaded machine may be slow to let the server thread run)
        while (kept := (probe.root.rss() - base) / MIB) >= 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert conn.root.echo(b"small") == b"small"  # and it still works
    record_figures("hardening_idle_buffers", {"frame_mib": 15, "idle_rss_kept_mib": round(kept, 1)})
    assert kept < 8, f"an idle connection kept {kept:.0f} MiB after one 15 MiB frame"
