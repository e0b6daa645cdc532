"""The registry servers: the sockets and threads that drive a :class:`RegistryHandler`.

Owns :class:`UDPRegistryServer` (one datagram per request and per reply; it hears broadcasts;
requests are rate-limited per source and an unsigned request's reply is at most
``UDP_REPLY_FACTOR`` times its size, so the registry is no reflection amplifier) and
:class:`TCPRegistryServer` (length-prefixed messages over TCP, each client on a thread of its
own, bounded in number overall and per source address, per request and in total time), their binding defaults, their lifecycle (``start``
blocks, ``start_in_thread``, idempotent ``close`` that joins what it started) and the
translation of socket errors into log lines. Waiting is event-driven (a selector and a wake-up
socket pair), never a polling sleep. The lease table and the request policy live in
``_table`` and ``_handler``; this module must not interpret messages itself.

Binding defaults: the UDP registry binds ``0.0.0.0`` unless told otherwise, because a socket
bound to one address does not receive broadcasts, and a registry nobody on the network can
reach is useless; it says so in a warning at startup. The TCP registry follows the stack's
rule (DESIGN §6) and binds ``127.0.0.1`` unless a host is given, since its clients must be
told its address anyway.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from typing import Callable, ClassVar, TypeVar

from ._auth import KeyArg, check_key
from ._handler import RegistryHandler, RegistryLimits
from ._messages import DEFAULT_PORT, MAX_MESSAGE_SIZE, UDP_REPLY_FACTOR
from ._stream import LENGTH_PREFIX, recv_exact
from ._table import DEFAULT_PRUNING_TIMEOUT, RegistryTable

__all__ = ["RegistryServer", "TCPRegistryServer", "UDPRegistryServer"]

_DATAGRAMS_PER_WAKEUP = 64  # datagrams handled before looking at the wake-up socket again
_JOIN_TIMEOUT = 5.0
_S = TypeVar("_S", bound="RegistryServer")


class RegistryServer:
    """What the UDP and TCP registries share; use one of them.

    ``host``: the address to bind (see the module's binding defaults); ``port``: 18811 by
    default, 0 picks a free one (read it back from ``.port``); ``pruning_timeout``: seconds a
    registration lives without a refresh (180 by default, three times the clients'
    ``REREGISTER_INTERVAL``); ``allow_listing``: answer ``list`` requests; ``key``: a shared
    secret (bytes or str, at least 16 bytes) that register and unregister requests must be
    signed with; ``clock``/``wallclock``: the lease clock (monotonic) and the clock signed
    timestamps are checked against, injectable for tests; ``limits``: :class:`RegistryLimits`.
    A port out of range, or a host that does not resolve, raises ValueError.
    """

    DEFAULT_HOST: ClassVar[str] = "127.0.0.1"
    SOCKET_TYPE: ClassVar[int] = socket.SOCK_STREAM

    def __init__(
        self,
        host: str | None = None,
        port: int = DEFAULT_PORT,
        pruning_timeout: float | None = None,
        allow_listing: bool = False,
        *,
        key: KeyArg = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        limits: RegistryLimits = RegistryLimits(),
        logger: logging.Logger | None = None,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ValueError(f"port must be a whole number between 0 and 65535, not {port!r}")
        if host is not None and not isinstance(host, str):
            raise TypeError(f"host must be a host name or address string, not {host!r}")
        self.logger = logger or logging.getLogger(f"rpc_registry.{type(self).__name__}")
        self.limits = limits
        self.table = RegistryTable(
            DEFAULT_PRUNING_TIMEOUT if pruning_timeout is None else pruning_timeout,
            clock,
            max_servers=limits.max_servers,
            max_names=limits.max_names,
            max_name_length=limits.max_name_length,
        )
        self.handler = RegistryHandler(
            self.table, key=check_key(key), allow_listing=allow_listing, limits=limits, wallclock=wallclock, logger=self.logger
        )
        self.socket = socket.socket(socket.AF_INET, self.SOCKET_TYPE)
        try:
            self._bind(host or self.DEFAULT_HOST, port)
            self._wake_r, self._wake_w = socket.socketpair()
        except OSError as exc:
            self.socket.close()
            if isinstance(exc, socket.gaierror):
                where = f"{host or self.DEFAULT_HOST}:{port}"
                raise ValueError(f"cannot listen on {where}: the host does not resolve ({exc.strerror or exc})") from exc
            raise
        self.host: str = self.socket.getsockname()[0]
        self.port: int = self.socket.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._stopped = threading.Event()
        self._serving_thread: threading.Thread | None = None
        self._clients: dict[socket.socket, threading.Thread] = {}  # TCP: a thread per client
        self._per_source: dict[str, int] = {}  # TCP: connections being served per source address
        if self.host == "0.0.0.0":
            self.logger.warning(
                "%s listens on all interfaces (0.0.0.0:%d)%s; pass host= (rpc-registry serve --host) to restrict it",
                type(self).__name__,
                self.port,
                "" if self.handler.key else " without a key (key=, rpc-registry serve --key-file): any host that reaches it can register names",
            )

    @property
    def allow_listing(self) -> bool:
        return self.handler.allow_listing

    @property
    def pruning_timeout(self) -> float:
        return self.table.pruning_timeout

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port}{' closed' if self.closed else ''}>"

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _bind(self, host: str, port: int) -> None:
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Serve requests until :meth:`close` (blocks)."""
        self._claim(threading.current_thread())
        self._run()

    def start_in_thread(self) -> threading.Thread:
        """Run :meth:`start` on a daemon thread; returns at once (the socket is already bound,
        so requests sent from now on are answered)."""
        thread = threading.Thread(target=self._run, name=f"rpc-{type(self).__name__}", daemon=True)
        self._claim(thread)
        thread.start()
        return thread

    def _claim(self, thread: threading.Thread) -> None:
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("the registry server is closed")
            if self._serving_thread is not None:
                raise RuntimeError("the registry server is already running")
            self._serving_thread = thread

    def _run(self) -> None:
        self.logger.info("registry serving on %s:%d (%s)", self.host, self.port, type(self).__name__)
        try:
            self._serve()
        finally:
            with self._lock:
                self._closed.set()
            self._stop_clients()
            self._close_sockets()
            self._stopped.set()

    def close(self) -> None:
        """Stop serving, close the sockets and join the threads started (idempotent)."""
        with self._lock:
            if self._closed.is_set():
                serving = None
            else:
                self._closed.set()
                serving = self._serving_thread
                if serving is None:
                    self._stopped.set()
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if serving is None:
            if self._stopped.is_set():
                self._close_sockets()
            return
        if serving is not threading.current_thread() and not self._stopped.wait(_JOIN_TIMEOUT):
            self.logger.warning("the registry's serving thread did not stop within %g s", _JOIN_TIMEOUT)

    def _close_sockets(self) -> None:
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self.socket and not self._closed.is_set():
                        self._readable()

    def _readable(self) -> None:
        raise NotImplementedError

    def _handle(self, data: bytes, source: str, max_reply: int | None = None) -> bytes | None:
        """The handler's reply; a bug in it costs this request only and is logged through the
        handler's rate-limited drop log (the traceback at debug level)."""
        try:
            return self.handler.handle(data, source, max_reply=max_reply)
        except Exception as exc:
            self.logger.debug("failed to handle a request from %s", source, exc_info=True)
            self.handler.drop(source, f"internal error {type(exc).__name__}")
            return None

    def _stop_clients(self) -> None:
        """Disconnect and join whatever serves single clients (TCP)."""


class UDPRegistryServer(RegistryServer):
    """A registry answering one datagram per request; binds 0.0.0.0 by default to hear broadcasts."""

    DEFAULT_HOST: ClassVar[str] = "0.0.0.0"
    SOCKET_TYPE: ClassVar[int] = socket.SOCK_DGRAM

    def _bind(self, host: str, port: int) -> None:
        self.socket.bind((host, port))
        self.socket.setblocking(False)

    def _readable(self) -> None:
        for _ in range(_DATAGRAMS_PER_WAKEUP):
            try:
                data, address = self.socket.recvfrom(MAX_MESSAGE_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors reported on the socket: keep serving
                self.logger.debug("recvfrom failed: %s", exc)
                return
            if not self.handler.limiter.allow(address[0]):
                self.handler.drop(address[0], "over the per-source request rate")
                continue
            reply = self._handle(data, address[0], max_reply=UDP_REPLY_FACTOR * len(data))
            if reply is not None:
                try:
                    self.socket.sendto(reply, address)
                except OSError as exc:
                    self.logger.info("could not reply to %s:%d: %s", address[0], address[1], exc)


class TCPRegistryServer(RegistryServer):
    """A registry over TCP: 4-byte big-endian length, then the message; binds 127.0.0.1 by default."""

    def _bind(self, host: str, port: int) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(64)
        self.socket.setblocking(False)

    def _readable(self) -> None:
        try:
            sock, address = self.socket.accept()
        except OSError:
            return
        sock.setblocking(True)
        source = address[0]
        with self._lock:
            refusal = None
            if len(self._clients) >= self.limits.max_connections:
                refusal = f"{len(self._clients)} clients already connected"
            elif self._per_source.get(source, 0) >= self.limits.max_connections_per_source:
                refusal = f"{self._per_source[source]} connections from this address already"
            if self._closed.is_set() or refusal is not None:
                sock.close()
                if refusal is not None:
                    self.handler.drop(source, f"connection refused: {refusal}")
                return
            thread = threading.Thread(target=self._serve_client, args=(sock, source), name=f"rpc-registry-{source}", daemon=True)
            self._clients[sock] = thread
            self._per_source[source] = self._per_source.get(source, 0) + 1
        thread.start()

    def _serve_client(self, sock: socket.socket, source: str) -> None:
        limits = self.limits
        end = time.monotonic() + limits.connection_lifetime
        try:
            for _ in range(limits.max_requests_per_connection):
                deadline = min(end, time.monotonic() + limits.connection_timeout)
                header = recv_exact(sock, LENGTH_PREFIX.size, deadline)
                if header is None:
                    return  # the client is done
                (size,) = LENGTH_PREFIX.unpack(header)
                if size > MAX_MESSAGE_SIZE:
                    self.handler.drop(source, f"message of {size} bytes exceeds {MAX_MESSAGE_SIZE}")
                    return
                data = recv_exact(sock, size, deadline)
                if data is None:
                    return
                reply = self._handle(data, source)
                if reply is None:
                    return  # a client that sends garbage is disconnected
                sock.sendall(LENGTH_PREFIX.pack(len(reply)) + reply)
        except (OSError, EOFError) as exc:
            self.logger.debug("client %s dropped: %s", source, exc)
        finally:
            with self._lock:
                self._clients.pop(sock, None)
                left = self._per_source.pop(source, 1) - 1
                if left > 0:
                    self._per_source[source] = left
            sock.close()

    def _stop_clients(self) -> None:
        with self._lock:
            clients = list(self._clients.items())
        for sock, _ in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in clients:
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)
