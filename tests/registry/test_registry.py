"""Registry servers and clients over loopback, UDP unicast and TCP alike.

Register, discover, unregister; aliases and letter case; the seed's versioning scenario; lease
expiry on an injected clock; listing on and off; the advertised address; authentication on
and off; a registry that is not there; the servers' lifecycle.
"""

from __future__ import annotations

import socket

import pytest

from rpc_registry import (
    RegistryClient,
    RegistryRefusedError,
    RegistryUnavailableError,
    TCPRegistryClient,
    TCPRegistryServer,
    UDPRegistryClient,
    UDPRegistryServer,
)
from rpc_registry import _client as client_module
from rpc_service import Registrar
from tests.registry.helpers import KEY, OTHER_KEY, FakeClock, MakeRegistry, client_for


def test_clients_are_registrars() -> None:
    assert isinstance(UDPRegistryClient("127.0.0.1"), Registrar)
    assert isinstance(TCPRegistryClient("127.0.0.1"), Registrar)
    assert RegistryClient.REREGISTER_INTERVAL * 3 <= 180.0


def test_register_discover_unregister(make_registry: MakeRegistry) -> None:
    client = client_for(make_registry())
    assert client.discover("echo") == []
    assert client.register(["Echo"], 5000)
    assert client.discover("echo") == [("127.0.0.1", 5000)]  # the interface that faces the registry
    assert client.register(["Echo"], 5001, "127.0.0.2")
    assert client.discover("ECHO") == [("127.0.0.1", 5000), ("127.0.0.2", 5001)]
    client.unregister(5000)
    assert client.discover("Echo") == [("127.0.0.2", 5001)]
    client.unregister(5001)
    assert client.discover("echo") == []


def test_every_alias_in_any_letter_case(make_registry: MakeRegistry) -> None:
    client = client_for(make_registry())
    assert client.register(["Calculator", "Calc"], 6000)
    for name in ("calculator", "CALC", "Calc", "cAlCuLaToR"):
        assert client.discover(name) == [("127.0.0.1", 6000)]


def test_the_seeds_versioning_scenario(make_registry: MakeRegistry) -> None:
    client = client_for(make_registry())
    assert client.register(["CHAT1"], 7001)  # Chat1Service
    assert client.register(["CHAT2"], 7002)  # Chat2Service
    assert client.register(["Chat3", "Chat"], 7003)  # Chat3Service, ALIASES = ["Chat3", "Chat"]
    for spelling in ("chat", "Chat", "CHAT"):
        assert client.discover(spelling) == [("127.0.0.1", 7003)]
    for spelling in ("chat1", "Chat1", "CHAT1"):
        assert client.discover(spelling) == [("127.0.0.1", 7001)]


def test_the_advertised_address_is_registered_not_the_source(make_registry: MakeRegistry) -> None:
    client = client_for(make_registry())
    assert client.register(["Far"], 5000, interface="198.51.100.7")
    assert client.discover("far") == [("198.51.100.7", 5000)]
    client.unregister(5000)  # remembers the address it advertised
    assert client.discover("far") == []


def test_leases_lapse_without_refresh(make_registry: MakeRegistry, clock: FakeClock) -> None:
    server = make_registry(pruning_timeout=30, clock=clock)
    client = client_for(server)
    assert server.pruning_timeout == 30
    assert client.register(["Echo"], 5000)
    assert client.register(["Other"], 5001)
    clock.advance(20)
    assert client.register(["Echo"], 5000)  # the refresh
    clock.advance(20)
    assert client.discover("echo") == [("127.0.0.1", 5000)]
    assert client.discover("other") == []  # 40 s without a refresh
    clock.advance(31)
    assert client.discover("echo") == []


def test_listing_off_by_default(make_registry: MakeRegistry) -> None:
    server = make_registry()
    client = client_for(server)
    assert not server.allow_listing
    client.register(["Echo"], 5000)
    with pytest.raises(RegistryRefusedError, match="listing is disabled"):
        client.list()


def test_listing_on(make_registry: MakeRegistry) -> None:
    client = client_for(make_registry(allow_listing=True))
    assert client.list() == []
    client.register(["Chat3", "Chat"], 5000)
    client.register(["Echo"], 5001)
    assert client.list() == ["CHAT", "CHAT3", "ECHO"]


# -- authentication ---------------------------------------------------------------------------


def test_without_a_key_anyone_registers(make_registry: MakeRegistry) -> None:
    server = make_registry()
    assert client_for(server).register(["Echo"], 5000)
    assert client_for(server).discover("echo") == [("127.0.0.1", 5000)]
    # a client holding a key trusts only a registry that signs with it
    suspicious = client_for(server, key=KEY, timeout=0.3)
    with pytest.raises(RegistryUnavailableError, match="unsigned reply, but we hold a key"):
        suspicious.discover("echo")
    assert not suspicious.register(["Echo"], 5001)


def test_with_a_key_only_key_holders_register(make_registry: MakeRegistry, caplog: pytest.LogCaptureFixture) -> None:
    server = make_registry(key=KEY)
    owner = client_for(server, key=KEY)
    stranger = client_for(server)
    impostor = client_for(server, key=OTHER_KEY, timeout=0.3)
    assert not stranger.register(["Echo"], 6666, "203.0.113.66")
    assert "authentication required" in caplog.text
    assert not impostor.register(["Echo"], 6667, "203.0.113.67")
    assert owner.register(["Echo"], 5000)
    assert stranger.discover("echo") == [("127.0.0.1", 5000)]  # anyone may look names up
    assert owner.discover("echo") == [("127.0.0.1", 5000)]
    stranger.unregister(5000)
    assert owner.discover("echo") == [("127.0.0.1", 5000)]  # nobody without the key can drop it
    owner.unregister(5000)
    assert owner.discover("echo") == []
    assert server.handler.refused == 3


# -- failures and lifecycle -------------------------------------------------------------------


def closed_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_no_registry_there(kind: str) -> None:
    client: RegistryClient
    if kind == "udp":
        client = UDPRegistryClient("127.0.0.1", closed_port(socket.SOCK_DGRAM), timeout=0.2)
    else:
        client = TCPRegistryClient("127.0.0.1", closed_port(socket.SOCK_STREAM), timeout=0.2)
    with pytest.raises(RegistryUnavailableError):
        client.discover("echo")
    with pytest.raises(RegistryUnavailableError):
        client.list()
    assert client.register(["Echo"], 5000) is False
    client.unregister(5000)  # logged, not raised


def test_close_is_idempotent_and_final(no_thread_leak: None, make_registry: MakeRegistry) -> None:
    server = make_registry()
    client = client_for(server, timeout=0.2)
    assert client.register(["Echo"], 5000)
    server.close()
    server.close()
    assert server.closed
    with pytest.raises(RuntimeError):
        server.start()
    with pytest.raises(RegistryUnavailableError):
        client.discover("echo")


@pytest.mark.parametrize("kind", [UDPRegistryServer, TCPRegistryServer])
def test_a_server_runs_once_and_closes_without_being_started(kind: type[UDPRegistryServer] | type[TCPRegistryServer]) -> None:
    with kind("127.0.0.1", 0) as server:
        assert server.port > 0 and server.host == "127.0.0.1"
        assert repr(server).endswith(f"127.0.0.1:{server.port}>")
    assert server.closed
    with kind("127.0.0.1", 0) as server:
        server.start_in_thread()
        with pytest.raises(RuntimeError):
            server.start_in_thread()


@pytest.mark.parametrize("kind", [UDPRegistryServer, TCPRegistryServer])
def test_a_bad_port_or_host_is_a_clear_error(kind: type[UDPRegistryServer] | type[TCPRegistryServer]) -> None:
    for port in (70000, -1, True, "18811"):
        with pytest.raises(ValueError, match="port must be"):
            kind("127.0.0.1", port)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(ValueError, match="no-such-host.invalid:0: the host does not resolve"):
        kind("no-such-host.invalid", 0)
    with pytest.raises(TypeError, match="host name"):
        kind(5, 0)  # type: ignore[arg-type]  # the error under test


def test_udp_binds_all_interfaces_by_default_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with UDPRegistryServer(port=0) as server:
        assert server.host == "0.0.0.0"
    assert "all interfaces" in caplog.text and "without a key" in caplog.text


def test_tcp_binds_loopback_by_default() -> None:
    with TCPRegistryServer(port=0) as server:
        assert server.host == "127.0.0.1"


def test_udp_client_broadcast_detection() -> None:
    assert UDPRegistryClient().broadcast
    assert UDPRegistryClient("10.77.0.255").broadcast
    assert not UDPRegistryClient("127.0.0.1").broadcast
    assert UDPRegistryClient("127.0.0.1", broadcast=True).broadcast


def test_a_failing_handler_costs_one_request_only(
    make_registry: MakeRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_registry()
    client = client_for(server, timeout=0.3)
    real = server.handler.handle
    calls: list[bytes] = []

    def flaky(data: bytes, source: str, *, max_reply: int | None = None) -> bytes | None:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(data, source, max_reply=max_reply)

    monkeypatch.setattr(server.handler, "handle", flaky)
    with pytest.raises(RegistryUnavailableError):
        client.discover("echo")
    assert "internal error RuntimeError" in caplog.text  # through the rate-limited drop log
    assert client.discover("echo") == []


def test_advertising_loopback_to_a_remote_registry_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(client_module, "facing_address", lambda ip, port: "192.0.2.10")
    client = UDPRegistryClient("127.0.0.1", closed_port(socket.SOCK_DGRAM), timeout=0.05)
    client.register(["Echo"], 5000, "127.0.0.1")
    assert "other hosts cannot reach it" in caplog.text
