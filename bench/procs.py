"""Child processes of the benchmark: servers, hammering clients, idle-connection holders.

This module owns starting every child with the ``spawn`` method, getting a result back through
a pipe with a deadline, and always reaping the child (terminate, then kill, each with a bounded
join). It must not time anything that is reported; :mod:`bench.workloads` does that.
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, cast

from bench.stacks.base import StackModule

CTX = multiprocessing.get_context("spawn")
#: How long a child may take to start (spawn + imports) and report back.
START_TIMEOUT = 60.0


def load_stack(module_name: str) -> StackModule:
    return cast(StackModule, importlib.import_module(module_name))


def _server_main(module_name: str, conn: multiprocessing.connection.Connection,
                 max_connections: int, cpus: frozenset[int] | None) -> None:
    try:
        if cpus is not None:  # before any thread exists, so that every server thread inherits it
            os.sched_setaffinity(0, cpus)
        stack = load_stack(module_name)
        stack.serve(lambda port: conn.send(("port", port)), max_connections)
    except BaseException as exc:  # report, then die: the parent is waiting on the pipe
        send_quietly(conn, ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        sys.exit(1)


def send_quietly(conn: multiprocessing.connection.Connection, message: object) -> None:
    """Send from a child to the parent, saying nothing if the parent has gone (interrupted)."""
    try:
        conn.send(message)
    except OSError:
        pass


def reap(proc: BaseProcess, timeout: float = 5.0) -> None:
    """Stop ``proc`` for sure: terminate, wait, kill, wait (each wait bounded)."""
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout)
    else:
        proc.join(timeout)


class ChildError(RuntimeError):
    """A child process failed or did not answer in time."""


def receive(conn: multiprocessing.connection.Connection, timeout: float, what: str) -> Any:
    """One message from a child, or ChildError if none arrives within ``timeout`` seconds."""
    if not conn.poll(timeout):
        raise ChildError(f"{what}: no answer within {timeout:.0f} s")
    try:
        return conn.recv()
    except EOFError:
        raise ChildError(f"{what}: the process exited without answering") from None


class ServerProcess:
    """A stack's server in its own process; a context manager that always reaps it."""

    def __init__(self, module_name: str, max_connections: int,
                 cpus: frozenset[int] | None = None) -> None:
        parent, child = CTX.Pipe(duplex=False)
        self.proc = CTX.Process(target=_server_main,
                                args=(module_name, child, max_connections, cpus),
                                name=f"bench-server-{module_name}", daemon=True)
        self.proc.start()
        child.close()
        try:
            kind, value = receive(parent, START_TIMEOUT, f"{module_name} server")
            if kind != "port":
                raise ChildError(f"{module_name} server failed: {value}")
            self.port = int(value)
        except BaseException:
            reap(self.proc)
            raise
        finally:
            parent.close()

    @property
    def pid(self) -> int:
        pid = self.proc.pid
        assert pid is not None
        return pid

    def close(self) -> None:
        reap(self.proc)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def start_children(target: Callable[..., None], args_list: list[tuple[Any, ...]],
                   name: str) -> list[BaseProcess]:
    """Start one spawned daemon process per argument tuple (the caller reaps them)."""
    procs: list[BaseProcess] = []
    try:
        for i, args in enumerate(args_list):
            child = CTX.Process(target=target, args=args, name=f"{name}-{i}", daemon=True)
            child.start()
            procs.append(child)
    except BaseException:
        for proc in procs:
            reap(proc)
        raise
    return procs


def all_cpus() -> frozenset[int] | None:
    """The CPUs this process may run on, or None where affinity is not supported."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return frozenset(os.sched_getaffinity(0))


def cpu_plan(pin: str) -> tuple[frozenset[int] | None, frozenset[int] | None]:
    """(server CPUs, client CPUs) for a pinning mode: ``same``, ``split`` or ``none``."""
    cpus = all_cpus()
    if pin == "none" or cpus is None:
        return None, None
    ordered = sorted(cpus)
    if pin == "same" or len(ordered) < 2:
        return frozenset(ordered[:1]), frozenset(ordered[:1])
    return frozenset(ordered[:1]), frozenset(ordered[1:2])


@contextmanager
def pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the calling thread on ``cpus`` (no-op for None), restoring its affinity afterwards.

    Threads started inside keep the pinned affinity after the block ends.
    """
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def memory_kib(pid: int) -> dict[str, int]:
    """``VmHWM`` (peak resident) and ``VmRSS`` of a process, in KiB, from /proc/<pid>/status."""
    figures: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                figures[key] = int(rest.split()[0])
    return figures


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit); return it.

    Children inherit the limit, so call this before starting any of them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
            soft = new_soft
        except (ValueError, OSError):
            pass
    return int(soft) if soft != resource.RLIM_INFINITY else wanted


__all__ = ["CTX", "ChildError", "ServerProcess", "all_cpus", "cpu_plan", "load_stack",
           "memory_kib", "pinned", "raise_fd_limit", "reap", "receive", "send_quietly",
           "start_children"]
