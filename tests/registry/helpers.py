"""Helpers shared by the registry tests: keys, a fake clock, registries and clients on loopback.

Owns what more than one test module needs and the conftest fixtures build on. Registries bind
127.0.0.1 and port 0; clients talk unicast to them. Nothing here touches another network.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import rpc_protocol
import rpc_registry
import rpc_service
from rpc_registry import RegistryClient, RegistryServer, TCPRegistryClient, TCPRegistryServer, UDPRegistryClient, UDPRegistryServer

#: A key long enough for the registry (at least 16 bytes).
KEY = b"0123456789abcdef-registry-test-key"
OTHER_KEY = b"fedcba9876543210-some-other-key!!"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MakeRegistry(Protocol):
    def __call__(self, **kwargs: Any) -> RegistryServer: ...


def client_for(server: RegistryServer, timeout: float = 2.0, **kwargs: Any) -> RegistryClient:
    """A client talking unicast to ``server`` over its transport."""
    if isinstance(server, UDPRegistryServer):
        return UDPRegistryClient("127.0.0.1", server.port, timeout, **kwargs)
    return TCPRegistryClient("127.0.0.1", server.port, timeout, **kwargs)


def start_registry(transport: str, **kwargs: Any) -> RegistryServer:
    kind: type[RegistryServer] = UDPRegistryServer if transport == "udp" else TCPRegistryServer
    server = kind("127.0.0.1", 0, **kwargs)
    server.start_in_thread()
    return server


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` (bounded: every 10 ms, at most ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def source_path() -> str:
    """A PYTHONPATH under which a child process imports the same packages as this one."""
    roots = [str(Path(module.__file__ or "").resolve().parents[1]) for module in (rpc_protocol, rpc_service, rpc_registry)]
    return os.pathsep.join(dict.fromkeys(roots))
