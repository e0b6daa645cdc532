"""Stopping a server: Ctrl-C on ``start()`` and closing with an unreachable registry.

Ctrl-C (SIGINT, i.e. KeyboardInterrupt in the main thread) on a blocking ``start()`` closes
the server and returns: the program goes on, with no traceback from the library. Closing
waits for a registry that does not answer at most ``Server.REGISTRY_CLOSE_TIMEOUT`` seconds.
The registrar here is a fake that blocks the way a registry client does when the registry's
host is unreachable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Sequence

import pytest

import rpc_service

REPO_ROOT = Path(__file__).resolve().parents[2]


class UnreachableRegistrar:
    """A Registrar whose every request hangs (bounded, so the test cannot hang)."""

    REREGISTER_INTERVAL = 60.0

    def __init__(self, hang: float = 20.0) -> None:
        self.hang = threading.Event()
        self.seconds = hang
        self.calls: list[str] = []

    def register(self, aliases: Sequence[str], port: int, interface: str = "") -> bool:
        self.calls.append("register")
        self.hang.wait(self.seconds)
        return False

    def unregister(self, port: int) -> None:
        self.calls.append("unregister")
        self.hang.wait(self.seconds)


@pytest.mark.parametrize("server_class", [rpc_service.ThreadedServer, rpc_service.ThreadPoolServer])
def test_close_waits_for_an_unreachable_registry_only_briefly(server_class: type[rpc_service.Server]) -> None:
    registrar = UnreachableRegistrar()
    server = server_class(rpc_service.VoidService, registrar=registrar)
    thread = server.start_in_thread()
    try:
        deadline = time.monotonic() + 5
        while "register" not in registrar.calls:  # the lease thread is now stuck in register()
            assert time.monotonic() < deadline, "the server never tried to register"
            time.sleep(0.01)
        start = time.monotonic()
        server.close()
        elapsed = time.monotonic() - start
        thread.join(5)
        assert not thread.is_alive()
        assert elapsed < server.REGISTRY_CLOSE_TIMEOUT + 1.0, f"close() took {elapsed:.2f} s"
        assert registrar.calls == ["register", "unregister"]  # it still tried to withdraw
    finally:
        registrar.hang.set()  # release the stuck daemon threads


CHILD = textwrap.dedent(
    """
    import sys, threading
    import rpc_service
    from tests.service.test_interrupt import UnreachableRegistrar

    server = rpc_service.ThreadedServer(rpc_service.VoidService, registrar=UnreachableRegistrar())
    threading.Timer(0.2, lambda: print("listening", server.port, flush=True)).start()
    server.start()  # Ctrl-C here
    print("start() returned", flush=True)
    """
)


def test_ctrl_c_on_start_closes_the_server_and_returns() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the test timeout
        assert line.startswith("listening"), line
        port = int(line.split()[1])
        with rpc_service.connect("127.0.0.1", port) as conn:  # a client is connected when Ctrl-C comes
            conn.ping()
            proc.send_signal(signal.SIGINT)
            start = time.monotonic()
            out, err = proc.communicate(timeout=10)
            elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert "start() returned" in out
    assert "Traceback" not in err, err
    assert elapsed < 1.0 + 3.0, f"exiting took {elapsed:.2f} s"  # REGISTRY_CLOSE_TIMEOUT, plus a slow machine's margin
