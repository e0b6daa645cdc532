"""What a call context costs a call: ``conn.root.noop()`` plain, under a deadline, and in its own
``with deadline()``, timed in one process against one server.

The full run (``bench/run.py``) compares the ``rpc`` and ``rpc-deadline`` columns, each from its
own connection and server, minutes apart: on a noisy host that cannot separate a few percent.
This script times the three ways of calling on one connection, in short alternating blocks
(each way first in turn), and reports each block's time relative to the plain block of the same
round (the median and quartiles of those ratios), so that drift of the host cancels out:

- ``plain``: no call context;
- ``carried``: every call made inside one ``deadline(3600)`` (each request carries its budget, the
  server serves it under the deadline): what carrying a deadline costs a call;
- ``each``: ``with deadline(60): conn.root.noop()``, the with-statement included.

Server and client are pinned to one CPU, as ``bench/run.py`` does by default. Run with
``hatch run bench:context`` or ``python bench/call_context.py [--blocks N] [--calls N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.procs import ServerProcess, cpu_plan, pinned  # noqa: E402  # (after the path)
from bench.stacks import rpc  # noqa: E402

rpc_service: Any = rpc.rpc_service


def modes(root: Any) -> dict[str, Callable[[int], None]]:
    deadline = rpc_service.deadline

    def plain(count: int) -> None:
        for _ in range(count):
            root.noop()

    def carried(count: int) -> None:
        with deadline(3600):
            for _ in range(count):
                root.noop()

    def each(count: int) -> None:
        for _ in range(count):
            with deadline(60):
                root.noop()

    return {"plain": plain, "carried": carried, "each": each}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--blocks", type=int, default=50, help="blocks of each way (default 50)")
    parser.add_argument("--calls", type=int, default=800, help="calls per block (default 800)")
    args = parser.parse_args(argv)
    if args.blocks < 1 or args.calls < 1:
        parser.error("--blocks and --calls must be at least 1")
    server_cpus, client_cpus = cpu_plan("same")
    with ServerProcess(rpc.__name__, 16, server_cpus) as server, pinned(client_cpus):
        client = rpc.connect(server.port)
        try:
            ways = modes(client._conn.root)
            for run in ways.values():  # warm up
                run(args.calls)
            times: dict[str, list[float]] = {name: [] for name in ways}
            order = list(ways)
            for block in range(args.blocks):
                for name in order[block % 3 :] + order[: block % 3]:  # (each way first in turn)
                    start = time.perf_counter()
                    ways[name](args.calls)
                    times[name].append((time.perf_counter() - start) / args.calls * 1e6)
        finally:
            client.close()
    plain = times["plain"]
    print(f"{'way':8} {'median us':>10} {'vs plain':>9} {'quartiles':>13}")
    for name, samples in times.items():
        ratios = sorted(x / y for x, y in zip(samples, plain))
        quartiles = f"{ratios[len(ratios) // 4]:.3f}-{ratios[3 * len(ratios) // 4]:.3f}"
        print(f"{name:8} {statistics.median(samples):10.2f} {statistics.median(ratios):9.3f} {quartiles:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
