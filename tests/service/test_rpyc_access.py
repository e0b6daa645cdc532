"""RPyC compatibility of attribute access (issue 16): ``exposed_`` names and forwarded proxies.

Forwarding (rpc over rpc): the middle process holds a proxy of the owner's object and hands
it to a third process; what the third may reach is decided by the owner's exposure rules.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from rpc_protocol import Op

import rpc_service
from rpc_service import Connection, Service

from .conftest import ConnectTo

pytestmark = pytest.mark.timeout(60)


class Greeter:
    """An object of the owner: one exposed method, one exposed value, one private attribute."""

    exposed_msg = "hello"

    def __init__(self) -> None:
        self._secret = "owner's secret"
        self.exposed_count = 0

    def exposed_greet(self, name: str) -> str:
        self.exposed_count += 1
        return f"{self.exposed_msg}, {name}"

    def __len__(self) -> int:
        return 3

    def hidden(self) -> str:
        return "not exposed by the owner"


class OwnerService(Service):
    def __init__(self) -> None:
        self.greeter = Greeter()

    def exposed_get_greeter(self) -> Greeter:
        return self.greeter

    def exposed_echo(self, value: Any) -> Any:
        return value


class MiddleService(Service):
    """Holds a connection to the owner and lends the owner's objects on."""

    def __init__(self, upstream: Connection) -> None:
        self.upstream = upstream

    def exposed_forward(self) -> Any:
        return self.upstream.root.get_greeter()


# -- obj.exposed_foo ---------------------------------------------------------------------


def test_exposed_prefix_spelling_reaches_the_same_attribute(connect_to: ConnectTo) -> None:
    service = OwnerService()
    conn = connect_to(service)
    greeter = conn.root.get_greeter()
    assert greeter.exposed_msg == greeter.msg == "hello"
    assert greeter.exposed_greet("ann") == greeter.greet("bob").replace("bob", "ann")
    assert conn.root.exposed_echo(5) == 5
    assert greeter.exposed_count == greeter.count == 2  # an instance attribute too


def test_exposed_prefix_spelling_grants_nothing_more(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService())
    greeter = conn.root.get_greeter()
    for name in ("exposed_hidden", "exposed__secret", "exposed_missing"):
        with pytest.raises(AttributeError):
            getattr(greeter, name)
    with pytest.raises(AttributeError):
        greeter.hidden


def test_exposed_prefix_spelling_follows_a_custom_prefix(connect_to: ConnectTo) -> None:
    class Custom(Service):
        def remote_ping(self) -> str:
            return "pong"

    conn = connect_to(Custom, {"exposed_prefix": "remote_"})
    assert conn.root.remote_ping() == conn.root.ping() == "pong"


# -- forwarded proxies ------------------------------------------------------------------


@pytest.fixture
def chain() -> Iterator[tuple[OwnerService, Connection]]:
    """owner <- middle <- client: returns the owner's service and the client's connection."""
    owner = OwnerService()
    upstream = rpc_service.connect_thread(remote_service=owner)
    downstream = rpc_service.connect_thread(remote_service=MiddleService(upstream))
    try:
        yield owner, downstream
    finally:
        downstream.close()
        upstream.close()


def test_forwarded_proxy_calls_and_reads_follow_the_owner(chain: tuple[OwnerService, Connection]) -> None:
    owner, conn = chain
    greeter = conn.root.forward()
    assert rpc_service.is_proxy(greeter)
    assert greeter.msg == "hello"
    assert greeter.greet("carol") == "hello, carol"
    assert owner.greeter.exposed_count == 1
    assert len(greeter) == 3
    assert "greet" in dir(greeter) and "msg" in dir(greeter)


def test_forwarded_proxy_keeps_the_owner_refusals(chain: tuple[OwnerService, Connection]) -> None:
    _owner, conn = chain
    greeter = conn.root.forward()
    with pytest.raises(AttributeError):
        greeter.hidden()  # the owner does not expose it
    with pytest.raises(AttributeError):
        greeter._secret
    with pytest.raises(AttributeError):
        greeter.count = 5  # the owner's config does not allow setting


def test_forwarded_proxy_internals_stay_out_of_reach(chain: tuple[OwnerService, Connection]) -> None:
    _owner, conn = chain
    greeter = conn.root.forward()
    for name in ("_rpc_conn", "_rpc_oid", "__dict__", "__class__", "__reduce_ex__"):
        with pytest.raises(AttributeError):
            conn._request(Op.GETATTR, greeter, (name,))  # what greeter.<name> would send for any name


def test_forwarded_proxy_setattr_follows_the_owner() -> None:
    owner = OwnerService()
    upstream = rpc_service.connect_thread(remote_service=owner, remote_config={"allow_setattr": True})
    downstream = rpc_service.connect_thread(remote_service=MiddleService(upstream))
    try:
        greeter = downstream.root.forward()
        greeter.count = 41  # allowed by the owner, not by the middle: the owner decides
        assert owner.greeter.exposed_count == 41
    finally:
        downstream.close()
        upstream.close()
