"""Servers that do not dedicate a thread to each client: pooled and forking.

``ThreadPoolServer`` parks idle connections in one poller thread and hands a connection
that has input to one of a fixed number of workers, which serves what is ready and gives
it back. ``ForkingServer`` serves each client in a child process of its own.
"""

from __future__ import annotations

import os
import queue
import selectors
import signal
import socket
import threading
import time
import warnings
from functools import partial
from typing import Any, Callable

from ._connection import Connection
from ._context import import_tracing
from ._server import Server

__all__ = ["ThreadPoolServer", "ForkingServer"]


class ThreadPoolServer(Server):
    """Serves many clients with ``nbthreads`` worker threads (``nbThreads=``, RPyC's
    spelling, is taken too). Authentication and handshakes run on short-lived threads of
    their own, under the handshake deadline, so that silent peers cannot tie up the workers."""

    def __init__(self, *args: Any, nbthreads: int = 20, nbThreads: int | None = None, **kwargs: Any) -> None:  # noqa: N803 (RPyC's spelling)
        if nbThreads is not None:  # RPyC's spelling, for code that moves over
            if nbthreads != 20:
                raise TypeError("give nbthreads or nbThreads, not both")
            nbthreads = nbThreads
        super().__init__(*args, **kwargs)
        if nbthreads < 1:
            raise ValueError("nbthreads must be at least 1")
        self.nbthreads = nbthreads
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._parked: queue.SimpleQueue[Connection] = queue.SimpleQueue()
        self._idle_since: dict[Connection, float] = {}  # parked connections (with idle_timeout only)
        self._poll_interval = 1.0 if self.idle_timeout is None else min(1.0, self.idle_timeout / 4)

    def _run(self) -> None:
        for index in range(self.nbthreads):
            self._spawn(self._worker, f"rpc-pool-{index}")
        self._spawn(self._poll_loop, "rpc-pool-poller")
        super()._run()

    def close(self) -> None:
        if self._closed.is_set():
            return
        for _ in range(self.nbthreads):
            self._jobs.put(None)
        super().close()  # sets _closed, closes clients, joins workers and poller
        with self._lock:
            self._clients.clear()  # parked connections closed above are never handed back
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _join_threads(self) -> None:
        try:
            self._wake_w.send(b"\0")  # the poller sees _closed now, not after its 1 s select
        except OSError:
            pass
        super()._join_threads()

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        # not a worker: nbthreads silent peers would otherwise stall everyone for handshake_timeout
        self._spawn(self._admit, f"rpc-handshake-{address}", sock, address)

    def _admit(self, sock: socket.socket, address: Any) -> None:
        conn = self._open(sock, address)
        if conn is not None:
            # not _park: the handshake may have read the client's first requests already,
            # and events waiting in the connection never make its socket readable again
            self._jobs.put(partial(self._serve_ready, conn))

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                job()
            except Exception:
                self.logger.exception("a pool job failed")

    def _park(self, conn: Connection) -> None:
        """Give an idle connection back to the poller."""
        if conn.closed:
            self._forget(conn)
            return
        self._parked.put(conn)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            conn.close()

    def _serve_ready(self, conn: Connection) -> None:
        try:
            while conn.serve(0):
                pass
        except Exception as exc:
            try:
                self._conn_dropped(conn, exc)
            finally:  # (closed even when saying why failed)
                conn.close()
        self._park(conn)

    def _poll_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready = self._selector.select(timeout=self._poll_interval)
            except (OSError, ValueError):
                return  # closed under us
            if self.idle_timeout is not None:
                self._close_idle(ready)
            for key, _ in ready:
                conn: Connection | None = key.data
                if conn is None:
                    self._drain_wakeups()
                    continue
                self._selector.unregister(key.fileobj)
                self._idle_since.pop(conn, None)
                self._jobs.put(partial(self._serve_ready, conn))

    def _close_idle(self, ready: list[Any]) -> None:
        """Close the parked connections nothing arrived on for ``idle_timeout``."""
        assert self.idle_timeout is not None
        limit = time.monotonic() - self.idle_timeout
        busy = {key.data for key, _ in ready}
        for conn, since in list(self._idle_since.items()):
            if since < limit and conn not in busy:
                self.logger.info("closing %s: idle for %s s (idle_timeout)", conn, self.idle_timeout)
                try:
                    self._selector.unregister(conn.fileno())
                except (OSError, ValueError, KeyError):
                    pass
                del self._idle_since[conn]
                conn.close()
                self._forget(conn)

    def _drain_wakeups(self) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            return
        while True:
            try:
                conn = self._parked.get_nowait()
            except queue.Empty:
                return
            if conn.closed:
                self._forget(conn)
                continue
            try:
                self._selector.register(conn.fileno(), selectors.EVENT_READ, conn)
            except (OSError, ValueError, KeyError):
                conn.close()
                self._forget(conn)
                continue
            if self.idle_timeout is not None:
                self._idle_since[conn] = time.monotonic()


class ForkingServer(Server):
    """Serves each client in a forked child process (POSIX only).

    The child inherits the service class and serves one connection, then exits; the
    parent keeps accepting. ``close()`` terminates children still running.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not hasattr(os, "fork"):
            raise OSError("ForkingServer needs os.fork")
        # Python 3.12+ warns on every fork() from a process with threads. Forking from the
        # accept loop while other threads run is this server's design: the child only serves
        # the one connection it was forked for. Silenced for this module's fork() only.
        warnings.filterwarnings(
            "ignore", r"This process \(pid=\d+\) is multi-threaded", DeprecationWarning, r"rpc_service\._server_pool"
        )
        super().__init__(*args, **kwargs)
        self._children: set[int] = set()
        # A child must not need a module that another thread of the parent was importing
        # when it forked (the import lock stays held in the child): what every connection
        # imports on first use is imported now, before the first fork.
        import_tracing(self.protocol_config)

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                self.listener.close()
                self._serve_client(sock, address)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        with self._lock:
            self._pending.pop(sock, None)  # the child handshakes it
        sock.close()
        self._children.add(pid)
        # reaped as soon as it exits (no zombie until the next client): a thread waiting on
        # this child alone, as a SIGCHLD handler would need the main thread
        threading.Thread(target=self._reap, args=(pid,), name=f"rpc-fork-reaper-{pid}", daemon=True).start()

    def _reap(self, pid: int) -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # (reaped by close())
        self._children.discard(pid)

    def close(self) -> None:
        if self._closed.is_set():
            return
        super().close()
        for pid in list(self._children):  # (a copy: their reapers remove them meanwhile)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self._children and time.monotonic() < deadline:
            time.sleep(0.05)  # shutdown path only: children get up to 5 s to exit
        for pid in list(self._children):  # ignored SIGTERM: no longer waited for politely
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self._children.clear()
