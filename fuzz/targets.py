"""Fuzz targets: untrusted bytes into the receive path, at three depths.

Each target takes one ``bytes`` input and returns normally when the library behaved: decoded
the input, or rejected it with the protocol's own error (``RemoteProtocolError``, which for a
server means "drop this client"). Anything else escaping -- ``IndexError``, ``struct.error``,
``RecursionError``, ``MemoryError``, ``AssertionError``, a ``LocalProtocolError`` from our own
state machine, a connection left half-open -- is a bug, and propagates so the fuzzer reports
it. The targets are deterministic (no sockets, no threads, no clocks that matter), so both
atheris (``fuzz/fuzz_*.py``) and hypothesis (``tests/adversarial/test_fuzz.py``) drive them.

- :func:`value_target`: ``rpc_protocol.ValueDecoder.decode`` (the value codec);
- :func:`frames_target`: ``rpc_protocol.Connection.receive_data`` after a valid handshake,
  with requests and a ping of ours in flight (so replies and pongs can match), the input split
  into chunks at points the input chooses; or from the very first byte;
- :func:`service_target`: a whole ``rpc_service.Connection`` (box/unbox hooks, dispatch,
  exposure rules, replies) serving :class:`FuzzService` over an in-memory stream that carries
  a valid client handshake followed by the input, until end of stream.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any, Iterator, Sequence

import rpc_protocol as wire
from rpc_service import ConnectionClosedError, Service
from rpc_service._connection import Connection  # the class the servers use

__all__ = ["value_target", "frames_target", "service_target", "client_prologue", "FuzzService", "MemoryStream"]

SMALL_LIMITS = wire.CodecLimits(max_depth=8, max_items=64)


def _joined(buffers: Sequence[wire.Buffer]) -> bytes:
    return b"".join(bytes(buf) for buf in buffers)


def _chunks(data: bytes, sizes: bytes) -> Iterator[bytes]:
    """``data`` in chunks whose sizes cycle through ``sizes`` (each byte + 1), so the input
    decides how the stream is split (framing must not depend on it)."""
    pos = 0
    for size in itertools.cycle(sizes or b"\xff"):
        if pos >= len(data):
            return
        yield data[pos : pos + size + 1]
        pos += size + 1


# -- the value codec -----------------------------------------------------------------------------


def _unbox(ref: wire.Ref | wire.BackRef) -> object:
    """An unbox hook like the service layer's: only object #1 is lent; refs need a type."""
    if isinstance(ref, wire.BackRef) and ref.oid != 1:
        raise wire.RemoteProtocolError(f"object #{ref.oid} is not lent")
    return ref


def value_target(data: bytes) -> None:
    """Decode ``data`` as one value, with default and with small limits."""
    for decoder in (wire.ValueDecoder(), wire.ValueDecoder(_unbox, SMALL_LIMITS)):
        try:
            decoder.decode(data)
        except wire.RemoteProtocolError:
            pass


# -- the sans-I/O connection ------------------------------------------------------------------------


def _open_pair(config: wire.ProtocolConfig) -> tuple[wire.Connection, wire.Connection]:
    """``(peer, us)`` after a complete handshake; ``us`` has requests #1-#3 and ping #4 in flight."""
    peer, us = wire.Connection(), wire.Connection(config, unbox=_unbox)
    to_us = _joined(peer.send(wire.Preface()))
    to_peer = _joined(us.send(wire.Preface()))
    us.receive_data(to_us)
    peer.receive_data(to_peer)
    peer.receive_data(_joined(us.send(wire.Hello(services=("US",), root=wire.Ref(1, 1, ("m", "Root"))))))
    us.receive_data(_joined(peer.send(wire.Hello(services=("PEER",)))))
    assert us.state is wire.State.OPEN
    for seq in (1, 2, 3):
        peer.receive_data(_joined(us.send(wire.Request(seq, wire.Op.CALL, wire.BackRef(0)))))
    peer.receive_data(_joined(us.send(wire.Ping(4, b"ping"))))
    return peer, us


def _feed(conn: wire.Connection, chunks: Iterator[bytes]) -> None:
    """Feed chunks until rejected; after a rejection the connection must stay failed."""
    for chunk in chunks:
        try:
            conn.receive_data(chunk)
        except wire.RemoteProtocolError:
            if conn.state is not wire.State.FAILED:
                raise AssertionError(f"rejected bytes left the connection in state {conn.state}") from None
            try:
                conn.send(wire.Close())
            except wire.LocalProtocolError:
                return
            raise AssertionError("a failed connection still sends")
    try:
        conn.receive_data(b"")  # end of stream: CLOSED between frames, an error inside one
    except wire.RemoteProtocolError:
        pass


def frames_target(data: bytes) -> None:
    """Byte 0: mode (bit 0: from the first byte instead of after the handshake; bit 1: small
    limits); byte 1: how many split sizes follow; then the sizes; then the stream."""
    if len(data) < 2:
        return
    mode, nsizes = data[0], data[1] % 8
    sizes, stream = data[2 : 2 + nsizes], data[2 + nsizes :]
    config = wire.ProtocolConfig(max_frame_size=1024, max_pending=4, limits=SMALL_LIMITS) if mode & 2 else wire.ProtocolConfig()
    if mode & 1:
        conn = wire.Connection(config, unbox=_unbox)
        if mode & 4:
            conn.send(wire.Preface())
    else:
        _, conn = _open_pair(config)
    _feed(conn, _chunks(stream, sizes))


# -- the service layer ---------------------------------------------------------------------------------


class MemoryStream:
    """A :class:`rpc_service.Stream` over bytes: reads come from ``chunks``, then end of stream;
    writes are kept (``written``) for inspection."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self.closed = False
        self.written = 0

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        if self.closed:
            raise ConnectionClosedError("the stream is closed")
        if not self._pending:
            self._pending = next(self._chunks, b"")
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def write(self, buffers: Sequence[wire.Buffer]) -> None:
        if self.closed:
            raise ConnectionClosedError("the stream is closed")
        self.written += sum(len(buf) for buf in buffers)

    def close(self) -> None:
        self.closed = True

    def fileno(self) -> int:
        return -1


class Thing:
    """A plain object the service lends."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.secret = "secret"

    def exposed_get_name(self) -> str:
        return self.name


class FuzzService(Service):
    """Fast, side-effect-free methods covering every kind of value and operation."""

    exposed_Thing = Thing

    def exposed_echo(self, *args: Any, **kwargs: Any) -> Any:
        return args[0] if len(args) == 1 and not kwargs else (args, kwargs)

    def exposed_make(self, name: Any) -> Thing:
        return Thing(str(name)[:20])

    def exposed_numbers(self) -> list[int]:
        return list(range(10))

    def exposed_mapping(self) -> dict[str, int]:
        return {"a": 1, "b": 2}

    def exposed_count(self) -> Iterator[int]:
        return itertools.count()

    def exposed_call(self, callback: Any, *args: Any) -> Any:
        return callback(*args)

    def exposed_fail(self, *args: Any) -> None:
        raise ValueError(*args)


ROOT_DESCRIPTOR = ("fuzz", "FuzzService", ("call", "echo", "fail", "make", "numbers"), (), "")


def client_prologue() -> tuple[wire.Connection, bytes]:
    """A client state machine that completed a handshake with the service, and the bytes it
    sent doing so (its preface and Hello): the start of every :func:`service_target` stream."""
    client, server = wire.Connection(), wire.Connection()
    sent = _joined(client.send(wire.Preface()))
    client.receive_data(_joined(server.send(wire.Preface())))
    server.receive_data(sent)
    client.receive_data(_joined(server.send(wire.Hello(services=("FUZZ",), root=wire.Ref(1, 1, ROOT_DESCRIPTOR)))))
    sent += _joined(client.send(wire.Hello(services=("CLIENT",), root=wire.Ref(1, 1, ("client", "Client", ("ping",), ("__call__",), "")))))
    assert client.state is wire.State.OPEN
    return client, sent


_PROLOGUE = client_prologue()[1]
_CONFIG = {"sync_request_timeout": 5.0, "handshake_timeout": 5.0, "max_pending_requests": 8, "iter_batch": 4}


def service_target(data: bytes) -> None:
    """Byte 0: how many split sizes follow; then the sizes; then what the client sends after
    its handshake. The server side must serve it and end with the connection closed, having
    raised nothing but the protocol's error (a dropped client) or end of stream."""
    if not data:
        return
    nsizes = data[0] % 8
    sizes, stream = data[1 : 1 + nsizes], data[1 + nsizes :]
    memory = MemoryStream(_chunks(_PROLOGUE + stream, sizes))
    conn = Connection(FuzzService(), memory, _CONFIG)
    try:
        conn._handshake()
        conn.serve_all()
    except (wire.RemoteProtocolError, ConnectionClosedError):
        pass
    finally:
        conn.close()
    if not (conn.closed and memory.closed):
        raise AssertionError("the connection was left open")
    if conn._boxer.lent:
        raise AssertionError(f"{conn._boxer.lent} objects still lent after the connection closed")


def encode_requests(client: wire.Connection, requests: Sequence[tuple[int, object, tuple[Any, ...], dict[str, Any], bool]]) -> bytes:
    """The bytes of well-formed requests ``(op, target, args, kwargs, by_value)`` from ``client``
    (values it cannot encode are skipped): seeds for the fuzzers to corrupt."""
    out = b""
    for op, target, args, kwargs, by_value in requests:
        try:
            out += _joined(client.send(wire.Request(client.next_seq(), wire.Op(op), target, args, kwargs, by_value)))
        except (wire.EncodeError, wire.LocalProtocolError, ValueError):
            continue
    return out


def seeds() -> list[bytes]:
    """A small corpus of valid inputs for each target, to start the fuzzers from."""
    root = wire.BackRef(1)
    client, _ = client_prologue()
    calls = encode_requests(
        client,
        [
            (wire.Op.CALLATTR, root, ("echo", 1, "two", b"3", (4.0, None), frozenset({5})), {"k": slice(1, 2)}, True),
            (wire.Op.CALLATTR, root, ("make", "x"), {}, False),
            (wire.Op.CALLATTR, root, ("numbers",), {}, True),
            (wire.Op.GETATTR, root, ("echo",), {}, False),
            (wire.Op.DIR, root, (), {}, False),
            (wire.Op.INSPECT, root, (), {}, False),
            (wire.Op.CALLATTR, root, ("call", wire.Ref(1, 1)), {}, False),
            (wire.Op.CALLATTR, root, ("fail", "boom"), {}, False),
        ],
    )
    values = [
        _joined(wire.ValueEncoder(containers_by_value=True).encode(value))
        for value in [None, 1, -(2**70), 1.5, "é", b"x", (1, (2,)), frozenset({1, "a"}), [1, {"a": {2}}], slice(None)]
    ]
    frames = struct.pack("<BB", 0, 3) + b"\x10\x40\xff" + calls
    return [*values, frames, struct.pack("<B", 2) + b"\x05\x20" + calls]
