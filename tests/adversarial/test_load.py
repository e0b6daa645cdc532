"""Load: many clients at once, every call answered through a callback to the client.

Against the adversarial ``server`` (one ``ThreadedServer`` in this process) with the
bystander ``normal_client`` connected throughout:

- **50 concurrent clients × 2 000 calls**: each client is a thread of this process with a
  connection of its own; all connect first, then start together (a barrier). Each call is
  ``root.call(callback, i)``: the server calls the client's callback, which computes a value
  unique to that client and call, so a reply that went to the wrong caller, got lost or was
  answered twice fails the test; every one of the 100 000 replies is checked. Two round
  trips per call (request, callback, callback's reply, reply). After the run each client
  pings and checks that its object table holds only its root service (the callbacks lent
  100 000 times were all released), and the server is back to its threads and fds.
- **16 threads sharing one connection**, 500 calls each with a callback: the reader role
  passes between threads while the server's callbacks are served by whichever of them
  reads, and every thread still gets its own replies.

Threads, not processes: the client threads share the GIL with the server, which makes this
the harsher test of the reader-role hand-off (every wake-up contends), and measured it runs
the full 100 000 calls in about 13-20 s on 2 cores. ``RPC_LOAD_SCALE`` (default 1) scales the
number of calls per client, e.g. ``RPC_LOAD_SCALE=0.1`` for a quick run. Figures (time,
calls/s, latency, peak threads) are printed (``pytest -s``) and kept in
``tests/adversarial/.figures/`` (git-ignored). Nothing is asserted about speed.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import pytest

import rpc_service
from rpc_service import Connection, ThreadedServer
from tests.adversarial.conftest import CLIENT_CONFIG
from tests.adversarial.helpers import Baseline, TargetService, wait_until
from tests.adversarial.leak_child import record_figures, snapshot

SCALE = float(os.environ.get("RPC_LOAD_SCALE", "1"))
CLIENTS = 50
CALLS = max(1, round(2000 * SCALE))
SHARED_THREADS = 16
SHARED_CALLS = max(1, round(500 * SCALE))
MAX_BLOCK_GROWTH = 10_000  # Python memory blocks the server may keep after the run (measured: ~700)
JOIN_WITHIN = 150.0  # seconds for all the clients together (a hang fails, never blocks CI)


def make_callback(client: int) -> Callable[[int], int]:
    """A callback whose answer is unique to ``client`` and the call's argument."""

    def callback(i: int) -> int:
        return i * 1_000 + client

    return callback


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def run_threads(count: int, body: Callable[[int, threading.Barrier], None], join_within: float) -> list[threading.Thread]:
    """Start ``count`` threads running ``body(index, barrier)``; the barrier releases them all
    at once (it is passed by the caller-side thread too). Returns the threads still alive
    after ``join_within`` seconds (none, when all went well)."""
    barrier = threading.Barrier(count + 1)
    threads = [threading.Thread(target=body, args=(index, barrier), name=f"load-{index}", daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=60)
    deadline = time.monotonic() + join_within
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]


@pytest.mark.timeout(200)
def test_fifty_clients_with_callbacks(
    server: ThreadedServer, service: TargetService, normal_client: Connection, baseline: Baseline
) -> None:
    errors: list[str] = []
    done = [0] * CLIENTS  # correct replies per client
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    leftovers: list[int] = [-1] * CLIENTS  # each client's object table after the run
    conns: list[Connection] = []
    lock = threading.Lock()
    peak_threads = 0

    def client(index: int, barrier: threading.Barrier) -> None:
        nonlocal peak_threads
        try:
            conn = rpc_service.connect("127.0.0.1", server.port, config=CLIENT_CONFIG)
        except BaseException as exc:
            errors.append(f"client {index} could not connect: {exc!r}")
            barrier.abort()
            return
        with lock:
            conns.append(conn)
        try:
            barrier.wait(timeout=60)
            with lock:
                peak_threads = max(peak_threads, threading.active_count())
            callback = make_callback(index)
            call = conn.root.call
            mine = latencies[index]
            clock = time.perf_counter
            for i in range(CALLS):
                start = clock()
                reply = call(callback, i)
                mine.append(clock() - start)
                if reply != i * 1_000 + index:
                    errors.append(f"client {index} call {i}: got {reply!r}, expected {i * 1_000 + index}")
                    return
                done[index] += 1
            conn.ping()  # brings the server's last releases of our callback
            leftovers[index] = conn._boxer.lent
        except BaseException as exc:
            errors.append(f"client {index} after {done[index]} calls: {type(exc).__name__}: {exc}")
        finally:
            conn.close()

    before = snapshot()
    start = time.perf_counter()
    try:
        stuck = run_threads(CLIENTS, client, JOIN_WITHIN)
    finally:
        for conn in list(conns):
            conn.close()  # unblocks any stuck client; a no-op for the others
    elapsed = time.perf_counter() - start
    calls = sum(done)
    flat = sorted(latency for per_client in latencies for latency in per_client)
    latency_ms = {"p50": percentile(flat, 0.50), "p99": percentile(flat, 0.99), "max": flat[-1]} if flat else {}
    del flat, latencies[:], conns[:]  # the test's own data, not the server's
    threads = before["threads"]
    back = wait_until(lambda: len(server.clients) == 1 and threading.active_count() <= threads, 10.0)
    after = snapshot()

    figures: dict[str, Any] = {
        "clients": CLIENTS,
        "calls_per_client": CALLS,
        "calls": calls,
        "round_trips": 2 * calls,
        "seconds": round(elapsed, 2),
        "calls_per_s": round(calls / elapsed),
        "latency_ms": {name: round(seconds * 1000, 3) for name, seconds in latency_ms.items()},
        "peak_threads": peak_threads,
        "server_before": before,
        "server_after": after,
        "errors": errors[:10],
    }
    record_figures("load_fifty_clients", figures)

    assert not stuck, f"{len(stuck)} clients still running after {JOIN_WITHIN} s; {errors[:5]}"
    assert not errors, errors[:10]
    assert calls == CLIENTS * CALLS
    # every callback was released by the server: each client lends only its root service now
    assert leftovers == [1] * CLIENTS, leftovers
    assert back, f"the server still has {len(server.clients)} clients and {threading.active_count()} threads"
    assert after["fds"] == before["fds"] and after["threads"] == before["threads"], figures
    # 100 000 calls leave no per-call garbage behind (one object per call would be 100 000 blocks)
    assert after["py_blocks"] - before["py_blocks"] < MAX_BLOCK_GROWTH, figures
    assert service.connects - service.disconnects == 1  # the bystander
    assert normal_client.root.echo("after") == "after"


@pytest.mark.timeout(60)
def test_threads_sharing_one_connection_with_callbacks(server: ThreadedServer, baseline: Baseline) -> None:
    conn = rpc_service.connect("127.0.0.1", server.port, config=CLIENT_CONFIG)
    errors: list[str] = []
    done = [0] * SHARED_THREADS

    def worker(index: int, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(timeout=60)
            callback = make_callback(index)
            for i in range(SHARED_CALLS):
                reply = conn.root.call(callback, i)
                if reply != i * 1_000 + index:
                    errors.append(f"thread {index} call {i}: got {reply!r}")
                    return
                done[index] += 1
        except BaseException as exc:
            errors.append(f"thread {index} after {done[index]} calls: {type(exc).__name__}: {exc}")

    try:
        start = time.perf_counter()
        stuck = run_threads(SHARED_THREADS, worker, 45.0)
        elapsed = time.perf_counter() - start
        if not stuck:
            conn.ping()
        lent = conn._boxer.lent
    finally:
        conn.close()
    calls = sum(done)
    record_figures(
        "load_shared_connection",
        {"threads": SHARED_THREADS, "calls": calls, "seconds": round(elapsed, 2), "calls_per_s": round(calls / elapsed), "lent_after": lent},
    )
    assert not stuck, f"{len(stuck)} threads still running; {errors[:5]}"
    assert not errors, errors[:10]
    assert calls == SHARED_THREADS * SHARED_CALLS
    assert lent == 1  # only this side's root service: every callback was released
