"""A connection's share of the worker threads that run its plain ``def`` handlers.

Owns :class:`ThreadShare`. Every connection of an :class:`aio.Server <.Server>` runs its
plain handlers on one executor, and a handler can block for as long as its peer lets it
(a callback the peer never answers waits out ``sync_request_timeout``). So each connection
may hold at most ``limit`` of those threads at once (``Server.threads_per_connection``): a
peer whose handlers all block ties up its own share, never the other connections'.

Jobs beyond the share wait in the connection's queue and start in arrival order, on the
share's threads: a thread that finishes a job takes the next one queued (the queue is
bounded by the protocol's limit on the peer's requests in flight, ``max_pending_requests``).
A thread of the share that waits for the peer (a blocking proxy call from a plain handler,
``AsyncConnection._blocking``) runs queued jobs meanwhile, as a thread waiting on a
threaded connection serves its requests: nested plain callbacks (A→B→A...) need no thread
beyond the share. As in the threaded driver, a waiting thread within ``STACK_RESERVE``
frames of the recursion limit answers the job it takes with RecursionError (``_stack``) instead of
running it (calls nested too deeply fail at once, and the connection serves on).

Below the share nothing is queued and a job costs one lock round and one executor
submission (what ``run_in_executor`` costs). Jobs are submitted on the loop; the lock
guards the counts and the queue against the worker threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections import deque
from typing import Any, Callable, Final

from .._stack import stack_nearly_full, too_deep

__all__ = ["ThreadShare"]

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]"]
_monotonic: Final = time.monotonic
_local: Final = threading.local()  # .share: the ThreadShare whose job this thread runs
#: The longest a waiting thread sleeps before it looks again (waits past
#: threading.TIMEOUT_MAX overflow).
_LONGEST_WAIT: Final = 86400.0


class ThreadShare:
    """At most ``limit`` threads of ``executor`` running one connection's jobs; the rest
    queued (see the module doc). ``held`` wraps, as a result, an exception an asyncio
    future cannot hold (StopIteration)."""

    __slots__ = ("limit", "_executor", "_loop", "_held", "_lock", "_queue", "_running", "_waiters")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        executor: concurrent.futures.Executor,
        limit: int,
        held: Callable[[BaseException], object],
    ) -> None:
        if limit < 1:
            raise ValueError(f"a connection needs at least one handler thread (got {limit})")
        self.limit = limit
        self._executor = executor
        self._loop = loop
        self._held = held
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._running = 0  # threads of the executor running (or waiting in) this share's jobs
        self._waiters: deque[threading.Event] = deque()  # share threads waiting for the peer

    def __repr__(self) -> str:
        return f"<ThreadShare {self._running}/{self.limit} threads, {len(self._queue)} queued>"

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn()`` in a thread of the share, now or once one is free (call on the
        loop); the future of its outcome."""
        future: asyncio.Future[Any] = self._loop.create_future()
        job: _Job = (fn, future)
        with self._lock:
            if self._running >= self.limit:
                self._queue.append(job)
                if self._waiters:  # a share thread waiting for the peer can run it meanwhile
                    self._waiters.popleft().set()
                return future
            self._running += 1
        try:
            self._executor.submit(self._work, job)
        except BaseException:  # (the executor is shut down)
            with self._lock:
                self._running -= 1
            raise
        return future

    def close(self) -> None:
        """The connection closed: drop the jobs still queued (nobody waits for their
        answers; a job already running finishes). Call on the loop."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
        for _, future in queued:
            future.cancel()

    def wait(self, result: concurrent.futures.Future[Any], timeout: float | None) -> Any:
        """``result.result(timeout)``, for a thread waiting for the peer; a thread of this
        share runs the share's queued jobs meanwhile (see the module doc)."""
        if getattr(_local, "share", None) is not self:
            return result.result(timeout)
        deep = stack_nearly_full()
        end = None if timeout is None else _monotonic() + timeout
        wake = threading.Event()
        result.add_done_callback(lambda _: wake.set())
        lock, queue, waiters = self._lock, self._queue, self._waiters
        try:
            while not result.done():
                wake.clear()  # (before looking: a wake-up from here on is not lost)
                with lock:
                    job = queue.popleft() if queue else None
                    if job is None:
                        waiters.append(wake)
                if job is not None:
                    if deep:
                        self._settle(job[1], None, too_deep())
                    else:
                        self._run(job, True)
                    del job  # its arguments and outcome may die now
                    continue
                if end is None:
                    wake.wait(_LONGEST_WAIT)
                else:
                    remaining = end - _monotonic()
                    if remaining <= 0:
                        break
                    wake.wait(min(remaining, _LONGEST_WAIT))
                with lock:
                    if wake in waiters:
                        waiters.remove(wake)
        finally:
            with lock:
                if wake in waiters:
                    waiters.remove(wake)
                elif queue and waiters:  # woken for a job left to others: pass it on
                    waiters.popleft().set()
        return result.result(0)

    # -- in the worker threads -----------------------------------------------------------

    def _work(self, job: _Job | None) -> None:
        """One executor thread of the share: run ``job``, then the queued ones."""
        _local.share = self
        try:
            while job is not None:
                self._run(job, False)
                with self._lock:
                    if self._queue:
                        job = self._queue.popleft()
                    else:
                        job = None
                        self._running -= 1
        except BaseException:  # (_run raises nothing of a job's; this cannot happen)
            with self._lock:
                self._running -= 1
            raise
        finally:
            _local.share = None

    def _run(self, job: _Job, nested: bool) -> None:
        """Run a job and hand its outcome to its future on the loop. ``nested``: on the
        stack of another job (a waiting thread), so in a context of its own, as on a fresh
        thread (not the waiting job's call context)."""
        fn, future = job
        try:
            value = contextvars.Context().run(fn) if nested else fn()
        except BaseException as exc:  # the job's outcome, for its caller (as an executor does)
            self._settle(future, None, exc)
        else:
            self._settle(future, value, None)

    def _settle(self, future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
        held = self._held

        def settle() -> None:
            if future.cancelled():
                return
            if exc is None:
                future.set_result(value)
            elif type(exc) is StopIteration:  # (a future refuses it)
                future.set_result(held(exc))
            else:
                future.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: nobody waits for it
            pass
