"""Factories: the ways to open a connection (TCP, unix socket, stream, pipes, subprocess, thread).

Owns turning an address or a pair of file descriptors into a stream, and a stream into a
handshaken :class:`Connection`. Every factory takes ``service=`` (this side's service,
:class:`VoidService` by default) and ``config=``. Socket errors while connecting become
:class:`ConnectionFailedError`; a ``timeout`` bounds the connect *and* the handshake
(:class:`HandshakeTimeout`). When a factory returns, the peer's ``on_connect`` has completed
(the accepting side sends its Hello after it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from functools import lru_cache
from typing import IO, Any, Sequence

from ._config import ConfigArg, make_config
from ._connection import Connection
from ._errors import ConnectionFailedError, HandshakeTimeout
from ._service import ServiceArg, VoidService, check_service, instantiate
from ._streams import PipeStream, SocketStream, Stream, SubprocessStream, check_port

__all__ = ["connect", "open_tcp", "unix_connect", "connect_stream", "connect_pipes", "connect_subproc", "connect_thread"]



_STREAM_METHODS = ("read_into", "write", "close", "fileno")


def connect_stream(
    stream: Stream,
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    *,
    credentials: Any = None,
    timeout: float | None = None,
    connection_class: type[Connection] = Connection,
) -> Connection:
    """Run the handshake over an already-open stream and return the connection.

    ``timeout`` bounds the handshake (``handshake_timeout`` of the config at most).
    ``connection_class`` (every factory takes it) lets an upper layer return a subclass
    of :class:`Connection`, e.g. classic mode's connection with its shortcuts.
    """
    if not all(callable(getattr(stream, name, None)) for name in _STREAM_METHODS):
        hint = " (wrap a socket: SocketStream(sock))" if isinstance(stream, socket.socket) else ""
        raise TypeError(f"connect_stream() needs a Stream ({', '.join(_STREAM_METHODS)}), not {type(stream).__name__}{hint}")
    return _handshaken(stream, service, config, None if timeout is None else time.monotonic() + timeout, connection_class, credentials=credentials)


def _handshaken(
    stream: Stream,
    service: ServiceArg,
    config: ConfigArg,
    deadline: float | None,
    connection_class: type[Connection] = Connection,
    *,
    credentials: Any = None,
    accepting: bool = False,
) -> Connection:
    try:
        conn = connection_class(instantiate(service, accepting=accepting), stream, config, credentials=credentials)
    except BaseException:
        stream.close()  # e.g. a bad config: the stream is ours, as when the handshake fails
        raise
    conn._handshake(deadline, accepting=accepting)
    return conn


def connect(
    host: str,
    port: int,
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    *,
    ipv6: bool = False,
    timeout: float | None = 10.0,
    keepalive: bool = False,
    connection_class: type[Connection] = Connection,
) -> Connection:
    """Connect over TCP (``ipv6=True`` insists on IPv6; otherwise any family ``host`` resolves to).

    ``timeout`` bounds the TCP connect and the handshake together. ``keepalive=True`` turns
    on TCP keep-alive probes (SO_KEEPALIVE), so a peer that vanished without closing is
    noticed by the kernel even on an idle connection.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = open_tcp(host, port, ipv6=ipv6, timeout=timeout)  # (SocketStream makes it blocking)
    if keepalive:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return _over_socket(sock, service, config, connection_class, deadline)


def open_tcp(host: str, port: int, *, ipv6: bool = False, timeout: float | None = 10.0) -> socket.socket:
    """A connected TCP socket (its timeout still ``timeout``), or :class:`ConnectionFailedError`.

    The socket half of :func:`connect`, for transports that wrap the socket first (TLS).
    """
    check_port(port)
    try:
        family = socket.AF_INET6 if ipv6 else _literal_family(host)
        if family is None:  # a name: resolved, each address tried in turn
            return socket.create_connection((host, port), timeout=timeout)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    except OSError as exc:
        raise ConnectionFailedError(f"cannot connect to {host}:{port}: {exc}") from exc


@lru_cache(maxsize=64)
def _literal_family(host: str) -> socket.AddressFamily | None:
    """The family of an address written as one (``127.0.0.1``, ``::1``), None for a name:
    a literal is connected to without resolving it (no getaddrinfo, no IDNA codec)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError, TypeError):  # (not this family's; a NUL; not a str)
            continue
        return family
    return None


def unix_connect(
    path: str | os.PathLike[str],
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    *,
    timeout: float | None = 10.0,
    connection_class: type[Connection] = Connection,
) -> Connection:
    """Connect to a server listening on a unix socket (``path``: a str or a ``pathlib.Path``;
    ``timeout``: connect and handshake)."""
    path = os.fspath(path)
    deadline = None if timeout is None else time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ConnectionFailedError(f"cannot connect to {path}: {exc}") from exc
    sock.settimeout(None)
    return _over_socket(sock, service, config, connection_class, deadline)


def _over_socket(
    sock: socket.socket,
    service: ServiceArg,
    config: ConfigArg,
    connection_class: type[Connection] = Connection,
    deadline: float | None = None,
) -> Connection:
    if deadline is not None and deadline <= time.monotonic():
        sock.close()
        raise HandshakeTimeout("the connect took all of the timeout: no time was left for the handshake")
    stream = SocketStream(sock)
    try:
        return _handshaken(stream, service, config, deadline, connection_class)
    except BaseException:
        stream.close()
        raise


def _fd(obj: IO[bytes] | int) -> int:
    if isinstance(obj, int):
        return obj
    # Take the descriptor over from the file object: a copy the stream owns, the object
    # closed (otherwise its close or garbage collection closes the stream's fd under it).
    fd = os.dup(obj.fileno())
    obj.close()
    return fd


def connect_pipes(
    input: IO[bytes] | int,
    output: IO[bytes] | int,
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    *,
    connection_class: type[Connection] = Connection,
) -> Connection:
    """Connect over two pipes: read from ``input``, write to ``output`` (file objects or fds).

    The connection owns the descriptors from now on and closes them when it closes (file
    objects are closed at once; the connection keeps a duplicate of their descriptor).
    """
    try:
        stream = PipeStream(_fd(input), _fd(output))
    except OSError as exc:  # e.g. a closed descriptor
        raise ConnectionFailedError(f"cannot use the pipes: {exc}") from exc
    return connect_stream(stream, service, config, connection_class=connection_class)


def connect_subproc(
    args: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    *,
    connection_class: type[Connection] = Connection,
    **popen: Any,
) -> Connection:
    """Start ``args`` as a child process and connect to it over its stdin/stdout.

    ``args`` is the program and its arguments, or the program alone (a string or a path,
    as ``subprocess.Popen`` takes it); other keywords go to ``Popen``. The child must serve a
    connection on its stdio; closing the connection closes the pipes and reaps the child.
    """
    command = [args] if isinstance(args, (str, os.PathLike)) else list(args)
    if not command:
        raise ValueError("connect_subproc() needs a program to start")
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, **popen)
    except OSError as exc:
        raise ConnectionFailedError(f"cannot start {os.fspath(command[0])!r}: {exc}") from exc
    stream = SubprocessStream(process)
    try:
        return connect_stream(stream, service, config, connection_class=connection_class)
    except BaseException:
        stream.close()
        raise


def connect_thread(
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    remote_service: ServiceArg = VoidService,
    remote_config: ConfigArg = None,
    *,
    connection_class: type[Connection] = Connection,
) -> Connection:
    """An in-process pair: ``remote_service`` is served by a daemon thread over a socketpair."""
    check_service(remote_service)  # (wrong arguments for the far side fail here, not on its thread)
    remote_config = make_config(remote_config)
    ours, theirs = socket.socketpair()
    remote = SocketStream(theirs)

    def serve() -> None:
        try:
            conn = _handshaken(remote, remote_service, remote_config, None, accepting=True)
        except Exception:
            remote.close()
            return
        conn.serve_all()

    threading.Thread(target=serve, name="rpc-connect-thread", daemon=True).start()
    return _over_socket(ours, service, config, connection_class)


def serve_stdio(service: ServiceArg, config: ConfigArg = None) -> None:
    """Serve one connection over this process's stdin/stdout until it closes (the
    counterpart of :func:`connect_subproc`). Nothing else may write to stdout meanwhile."""
    read_fd, write_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # stray prints can no longer corrupt the stream
    os.close(null)
    _handshaken(PipeStream(read_fd, write_fd), service, config, None, accepting=True).serve_all()
