"""A server in its own process, for the memory cases of the hardening tests (issue 13).

``python hardening_child.py '{"config": "json"}'`` starts a ThreadedServer of
:class:`MeasuredService` on 127.0.0.1, port 0, with that ``protocol_config``, prints the port
and serves until killed. The service reports its own process's memory (VmRSS and the peak
VmHWM, in KiB, with a way to reset the peak), so a test can measure what one hostile request
cost the server without sharing its process. It imports nothing from the tests.
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import rpc_service


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class MeasuredService(rpc_service.Service):
    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_rss(self) -> int:
        gc.collect()
        return _status("VmRSS")

    def exposed_peak(self) -> int:
        return _status("VmHWM")

    def exposed_reset_peak(self) -> int:
        """Reset the peak to the current RSS (Linux: writing 5 to clear_refs); returns the RSS."""
        gc.collect()
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
        return _status("VmRSS")

    def exposed_proxy_classes(self) -> int:
        """Live proxy classes in this process (after a full collection)."""
        gc.collect()
        return len(rpc_service.Proxy.__subclasses__())

    def exposed_lend(self, count: int) -> tuple[object, ...]:
        """``count`` new plain objects, each lent to the caller by reference."""
        return tuple(Lent() for _ in range(int(count)))

    def exposed_lent_here(self) -> int:
        return Lent.live


class Lent:
    live = 0

    def __init__(self) -> None:
        Lent.live += 1

    def __del__(self) -> None:
        Lent.live -= 1


def main() -> None:
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    server = rpc_service.ThreadedServer(MeasuredService(), port=0, protocol_config=config)
    print(server.port, flush=True)
    server.start()


if __name__ == "__main__":
    main()
