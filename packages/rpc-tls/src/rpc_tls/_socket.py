"""The TLS socket and stream that rpc connections run over: :class:`TLSSocket`, :class:`TLSStream`.

Owns making one ``ssl.SSLSocket`` safe for what a connection does with it: one thread
reading while others write. OpenSSL forbids concurrent calls on one SSL object, so after the
handshake a :class:`TLSSocket` switches its descriptor to non-blocking and makes every SSL
call under a lock, waiting for readiness (``poll``) *outside* the lock; timeouts and
blocking mode keep their usual meaning for callers. It also supports ``sendmsg`` (which
``SSLSocket`` refuses) so ``rpc_service.SocketStream`` can write lists of buffers, and it
owns a *companion* socket: the original accepted socket, kept open so a closing server can
shut the connection down while a handshake is still running. :class:`TLSStream` is the
stream the client side uses: reads honour their timeout exactly and see plaintext already
decrypted inside OpenSSL, and ``ssl`` errors are translated here. Nothing here builds
contexts or runs handshakes.
"""

from __future__ import annotations

import errno
import math
import select
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar, cast

from rpc_protocol import Buffer
from rpc_service import ConnectionClosedError, SocketStream

from ._errors import connection_error

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = ["TLSSocket", "TLSStream", "peer_name"]

_T = TypeVar("_T")
#: Buffers shorter than this are joined before encryption (one record instead of several).
_COALESCE = 16 * 1024
#: The most handed to one SSL_write (it must be retried whole after WANT_WRITE).
_WRITE_CHUNK = 256 * 1024


def _wait(fd: int, events: int, deadline: float | None) -> None:
    """Wait until ``fd`` is ready for ``events``; TimeoutError once ``deadline`` passes."""
    if fd < 0:
        raise OSError(errno.EBADF, "the socket is closed")
    poller = select.poll()
    poller.register(fd, events)
    while True:
        if deadline is None:
            if poller.poll():
                return
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        if poller.poll(max(1, math.ceil(remaining * 1000))):
            return


def peer_name(sock: socket.socket) -> str:
    """``host:port`` (``[host]:port`` for IPv6) of the socket's peer, for messages."""
    try:
        address = sock.getpeername()
    except OSError:
        return "the peer"
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) or "the peer"


class TLSSocket(ssl.SSLSocket):
    """An ``SSLSocket`` that one reader and several writers may use at once.

    Made by ``SSLContext.wrap_socket`` (the contexts of this package set it as their
    ``sslsocket_class``); behaves as a plain ``SSLSocket`` until :meth:`share` is called
    after the handshake.
    """

    # SSLSocket instances are made without running __init__: these are the defaults.
    _io_lock: threading.Lock | None = None
    _write_lock: threading.Lock | None = None
    _io_timeout: float | None = None
    _companion: socket.socket | None = None

    def share(self, companion: socket.socket | None = None) -> None:
        """After the handshake: guard SSL calls with a lock; close ``companion`` with this socket."""
        if self._io_lock is not None:
            return
        self._io_timeout = super().gettimeout()
        super().settimeout(0.0)
        self._companion = companion
        self._write_lock = threading.Lock()
        self._io_lock = threading.Lock()

    # -- timeouts are remembered, the descriptor stays non-blocking ---------------------------

    def settimeout(self, value: float | None) -> None:
        if self._io_lock is None:
            super().settimeout(value)
        elif value is not None and value < 0:
            raise ValueError("Timeout value out of range")
        else:
            self._io_timeout = None if value is None else float(value)

    def gettimeout(self) -> float | None:
        return super().gettimeout() if self._io_lock is None else self._io_timeout

    def setblocking(self, flag: bool) -> None:
        if self._io_lock is None:
            super().setblocking(flag)
        else:
            self._io_timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return super().getblocking() if self._io_lock is None else self._io_timeout != 0.0

    # -- every SSL call under the lock, every wait outside it ----------------------------------

    def _locked(self, op: Callable[[], _T], blocked: int, timeout: float | None) -> _T:
        lock = self._io_lock
        assert lock is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with lock:
                try:
                    return op()
                except ssl.SSLWantReadError:
                    events = select.POLLIN
                    if timeout == 0.0:
                        raise
                except ssl.SSLWantWriteError:
                    events = select.POLLOUT
                    if timeout == 0.0:
                        raise
                except BlockingIOError:  # plain I/O after shutdown() dropped the SSL object
                    events = blocked
                    if timeout == 0.0:
                        raise
            _wait(self.fileno(), events, deadline)

    def _read_once(self, nbytes: int, buffer: WriteableBuffer) -> int:
        try:
            # With a buffer, SSLSocket.read returns a count (typeshed says bytes).
            return cast(int, ssl.SSLSocket.read(self, nbytes, buffer))
        except ValueError:  # shut down by another thread: read what the plain socket has (EOF)
            return socket.socket.recv_into(self, buffer, nbytes)

    def _write_once(self, data: ReadableBuffer) -> int:
        try:
            return ssl.SSLSocket.write(self, data)
        except ValueError:  # shut down by another thread
            raise BrokenPipeError(errno.EPIPE, "the TLS connection is shut down") from None

    def read_within(self, buffer: WriteableBuffer, timeout: float | None, nbytes: int | None = None) -> int:
        """Read at most ``nbytes`` (default: the buffer's size) decrypted bytes; 0 at end of stream.

        Returns at once when OpenSSL already holds decrypted bytes, waits for the socket
        otherwise; TimeoutError after ``timeout`` seconds (None waits for ever).
        """
        if nbytes is None:
            with memoryview(buffer) as view:
                nbytes = view.nbytes
        count = nbytes
        return self._locked(lambda: self._read_once(count, buffer), select.POLLIN, timeout)

    def write_buffers(self, buffers: Iterable[ReadableBuffer], timeout: float | None = None) -> int:
        """Write every buffer, in order, completely (small ones joined); returns the byte count."""
        assert self._write_lock is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        total = 0
        with self._write_lock:
            joined = bytearray()
            for buf in buffers:
                view = memoryview(buf).cast("B")
                total += len(view)
                if len(view) < _COALESCE:
                    joined += view
                    if len(joined) >= _COALESCE:
                        self._write_view(memoryview(joined), deadline)
                        joined = bytearray()
                    continue
                if joined:
                    self._write_view(memoryview(joined), deadline)
                    joined = bytearray()
                self._write_view(view, deadline)
            if joined:
                self._write_view(memoryview(joined), deadline)
        return total

    def _write_view(self, view: memoryview, deadline: float | None) -> None:
        while view:
            chunk = view[:_WRITE_CHUNK]
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            # Without partial writes, SSL_write reports the whole chunk once it is all sent.
            sent = self._locked(lambda: self._write_once(chunk), select.POLLOUT, timeout)
            view = view[sent:]

    # -- the socket API, routed through the lock once shared ----------------------------------

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        if self._io_lock is None:
            return super().recv_into(buffer, nbytes, flags)
        if flags:
            raise ValueError("non-zero flags not allowed in calls to recv_into() on TLSSocket")
        return self.read_within(buffer, self._io_timeout, nbytes or None)

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if self._io_lock is None:
            return super().recv(buflen, flags)
        buffer = bytearray(buflen)
        count = self.recv_into(buffer, buflen, flags)
        return bytes(buffer[:count])

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
        if self._io_lock is None:
            return super().read(len, buffer)
        if buffer is not None:  # like SSLSocket.read, a count when given a buffer
            return cast(bytes, self.read_within(buffer, self._io_timeout, len))
        return self.recv(len)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        if self._io_lock is None:
            return super().send(data, flags)
        if flags:
            raise ValueError("non-zero flags not allowed in calls to send() on TLSSocket")
        return self.write_buffers([data], self._io_timeout)

    def write(self, data: ReadableBuffer) -> int:
        return self.send(data) if self._io_lock is not None else super().write(data)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        if self._io_lock is None:
            super().sendall(data, flags)
        elif flags:
            raise ValueError("non-zero flags not allowed in calls to sendall() on TLSSocket")
        else:
            self.write_buffers([data], self._io_timeout)

    def sendmsg(  # type: ignore[override]  # SSLSocket declares sendmsg unsupported; this class supports plain buffer lists
        self, buffers: Iterable[ReadableBuffer], ancdata: Iterable[Any] = (), flags: int = 0, address: Any = None
    ) -> int:
        if self._io_lock is None or ancdata or flags or address is not None:
            raise NotImplementedError("TLSSocket.sendmsg takes buffers only, after share()")
        return self.write_buffers(buffers, self._io_timeout)

    def pending(self) -> int:
        if self._io_lock is None:
            return super().pending()
        with self._io_lock:
            return super().pending()

    def unwrap(self) -> socket.socket:
        if self._io_lock is None:
            return super().unwrap()
        return self._locked(lambda: ssl.SSLSocket.unwrap(self), select.POLLIN, self._io_timeout)

    def shutdown(self, how: int) -> None:
        if self._io_lock is not None and how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._send_close_notify()
        super().shutdown(how)

    def _send_close_notify(self) -> None:
        """Best effort: tell the peer the TLS stream ends here (not a truncation)."""
        sslobj = getattr(self, "_sslobj", None)
        lock = self._io_lock
        if sslobj is None or lock is None or not lock.acquire(timeout=1.0):  # never hang a close
            return
        try:
            sslobj.shutdown()
        except (OSError, ValueError):  # nothing more to do: want-read/write, or already gone
            pass
        finally:
            lock.release()

    def close(self) -> None:
        super().close()
        companion, self._companion = self._companion, None
        if companion is not None:
            companion.close()


class TLSStream(SocketStream):
    """A :class:`rpc_service.SocketStream` over a shared :class:`TLSSocket`.

    Reads wait at most their timeout even when only part of a TLS record has arrived, and
    never wait when OpenSSL already holds decrypted bytes. TLS failures become
    :class:`TLSConnectionError` (a ``ConnectionClosedError``), socket failures
    ``ConnectionClosedError``.
    """

    def __init__(self, sock: TLSSocket, *, server_side: bool = False, sent_certificate: bool = True, peer: str | None = None) -> None:
        sock.share()
        super().__init__(sock)
        self.tls = sock
        self._server_side = server_side
        self._sent_certificate = sent_certificate
        self._peer = peer or peer_name(sock)

    def __repr__(self) -> str:
        return f"<TLSStream {self._peer} {self.tls.version() or '?'}>"

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        if self.closed:
            raise ConnectionClosedError("the stream is closed")
        try:
            return self.tls.read_within(buffer, timeout)
        except TimeoutError:
            raise
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            # timeout 0 and no whole record yet: for a Stream that is a timeout, not an error
            raise TimeoutError("no data within the timeout") from None
        except OSError as exc:
            raise self._translate(exc) from exc

    def write(self, buffers: Sequence[Buffer]) -> None:
        if self.closed:
            raise ConnectionClosedError("the stream is closed")
        try:
            self.tls.write_buffers(buffers)
        except OSError as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: OSError) -> ConnectionClosedError:
        return connection_error(exc, server_side=self._server_side, peer=self._peer, sent_certificate=self._sent_certificate)
