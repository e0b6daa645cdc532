"""Client half of the connect/call/close leak test, run as a separate process.

``python leak_child.py PORT CYCLES WARMUP`` connects to the server on 127.0.0.1:PORT,
and does WARMUP then CYCLES rounds of connect / one call with a callback / close. It
measures its own open descriptors, threads and RSS after the warm-up and after the
cycles (so the client side is checked for leaks too) and prints one JSON object on
stdout. Every loop is bounded; any failed call or wrong reply ends the run with the
error in the report and exit status 1.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from typing import Any

import rpc_service


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def snapshot() -> dict[str, int]:
    gc.collect()
    return {"fds": open_fds(), "threads": threading.active_count(), "rss_kib": rss_kib()}


def cycle(port: int, index: int) -> None:
    with rpc_service.connect("127.0.0.1", port, timeout=10.0, config={"sync_request_timeout": 10.0}) as conn:
        reply = conn.root.apply(lambda x: x * 3 + 1, index)
        if reply != (index * 3 + 1) * 2:
            raise AssertionError(f"cycle {index}: wrong reply {reply!r}")


def main(argv: list[str]) -> int:
    port, cycles, warmup = (int(arg) for arg in argv[1:4])
    report: dict[str, Any] = {"cycles": cycles, "warmup": warmup}
    try:
        for index in range(warmup):
            cycle(port, index)
        report["before"] = snapshot()
        start = time.perf_counter()
        for index in range(cycles):
            cycle(port, index)
        report["seconds"] = time.perf_counter() - start
        report["after"] = snapshot()
    except BaseException as exc:  # reported to the test, which fails with it
        report["error"] = f"{type(exc).__name__}: {exc}"
        print(json.dumps(report), flush=True)
        return 1
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
