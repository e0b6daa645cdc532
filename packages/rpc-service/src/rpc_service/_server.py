"""Servers: accept connections and serve a Service on each.

Owns the listening socket, the accept loop, authentication and handshake of each client
off the accept loop under a deadline, the limits on what clients may hold
(``max_connections``, ``idle_timeout``), the registry lease (register, refresh, unregister),
the INFO log of accepted and closed connections, and orderly shutdown (``close()`` closes every client and joins every thread it started).
``OneShotServer`` serves a single client then stops; ``ThreadedServer`` lives in
``_server_threaded``, the pooled and forking variants in ``_server_pool``.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from typing import Any, ClassVar

from rpc_protocol import RPCError

from ._config import ConfigArg, make_config
from ._connection import Connection
from ._errors import ConnectionClosedError, ConnectionRejectedError
from ._hooks import Authenticator, Registrar, check_hooks
from ._service import Service, ServiceArg, check_service, instantiate
from ._streams import Inherited, SocketStream, Stream, check_port, prepare_listener, reset_inherited_timeouts

__all__ = ["Server", "OneShotServer"]

_RETRY_UNACKNOWLEDGED = 5.0  # seconds between registration attempts until one is acknowledged
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_BACKOFF = 0.1  # seconds between accept() attempts while out of descriptors or memory


class Server:
    """The common machinery of every server; use a subclass.

    Binds at construction (so ``port`` is known at once): 127.0.0.1 unless ``hostname``
    says otherwise, port 0 picks a free port, ``socket_path`` listens on a unix socket
    instead, ``ipv6`` uses an IPv6 socket (``hostname`` then defaults to ``::1``).
    ``max_connections`` bounds the clients served at once (one more is refused) and the
    unfinished handshakes (when full, the oldest is dropped); ``idle_timeout`` closes a
    client nothing arrived from for that long (None: never).

    Ctrl-C (KeyboardInterrupt) in :meth:`start` closes the server and returns. Closing waits
    for the registry (the last refresh, then the unregistration) at most
    ``REGISTRY_CLOSE_TIMEOUT`` seconds in all; an unreachable registry's lease then expires
    on its own.
    """

    REGISTRY_CLOSE_TIMEOUT: ClassVar[float] = 1.0

    def __init__(
        self,
        service: ServiceArg,
        hostname: str | None = None,
        port: int = 0,
        socket_path: str | os.PathLike[str] | None = None,
        ipv6: bool = False,
        authenticator: Authenticator | None = None,
        registrar: Registrar | None = None,
        auto_register: bool | None = None,
        protocol_config: ConfigArg = None,
        logger: logging.Logger | None = None,
        *,
        backlog: int = 128,
        max_connections: int | None = 1000,
        idle_timeout: float | None = None,
    ) -> None:
        check_service(service)
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1 (or None)")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None)")
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.service = service
        check_hooks(authenticator, registrar)
        self.authenticator = authenticator
        self.registrar = registrar
        self.auto_register = registrar is not None if auto_register is None else auto_register
        if self.auto_register and registrar is None:
            raise ValueError("auto_register needs a registrar")
        self.protocol_config = make_config(protocol_config)
        self.logger = logger or logging.getLogger(f"rpc_service.{type(self).__name__}")
        self.socket_path = None if socket_path is None else os.fspath(socket_path)
        # the options each accepted socket inherits (Linux, TCP): none is set per connection
        self._inherited: Inherited | None = None
        if self.socket_path is not None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = self.socket_path
        else:
            family = socket.AF_INET6 if ipv6 else socket.AF_INET
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # (before listen(): a connection completed earlier would not have inherited them)
            self._inherited = prepare_listener(self.listener, self.protocol_config.write_timeout)
            address = (hostname or ("::1" if ipv6 else "127.0.0.1"), check_port(port, listening=True))
        try:
            self.listener.bind(address)
            self.listener.listen(backlog)
        except OSError as exc:
            self.listener.close()
            where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
            if isinstance(exc, socket.gaierror):
                raise ValueError(f"cannot listen on {where}: the host does not resolve ({exc.strerror or exc})") from exc
            if exc.errno is None or exc.filename is not None:
                raise
            # (the same OSError subclass, errno and strerror, as RPyC users catch it; where, as its filename)
            raise type(exc)(exc.errno, exc.strerror, where) from exc
        self.host: str = ""
        self.port: int = 0
        self._listener_kind = (int(self.listener.family), int(self.listener.type), self.listener.proto)  # (_accept_one)
        if socket_path is None:
            self.host, self.port = self.listener.getsockname()[:2]
        self._active = False
        self._serving = threading.Event()  # start() is running (see start_in_thread)
        self._started = False  # start() or start_in_thread() was called (once only)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._clients: dict[Connection, Any] = {}  # served connections -> peer address
        self._pending: dict[socket.socket, None] = {}  # accepted, not yet handshaken, oldest first
        self._threads: set[threading.Thread] = set()
        self._lease_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = self.socket_path or f"{self.host}:{self.port}"
        return f"<{type(self).__name__} {where}>"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def clients(self) -> frozenset[Connection]:
        """The connections being served now (handshake done, not yet closed): a snapshot."""
        with self._lock:
            return frozenset(self._clients)

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Accept and serve clients until :meth:`close` (blocks). RuntimeError if the
        server is closed or already started."""
        self._claim()
        self._run()

    def start_in_thread(self) -> threading.Thread:
        """Run :meth:`start` on a daemon thread; returns once the server accepts.
        RuntimeError (here, not on the thread) if it is closed or already started."""
        self._claim()
        thread = threading.Thread(target=self._run, name=f"rpc-{type(self).__name__}", daemon=True)
        thread.start()
        # Wait for _run() to be under way, so that a close() right after this returns can
        # no longer stop it before it starts; bounded by the thread ending early.
        while not self._serving.wait(0.05) and thread.is_alive():
            pass
        return thread

    def _claim(self) -> None:
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("the server is closed")
            if self._started:
                raise RuntimeError("the server is already started")
            self._started = True

    def _run(self) -> None:
        """The body of :meth:`start`, once claimed."""
        if self._closed.is_set():  # (closed between the claim and this thread's start)
            return
        self._active = True
        self._serving.set()
        self.logger.info("serving %s on %s", self._service_names(), self)
        if self.auto_register:
            self._lease_thread = self._spawn(self._lease_loop, "rpc-registrar")
        try:
            self._accept_loop()
        except KeyboardInterrupt:  # Ctrl-C: close and return, no traceback
            self.logger.info("interrupted: closing %s", self)
        finally:
            self.close()

    def close(self) -> None:
        """Stop accepting, close every client, unregister, and join the threads started."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._active = False
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.listener.close()
        if self.socket_path is not None:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
        with self._lock:
            clients, pending = list(self._clients), list(self._pending)
        for sock in pending:
            _shutdown_socket(sock)
        for conn in clients:
            conn.close()
        self._join_threads()
        if self.auto_register and self.registrar is not None:
            self._withdraw(self.registrar)

    def _withdraw(self, registrar: Registrar) -> None:
        """Unregister, waiting for the lease thread and the registry at most
        ``REGISTRY_CLOSE_TIMEOUT`` seconds in all (a blocked registrar is left to its daemon thread)."""
        deadline = time.monotonic() + self.REGISTRY_CLOSE_TIMEOUT
        if self._lease_thread is not None:
            self._lease_thread.join(self.REGISTRY_CLOSE_TIMEOUT)

        def unregister() -> None:
            try:
                registrar.unregister(self.port)
            except Exception as exc:
                self.logger.warning("could not unregister from the registry: %s", exc)

        worker = threading.Thread(target=unregister, name="rpc-unregister", daemon=True)
        worker.start()
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            self.logger.warning("the registry did not answer within %g s; closed without waiting for it", self.REGISTRY_CLOSE_TIMEOUT)

    def _join_threads(self) -> None:
        current = threading.current_thread()
        for _ in range(3):  # threads may start others while we join (bounded)
            with self._lock:  # (the lease thread is waited for, boundedly, by _withdraw)
                threads = [thread for thread in self._threads if thread is not current and thread is not self._lease_thread]
            if not threads:
                return
            for thread in threads:
                thread.join(timeout=5)
                if thread.is_alive():
                    self.logger.warning("thread %s did not stop within 5 s", thread.name)

    def _accept_loop(self) -> None:
        while self._active:
            try:
                sock, address = self._accept_one()
            except BlockingIOError:
                continue  # the listener's SO_RCVTIMEO (prepare_listener): no client meanwhile
            except OSError as exc:
                if self._active and not self._closed.is_set():
                    if exc.errno in _OUT_OF_RESOURCES:  # fails again at once until some are freed: don't spin
                        self.logger.warning("accept() failed, retrying in %s s: %s", _ACCEPT_BACKOFF, exc)
                        self._closed.wait(_ACCEPT_BACKOFF)
                    else:
                        self.logger.exception("accept() failed")
                    continue
                return
            if not self._take_in(sock, address):
                continue
            try:
                self._accepted(sock, address)
            except Exception as exc:  # e.g. no thread (or process) to serve it: refuse this client only
                self.logger.warning("could not serve client %s: %s: %s", address, type(exc).__name__, exc)
                with self._lock:
                    self._pending.pop(sock, None)
                _shutdown_socket(sock)

    def _accept_one(self) -> tuple[socket.socket, Any]:
        """``listener.accept()``, without its conversions of the listener's family and type
        to enums on every call (~5 us a connection): the socket is made from the ints."""
        listener = self.listener
        accept = getattr(listener, "_accept", None)  # (CPython's socket.accept calls it, then makes the socket)
        if accept is None:
            return listener.accept()
        fd, address = accept()
        family, kind, proto = self._listener_kind
        sock = socket.socket(family, kind, proto, fileno=fd)
        if socket.getdefaulttimeout() is None and listener.gettimeout():  # (as accept() does)
            sock.setblocking(True)
        return sock, address

    def _take_in(self, sock: socket.socket, address: Any) -> bool:
        """Admit an accepted socket under ``max_connections`` (on the accept loop, so that
        "oldest" means accepted first): False when it was refused (and closed)."""
        evicted = None
        with self._lock:
            limit = self.max_connections
            full = limit is not None and len(self._clients) >= limit
            if not full:
                if limit is not None and len(self._pending) >= limit:
                    # the oldest unfinished handshake makes room: silent peers cannot crowd
                    # out a client that completes its handshake promptly
                    evicted = next(iter(self._pending))
                    del self._pending[evicted]
                self._pending[sock] = None
        if full:
            self.logger.warning("refused client %s: max_connections (%s) reached", address, self.max_connections)
            _shutdown_socket(sock)
            return False
        if evicted is not None:
            self.logger.info("dropped the oldest unfinished handshake to admit %s (max_connections %s)", address, self.max_connections)
            try:
                evicted.shutdown(socket.SHUT_RDWR)  # its handshake fails at once; its thread closes it
            except OSError:
                pass
        return True

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        """Hand an accepted socket over to be served (subclasses decide how)."""
        raise NotImplementedError

    def _spawn(self, target: Any, name: str, *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:  # started under the lock: close() must never join an unstarted thread
            self._threads.add(thread)
            try:
                thread.start()
            except BaseException:
                self._threads.discard(thread)
                raise
        return thread

    # -- one client --------------------------------------------------------------------

    def _open(self, sock: socket.socket, address: Any) -> Connection | None:
        """Authenticate and handshake one client under the handshake deadline."""
        raw = sock
        with self._lock:
            if self._closed.is_set() or raw not in self._pending:  # closing, or evicted already
                _shutdown_socket(sock)
                self._pending.pop(raw, None)
                return None
        config = self.protocol_config
        stream: Stream | None = None
        try:
            credentials = None
            if self.authenticator is not None:
                if self._inherited is not None:  # (the authenticator's reads and writes, then its channel's, are unbounded)
                    reset_inherited_timeouts(sock)
                sock.settimeout(config.handshake_timeout)  # the authenticator's deadline
                channel, credentials = self.authenticator(sock)
                if isinstance(channel, socket.socket):
                    sock = channel
                    sock.settimeout(None)
                else:
                    # a ready stream manages its own descriptor: don't touch `sock`, which
                    # may share its open file description (and so its blocking mode)
                    stream = channel
            if stream is None:  # (an authenticated socket's SO_RCVTIMEO was reset: nothing known)
                stream = SocketStream(sock, inherited=self._inherited if self.authenticator is None else None)
            conn = Connection(instantiate(self.service, accepting=True), stream, config, credentials=credentials)
            conn._handshake(accepting=True)
        except ConnectionRejectedError as exc:  # on_connect (or the service's constructor) raised: logged at ERROR
            self.logger.error("rejected client %s: %s", address, exc, exc_info=exc.__cause__ or exc)
            if stream is not None:
                stream.close()
            _shutdown_socket(sock)
            return None
        except Exception as exc:
            self.logger.info("dropped client %s before serving it: %s: %s", address, type(exc).__name__, exc)
            if stream is not None:
                stream.close()
            _shutdown_socket(sock)
            return None
        finally:
            with self._lock:
                self._pending.pop(raw, None)
        with self._lock:
            if self._closed.is_set():
                conn.close()
                return None
            self._clients[conn] = address
        if self.logger.isEnabledFor(logging.INFO):  # (the service's name is made only for the log)
            self.logger.info("accepted %s from %s (service %s)", conn, address, conn.service.get_service_name())
        return conn

    def _forget(self, conn: Connection) -> None:
        """A served connection ended: stop counting it (and log it, once)."""
        with self._lock:
            if conn not in self._clients:
                return
            address = self._clients.pop(conn)
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.info("closed connection from %s (service %s)", address, conn.service.get_service_name())

    def _conn_dropped(self, conn: Connection, exc: Exception) -> None:
        """:meth:`_dropped` for a client known by its connection."""
        with self._lock:
            address = self._clients.get(conn)
        self._dropped(address, exc)

    def _dropped(self, address: Any, exc: Exception) -> None:
        """Log a connection killed by an exception: the peer's doing (an RPCError: bad bytes,
        a lost stream, a write timeout) at INFO; anything else, a failure on our side, at
        ERROR with its traceback."""
        if isinstance(exc, RPCError):
            self.logger.info("client %s dropped: %s: %s", address, type(exc).__name__, exc)
        else:
            self.logger.error("client %s dropped: a failure on the serving side", address, exc_info=exc)

    def _serve_until_closed(self, conn: Connection) -> None:
        """Serve ``conn`` until it closes, or until nothing arrives for ``idle_timeout``."""
        drop = getattr(conn._stream, "drop_listener_read_timeout", None)
        if drop is not None:  # (these reads wait long or without end)
            drop()
        idle = self.idle_timeout
        if idle is None:
            conn.serve_all()
            return
        try:
            received = -1
            while not conn.closed:
                if conn.serve(idle):
                    continue
                stats = conn.stats
                if stats.bytes_received == received and not stats.calls_pending:
                    self.logger.info("closing %s: idle for %s s (idle_timeout)", conn, idle)
                    break
                received = stats.bytes_received  # busy elsewhere (a handler reads): look again
        except ConnectionClosedError:
            pass
        finally:
            conn.close()

    def _serve_client(self, sock: socket.socket, address: Any) -> None:
        conn = self._open(sock, address)
        if conn is None:
            return
        try:
            self._serve_until_closed(conn)
        except Exception as exc:
            self._dropped(address, exc)
        finally:
            conn.close()
            self._forget(conn)

    # -- registry lease ----------------------------------------------------------------

    def _service_names(self) -> tuple[str, ...]:
        return self.service.get_service_aliases()

    def _lease_loop(self) -> None:
        registrar = self.registrar
        assert registrar is not None
        interval = float(getattr(registrar, "REREGISTER_INTERVAL", 60.0))
        interface = self.host if self.host not in ("0.0.0.0", "::") else ""
        while not self._closed.is_set():
            try:
                acknowledged = registrar.register(self._service_names(), self.port, interface)
            except Exception as exc:
                self.logger.warning("could not register with the registry: %s", exc)
                acknowledged = False
            # until the registry acknowledges, retry soon: it may simply not be up yet
            self._closed.wait(interval if acknowledged else min(interval, _RETRY_UNACKNOWLEDGED))


def _shutdown_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class OneShotServer(Server):
    """Serves exactly one client, on the thread that called :meth:`start`, then closes."""

    def _accept_loop(self) -> None:
        while self._active:
            try:
                sock, address = self._accept_one()
            except BlockingIOError:
                continue  # (as in Server._accept_loop)
            except OSError:
                return
            if not self._take_in(sock, address):
                continue
            conn = self._open(sock, address)
            if conn is None:
                continue  # a client that failed the handshake does not use up the shot
            try:
                self._serve_until_closed(conn)
            except Exception as exc:  # a bad peer: log it, as the other servers do, not raise from start()
                self._dropped(address, exc)
            finally:
                conn.close()
                self._forget(conn)
            return
