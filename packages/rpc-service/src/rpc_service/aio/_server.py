"""The asyncio server: one event loop serves every connection (no thread per client).

Owns :class:`Server`: listening (TCP, optionally TLS through asyncio's ``ssl=``, or a
unix socket), running each accepted connection's handshake as a task with its deadline
(a silent peer never holds up the others), keeping the set of live connections, the
registrar's lease and the orderly close. Handlers run as ``_connection`` says: ``async
def`` on the loop, plain ``def`` in worker threads of the server's pool, each connection
within its share of them (``threads_per_connection``, see ``_threads``). The authenticator,
plain hooks and the registrar run in a second pool, so a connection whose handlers block
never holds up the admission of another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import ssl as _ssl
from typing import Any, Sequence

from .._config import ConfigArg
from .._context import CURRENT
from .._hooks import Authenticator, Registrar, check_hooks
from .._service import ServiceArg, instantiate
from .._streams import check_port
from ._connection import HANDLER_THREADS, AsyncConnection

__all__ = ["Server"]

_SHARED_READ_SIZE = 64 * 1024
_OVERLAPPED_LOOPS: tuple[type, ...] = tuple(
    loop for loop in (getattr(asyncio, "ProactorEventLoop", None),) if isinstance(loop, type)
)


class Server:
    """Serves ``service`` to every client on one event loop (see the module doc).

    ``await start()`` returns once listening (``port`` is then known); ``await
    serve_forever()`` serves until ``close()``; ``async with server:`` starts and closes it.
    ``ssl``: an ``ssl.SSLContext`` (server side) makes every connection TLS.
    ``authenticator``: called in a worker thread on each accepted socket (as with the
    threaded servers); it must hand back a plain socket (TLS belongs in ``ssl=``): one with
    an SSL ``context`` attribute (a TLS authenticator) is refused with TypeError.
    ``executor``: runs plain ``def`` handlers (default: a pool of the server's own, threads
    made on demand up to 256); the authenticator, plain ``on_connect``/``on_disconnect``
    hooks and the registrar run in a pool of the server's own beside it.
    """

    #: The most threads of the handler pool (``executor``) one connection's plain handlers
    #: may hold at once; its further plain handlers wait, in order, for one of those. A
    #: peer that blocks all of its handlers (say, by never answering their callbacks) thus
    #: stalls only itself. 16: a sixteenth of the default pool, well above what one
    #: connection of a threaded server runs at once; nested callbacks need no more (a
    #: handler waiting for its peer runs its connection's queued handlers meanwhile). Set
    #: on the class or on a server before ``start()``.
    threads_per_connection: int = 16

    def __init__(
        self,
        service: ServiceArg,
        hostname: str = "127.0.0.1",
        port: int = 0,
        socket_path: str | os.PathLike[str] | None = None,
        ipv6: bool = False,
        authenticator: Authenticator | None = None,
        registrar: Registrar | None = None,
        auto_register: bool | None = None,
        protocol_config: ConfigArg = None,
        logger: logging.Logger | None = None,
        *,
        ssl: _ssl.SSLContext | None = None,
        backlog: int = 1024,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        instantiate(service)  # fail early on a wrong service argument
        self.service = service
        self.hostname = hostname
        self.port = port if socket_path is not None else check_port(port, listening=True)
        self.socket_path = None if socket_path is None else os.fspath(socket_path)
        self.ipv6 = ipv6
        check_hooks(authenticator, registrar)
        if isinstance(getattr(authenticator, "context", None), _ssl.SSLContext):  # e.g. rpc_tls.TLSAuthenticator
            raise TypeError(
                f"aio.Server cannot use {authenticator!r}: an authenticator here must return a plain socket; "
                "for TLS pass the server's ssl.SSLContext as ssl= (e.g. ssl=authenticator.context)"
            )
        self.authenticator = authenticator
        self.registrar = registrar
        self.auto_register = registrar is not None if auto_register is None else auto_register
        if self.auto_register and registrar is None:
            raise ValueError("auto_register needs a registrar")
        self.protocol_config = protocol_config
        self.logger = logger or logging.getLogger("rpc_service.aio.server")
        self.ssl = ssl
        self.backlog = backlog
        self.executor = executor
        self.connections: set[AsyncConnection] = set()
        self._server: Any = None  # an asyncio.Server, or _ManualServer with an authenticator
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._read_buffer: memoryview | None = None
        self._owns_executor = False
        self._hook_executor: concurrent.futures.ThreadPoolExecutor | None = None  # made by start()

    def __repr__(self) -> str:
        where = self.socket_path or f"{self.hostname}:{self.port}"
        return f"<rpc_service.aio.Server {where} ({len(self.connections)} connections)>"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; returns once the socket accepts (``port`` is then set)."""
        if self._server is not None:
            return
        if self.threads_per_connection < 1:
            raise ValueError(f"threads_per_connection must be at least 1 (got {self.threads_per_connection})")
        loop = asyncio.get_running_loop()
        if self.executor is None:  # plain handlers of every connection: threads made on demand
            self.executor = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="rpc-aio-server")
            self._owns_executor = True
        if self._hook_executor is None:  # authenticator, plain hooks, registrar: threads on demand
            self._hook_executor = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="rpc-aio-admit")
        if not isinstance(loop, _OVERLAPPED_LOOPS):
            # Reads on this loop go get_buffer -> recv_into -> buffer_updated without a
            # pause, one connection at a time, and every byte is copied out in between:
            # the connections can share one read buffer (an idle connection then holds
            # none). A proactor loop keeps a buffer across a pending read: one each there.
            self._read_buffer = memoryview(bytearray(_SHARED_READ_SIZE))
        token = CURRENT.set(None)  # (accepted connections keep the context listening began in)
        try:
            if self.authenticator is not None:
                self._server = await self._listen_authenticated(loop)
            elif self.socket_path is not None:
                self._server = await loop.create_unix_server(self._factory, self.socket_path, ssl=self.ssl, backlog=self.backlog)
            else:
                family = socket.AF_INET6 if self.ipv6 else socket.AF_UNSPEC
                self._server = await loop.create_server(
                    self._factory, self.hostname, self.port, family=family, ssl=self.ssl, backlog=self.backlog
                )
        finally:
            CURRENT.reset(token)
        if self.socket_path is None:
            self.port = self._server.sockets[0].getsockname()[1]
        self.logger.info("%r: listening", self)
        if self.auto_register:
            self._spawn(self._lease_loop())

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (starting first if needed)."""
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            if not self._closed:
                raise

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*(conn.close() for conn in list(self.connections)), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self.auto_register and self.registrar is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._hook_executor, self.registrar.unregister, self.port)
            except Exception:
                self.logger.exception("%r: unregistering failed", self)
        if self._owns_executor and self.executor is not None:
            self.executor.shutdown(wait=False)  # handlers running (or queued in it) still finish
        if self._hook_executor is not None:
            self._hook_executor.shutdown(wait=False)  # queued work (on_disconnect hooks) still runs
        if self.socket_path is not None:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connections -----------------------------------------------------------------------

    def _factory(self, credentials: Any = None) -> AsyncConnection:
        conn = AsyncConnection(
            instantiate(self.service, accepting=True),
            self.protocol_config,
            accepting=True,
            executor=self.executor,
            credentials=credentials,
            read_buffer=self._read_buffer,
        )
        conn._on_made = self._made
        conn._thread_limit = self.threads_per_connection
        conn._hook_executor = self._hook_executor
        return conn

    def _made(self, conn: AsyncConnection) -> None:
        self.connections.add(conn)
        conn._lost.add_done_callback(lambda _: self.connections.discard(conn))
        self._spawn(self._admit(conn))

    async def _admit(self, conn: AsyncConnection) -> None:
        try:
            await conn._handshake()
        except Exception as exc:
            self.logger.info("%r: a client failed its handshake: %s", self, exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen_authenticated(self, loop: asyncio.AbstractEventLoop) -> _ManualServer:
        """Accept by hand, run the authenticator in a worker thread, then hand the socket
        to asyncio (``connect_accepted_socket``)."""
        authenticator = self.authenticator
        assert authenticator is not None

        if self.socket_path is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.socket_path)
        else:
            family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.hostname, self.port))
        listener.listen(self.backlog)
        listener.setblocking(False)

        async def accept_loop() -> None:
            while True:
                sock, _ = await loop.sock_accept(listener)
                self._spawn(self._authenticate(loop, sock))

        server = _ManualServer(listener, loop.create_task(accept_loop()))
        return server

    async def _authenticate(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        assert self.authenticator is not None
        sock.setblocking(True)
        try:
            result, credentials = await loop.run_in_executor(self._hook_executor, self.authenticator, sock)
        except Exception as exc:
            self.logger.info("%r: authentication failed: %s", self, exc)
            sock.close()
            return
        if type(result) is not socket.socket:
            self.logger.error("%r: the asyncio server needs an authenticator returning a plain socket (TLS: ssl=)", self)
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return
        result.setblocking(False)
        await loop.connect_accepted_socket(lambda: self._factory(credentials), result)

    async def _lease_loop(self) -> None:
        registrar = self.registrar
        assert registrar is not None
        interval = float(getattr(registrar, "REREGISTER_INTERVAL", 60.0))
        names: Sequence[str] = instantiate(self.service).get_service_aliases()
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._hook_executor, registrar.register, names, self.port, self.hostname)
            except Exception:
                self.logger.exception("%r: registering failed", self)
            await asyncio.sleep(interval)


class _ManualServer:
    """The part of ``asyncio.AbstractServer`` the server uses, over a hand-run accept loop."""

    def __init__(self, listener: socket.socket, task: asyncio.Task[None]) -> None:
        self.sockets = [listener]
        self._task = task

    def close(self) -> None:
        self._task.cancel()
        self.sockets[0].close()

    async def wait_closed(self) -> None:
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    async def serve_forever(self) -> None:
        await self._task
