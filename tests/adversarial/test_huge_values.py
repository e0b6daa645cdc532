"""Deeply nested or huge values, and requests built to make the server work for nothing.

Big values inside the limits are served; values past a limit drop the client that sent them.
Either way the normal client is served *meanwhile*: the cases that used to stall the whole
process (hash flooding a set or dict under the GIL), grow it without bound (a new proxy class
per typed reference) or drain an endless iterator in one request are regression tests for
the fixes they found (see the module docstrings of ``rpc_protocol._decoder``,
``rpc_service._boxing`` and ``rpc_service._dispatch``).
"""

from __future__ import annotations

import asyncio
import struct
from fractions import Fraction
import threading
import time
from typing import Any, Callable

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import Connection, aio
from tests.adversarial.helpers import Baseline, RawPeer, frame, value_of
from tests.service.helpers import dropped_within

MiB = 1024 * 1024
MODULUS = (1 << 61) - 1  # sys.hash_info.modulus: int hashes are taken modulo this, unrandomised


class Latency:
    """Calls the normal client in a loop on a thread and records the worst round trip."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.worst = 0.0
        self.calls = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-probe", daemon=True)

    def __enter__(self) -> Latency:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            try:
                assert self.conn.root.echo(self.calls) == self.calls
            except BaseException as exc:  # reported by the test
                self.error = exc
                return
            self.worst = max(self.worst, time.monotonic() - start)
            self.calls += 1
            self._stop.wait(0.01)


def bigint(value: int) -> bytes:
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x0a" + struct.pack("<I", len(data)) + data


def colliding_ints(count: int) -> list[bytes]:
    """Distinct ints that all hash to 0: each insert into a set compares with all before it."""
    return [bigint(k * MODULUS) for k in range(1, count + 1)]


def echo_request(peer: RawPeer, encoded_arg: bytes, by_value: bool = False) -> bytes:
    """A CALLATTR ``root.echo(<arg>)`` request whose argument is given already encoded."""
    assert peer.root is not None
    seq = peer.proto.next_seq()
    peer.proto.send(wire.Request(seq, wire.Op.CALLATTR, peer.root_ref, ("echo", None), by_value=by_value))  # (a reply is due)
    payload = b"\x02\x22" + struct.pack("<Q", peer.root.oid) + b"\x18\x02\x10\x04echo" + encoded_arg + b"\x18\x00"
    return frame(2, seq, payload, flags=int(by_value))


FLOODS: dict[str, Callable[[list[bytes]], bytes]] = {
    "frozenset": lambda items: b"\x1a" + struct.pack("<I", len(items)) + b"".join(items),
    "set": lambda items: b"\x1e" + struct.pack("<I", len(items)) + b"".join(items),
    "dict-keys": lambda items: b"\x1d" + struct.pack("<I", len(items)) + b"".join(item + b"\x00" for item in items),
    "nested-in-tuple": lambda items: b"\x18\x01\x1a" + struct.pack("<I", len(items)) + b"".join(items),
}


@pytest.mark.parametrize("shape", sorted(FLOODS))
def test_hash_flooding_a_set_does_not_stall_the_process(
    shape: str, raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline
) -> None:
    """40 000 distinct ints hashing alike (a 680 KB frame): building the set used to hold the
    GIL for ~15 s, freezing every client. Now the decoder refuses it up front."""
    peer = raw_peer()
    peer.handshake()
    data = echo_request(peer, FLOODS[shape](colliding_ints(40_000)))
    with Latency(normal_client) as probe:
        start = time.monotonic()
        peer.sock.sendall(data)
        assert dropped_within(peer.sock, 5.0), "the flooding client was not dropped"
        elapsed = time.monotonic() - start
        time.sleep(0.1)
    assert probe.error is None, probe.error
    assert elapsed < 2.0, f"refusing the flood took {elapsed:.1f} s"
    assert probe.worst < 1.0, f"the normal client waited {probe.worst:.2f} s while the set was built"


def test_a_few_hash_collisions_are_fine(raw_peer: Callable[[], RawPeer], baseline: Baseline) -> None:
    """Real data collides now and then (hash(-1) == hash(-2)); repeated dict keys keep the last."""
    peer = raw_peer()
    peer.handshake()
    peer.sock.sendall(echo_request(peer, FLOODS["frozenset"](colliding_ints(200) + [b"\x08\xff", b"\x08\xfe"])))
    answer = peer.answer(1)
    assert isinstance(answer, wire.Reply) and isinstance(answer.value, frozenset) and len(answer.value) == 202
    repeated = b"\x1d" + struct.pack("<I", 3) + b"\x08\x01\x08\x01" + b"\x08\x01\x08\x02" + b"\x08\x02\x08\x03"
    peer.sock.sendall(echo_request(peer, repeated, by_value=True))
    answer = peer.answer(2)
    assert isinstance(answer, wire.Reply) and answer.value == {1: 2, 2: 3}


def test_many_typed_references_do_not_grow_the_server_without_bound(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline
) -> None:
    """Each REF_TYPED with a new type id made the server build (and keep, for the connection's
    life) a proxy class: ~2.4 KB of memory for 30 bytes sent, 240 MB for a 3 MB frame. The
    number of types a peer may describe is now bounded; past it the peer is dropped."""
    peer = raw_peer()
    peer.handshake()
    refs = tuple(wire.Ref(n, n, ("evil", f"T{n}", (), (), "")) for n in range(1, 20_001))
    _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("echo", refs))
    start = time.monotonic()
    peer.sock.sendall(data)
    assert dropped_within(peer.sock, 10.0), "the server kept a peer describing 20 000 types"
    assert time.monotonic() - start < 5.0
    assert normal_client.root.echo("unbothered") == "unbothered"


def test_typed_references_within_the_bound_are_served(raw_peer: Callable[[], RawPeer], baseline: Baseline) -> None:
    peer = raw_peer()
    peer.handshake()
    refs = tuple(wire.Ref(n, n, ("mod", f"T{n}", (), (), "")) for n in range(1, 501))
    answer = peer.call_root("echo", refs, timeout=10)
    echoed = value_of(answer)
    assert isinstance(echoed, tuple) and len(echoed) == 500


def test_draining_an_endless_iterator_is_bounded(raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline) -> None:
    """ITER_NEXT asking for 10**12 items of itertools.count(): it used to run until memory ran
    out. The server now caps the batch; the client's iteration protocol copes (it loops)."""
    peer = raw_peer()
    peer.handshake()
    answer = peer.call_root("forever")
    assert isinstance(answer, wire.Reply) and isinstance(answer.value, wire.Ref)
    iterator = wire.BackRef(answer.value.oid)
    start = time.monotonic()
    batch = peer.call(wire.Op.ITER_NEXT, iterator, (10**12,), timeout=10)
    assert time.monotonic() - start < 3.0
    assert isinstance(batch, wire.Reply)
    value = batch.value
    assert isinstance(value, tuple)
    items, exhausted = value
    assert not exhausted and 0 < len(items) <= 1 << 16 and items[:3] == (0, 1, 2)
    assert normal_client.root.echo("unbothered") == "unbothered"


def test_the_client_iterates_an_endless_iterator_lazily(normal_client: Connection, baseline: Baseline) -> None:
    forever = normal_client.root.forever()
    taken = []
    for item in forever:
        taken.append(item)
        if len(taken) == 1000:
            break
    assert taken == list(range(1000))


def test_big_values_within_the_limits_are_served(normal_client: Connection, baseline: Baseline) -> None:
    blob = bytes(range(256)) * (32 * 1024)  # 8 MiB
    assert normal_client.root.echo(blob) == blob
    huge_int = 7 ** 400_000  # ~140 KB of two's complement
    assert normal_client.root.echo(huge_int) == huge_int
    many = (None,) * (1 << 20)  # exactly the item limit
    assert normal_client.root.echo(many) == many
    deep: object = ()
    for _ in range(62):  # the request's args tuple is one level; 64 is the limit
        deep = (deep,)
    assert normal_client.root.echo(deep) == deep
    text = "é" * (2 * MiB)
    assert normal_client.root.echo(text) == text


def test_callbacks_nested_without_end_are_cut_off(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline
) -> None:
    """The peer answers each callback with a request that calls back again (A→B→A→B…).
    The server's thread must hit a limit and drop that peer (no crash, no hang)."""
    peer = raw_peer()
    peer.handshake()
    callback = wire.Ref(1, 1, ("client", "Callback", (), ("__call__",), ""))
    _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("call", callback))
    peer.sock.sendall(data)
    depth = 0
    outcome = "still nesting"
    for depth in range(1, 2001):  # bounded: the recursion limit ends it long before
        try:
            event = peer.wait_for(lambda e: isinstance(e, (wire.Request, wire.Reply, wire.ErrorReply)), timeout=5)
        except AssertionError as exc:  # the server closed the connection
            outcome = str(exc)
            break
        if not isinstance(event, wire.Request):
            outcome = type(event).__name__
            break
        _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("call", wire.Ref(1, 1)))
        peer.sock.sendall(data)
    assert outcome != "still nesting", f"the server nested {depth} callbacks deep and was still going"
    assert normal_client.root.echo("unbothered") == "unbothered"


class _Text(str):
    """A str subclass: lent by reference, so its format() runs where it lives."""


class Lender(rpc_service.Service):
    def exposed_items(self) -> list[int]:
        return [1, 2, 3]  # lent: a proxy on the caller's side

    def exposed_text(self) -> _Text:
        return _Text("abc")

    def exposed_number(self, value: int = 3) -> _Number:
        return _Number(value)

    def exposed_fraction(self) -> Fraction:
        return Fraction(1, 2)  # lent: not a by-value type


class _Number(int):
    pass


def _check_a_lender(driver: str, check: Callable[[Any], None], config: dict[str, Any] | None = None) -> None:
    """Run ``check(root)`` against a ``Lender`` served with ``config``: by a connect_thread
    peer ("threaded") or an aio.Server reached with connect() ("aio")."""
    if driver == "threaded":
        with rpc_service.connect_thread(remote_service=Lender, remote_config=config) as conn:
            check(conn.root)
        return

    async def main() -> None:
        async with aio.Server(Lender, protocol_config=config) as server:
            await server.start()

            def client() -> None:
                with rpc_service.connect("127.0.0.1", server.port) as conn:
                    check(conn.root)

            await asyncio.to_thread(client)

    asyncio.run(main())


@pytest.mark.parametrize("driver", ["threaded", "aio"])
def test_a_tiny_request_cannot_make_a_lent_object_build_something_huge(driver: str) -> None:
    """Regression: the safe special methods ran with any operand, so one small request could
    make the serving side build gigabytes ([1, 2, 3] * 10**9, format(obj, "999999999"),
    n << 10**12). Refused past max_frame_size items, characters or bits; small ones work."""

    def check(root: Any) -> None:
        items, text, number = root.items(), root.text(), root.number()
        number_big, fraction = root.number(10**10), root.fraction()
        for huge in (lambda: items * 10**9, lambda: 10**9 * items, lambda: format(text, ">999999999"), lambda: format(text, ".99999999999"), lambda: format(text, ">" + "0" * 70 + "999999999"), lambda: number << 10**12, lambda: number ** 10**10, lambda: pow(number, 10**10), lambda: 7 ** number_big, lambda: fraction ** 10**10):
            with pytest.raises(ValueError, match="max_frame_size"):
                huge()
        assert list(items * 2) == [1, 2, 3, 1, 2, 3] and format(text, ">5") == "  abc" and number << 2 == 12
        assert number**3 == 27 and 2**number == 8 and pow(number, 10**10, 7) == pow(3, 10**10, 7) and str(fraction**2) == "1/4"

    _check_a_lender(driver, check)


class _Index:
    """A client-side object a lent list could be repeated by: its __index__ answers late."""

    def __index__(self) -> int:
        return 25_000_000


@pytest.mark.parametrize("driver", ["threaded", "aio"])
def test_joins_and_repeats_count_the_bytes_they_build_and_take_ints_only(driver: str) -> None:
    """Regression: `r = r + r` was not checked (24 tiny requests built a 67M-item list on the
    serving side), `lent_list * obj` with a peer's object answering __index__ was not either
    (800 MB from 135 bytes), and a list's items were counted as bytes although each is an
    8-byte pointer. Joins and repeats refuse past max_frame_size bytes (a list item: 8), and
    a builtin sequence is repeated by an int only."""
    config = {"max_frame_size": 1 << 20}

    def check(root: Any) -> None:
        items = root.items()
        grown = items
        with pytest.raises(ValueError, match="max_frame_size"):
            for _ in range(40):  # bounded: 3 * 2**40 items if nothing refused
                grown = grown + grown
        assert 1 << 16 <= len(grown) * 8 <= 1 << 20  # (the last join allowed)
        with pytest.raises(ValueError, match="max_frame_size"):
            items * (1 << 16)  # 196 608 pointers: 1.5 MiB
        with pytest.raises(TypeError, match="repeated by an int only"):
            items * _Index()
        assert list(items * 3) == [1, 2, 3] * 3 and list(items + items) == [1, 2, 3] * 2
        assert len(items * 40_000) == 120_000  # 0.9 MiB
        text = root.text()
        assert len(text * 300_000) == 900_000  # characters: a byte each
        del grown

    _check_a_lender(driver, check, config)
