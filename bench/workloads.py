"""The seven workloads, timed identically for every stack.

This module owns what is measured and how: warm-up, per-call timing with ``perf_counter_ns``,
bounds on every loop (a count *and* a time budget), the statistics, and the figures reported.
Stacks only provide operations (:class:`bench.stacks.base.Client`); they never time themselves.
It must not print anything; :mod:`bench.run` formats the results.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from bench.procs import (
    CTX,
    START_TIMEOUT,
    ChildError,
    ServerProcess,
    cpu_plan,
    load_stack,
    memory_kib,
    pinned,
    reap,
    receive,
    send_quietly,
    start_children,
)
from bench.stacks.base import LIST_LEN, Client, StackModule

ECHO_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Counts and time budgets; a loop stops at whichever bound it reaches first."""

    noop_calls: int = 10000
    noop_warmup: int = 300
    noop_budget_s: float = 6.0
    echo_calls: int = 40
    echo_warmup: int = 3
    echo_budget_s: float = 8.0
    callback_calls: int = 2000
    callback_warmup: int = 50
    callback_budget_s: float = 5.0
    list_iterations: int = 10
    list_warmup: int = 1
    list_budget_s: float = 8.0
    concurrent_clients: int = 8
    concurrent_warmup: int = 50
    concurrent_duration_s: float = 5.0
    connect_trials: int = 300
    connect_warmup: int = 5
    connect_budget_s: float = 5.0
    idle_connections: int = 1000
    idle_budget_s: float = 60.0
    #: Connections opened at once by the idle holder when each needs its own thread (managers).
    idle_parallel: int = 16
    #: CPU pinning for workloads 1-4 and 6: ``same`` (server and client on one CPU),
    #: ``split`` (one CPU each) or ``none``. Workloads 5 and 7 never pin.
    pin: str = "same"


DEFAULT = Settings()
QUICK = Settings(
    noop_calls=500, noop_warmup=50, noop_budget_s=1.5,
    echo_calls=5, echo_warmup=1, echo_budget_s=2.0,
    callback_calls=100, callback_warmup=10, callback_budget_s=1.5,
    list_iterations=3, list_warmup=1, list_budget_s=3.0,
    concurrent_warmup=10, concurrent_duration_s=0.5,
    connect_trials=20, connect_warmup=2, connect_budget_s=2.0,
    idle_connections=50, idle_budget_s=15.0,
)


@dataclass(frozen=True)
class Figure:
    """One row of the table: a number some workload produces."""

    key: str
    workload: int
    label: str
    unit: str
    lower_is_better: bool


FIGURES: tuple[Figure, ...] = (
    Figure("noop_median_us", 1, "1 noop() latency, median", "us", True),
    Figure("noop_p99_us", 1, "1 noop() latency, p99", "us", True),
    Figure("echo_mb_s", 2, "2 echo 4 MiB, both ways", "MB/s", False),
    Figure("callback_us", 3, "3 server->client callback", "us", True),
    Figure("list_ms", 4, "4 iterate remote 10k list", "ms", True),
    Figure("concurrent_calls_s", 5, "5 8 clients, aggregate", "calls/s", False),
    Figure("connect_ms", 6, "6 connect + first call", "ms", True),
    Figure("idle_peak_mib", 7, "7 server peak RSS, idle conns", "MiB", True),
    Figure("idle_kib_per_conn", 7, "7 server RSS per idle conn", "KiB", True),
)


@dataclass
class Measurement:
    """What one workload produced for one stack: the figures, plus raw details for the JSON."""

    figures: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class StackRun:
    """One stack under test: its module, and a server shared by workloads 1 to 6."""

    def __init__(self, module_name: str, settings: Settings) -> None:
        self.module_name = module_name
        self.stack: StackModule = load_stack(module_name)
        self.settings = settings
        self._server: ServerProcess | None = None

    def max_connections(self) -> int:
        return max(self.settings.idle_connections, self.settings.concurrent_clients) + 16

    def shared_port(self) -> int:
        """Port of the server used by workloads 1-4 and 6, pinned as ``settings.pin`` says."""
        if self._server is None or not self._server.proc.is_alive():
            if self._server is not None:
                self._server.close()
            server_cpus, _ = cpu_plan(self.settings.pin)
            self._server = ServerProcess(self.module_name, self.max_connections(), server_cpus)
        return self._server.port

    @contextmanager
    def pinned_client(self) -> Iterator[None]:
        """Pin the calling (timing) thread as ``settings.pin`` says, for the block."""
        _, client_cpus = cpu_plan(self.settings.pin)
        with pinned(client_cpus):
            yield

    @contextmanager
    def client(self) -> Iterator[Client]:
        """A pinned client of the shared server, closed at the end of the block."""
        port = self.shared_port()
        with self.pinned_client():
            client = self.stack.connect(port)
            try:
                yield client
            finally:
                client.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


# --------------------------------------------------------------------------- statistics

def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": float(len(samples)),
        "median": statistics.median(samples),
        "p99": percentile(samples, 99),
        "mean": statistics.fmean(samples),
        "min": min(samples),
        "max": max(samples),
    }


def timed_calls(op: Callable[[], object], count: int, warmup: int,
                budget_s: float) -> list[float]:
    """Run ``op`` ``warmup`` times, then time up to ``count`` calls; durations in seconds.

    The warm-up may use at most a fifth of ``budget_s``; the timed calls stop at the budget's
    end, but at least one call is always timed.
    """
    start = time.perf_counter()
    warmup_deadline = start + budget_s / 5.0
    for _ in range(warmup):
        if time.perf_counter() > warmup_deadline:
            break
        op()
    deadline = start + budget_s
    samples: list[float] = []
    while len(samples) < count and (not samples or time.perf_counter() < deadline):
        t0 = time.perf_counter_ns()
        op()
        samples.append((time.perf_counter_ns() - t0) / 1e9)
    return samples


# --------------------------------------------------------------------------- workloads 1-4, 6

def noop_latency(run: StackRun) -> Measurement:
    s = run.settings
    with run.client() as client:
        samples = timed_calls(client.noop, s.noop_calls, s.noop_warmup, s.noop_budget_s)
    micro = [x * 1e6 for x in samples]
    stats = summary(micro)
    return Measurement({"noop_median_us": stats["median"], "noop_p99_us": stats["p99"]},
                       {"unit": "us", "summary": stats, "samples": micro})


def echo_throughput(run: StackRun) -> Measurement:
    s = run.settings
    data = bytes(range(256)) * (ECHO_SIZE // 256)
    with run.client() as client:
        if client.echo(data) != data:  # checked once, outside the timed calls
            raise AssertionError("echo returned different bytes")
        samples = timed_calls(lambda: client.echo(data), s.echo_calls, s.echo_warmup,
                              s.echo_budget_s)
    stats = summary([x * 1e3 for x in samples])
    mb_s = 2 * len(data) / (stats["median"] / 1e3) / 1e6
    return Measurement({"echo_mb_s": mb_s},
                       {"payload_bytes": len(data), "round_trip_ms": stats})


def callback_latency(run: StackRun) -> Measurement:
    s = run.settings
    calls = [0]

    def fn() -> None:
        calls[0] += 1

    with run.client() as client:
        samples = timed_calls(lambda: client.call_back(fn), s.callback_calls,
                              s.callback_warmup, s.callback_budget_s)
    if not len(samples) <= calls[0] <= len(samples) + s.callback_warmup:
        raise AssertionError(f"callback ran {calls[0]} times for {len(samples)} timed calls")
    micro = [x * 1e6 for x in samples]
    stats = summary(micro)
    return Measurement({"callback_us": stats["median"]}, {"unit": "us", "summary": stats})


def list_iteration(run: StackRun) -> Measurement:
    s = run.settings

    def iterate() -> None:
        count = 0
        total = 0
        for x in client.get_list():
            count += 1
            total += x
        if count != LIST_LEN or total != LIST_LEN * (LIST_LEN - 1) // 2:
            raise AssertionError(f"iterated {count} items summing to {total}")

    with run.client() as client:
        samples = timed_calls(iterate, s.list_iterations, s.list_warmup, s.list_budget_s)
    stats = summary([x * 1e3 for x in samples])
    return Measurement({"list_ms": stats["median"]},
                       {"unit": "ms", "items": LIST_LEN, "summary": stats})


def connect_latency(run: StackRun) -> Measurement:
    s = run.settings
    port = run.shared_port()

    def connect_and_call() -> Client:
        client = run.stack.connect(port)
        client.noop()
        return client

    samples: list[float] = []
    deadline = time.perf_counter() + s.connect_budget_s
    with run.pinned_client():
        for i in range(s.connect_warmup + s.connect_trials):
            if samples and time.perf_counter() > deadline:
                break
            t0 = time.perf_counter_ns()
            client = connect_and_call()
            elapsed = (time.perf_counter_ns() - t0) / 1e9
            client.close()  # not timed
            if i >= s.connect_warmup:
                samples.append(elapsed)
    stats = summary([x * 1e3 for x in samples])
    return Measurement({"connect_ms": stats["median"]}, {"unit": "ms", "summary": stats})


# --------------------------------------------------------------------------- workload 5

def _hammer_main(module_name: str, port: int, warmup: int, duration_s: float,
                 conn: Connection, go: Event) -> None:
    """Child: connect, warm up, report ready, wait for ``go``, call noop for ``duration_s``."""
    client: Client | None = None
    try:
        client = load_stack(module_name).connect(port)
        for _ in range(warmup):
            client.noop()
        send_quietly(conn, ("ready", None))
        if not go.wait(START_TIMEOUT * 2):
            raise ChildError("never told to start")
        count = 0
        t0 = time.perf_counter()
        deadline = t0 + duration_s
        while time.perf_counter() < deadline:
            client.noop()
            count += 1
        send_quietly(conn, ("done", (count, time.perf_counter() - t0)))
    except BaseException as exc:
        send_quietly(conn, ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        if client is not None:
            client.close()


def concurrent_clients(run: StackRun) -> Measurement:
    with ServerProcess(run.module_name, run.max_connections()) as server:  # not pinned
        return _hammer(run, server.port)


def _hammer(run: StackRun, port: int) -> Measurement:
    s = run.settings
    go = CTX.Event()
    pipes = [CTX.Pipe(duplex=False) for _ in range(s.concurrent_clients)]
    procs = start_children(
        _hammer_main,
        [(run.module_name, port, s.concurrent_warmup, s.concurrent_duration_s, w, go)
         for _, w in pipes],
        "bench-hammer")
    try:
        for _, w in pipes:
            w.close()
        start_deadline = time.monotonic() + START_TIMEOUT
        for r, _ in pipes:
            kind, value = receive(r, max(0.1, start_deadline - time.monotonic()), "client")
            if kind != "ready":
                raise ChildError(f"a client failed: {value}")
        go.set()
        results: list[tuple[int, float]] = []
        end_deadline = time.monotonic() + s.concurrent_duration_s + 30.0
        for r, _ in pipes:
            kind, value = receive(r, max(0.1, end_deadline - time.monotonic()), "client")
            if kind != "done":
                raise ChildError(f"a client failed: {value}")
            results.append(value)
    finally:
        go.set()
        for r, _ in pipes:
            r.close()
        for proc in procs:
            reap(proc)
    rates = [count / elapsed for count, elapsed in results]
    return Measurement({"concurrent_calls_s": sum(rates)},
                       {"clients": len(results), "duration_s": s.concurrent_duration_s,
                        "calls_per_client": [count for count, _ in results],
                        "calls_s_per_client": rates})


# --------------------------------------------------------------------------- workload 7

def _idle_main(module_name: str, port: int, count: int, parallel: int, budget_s: float,
               conn: Connection, stop: Event) -> None:
    """Child: open up to ``count`` connections (each makes one call), report, hold until ``stop``.

    Connections are opened one after the other, except for stacks whose connection lives only
    as long as its thread (managers): each gets a thread, ``parallel`` of them opening at once.
    """
    stack = load_stack(module_name)
    clients: list[Client] = []
    release = threading.Event()
    lock = threading.Lock()
    slots = threading.BoundedSemaphore(parallel)
    errors: list[str] = []
    deadline = time.monotonic() + budget_s
    hold_s = budget_s + START_TIMEOUT * 4

    def open_one() -> Client:
        client = stack.connect(port)
        client.noop()
        return client

    def hold_in_thread() -> None:
        try:
            client = open_one()
            with lock:
                clients.append(client)
        except BaseException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            slots.release()
        release.wait(hold_s)  # the connection lives as long as this thread

    try:
        if stack.IDLE_NEEDS_THREAD:
            threading.stack_size(256 * 1024)  # this holder process only; not the server
        for _ in range(count):
            if errors or time.monotonic() > deadline:
                break
            if stack.IDLE_NEEDS_THREAD:
                if not slots.acquire(timeout=max(0.01, deadline - time.monotonic())):
                    break
                threading.Thread(target=hold_in_thread, daemon=True).start()
            else:
                try:
                    clients.append(open_one())
                except BaseException as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
        if stack.IDLE_NEEDS_THREAD:  # wait for the opens still in flight
            for _ in range(parallel):
                slots.acquire(timeout=max(0.01, deadline + 5.0 - time.monotonic()))
        with lock:
            opened_count = len(clients)
        send_quietly(conn, ("ready", (opened_count, errors[0] if errors else None)))
        stop.wait(hold_s)
    except BaseException as exc:
        send_quietly(conn, ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        if stack.IDLE_NEEDS_THREAD:
            # Closing means a decref connection per proxy (and the exit handlers would do it
            # again): end the holder now and let the kernel close every socket at once.
            conn.close()
            os._exit(0)
        for client in clients:
            client.close()


def idle_connections(run: StackRun) -> Measurement:
    s = run.settings
    with ServerProcess(run.module_name, run.max_connections()) as server:
        warm = run.stack.connect(server.port)  # load lazily imported code paths first
        warm.noop()
        warm.close()
        time.sleep(0.2)
        before = memory_kib(server.pid)
        stop = CTX.Event()
        r, w = CTX.Pipe(duplex=False)
        (holder,) = start_children(
            _idle_main, [(run.module_name, server.port, s.idle_connections, s.idle_parallel,
                          s.idle_budget_s, w, stop)], "bench-idle")
        try:
            w.close()
            kind, value = receive(r, START_TIMEOUT + s.idle_budget_s, "idle holder")
            if kind != "ready":
                raise ChildError(f"idle holder failed: {value}")
            opened, error = value
            time.sleep(0.3)  # let the server finish whatever each accept started
            after = memory_kib(server.pid)
        finally:
            stop.set()
            r.close()
            holder.join(timeout=10.0)  # it closes its connections and exits by itself
            reap(holder)
    if opened == 0:
        raise ChildError(f"no connection could be opened: {error}")
    peak = after.get("VmHWM", after["VmRSS"])
    base = before.get("VmRSS", 0)
    details: dict[str, Any] = {"requested": s.idle_connections, "opened": opened,
                               "before_kib": before, "after_kib": after}
    if error is not None:
        details["stopped_by"] = error
    return Measurement({"idle_peak_mib": peak / 1024.0,
                        "idle_kib_per_conn": (peak - base) / opened}, details)


WORKLOADS: dict[int, Callable[[StackRun], Measurement]] = {
    1: noop_latency,
    2: echo_throughput,
    3: callback_latency,
    4: list_iteration,
    5: concurrent_clients,
    6: connect_latency,
    7: idle_connections,
}

__all__ = ["DEFAULT", "FIGURES", "QUICK", "WORKLOADS", "Figure", "Measurement", "Settings",
           "StackRun", "percentile", "summary", "timed_calls"]
