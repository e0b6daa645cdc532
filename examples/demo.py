"""The README demo: a chat service served by a ThreadedServer, used by a client over TCP.

The client passes a callback; the server calls it back across the connection. Run it with
``hatch run demo:run`` (or ``python examples/demo.py`` with the packages installed).
"""

from __future__ import annotations

from typing import Callable

import rpc_service


class Chat3Service(rpc_service.Service):
    """Version 3 of a chat service; also answers to the unversioned name "Chat"."""

    ALIASES = ["Chat3", "Chat"]

    def __init__(self) -> None:
        self.listeners: list[Callable[[str, str], object]] = []

    def on_connect(self, conn: rpc_service.Connection) -> None:
        print(f"[server] a client connected: {conn!r}")

    def exposed_subscribe(self, listener: Callable[[str, str], object]) -> None:
        self.listeners.append(listener)  # a proxy of the client's function

    def exposed_say(self, who: str, text: str) -> int:
        for listener in self.listeners:
            listener(who, text)  # runs on the client, while this call is in flight
        return len(self.listeners)

    def exposed_history(self) -> list[str]:
        return ["hello", "world"]  # lists travel by reference: the client iterates remotely


def main() -> None:
    with rpc_service.ThreadedServer(Chat3Service, hostname="127.0.0.1", port=0) as server:
        server.start_in_thread()
        print(f"[server] {server.service.get_service_name()} (aliases {server.service.get_service_aliases()}) on port {server.port}")

        with rpc_service.connect("127.0.0.1", server.port) as conn:
            chat = conn.root
            print(f"[client] connected to {chat.get_service_name()}, aliases {chat.get_service_aliases()}")

            received: list[str] = []

            def on_message(who: str, text: str) -> None:
                received.append(f"{who}: {text}")
                print(f"[client] callback from the server -> {who}: {text}")

            chat.subscribe(on_message)
            delivered = chat.say("alice", "hi from the demo")
            print(f"[client] say() delivered to {delivered} listener(s); received {received}")
            print(f"[client] history, iterated remotely: {[line.upper() for line in chat.history()]}")
            try:
                chat.shutdown_everything()
            except AttributeError as exc:
                print(f"[client] unexposed names stay unreachable: {exc}")
    print("[demo] done: server closed, no threads left behind")


if __name__ == "__main__":
    main()
