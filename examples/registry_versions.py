"""Versioned services found by name through a registry.

Two servers register with a TCP registry: ``Chat1Service`` (names CHAT1) and ``Chat3Service``
(names CHAT3 and, through ``ALIASES``, the unversioned CHAT). A client that wants "chat" gets
version 3; a client pinned to "chat1" still gets version 1. Everything stays on 127.0.0.1
(a TCP registry, so no broadcast); run it with
``hatch run demo:python examples/registry_versions.py``.
"""

from __future__ import annotations

import time

import rpc_registry
import rpc_service


class Chat1Service(rpc_service.Service):
    """The old protocol: one method."""

    def exposed_post(self, text: str) -> str:
        return f"v1 posted {text!r}"


class Chat3Service(rpc_service.Service):
    """The current protocol; also answers to the unversioned name."""

    ALIASES = ["Chat3", "Chat"]

    def exposed_post(self, text: str, room: str = "lobby") -> str:
        return f"v3 posted {text!r} in {room}"


def main() -> None:
    with rpc_registry.TCPRegistryServer(host="127.0.0.1", port=0) as registry:
        registry.start_in_thread()
        print(f"[registry] TCP registry on 127.0.0.1:{registry.port}")
        registrar = rpc_registry.TCPRegistryClient("127.0.0.1", registry.port)
        with rpc_service.ThreadedServer(Chat1Service, registrar=registrar) as v1, rpc_service.ThreadedServer(
            Chat3Service, registrar=registrar
        ) as v3:
            v1.start_in_thread()
            v3.start_in_thread()
            for name in ("chat", "chat1", "chat3"):
                providers = wait_for_providers(registrar, name)
                print(f"[client] discover({name!r}) -> {providers}")
            with rpc_registry.connect_by_service("chat", registrar=registrar) as conn:
                reply = conn.root.post("hello", room="news")
                print(f"[client] chat  -> {reply}")
                assert reply.startswith("v3")
            with rpc_registry.connect_by_service("chat1", registrar=registrar) as conn:
                reply = conn.root.post("hello")
                print(f"[client] chat1 -> {reply}")
                assert reply.startswith("v1")
        # the servers unregistered when they closed
        print(f"[client] after closing: discover('chat') -> {rpc_registry.discover('chat', registrar=registrar)}")
    print("[example] done")


def wait_for_providers(registrar: rpc_registry.TCPRegistryClient, name: str) -> list[tuple[str, int]]:
    """Servers register from a thread as they start: ask again for up to 5 s."""
    deadline = time.monotonic() + 5
    while True:
        providers = rpc_registry.discover(name, registrar=registrar)
        if providers or time.monotonic() > deadline:
            return providers
        time.sleep(0.05)


if __name__ == "__main__":
    main()
