"""Serving the peer's requests on the asyncio driver: which handler runs where.

Owns :class:`Serving`, the part of :class:`AsyncConnection` that carries out a request:
``async def`` handlers run as tasks on the loop (started at once where asyncio can),
plain ``def`` handlers run in a worker thread of the connection's pool, within the
connection's share of its threads (``_threads``: a server's pool is shared by all its
connections), builtins and the other operations inline; the answer (or the error) is sent
when the handler is done. Also the lifecycle hooks (either kind; plain ones in the hook
executor, outside any connection's share). It sends only through the connection's
``_encode``/``_write`` and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import sys
import types
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Coroutine, Final

import rpc_protocol as wire
from rpc_protocol import Op

from .._by_value import ByValue, marked_result
from .._config import Config
from .._context import CURRENT
from .._dispatch import AMPLIFIERS, HANDLERS, Dispatcher, check_amplification, method_of, describe_exception, must_propagate
from .._errors import ConnectionClosedError
from .._exposure import Exposure
from .._service import Service
from ._threads import ThreadShare

__all__ = ["HANDLER_THREADS", "Serving"]

log = logging.getLogger("rpc_service.aio")
_NO_KWARGS: Final[dict[str, Any]] = {}
# threads for plain handlers, made on demand, per client connection or per server (where
# each connection may hold ``Server.threads_per_connection`` of them at once)
HANDLER_THREADS: Final = 256
# callables cheap and non-blocking enough to run inline on the loop (no thread hop)
_INLINE_TYPES: Final = (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType, types.WrapperDescriptorType)


def _is_async(fn: object) -> bool:
    if isinstance(fn, (types.FunctionType, types.MethodType)):
        return inspect.iscoroutinefunction(fn)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class _Exited:
    """What a handler's task returns when the handler raised SystemExit or KeyboardInterrupt
    (which asyncio would re-raise out of the loop), or a plain handler's job when it raised
    StopIteration (which a future cannot hold): the request's outcome, answered to the
    peer like any other exception (see ``must_propagate``)."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _handler(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await coro
    except (SystemExit, KeyboardInterrupt) as exc:
        if must_propagate(exc):
            raise
        return _Exited(exc)


def _start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """A task running ``coro`` in a copy of the current context: started at once, up to
    its first suspension, where asyncio can (3.12: ``eager_start``; one that never
    suspends is done on return and costs no turn of the loop), else at the loop's next turn.

    A real task either way, never a coroutine stepped by hand: ``asyncio.timeout()``,
    ``TaskGroup`` and ``current_task()`` work in the handler from its first line, and a
    context variable it sets before an ``await`` (``deadline()``) is reset in the same
    context after it.
    """
    if _EAGER_TASKS and loop.get_task_factory() is None:  # (a loop's own task factory is respected)
        return asyncio.Task(_handler(coro), loop=loop, eager_start=True)  # type: ignore[call-arg]  # 3.12+ only (mypy checks as 3.11)
    return loop.create_task(_handler(coro))


_EAGER_TASKS: Final = sys.version_info >= (3, 12)


class Serving:
    """Carrying out the peer's requests (mixed into AsyncConnection; see the module doc)."""

    if TYPE_CHECKING:
        _config: Config
        _exposure: Exposure
        _dispatcher: Dispatcher
        _loop: asyncio.AbstractEventLoop
        _proto: wire.Connection
        _closed: bool
        _tasks: set[asyncio.Future[Any]]
        _executor: concurrent.futures.Executor | None
        _owns_executor: bool
        _threads: ThreadShare | None
        _thread_limit: int
        _hook_executor: concurrent.futures.Executor | None
        _service: Service

        def _encode(self, encode: Callable[..., list[wire.Buffer]], *fields: Any) -> list[wire.Buffer]: ...

        def _write(self, buffers: list[wire.Buffer]) -> None: ...

        def _answered(self, seq: int, error: BaseException | None) -> None: ...

        _served: dict[int, Any]
        _handler_tasks: dict[int, asyncio.Future[Any]]

    def _serve(self, request: wire.Request) -> asyncio.Future[Any] | None:
        """Run one request: async callables as tasks, plain functions in a worker thread,
        builtins and the other operations inline (they do not block). The task or job
        still running, else None (answered)."""
        seq, op, target, args, kwargs = request.seq, request.op, request.target, request.args, request.kwargs
        mark: object = None
        fn: Any
        try:
            if op is Op.CALLATTR and self._exposure.resolve(target, args[0]) == "__exit__":
                # through the dispatcher, in a worker thread: it rebuilds the peer's exception
                # (asking the peer for its message) for a remote with-block that raised
                fn = _generator_job(HANDLERS[op], self._dispatcher, target)
                args, kwargs = (args, kwargs), _NO_KWARGS
            elif op is Op.CALLATTR:
                name = self._exposure.resolve(target, args[0])
                if name in AMPLIFIERS:
                    check_amplification(target, name, args, self._config.max_frame_size)
                fn = method_of(target, name)  # (a class's operators are its metaclass's)
                args = args[1:]
                mark = fn  # a @by_value method's results are copied (see _by_value)
            elif op is Op.CALL:
                fn = target
            elif op is Op.ITER_NEXT and isinstance(target, types.GeneratorType):
                fn = _generator_job(HANDLERS[op], self._dispatcher, target)
                args, kwargs = (args, kwargs), _NO_KWARGS
            else:
                self._reply(seq, HANDLERS[op](self._dispatcher, target, args, kwargs))
                return None
            if isinstance(fn, _INLINE_TYPES):
                self._reply_result(seq, mark, fn(*args, **kwargs))
                return None
        except BaseException as exc:  # the handler's, for the caller (a real Ctrl-C still stops us)
            if must_propagate(exc):
                raise
            self._reply_error(seq, exc)
            return None
        if _is_async(fn):
            try:
                task: asyncio.Future[Any] = _start_task(self._loop, fn(*args, **kwargs))
            except BaseException as exc:  # (as above: calling fn raised, or its first step did)
                if must_propagate(exc):
                    raise
                self._reply_error(seq, exc)
                return None
            if task.done():  # (it did not suspend: answered now)
                self._finished(seq, task, mark)
                return None
            self._handler_tasks[seq] = task  # cancelled by a CANCEL from the peer
        elif CURRENT.get() is not None:  # served under a call context: the worker runs in it too
            job_context = contextvars.copy_context()
            task = (self._threads or self._share()).submit(lambda: job_context.run(fn, *args, **kwargs))
        else:
            task = (self._threads or self._share()).submit(lambda: fn(*args, **kwargs))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(seq, done, mark))
        return task

    def _pool(self) -> concurrent.futures.Executor:
        """Where plain handlers run: the executor given, else one of this connection's own,
        made on first use. Not the loop's default executor (a few workers): plain handlers
        block on the peer, and nested plain callbacks need a thread per level."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="rpc-aio-handler")
            self._owns_executor = True
        return self._executor

    def _share(self) -> ThreadShare:
        """This connection's share of the pool's threads (``_thread_limit`` at once, and no
        more than a ThreadPoolExecutor has: jobs past them queue where a waiting share
        thread runs them, not in the executor behind busy ones), made on first use."""
        if self._threads is None:
            pool = self._pool()
            limit = self._thread_limit
            workers = getattr(pool, "_max_workers", None)  # (ThreadPoolExecutor's size)
            if isinstance(pool, concurrent.futures.ThreadPoolExecutor) and type(workers) is int and 0 < workers < limit:
                limit = workers
            self._threads = ThreadShare(self._loop, pool, limit, _Exited)
        return self._threads

    def _hook_pool(self) -> concurrent.futures.Executor:
        """Where plain hooks run: the server's hook executor (never behind any connection's
        handlers), else the connection's pool."""
        return self._pool() if self._hook_executor is None else self._hook_executor

    def _finished(self, seq: int, task: asyncio.Future[Any], mark: object = None) -> None:
        self._tasks.discard(task)
        if self._handler_tasks.get(seq) is task:
            del self._handler_tasks[seq]
        if self._closed:
            return
        if task.cancelled():
            self._reply_error(seq, asyncio.CancelledError("the handler was cancelled"))  # (a RemoteError there)
            return
        exc = task.exception()
        if exc is not None:
            self._reply_error(seq, exc)
            return
        value = task.result()
        if type(value) is _Exited:
            self._reply_error(seq, value.exc)
            return
        if inspect.isawaitable(value):  # a plain function that returned a coroutine
            self._spawn_awaiting(seq, value)
            return
        self._reply_result(seq, mark, value)

    def _reply_result(self, seq: int, mark: object, value: Any) -> None:
        """Reply with a handler's result, copied by value when ``mark`` (the method) or its
        type is marked (see ``_by_value``)."""
        try:
            value = marked_result(mark, value, self._config)
        except Exception as exc:  # a by-value copy over the limits
            self._reply_error(seq, exc)
            return
        self._reply(seq, value)

    def _spawn_awaiting(self, seq: int, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(seq, done))

    def _reply(self, seq: int, value: Any) -> None:
        if self._served:  # requests served with a call context: this one is done
            self._answered(seq, None)
        if self._closed:
            return
        try:
            if type(value) is ByValue:  # a result its service marked as plain data (_by_value)
                self._write(self._encode(self._proto.send_reply, seq, value.value, True))
            else:
                self._write(self._encode(self._proto.send_reply, seq, value))
        except wire.EncodeError as exc:
            self._reply_error(seq, exc)
        except ConnectionClosedError:
            pass

    def _reply_error(self, seq: int, exc: BaseException) -> None:
        if self._served:
            self._answered(seq, exc)
        if self._closed:
            return
        try:
            self._write(self._encode(self._proto.send, describe_exception(seq, exc, self._config)))
        except ConnectionClosedError:
            pass

    def _run_hook(self, hook: Callable[..., Any], name: str) -> None:
        """on_disconnect: awaited as a task, or run in a worker thread; errors are logged."""
        if getattr(hook, "__func__", None) is getattr(Service, name):
            return  # the default does nothing: no thread or task for it

        def logged(done: asyncio.Future[Any]) -> None:
            self._tasks.discard(done)
            if not done.cancelled() and done.exception() is not None:
                log.error("%r: %s raised", self, name, exc_info=done.exception())

        task: asyncio.Future[Any]
        try:
            if _is_async(hook):
                task = self._loop.create_task(hook(self))
            else:
                task = self._loop.run_in_executor(self._hook_pool(), hook, self)
        except RuntimeError as exc:  # the loop or the server's executor is shut down
            log.error("%r: %s could not run: %s", self, name, exc)
            return
        self._tasks.add(task)
        task.add_done_callback(logged)

    async def _call_hook(self, hook: Callable[..., Any]) -> None:
        if getattr(hook, "__func__", None) is Service.on_connect:
            return
        if _is_async(hook):
            await hook(self)
        else:
            await self._loop.run_in_executor(self._hook_pool(), hook, self)


def _generator_job(fn: Callable[..., Any], dispatcher: Dispatcher, target: object) -> Callable[..., Any]:
    """``fn(dispatcher, target, args, kwargs)`` as a function of ``(args, kwargs)`` (a thread job)."""

    def job(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(dispatcher, target, args, kwargs)

    return job
