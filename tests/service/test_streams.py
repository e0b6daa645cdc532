"""Streams: sockets, pipes and subprocess stdio under the connections.

Unit tests of ``SocketStream``/``PipeStream``/``SubprocessStream`` (timeouts, end of
stream, closing, OSError translation, vectored writes past ``IOV_MAX`` and past partial
sends), then whole connections over TCP, unix sockets and pipes: TCP_NODELAY on both ends,
8 MiB payloads, and several large buffers written in one vectored write without being
joined first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import pytest

import rpc_service
from rpc_protocol import Buffer
from rpc_service import ConnectionClosedError, Connection, PipeStream, SocketStream, SubprocessStream
from rpc_service._streams import _advance  # private helper, tested directly below

from .stdio_child import PeerService

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

MiB = 1024 * 1024


# -- helpers ---------------------------------------------------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of loopback TCP sockets (client, server)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2], timeout=5)
        server, _ = listener.accept()
    client.settimeout(None)
    return client, server


def read_all(read: Callable[[memoryview, float | None], int], total: int, timeout: float = 10.0) -> bytes:
    """Read exactly ``total`` bytes through a stream-style ``read_into`` (bounded in time)."""
    out = bytearray()
    chunk = bytearray(256 * 1024)
    view = memoryview(chunk)
    deadline = time.monotonic() + timeout
    while len(out) < total:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(out)} of {total} bytes arrived"
        n = read(view, remaining)
        assert n, f"end of stream after {len(out)} of {total} bytes"
        out += view[:n]
    return bytes(out)


class Reader(threading.Thread):
    """Drains ``total`` bytes from a read function on a thread (so a writer can block)."""

    def __init__(self, read: Callable[[memoryview, float | None], int], total: int, pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self._read = read
        self._total = total
        self._pause = pause
        self.data = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self._pause:
                time.sleep(self._pause)  # let the writer fill the kernel buffers first
            self.data = read_all(self._read, self._total)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def result(self) -> bytes:
        self.join(timeout=15)
        assert not self.is_alive(), "the reader did not finish"
        if self.error is not None:
            raise self.error
        return self.data


def sock_reader(sock: socket.socket) -> Callable[[memoryview, float | None], int]:
    def read(view: memoryview, timeout: float | None) -> int:
        sock.settimeout(timeout)
        return sock.recv_into(view)

    return read


def fd_reader(fd: int) -> Callable[[memoryview, float | None], int]:
    def read(view: memoryview, timeout: float | None) -> int:
        return os.readv(fd, [view])

    return read


def distinct_chunks(count: int, size: int) -> list[bytes]:
    """``count`` buffers whose content depends on their index (so reordering shows)."""
    return [bytes([index % 251]) * size + index.to_bytes(4, "big") for index in range(count)]


# -- SocketStream ------------------------------------------------------------------------


def test_socket_stream_sets_nodelay_on_tcp() -> None:
    client, server = tcp_pair()
    with client, server:
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        stream = SocketStream(client)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert stream.sock is client
        assert stream.fileno() == client.fileno()
        assert "127.0.0.1" in repr(stream)
        stream.close()


def test_socket_stream_accepts_a_unix_socketpair() -> None:
    left, right = socket.socketpair()
    a, b = SocketStream(left), SocketStream(right)
    try:
        a.write([b"hello ", b"world"])
        assert read_all(b.read_into, 11) == b"hello world"
    finally:
        a.close()
        b.close()


def test_socket_stream_read_timeout_raises_builtin_timeout_error() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(left)
    try:
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            stream.read_into(memoryview(bytearray(10)), 0.05)
        assert not isinstance(info.value, ConnectionClosedError)
        assert time.monotonic() - start < 2
        assert not stream.closed  # a timeout does not end the stream
        right.sendall(b"x")
        assert stream.read_into(memoryview(bytearray(10)), 1.0) == 1
    finally:
        stream.close()
        right.close()


@pytest.mark.parametrize("timeouts", [(0.2, 0.2, 0.2), (1.0, 0.2, 0.05), (0.05, 1.0, 0.3)])
def test_socket_stream_read_timeouts_hold_whatever_came_before(timeouts: tuple[float, ...]) -> None:
    """Each read waits about its own timeout, never much less or more, whatever the previous
    reads' timeouts were (on Linux a read is bounded by SO_RCVTIMEO, set only when needed)."""
    left, right = socket.socketpair()
    stream = SocketStream(left)
    try:
        for timeout in timeouts:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                stream.read_into(memoryview(bytearray(4)), timeout)
            assert timeout - 0.01 <= time.monotonic() - start < timeout + 1.0
    finally:
        stream.close()
        right.close()


def test_socket_stream_read_gets_data_that_comes_after_the_kernel_timeout_but_in_time() -> None:
    """A read whose SO_RCVTIMEO (set by an earlier read, 3/4 of the wait) expires before
    the data goes on waiting for the rest of its own timeout (regression: the read that
    keeps the option set takes a shorter way)."""
    left, right = socket.socketpair()
    stream = SocketStream(left)
    try:
        right.sendall(b"now!")
        assert stream.read_into(memoryview(bytearray(4)), 2.0) == 4  # sets the option (1.5 s)
        timer = threading.Timer(1.75, right.sendall, (b"late",))  # after 1.5 s, well before 2 s
        timer.start()
        start = time.monotonic()
        buf = bytearray(4)
        assert stream.read_into(memoryview(buf), 2.0) == 4
        assert bytes(buf) == b"late" and time.monotonic() - start >= 1.7
        timer.join(5)
    finally:
        stream.close()
        right.close()


def test_socket_stream_read_without_timeout_outlasts_an_earlier_timeout() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(left)
    try:
        with pytest.raises(TimeoutError):
            stream.read_into(memoryview(bytearray(4)), 0.05)
        timer = threading.Timer(0.3, right.sendall, (b"late",))
        timer.start()
        start = time.monotonic()
        assert stream.read_into(memoryview(bytearray(4)), None) == 4  # not a timeout after 0.05 s
        assert time.monotonic() - start >= 0.25
        timer.join(5)
    finally:
        stream.close()
        right.close()


def test_socket_stream_reads_zero_at_end_of_stream() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(left)
    right.sendall(b"last")
    right.close()
    buf = bytearray(16)
    assert stream.read_into(memoryview(buf), 1.0) == 4
    assert bytes(buf[:4]) == b"last"
    assert stream.read_into(memoryview(buf), 1.0) == 0
    stream.close()


def test_socket_stream_close_is_idempotent_and_later_io_raises() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(left)
    assert not stream.closed
    stream.close()
    stream.close()
    assert stream.closed
    assert left.fileno() == -1
    with pytest.raises(ConnectionClosedError):
        stream.read_into(memoryview(bytearray(4)), 0.1)
    with pytest.raises(ConnectionClosedError):
        stream.write([b"x"])
    right.close()


def test_socket_stream_close_wakes_a_blocked_reader() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(left)
    outcome: list[object] = []

    def block() -> None:
        try:
            outcome.append(stream.read_into(memoryview(bytearray(4)), None))
        except ConnectionClosedError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=block, daemon=True)
    thread.start()
    time.sleep(0.1)  # let it block in recv
    stream.close()
    thread.join(timeout=3)
    right.close()
    assert not thread.is_alive(), "closing the stream did not wake its reader"
    assert outcome and (outcome[0] == 0 or isinstance(outcome[0], ConnectionClosedError))


def test_socket_stream_translates_a_reset_into_connection_closed() -> None:
    client, server = tcp_pair()
    stream = SocketStream(client)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    server.close()
    with pytest.raises(ConnectionClosedError) as info:
        for _ in range(100):  # the reset is seen on the first read or within a few writes
            if stream.read_into(memoryview(bytearray(4)), 1.0) == 0:
                stream.write([b"x" * 1024, b"y"])
    assert isinstance(info.value.__cause__, OSError)
    assert "connection lost" in str(info.value)
    stream.close()


def test_socket_stream_write_more_buffers_than_iov_max() -> None:
    left, right = socket.socketpair()
    stream = SocketStream(left)
    chunks = distinct_chunks(3000, 7)  # > IOV_MAX (1024): sendmsg is called in slices
    expected = b"".join(chunks)
    reader = Reader(sock_reader(right), len(expected))
    reader.start()
    try:
        stream.write(chunks)
        assert reader.result() == expected
    finally:
        stream.close()
        right.close()


class ChoppySocket(socket.socket):
    """A real socket whose sendmsg sends at most ``limit`` bytes per call, as a kernel
    may under pressure (blocking loopback sockets rarely do it on their own)."""

    limit = 1000
    calls = 0

    def sendmsg(self, buffers: Iterable[ReadableBuffer], *args: Any) -> int:
        self.calls += 1
        room = self.limit
        chopped: list[memoryview] = []
        for buf in buffers:
            view = memoryview(buf).cast("B")
            chopped.append(view[:room])
            room -= len(chopped[-1])
            if not room:
                break
        return super().sendmsg(chopped, *args)


# (more than 8 KiB in all: smaller writes are joined and sent whole, not vectored)
@pytest.mark.parametrize("sizes", [(3000, 1, 2500, 3, 7001), (1, 2, 10_000), (999, 1, 1000, 1001, 6000), (1,) * 40 + (9000,)])
def test_socket_stream_write_resumes_after_partial_sends(sizes: tuple[int, ...]) -> None:
    """sendmsg sending part of a view (or stopping on a view boundary) must resume exactly
    where it stopped, without losing or repeating bytes."""
    left, right = socket.socketpair()
    choppy = ChoppySocket(left.family, left.type, fileno=left.detach())
    stream = SocketStream(choppy)
    chunks = [bytes([index + 1]) * size for index, size in enumerate(sizes)]
    expected = b"".join(chunks)
    reader = Reader(sock_reader(right), len(expected))
    reader.start()
    try:
        stream.write(chunks)
        assert reader.result() == expected
        assert choppy.calls >= len(expected) // ChoppySocket.limit
    finally:
        stream.close()
        right.close()


def test_advance_drops_whole_views_and_slices_at_most_one() -> None:
    views = [memoryview(b"abc"), memoryview(b"de"), memoryview(b"fghi")]
    assert [bytes(v) for v in _advance(views, 0)] == [b"abc", b"de", b"fghi"]
    assert [bytes(v) for v in _advance(views, 2)] == [b"c", b"de", b"fghi"]
    assert [bytes(v) for v in _advance(views, 3)] == [b"de", b"fghi"]
    assert [bytes(v) for v in _advance(views, 6)] == [b"ghi"]
    assert _advance(views, 9) == []
    assert [bytes(v) for v in views] == [b"abc", b"de", b"fghi"]  # the input is left alone


# -- PipeStream --------------------------------------------------------------------------


@dataclass
class Pipes:
    """Two pipes: the stream reads ``read_fd`` (fed through ``feed``) and writes ``write_fd``
    (drained through ``drain``). A test may close an end and set it to -1."""

    read_fd: int
    write_fd: int
    feed: int
    drain: int

    def close_all(self) -> None:
        for fd in (self.read_fd, self.write_fd, self.feed, self.drain):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    read_fd, feed = os.pipe()
    drain, write_fd = os.pipe()
    made = Pipes(read_fd, write_fd, feed, drain)
    yield made
    made.close_all()


def test_pipe_stream_round_trip_and_vectored_write(pipes: Pipes) -> None:
    stream = PipeStream(pipes.read_fd, pipes.write_fd)
    assert stream.fileno() == pipes.read_fd
    chunks = distinct_chunks(2500, 101)  # > IOV_MAX and > the pipe buffer: writev in slices
    expected = b"".join(chunks)
    reader = Reader(fd_reader(pipes.drain), len(expected), pause=0.05)
    reader.start()
    stream.write(chunks)
    assert reader.result() == expected
    os.write(pipes.feed, b"ping")
    assert read_all(stream.read_into, 4) == b"ping"


def test_pipe_stream_timeout_and_end_of_stream(pipes: Pipes) -> None:
    stream = PipeStream(pipes.read_fd, pipes.write_fd)
    with pytest.raises(TimeoutError):
        stream.read_into(memoryview(bytearray(4)), 0.05)
    os.close(pipes.feed)
    pipes.feed = -1
    assert stream.read_into(memoryview(bytearray(4)), 1.0) == 0


@pytest.mark.parametrize("timeout", [3e6, 1e12, float("inf")])
def test_pipe_stream_read_with_a_timeout_longer_than_poll_takes(pipes: Pipes, timeout: float) -> None:
    """Regression: a timeout past poll()'s int of milliseconds (~24.8 days) raised
    OverflowError (a pipe connection with a long sync_request_timeout could not read)."""
    stream = PipeStream(pipes.read_fd, pipes.write_fd)
    timer = threading.Timer(0.05, os.write, (pipes.feed, b"late"))
    timer.start()
    try:
        assert read_all(lambda view, _: stream.read_into(view, timeout), 4) == b"late"
    finally:
        timer.cancel()


def test_pipe_stream_write_to_a_closed_reader_raises_connection_closed(pipes: Pipes) -> None:
    os.close(pipes.drain)
    pipes.drain = -1
    stream = PipeStream(pipes.read_fd, pipes.write_fd)
    with pytest.raises(ConnectionClosedError) as info:
        stream.write([b"nobody", b"listens"])
    assert isinstance(info.value.__cause__, BrokenPipeError)


def test_pipe_stream_close_closes_both_descriptors_once(pipes: Pipes) -> None:
    stream = PipeStream(pipes.read_fd, pipes.write_fd)
    stream.close()
    stream.close()
    assert stream.closed
    for fd in (pipes.read_fd, pipes.write_fd):
        with pytest.raises(OSError):
            os.fstat(fd)
    pipes.read_fd = pipes.write_fd = -1
    with pytest.raises(ConnectionClosedError):
        stream.read_into(memoryview(bytearray(4)), 0.1)
    with pytest.raises(ConnectionClosedError):
        stream.write([b"x"])


# -- SubprocessStream ----------------------------------------------------------------------


def test_subprocess_stream_talks_to_the_child_and_reaps_it() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer, 1)"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    stream = SubprocessStream(process)
    try:
        stream.write([b"echo ", b"me"])
        assert read_all(stream.read_into, 7) == b"echo me"
    finally:
        stream.close()  # closing stdin lets the child finish on its own
    assert stream.closed
    assert process.returncode == 0
    stream.close()  # idempotent


def test_subprocess_stream_kills_a_child_that_ignores_end_of_input() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    stream = SubprocessStream(process)
    start = time.monotonic()
    stream.close()
    assert process.returncode is not None and process.returncode != 0
    assert time.monotonic() - start < 8


# -- whole connections over each transport ----------------------------------------------------


class NodelayService(PeerService):
    def exposed_server_nodelay(self) -> int:
        # ``Connection._stream`` is semi-private: the server side's socket is reached through it.
        stream = self._conn._stream
        assert isinstance(stream, SocketStream)
        return stream.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_connect_sets_tcp_nodelay_on_both_ends(no_thread_leak: None) -> None:
    with rpc_service.ThreadedServer(NodelayService) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            # ``conn._stream`` is semi-private; it is the only way to reach the client's socket.
            stream = conn._stream
            assert isinstance(stream, SocketStream)
            assert stream.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert conn.root.server_nodelay() != 0


class Peers:
    """Opens connections to ``PeerService`` over a transport and closes all at the end."""

    def __init__(self, transport: str, tmp_path: Path) -> None:
        self.transport = transport
        self._tmp_path = tmp_path
        self._server: rpc_service.Server | None = None
        self._conns: list[Connection] = []
        self._threads: list[threading.Thread] = []

    def connect(self, service: type[rpc_service.Service] = PeerService) -> Connection:
        if self.transport == "pipes":
            conn = self._pipes(service)
        else:
            if self._server is None:
                path = str(self._tmp_path / "peer.sock") if self.transport == "unix" else None
                self._server = rpc_service.ThreadedServer(service, socket_path=path)
                self._server.start_in_thread()
            if self.transport == "unix":
                assert self._server.socket_path is not None
                conn = rpc_service.unix_connect(self._server.socket_path)
            else:
                conn = rpc_service.connect("127.0.0.1", self._server.port)
        self._conns.append(conn)
        return conn

    def _pipes(self, service: type[rpc_service.Service]) -> Connection:
        to_client_r, to_client_w = os.pipe()
        to_server_r, to_server_w = os.pipe()

        def serve() -> None:
            rpc_service.connect_pipes(to_server_r, to_client_w, service).serve_all()

        thread = threading.Thread(target=serve, name="pipe-peer", daemon=True)
        thread.start()
        self._threads.append(thread)
        return rpc_service.connect_pipes(to_client_r, to_server_w)

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        if self._server is not None:
            self._server.close()
        for thread in self._threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "the pipe peer did not stop when its client closed"


@pytest.fixture(params=["tcp", "unix", "pipes"])
def peers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Peers]:
    made = Peers(request.param, tmp_path)
    yield made
    made.close()


def test_echo_8_mib_exactly(peers: Peers) -> None:
    conn = peers.connect()
    payload = os.urandom(8 * MiB)
    result = conn.root.echo(payload)
    assert type(result) is bytes
    assert len(result) == len(payload)
    assert result == payload


def test_echo_three_3_mib_buffers_in_one_value(peers: Peers) -> None:
    conn = peers.connect()
    parts = (os.urandom(3 * MiB), b"\x00" * (3 * MiB), os.urandom(3 * MiB))
    result = conn.root.echo(parts)
    assert type(result) is tuple and len(result) == 3
    for got, want in zip(result, parts):
        assert got == want


def test_many_round_trips_after_a_large_payload(peers: Peers) -> None:
    """The read buffer state after a large frame must not corrupt the frames that follow."""
    conn = peers.connect()
    assert conn.root.echo(b"a" * (5 * MiB + 17)) == b"a" * (5 * MiB + 17)
    for index in range(50):
        assert conn.root.echo(index) == index
    assert conn.root.echo(("x" * 70_000, b"y" * 70_000)) == ("x" * 70_000, b"y" * 70_000)


class RecordingStream:
    """A Stream that records the buffer lists it is asked to write, then delegates."""

    def __init__(self, inner: SocketStream) -> None:
        self.inner = inner
        self.writes: list[list[Buffer]] = []

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        return self.inner.read_into(buffer, timeout)

    def write(self, buffers: Sequence[Buffer]) -> None:
        self.writes.append(list(buffers))
        self.inner.write(buffers)

    def close(self) -> None:
        self.inner.close()

    def fileno(self) -> int:
        return self.inner.fileno()


def test_large_buffers_reach_the_socket_unjoined(no_thread_leak: None) -> None:
    """Three 3 MiB bytes objects go to the stream as separate buffers in one write (a
    vectored sendmsg over more data than the socket buffer holds), not concatenated."""
    with rpc_service.ThreadedServer(PeerService) as server:
        server.start_in_thread()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.settimeout(None)
        stream = RecordingStream(SocketStream(sock))
        with rpc_service.connect_stream(stream) as conn:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 9 * MiB
            parts = (os.urandom(3 * MiB), os.urandom(3 * MiB), os.urandom(3 * MiB))
            result = conn.root.echo(parts)
            assert result == parts
            carrying = [write for write in stream.writes if any(buf is parts[0] for buf in write)]
            assert len(carrying) == 1, "the payload was not written in a single vectored write"
            (write,) = carrying
            for part in parts:
                assert any(buf is part for buf in write), "a large part was copied instead of passed through"
            assert sum(len(memoryview(buf)) for buf in write) > 9 * MiB



def test_a_short_wait_on_a_socket_closed_underneath_says_closed() -> None:
    """Regression (review): the poller is made on the first short wait; on a socket another
    thread closed since, that raised ValueError (fd -1), not ConnectionClosedError."""
    mine, theirs = socket.socketpair()
    with theirs:
        stream = rpc_service.SocketStream(mine)
        mine.close()
        with pytest.raises(rpc_service.ConnectionClosedError):
            stream.read_into(memoryview(bytearray(16)), 0.001)
