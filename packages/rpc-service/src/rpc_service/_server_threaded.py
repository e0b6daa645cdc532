"""ThreadedServer: a thread for each busy client; quiet clients parked, threads kept for reuse.

Owns the threads of :class:`ThreadedServer`. A client is served on a thread of its own
while requests keep coming; once nothing has arrived for ``PARK_AFTER`` seconds (and
nobody else uses the connection) the connection is *parked*: a poller thread watches its
socket and the thread is free for another client. When a parked client sends again, the
poller hands its connection back to a thread. A thread with nothing to do waits up to
``IDLE_THREAD_SECONDS`` for work (at most ``IDLE_THREADS`` wait at once), so a new or
returning client usually finds a thread ready instead of starting one. Idle clients thus
cost their connection's objects but no thread. Accepting, the handshake and the limits are
``Server``'s (``_server``).
"""

from __future__ import annotations

import queue
import selectors
import socket
import threading
from typing import Any, ClassVar, Union

from ._connection import Connection
from ._errors import ConnectionClosedError
from ._fastpath import serve_fast
from ._server import Server

__all__ = ["ThreadedServer"]

# What a thread is given to do: a new client (socket, address) or a parked connection
_Job = Union[tuple[socket.socket, Any], Connection]


class ThreadedServer(Server):
    """Serves each client on a thread of its own while it is busy (see the module doc).

    ``PARK_AFTER`` = None keeps every client on its thread for its whole life; with an
    ``idle_timeout`` clients are never parked either (their thread times them out).
    """

    PARK_AFTER: ClassVar[float | None] = 0.2
    IDLE_THREADS: ClassVar[int] = 8
    IDLE_THREAD_SECONDS: ClassVar[float] = 10.0
    _handoff: queue.SimpleQueue[_Job | None]  # work for waiting threads (made on first use)
    _idle = 0  # waiting threads not yet handed work (under _lock)
    _poller: _Poller | None = None  # made on the first park

    # -- threads -------------------------------------------------------------------------

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        self._run_job((sock, address))

    def _run_job(self, job: _Job) -> None:
        """Hand ``job`` to a waiting thread, or start one for it."""
        with self._lock:
            if self._idle:
                self._idle -= 1
                self._handoff.put(job)
                return
            if not hasattr(self, "_handoff"):  # (made here: __init__ keeps Server's signature)
                self._handoff = queue.SimpleQueue()
        name = "rpc-client" if isinstance(job, Connection) else f"rpc-client-{job[1]}"  # (its first job's)
        self._spawn(self._thread, name, job)

    def _thread(self, job: _Job | None) -> None:
        while job is not None:
            if isinstance(job, Connection):
                self._serve(job)
            else:
                conn = self._open(*job)
                if conn is not None:
                    self._serve(conn)
            job = self._next_job()

    def _next_job(self) -> _Job | None:
        """Wait for the next job (None: this thread ends).

        Invariant, under ``_lock``: waiting threads = ``_idle`` + jobs queued.
        """
        with self._lock:
            if self._closed.is_set() or self._idle >= self.IDLE_THREADS:
                return None
            self._idle += 1
        try:
            return self._handoff.get(timeout=self.IDLE_THREAD_SECONDS)
        except queue.Empty:
            with self._lock:
                if self._idle:  # nobody was promised this thread: it ends
                    self._idle -= 1
                    return None
                return self._handoff.get_nowait()  # a job was queued for it meanwhile

    def _join_threads(self) -> None:
        with self._lock:  # wake the waiting threads: they end
            for _ in range(self._idle):  # (_idle > 0: _handoff was made)
                self._handoff.put(None)
            self._idle = 0
            poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop()
        super()._join_threads()
        with self._lock:  # parked connections: closed by close() with no thread to forget them
            parked = [conn for conn in self._clients if conn.closed]
        for conn in parked:
            self._forget(conn)

    # -- serving -------------------------------------------------------------------------

    def _serve(self, conn: Connection) -> None:
        """Serve ``conn`` until it closes (then forget it) or is parked."""
        parked = False  # (then the poller hands it back when the client sends again)
        try:
            # (parking needs reads with a timeout: free only where the kernel bounds them,
            # not on TLS, pipes or platforms where each read would first poll())
            if self.PARK_AFTER is None or self.idle_timeout is not None or not getattr(conn._stream, "_kernel_timeouts", False):
                self._serve_until_closed(conn)
            else:
                parked = self._serve_while_busy(conn, self.PARK_AFTER)
        except Exception as exc:
            self._conn_dropped(conn, exc)
        finally:  # (closed even when saying why failed: the peer must not wait on a dead server)
            if not parked:
                conn.close()
                self._forget(conn)

    def _serve_while_busy(self, conn: Connection, park_after: float) -> bool:
        """Serve ``conn``; True once it was parked, False when it closed."""
        try:
            while True:
                try:
                    if serve_fast(conn, park_after) or conn.serve(park_after):
                        continue
                except TimeoutError:
                    pass
                if self._park(conn):
                    return True
        except ConnectionClosedError:
            return False

    def _park(self, conn: Connection) -> bool:
        """Give a quiet connection to the poller; False when it is not quiet after all."""
        with conn._lock:  # (nobody reads, waits, or has anything queued or in flight)
            if conn.closed or conn._reading or conn._waiting or conn._inbox or conn._slots or conn._fast_seq:
                return False
        with self._lock:
            poller = self._poller
        if poller is None:
            made = _Poller(self)  # (starts its thread: not under _lock, which _spawn takes)
            with self._lock:
                if self._poller is None and not self._closed.is_set():
                    self._poller = made
                poller = self._poller
            if poller is not made:
                made.stop()
        return poller is not None and poller.park(conn)


class _Poller:
    """The thread that watches parked connections and hands a readable one to a thread."""

    _POLL_SECONDS: ClassVar[float] = 1.0

    def __init__(self, server: ThreadedServer) -> None:
        self._server = server
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._parked: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._stopped = False
        self._thread = server._spawn(self._loop, "rpc-poller")

    def park(self, conn: Connection) -> bool:
        if self._stopped:
            return False
        self._parked.put(conn)
        self._wake()
        return True

    def stop(self) -> None:
        self._stopped = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # stopping: the loop ends anyway

    def _loop(self) -> None:
        selector = self._selector
        try:
            while not self._stopped:
                ready = selector.select(self._POLL_SECONDS)
                if not ready:
                    self._purge()
                for key, _ in ready:
                    conn: Connection | None = key.data
                    if conn is None:
                        self._take_parked()
                        continue
                    selector.unregister(key.fileobj)
                    self._server._run_job(conn)
        finally:
            selector.close()
            self._wake_r.close()
            self._wake_w.close()
            while True:  # parked after the last look: the server closes them
                try:
                    self._parked.get_nowait()
                except queue.Empty:
                    break

    def _purge(self) -> None:
        """Hand back the parked connections closed meanwhile (by another thread of the
        service): a thread then finishes them (forgets them) as usual."""
        closed = [key for key in self._selector.get_map().values() if key.data is not None and key.data.closed]
        for key in closed:
            self._selector.unregister(key.fileobj)
            self._server._run_job(key.data)

    def _take_parked(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass  # (drained: would block)
        while True:
            try:
                conn = self._parked.get_nowait()
            except queue.Empty:
                return
            try:
                fd = conn.fileno()
                try:
                    self._selector.register(fd, selectors.EVENT_READ, conn)
                except KeyError:  # the descriptor of a connection closed while parked, reused
                    stale = self._selector.unregister(fd).data
                    self._selector.register(fd, selectors.EVENT_READ, conn)
                    if stale is not None:
                        self._server._run_job(stale)  # finished (forgotten) there
            except (OSError, ValueError):  # closed meanwhile: a thread sees it
                self._server._run_job(conn)
