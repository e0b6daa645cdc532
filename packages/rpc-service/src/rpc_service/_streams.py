"""Streams: the byte pipes connections run over (sockets, OS pipes, subprocess stdio).

Owns the I/O boundary: reading into caller-provided buffers with an optional timeout,
writing lists of buffers without concatenating them (``sendmsg``/``writev`` on
memoryviews, advancing past partial writes instead of re-slicing each chunk), and closing.
Sockets fall back to ``select()`` and one ``sendall`` per buffer where the platform lacks
``poll()`` or ``sendmsg`` (Windows); pipes need POSIX (``poll``/``select`` on pipes, ``readv``).
``OSError`` is translated into :class:`ConnectionClosedError` here (a write that makes no
progress for the write timeout too); read timeouts into the builtin :class:`TimeoutError`.
Streams know nothing about frames.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Callable, Final, Protocol, Sequence

from rpc_protocol import Buffer

from ._errors import ConnectionClosedError, ConnectionFailedError

__all__ = ["Stream", "SocketStream", "PipeStream", "SubprocessStream", "check_port"]

_IOV_MAX = 1024
_JOIN_LIMIT = 8192  # buffers of at most this many bytes in all are joined, not sent vectored


class Stream(Protocol):
    """What a connection needs from its transport."""

    @property
    def closed(self) -> bool: ...

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        """Read at least one byte into ``buffer``; 0 means end of stream. TimeoutError on timeout."""
        ...

    def write(self, buffers: Sequence[Buffer]) -> None:
        """Write every buffer, in order, completely."""
        ...

    def close(self) -> None: ...

    def fileno(self) -> int: ...


def _advance(views: list[memoryview], sent: int) -> list[memoryview]:
    """Drop ``sent`` bytes from the front of ``views`` (slicing at most one view)."""
    index = 0
    while index < len(views) and sent >= len(views[index]):
        sent -= len(views[index])
        index += 1
    rest = views[index:]
    if sent:
        rest[0] = rest[0][sent:]
    return rest


_LONGEST_POLL: Final = 86400.0


class _PollingReader:
    """Waits for readability with poll() so the descriptor itself can stay blocking; with
    select() where the platform has no poll() (Windows: sockets only)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll() if hasattr(select, "poll") else None
        if self._poll is not None:
            self._poll.register(fd, select.POLLIN | select.POLLPRI)

    def wait(self, timeout: float | None) -> None:
        if timeout is None:
            return
        while True:  # (in turns of at most _LONGEST_POLL: poll() takes an int of milliseconds)
            turn = timeout if timeout < _LONGEST_POLL else _LONGEST_POLL
            if self._poll is not None:
                ready = bool(self._poll.poll(max(0, int(turn * 1000 + 0.999))))
            else:
                ready = bool(select.select([self._fd], [], [], max(0.0, turn))[0])
            if ready:
                return
            timeout -= turn
            if timeout <= 0:
                raise TimeoutError("timed out waiting for data")


# Linux bounds a blocking recv() by SO_RCVTIMEO (a struct timeval of two longs): one system
# call per read instead of poll() then recv(). Shorter waits (down to "don't wait") use poll().
_KERNEL_TIMEOUTS: Final = sys.platform.startswith("linux")
_MIN_KERNEL_TIMEOUT: Final = 0.01
#: An SO_RCVTIMEO this long is kept for any longer wait (the read then wakes up that often
#: and waits for the rest): a thread that alternates short and long waits (a server's
#: serving loop, which parks quiet clients, and a callback's reply) sets no option per read.
_KEPT_TIMEOUT: Final = 0.1
_TIMEVAL: Final = struct.Struct("@ll")


#: The SO_RCVTIMEO a listener passes on to the sockets it accepts (see :func:`prepare_listener`):
#: what a server's serving loop keeps anyway (3/4 of ThreadedServer's 0.2 s PARK_AFTER).
_LISTENER_READ_TIMEOUT: Final = 0.15


class Inherited:
    """The options a TCP socket accepted from a listener :func:`prepare_listener` set up
    already has (Linux copies a listener's options to the sockets it accepts): the socket is
    blocking, has TCP_NODELAY, and the write timeout and SO_RCVTIMEO below."""

    __slots__ = ("write_timeout", "read_timeout")

    def __init__(self, write_timeout: float | None, read_timeout: float) -> None:
        self.write_timeout = write_timeout
        self.read_timeout = read_timeout


def prepare_listener(listener: socket.socket, write_timeout: float | None) -> Inherited | None:
    """Set on a blocking TCP ``listener`` the options each accepted socket would otherwise
    set for itself (three system calls per connection saved); None where accepted sockets
    do not inherit them (not Linux, not TCP) or the options cannot be set.

    The listener's SO_RCVTIMEO also bounds its own ``accept()``, which then fails with
    BlockingIOError every ``_LISTENER_READ_TIMEOUT`` seconds while no client comes: the
    accept loop goes round again.
    """
    if not _KERNEL_TIMEOUTS or listener.family not in (socket.AF_INET, socket.AF_INET6) or listener.gettimeout() is not None:
        return None
    try:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(write_timeout))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(_LISTENER_READ_TIMEOUT))
    except OSError:
        return None
    return Inherited(write_timeout, _LISTENER_READ_TIMEOUT)


def reset_inherited_timeouts(sock: socket.socket) -> None:
    """Undo the SO_RCVTIMEO and SO_SNDTIMEO a socket inherited from its listener (for code
    that does not expect them: an authenticator, the channel or stream it returns)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(None))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(None))


def _timeval(seconds: float | None) -> bytes:
    """SO_SNDTIMEO/SO_RCVTIMEO's value for ``seconds`` (None: no timeout)."""
    if seconds is None:
        return _TIMEVAL.pack(0, 0)
    whole = int(seconds)
    return _TIMEVAL.pack(whole, max(int((seconds - whole) * 1e6), 0 if whole else 1))


class SocketStream:
    """A connected socket (TCP with TCP_NODELAY, unix, or a socketpair end).

    ``inherited``: ``sock`` was accepted from a listener set up by :func:`prepare_listener`,
    so it has those options already (none is set again).
    """

    def __init__(self, sock: socket.socket, *, inherited: Inherited | None = None) -> None:
        self._armed: float | None = None  # the SO_RCVTIMEO set, None: none
        self._listener_armed: float | None = None  # the SO_RCVTIMEO inherited, while it is armed
        self._write_timeout: float | None = None
        self._write_timeout_set = False  # whether SO_SNDTIMEO is known to match _write_timeout
        if inherited is None:
            sock.setblocking(True)
            try:  # (asked of every stream rather than after its family and type: cheaper for TCP)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not TCP (a unix socket)
        else:
            if sock.gettimeout() is not None:  # (accepted under a socket.setdefaulttimeout())
                sock.setblocking(True)
            self._armed = self._listener_armed = inherited.read_timeout
            self._write_timeout = inherited.write_timeout
            self._write_timeout_set = True
        self.sock = sock
        self._poller: _PollingReader | None = None  # made on the first wait that needs it
        self._pending: Callable[[], int] | None = getattr(sock, "pending", None)
        self._vectored = getattr(sock, "sendmsg", None) is not None  # (Windows has no sendmsg)
        self._kernel_timeouts = _KERNEL_TIMEOUTS and self._pending is None  # (TLS buffers bytes of its own)
        self._closed = False
        self._close_lock = threading.Lock()

    def _wait_readable(self, timeout: float) -> None:
        poller = self._poller
        if poller is None:
            fd = self.sock.fileno()
            if fd < 0:  # (closed by another thread since read_into looked)
                raise ConnectionClosedError("the stream is closed")
            poller = self._poller = _PollingReader(fd)
        poller.wait(timeout)

    def drop_listener_read_timeout(self) -> None:
        """Take off the short read timeout inherited from the listener (see
        :func:`prepare_listener`) if it is still armed: for a serving loop that waits long or
        without end, which it would otherwise wake every 0.15 s."""
        if self._listener_armed is not None and self._armed == self._listener_armed:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(None))
            except OSError:
                return  # closed meanwhile: no more reads
            self._armed = None
        self._listener_armed = None

    def __repr__(self) -> str:
        try:
            peer = self.sock.getpeername()
        except OSError:
            peer = "?"
        return f"<SocketStream {peer}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self.sock.fileno()

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        if self._closed:
            raise ConnectionClosedError("the stream is closed")
        try:
            if self._kernel_timeouts and (timeout is None or timeout >= _MIN_KERNEL_TIMEOUT):
                armed = self._armed
                if timeout is None or (armed is not None and (armed >= timeout / 2 or armed >= _KEPT_TIMEOUT) and armed <= timeout):
                    try:  # (the commonest read: no option to change; _recv_bounded's first turn, inlined)
                        return self.sock.recv_into(buffer)
                    except BlockingIOError:  # SO_RCVTIMEO expired (after `armed` seconds): wait for the rest
                        if timeout is not None and armed is not None:
                            timeout -= armed
                            if timeout <= 0:
                                raise TimeoutError("timed out waiting for data") from None
                return self._recv_bounded(buffer, timeout)
            if timeout is not None and not (self._pending and self._pending()):  # TLS: decrypted bytes poll() can't see
                self._wait_readable(timeout)
            return self.sock.recv_into(buffer)
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectionClosedError(f"connection lost: {exc}") from exc

    def _recv_bounded(self, buffer: memoryview, timeout: float | None) -> int:
        """recv_into bounded by SO_RCVTIMEO. The option is set at 3/4 of the wait allowed
        and kept while it is no longer than the wait and at least half of it or
        ``_KEPT_TIMEOUT`` (so a steady timeout costs no extra system call); when it expires
        first, the rest is waited for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if timeout is not None:
                armed = self._armed
                if armed is None or armed > timeout or (armed < timeout / 2 and armed < _KEPT_TIMEOUT):
                    if timeout < _MIN_KERNEL_TIMEOUT:
                        self._wait_readable(timeout)
                        return self.sock.recv_into(buffer)
                    armed = self._armed = timeout * 0.75
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(armed))
            try:
                return self.sock.recv_into(buffer)
            except BlockingIOError:  # SO_RCVTIMEO expired (a blocking socket never says EAGAIN otherwise)
                if deadline is not None:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        raise TimeoutError("timed out waiting for data") from None

    def set_write_timeout(self, seconds: float | None) -> None:
        """Fail a write that makes no progress for ``seconds`` (None: wait forever), with
        :class:`ConnectionClosedError`: a peer that stops reading cannot block a writer
        forever. Kernel-enforced (SO_SNDTIMEO): it costs nothing per write."""
        if self._write_timeout_set and seconds == self._write_timeout:
            return  # (set already: inherited from the listener, or by an earlier call)
        self._write_timeout = seconds
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(seconds))
        except OSError:
            self._write_timeout_set = False  # not supported here: writes wait as long as they must
        else:
            self._write_timeout_set = True

    def write(self, buffers: Sequence[Buffer]) -> None:
        if self._closed:
            raise ConnectionClosedError("the stream is closed")
        try:
            if len(buffers) == 1:
                self.sock.sendall(buffers[0])
                return
            if sum(map(len, buffers)) <= _JOIN_LIMIT:  # small frames (a reply after a release): one copy is cheaper
                self.sock.sendall(b"".join(buffers))
                return
            views = [memoryview(buf) for buf in buffers]
            if not self._vectored:  # one sendall per buffer: more system calls, still no copy
                for view in views:
                    self.sock.sendall(view)
                return
            while views:
                sent = self.sock.sendmsg(views[:_IOV_MAX])
                views = _advance(views, sent)
        except (BlockingIOError, TimeoutError) as exc:  # SO_SNDTIMEO expired (TLS: SSLWantWriteError is an OSError too)
            raise ConnectionClosedError(f"write timed out: the peer read nothing for {self._write_timeout} s") from exc
        except OSError as exc:
            raise ConnectionClosedError(f"connection lost: {exc}") from exc

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class PipeStream:
    """A pair of OS pipe descriptors: one read from, one written to."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._poller = _PollingReader(read_fd)
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self.read_fd

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        if self._closed:
            raise ConnectionClosedError("the stream is closed")
        try:
            self._poller.wait(timeout)
            return os.readv(self.read_fd, [buffer])
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectionClosedError(f"pipe closed: {exc}") from exc

    def write(self, buffers: Sequence[Buffer]) -> None:
        if self._closed:
            raise ConnectionClosedError("the stream is closed")
        views = [memoryview(buf) for buf in buffers]
        try:
            while views:
                written = os.writev(self.write_fd, views[:_IOV_MAX])
                views = _advance(views, written)
        except OSError as exc:
            raise ConnectionClosedError(f"pipe closed: {exc}") from exc

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


class SubprocessStream(PipeStream):
    """The stdio of a child process; closing it closes the pipes and reaps the child."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None and process.stdin is not None
        super().__init__(process.stdout.fileno(), process.stdin.fileno())
        self.process = process

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        assert self.process.stdout is not None and self.process.stdin is not None
        # The pipe objects own read_fd/write_fd: close each descriptor exactly once, through
        # them (closing the fds here as well double-closed them: EBADF, or worse, closing a
        # descriptor another thread had just been given). stdin first: EOF lets a
        # well-behaved child exit on its own.
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def check_port(port: object, *, listening: bool = False) -> int:
    """``port``, checked before any socket sees it (an out-of-range port is otherwise
    wrapped round or misreported as a refused connection): an int from 1 (0 too when
    ``listening``: any free port) to 65535. TypeError for another type; out of range,
    ValueError for a server, ConnectionFailedError (an RPCError) for a connect."""
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    low = 0 if listening else 1
    if not low <= port <= 65535:
        error = ValueError if listening else ConnectionFailedError
        raise error(f"port must be between {low} and 65535, not {port}")
    return port
