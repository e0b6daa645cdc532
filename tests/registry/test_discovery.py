"""Discovery with real servers: ``discover``, ``list_services``, ``connect_by_service``, and the
auto-registration lifecycle of a ``ThreadedServer`` given a registry client as ``registrar``.
"""

from __future__ import annotations

import socket
import threading
from typing import Iterator, Sequence

import pytest

import rpc_registry
from rpc_registry import RegistryClient, RegistryServer, TCPRegistryClient, UDPRegistryClient, connect_by_service
from rpc_service import Service, ServiceNotFoundError, ThreadedServer, VoidService
from tests.registry.helpers import FakeClock, MakeRegistry, client_for


class EchoService(Service):
    ALIASES = ["Echo", "Parrot"]

    def exposed_echo(self, value: object) -> object:
        return value


class Chat1Service(Service):
    pass


class Chat2Service(Service):
    pass


class Chat3Service(Service):
    ALIASES = ["Chat3", "Chat"]


class Recording:
    """A registrar wrapper that reports acknowledged registrations (to wait without sleeping).

    ``epoch`` is a number the test bumps (e.g. after moving the registry's clock);
    :meth:`wait_acked` waits for a registration that *began* in that epoch or later.
    """

    def __init__(self, client: RegistryClient, interval: float = 60.0) -> None:
        self.client = client
        self.REREGISTER_INTERVAL = interval
        self.epoch = 0
        self.unregistered: list[int] = []
        self._acked: list[int] = []  # the epoch in which each acknowledged registration began
        self._condition = threading.Condition()

    def register(self, aliases: Sequence[str], port: int, interface: str = "") -> bool:
        began = self.epoch
        acked = self.client.register(aliases, port, interface)
        if acked:
            with self._condition:
                self._acked.append(began)
                self._condition.notify_all()
        return acked

    def unregister(self, port: int) -> None:
        self.client.unregister(port)
        self.unregistered.append(port)

    def wait_acked(self, epoch: int = 0, timeout: float = 5.0) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: any(began >= epoch for began in self._acked), timeout)


@pytest.fixture
def servers() -> Iterator[list[ThreadedServer]]:
    started: list[ThreadedServer] = []
    yield started
    for server in started:
        server.close()


def serve(servers: list[ThreadedServer], service: type[Service], client: RegistryClient) -> ThreadedServer:
    """Start a server that registers through ``client``; return once it is registered."""
    registrar = Recording(client)
    server = ThreadedServer(service, registrar=registrar)
    servers.append(server)
    server.start_in_thread()
    assert registrar.wait_acked(), "the server did not register"
    return server


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more: connecting is refused


def test_module_functions(make_registry: MakeRegistry) -> None:
    client = client_for(make_registry(allow_listing=True))
    client.register(["Chat3", "Chat"], 5000)
    assert rpc_registry.discover("chat", client) == [("127.0.0.1", 5000)]
    assert rpc_registry.discover("nothing", client) == []
    assert rpc_registry.list_services(client) == ["CHAT", "CHAT3"]


def test_connect_by_service_skips_a_dead_provider(make_registry: MakeRegistry, servers: list[ThreadedServer]) -> None:
    client = client_for(make_registry())
    assert client.register(["Echo"], dead_port())  # registered first: tried first
    live = ThreadedServer(EchoService)
    servers.append(live)
    live.start_in_thread()
    assert client.register(["Echo"], live.port)
    assert len(client.discover("echo")) == 2
    with connect_by_service("ECHO", client) as conn:
        assert conn.root.echo("hi") == "hi"


def test_connect_by_service_names_every_failure(make_registry: MakeRegistry) -> None:
    client = client_for(make_registry())
    ports = [dead_port(), dead_port()]
    for port in ports:
        client.register(["Echo"], port)
    with pytest.raises(ServiceNotFoundError, match="none of the 2 servers offering service 'echo' answered") as info:
        connect_by_service("echo", client)
    for port in ports:
        assert f"127.0.0.1:{port}" in str(info.value)


def test_connect_by_service_unknown_name(make_registry: MakeRegistry) -> None:
    with pytest.raises(ServiceNotFoundError, match="no server offers service 'nobody'"):
        connect_by_service("nobody", client_for(make_registry()))


def test_connect_by_service_without_a_registry() -> None:
    client = TCPRegistryClient("127.0.0.1", dead_port(), timeout=0.5)
    with pytest.raises(ServiceNotFoundError, match="cannot look up service 'echo'") as info:
        connect_by_service("echo", client)
    assert isinstance(info.value.__cause__, rpc_registry.RegistryUnavailableError)


def test_versioned_servers_are_found_by_their_names(make_registry: MakeRegistry, servers: list[ThreadedServer]) -> None:
    client = client_for(make_registry())
    chat1, _, chat3 = (serve(servers, service, client) for service in (Chat1Service, Chat2Service, Chat3Service))
    for spelling in ("chat", "Chat", "CHAT"):
        assert client.discover(spelling) == [("127.0.0.1", chat3.port)]
    for spelling in ("chat1", "Chat1", "CHAT1"):
        assert client.discover(spelling) == [("127.0.0.1", chat1.port)]
    with connect_by_service("chat", client) as conn:
        assert conn.root.get_service_name() == "CHAT3"
    with connect_by_service("Chat1", client) as conn:
        assert conn.root.get_service_name() == "CHAT1"


def test_threaded_server_registers_refreshes_and_unregisters(
    no_thread_leak: None, make_registry: MakeRegistry, clock: FakeClock
) -> None:
    registry: RegistryServer = make_registry(pruning_timeout=10, clock=clock)
    registrar = Recording(client_for(registry), interval=0.05)
    server = ThreadedServer(EchoService, registrar=registrar)
    try:
        server.start_in_thread()
        assert registrar.wait_acked()
        address = ("127.0.0.1", server.port)
        assert registrar.client.discover("echo") == [address]
        assert registrar.client.discover("PARROT") == [address]  # every alias
        for _ in range(3):  # 24 s of registry time: alive only because the server refreshes
            clock.advance(8)
            registrar.epoch += 1
            assert registrar.wait_acked(registrar.epoch)  # a refresh sent after the clock moved
            assert registrar.client.discover("echo") == [address]
    finally:
        server.close()
    assert registrar.unregistered == [address[1]]
    assert registrar.client.discover("echo") == []
    assert registrar.client.discover("parrot") == []


def test_a_server_that_dies_without_unregistering_lapses(make_registry: MakeRegistry, clock: FakeClock) -> None:
    registry = make_registry(pruning_timeout=10, clock=clock)
    registrar = Recording(client_for(registry))
    server = ThreadedServer(EchoService, registrar=registrar)
    server.start_in_thread()
    assert registrar.wait_acked()
    server.auto_register = False  # as if the process died: close() will not unregister
    server.close()
    assert registrar.client.discover("echo") == [("127.0.0.1", server.port)]
    clock.advance(10.5)
    assert registrar.client.discover("echo") == []


def test_the_default_registrar_is_a_udp_broadcast_client() -> None:
    client = UDPRegistryClient()
    assert (client.ip, client.port, client.broadcast) == ("255.255.255.255", 18811, True)
    assert rpc_registry.REGISTRY_PORT == rpc_registry.DEFAULT_PORT == 18811


def test_wrong_arguments_are_clear_errors_at_once() -> None:
    """Regression: discover("x", 5) failed with AttributeError, TCPRegistryClient(ip, "x")
    with "Servname not supported" at the first request, RedisRegistry(5) with AttributeError,
    and a server's registrar=5 or authenticator=5 only when clients came."""
    with pytest.raises(TypeError, match="registry client"):
        rpc_registry.discover("x", 5)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="registry client"):
        rpc_registry.list_services(5)  # type: ignore[arg-type]  # the error under test
    for port in ("x", 0, 70000, True):
        with pytest.raises(ValueError, match="port must be"):
            rpc_registry.TCPRegistryClient("127.0.0.1", port)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="host name"):
        rpc_registry.UDPRegistryClient(None)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="Redis URL"):
        rpc_registry.RedisRegistry(5)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="registrar must be a Registrar"):
        ThreadedServer(VoidService, registrar=5)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="authenticator must be a callable"):
        ThreadedServer(VoidService, authenticator=5)  # type: ignore[arg-type]  # the error under test
