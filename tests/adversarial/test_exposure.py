"""Attribute escapes: nobody gets past the exposure rules of a default service.

Only ``exposed_``-prefixed (or ``@exposed``) names and the fixed set of safe special methods
are reachable (DESIGN §6). Each escape is tried twice: through the proxy API (which refuses
dunders locally, before anything is sent) and through raw requests on the connection
(``conn._request(Op.GETATTR, proxy, ("__class__",))`` and friends), which is what a hostile
client sends whatever its proxies do. Every refusal is an ``AttributeError`` whose message
names the attribute.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

import rpc_protocol as wire
from rpc_protocol import Op
from rpc_service import Connection, Proxy
from tests.adversarial.helpers import Baseline, RawPeer, TargetService

ESCAPES = [
    "__class__", "__dict__", "__globals__", "__subclasses__", "__reduce__", "__reduce_ex__",
    "__init_subclass__", "__getattribute__", "__setattr__", "__init__", "__new__", "__module__",
    "__weakref__", "__code__", "__closure__", "__func__", "__self__", "__builtins__", "__base__",
    "__bases__", "__mro__", "__objclass__", "__getstate__", "__setstate__", "__class_getitem__",
    "__annotations__", "__defaults__", "__kwdefaults__", "__wrapped__", "__get__", "__set_name__",
]  # fmt: skip
PRIVATE = ["_private_method", "_lock", "_hidden", "_private", "_TargetService__x", "_"]
NOT_EXPOSED = ["secret", "public_method", "name", "mro", "live_items", "on_connect", "connection_config", "items"]
# (exposed_echo itself is a second spelling of echo, as in RPyC: issue 16; prefixing other names reaches nothing)
EXPOSED_TRICKS = ["exposed_secret", "exposed_exposed_echo", "exposed___class__", "exposed__private_method", "exposed_", ""]


def targets(conn: Connection) -> dict[str, Any]:
    """Proxies of every kind of server object a client can get hold of."""
    root = conn.root
    return {
        "service": root,
        "item": root.make("x"),  # a plain object, not a Service
        "class": root.ItemClass,  # a class handed out on purpose
        "function": root.ItemClass.get_name,  # a plain function (from the class)
        "bound-method": conn._request(Op.GETATTR, root, ("echo",)),  # (root.echo is a local method of the proxy class)
        "list": root.numbers(),
        "iterator": root.forever(),
    }


def refused(call: Callable[[], object], name: str) -> str:
    with pytest.raises(AttributeError) as info:
        call()
    message = str(info.value)
    assert repr(name) in message or name in message, f"the refusal does not name {name!r}: {message!r}"
    return message


# -- through raw requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["dunder", "private", "not-exposed", "exposed-tricks"])
def test_raw_getattr_and_callattr_are_refused(group: str, normal_client: Connection, baseline: Baseline) -> None:
    names = {"dunder": ESCAPES, "private": PRIVATE, "not-exposed": NOT_EXPOSED, "exposed-tricks": EXPOSED_TRICKS}[group]
    request = normal_client._request
    for kind, target in targets(normal_client).items():
        for name in names:
            if kind == "item" and name == "name":
                pass  # (plainly not exposed either: checked like the rest)
            message = refused(lambda: request(Op.GETATTR, target, (name,)), name)
            if name.startswith("_") and not name.startswith("exposed"):
                assert "denied" in message, (kind, name, message)
            refused(lambda: request(Op.CALLATTR, target, (name,)), name)


def test_raw_setattr_and_delattr_are_refused(normal_client: Connection, baseline: Baseline) -> None:
    request = normal_client._request
    root = normal_client.root
    for name in ["echo", "secret", "__class__", "__eq__", "_lock", "exposed_echo"]:
        with pytest.raises(AttributeError, match="not allowed by this side's config"):
            request(Op.SETATTR, root, (name, 1))
        with pytest.raises(AttributeError, match="not allowed by this side's config"):
            request(Op.DELATTR, root, (name,))
    assert root.echo(1) == 1  # nothing was replaced


@pytest.mark.server_config({"allow_setattr": True, "allow_delattr": True})
def test_setattr_allowed_still_refuses_specials_and_private_names(normal_client: Connection, baseline: Baseline) -> None:
    request = normal_client._request
    root = normal_client.root
    for name in ["__class__", "__dict__", "__eq__", "__hash__", "__repr__", "__getattribute__", "_lock", "__init_subclass__"]:
        refused(lambda: request(Op.SETATTR, root, (name, None)), name)
        refused(lambda: request(Op.DELATTR, root, (name,)), name)
    refused(lambda: request(Op.SETATTR, root, ("secret", "stolen")), "secret")
    refused(lambda: request(Op.SETATTR, root, ("exposed_evil", 1)), "exposed_evil")
    assert root.echo("intact") == "intact"


def test_non_string_and_odd_names_are_refused(normal_client: Connection, baseline: Baseline) -> None:
    request = normal_client._request
    root = normal_client.root
    for name in [5, None, b"__class__", ("__class__",), 1.5]:
        with pytest.raises(AttributeError, match="must be strings"):
            request(Op.GETATTR, root, (name,))
    for odd in ["echo.__globals__", "__class__.__subclasses__", "echo ", "ECHO", "\u0435cho"]:
        refused(lambda: request(Op.GETATTR, root, (odd,)), odd)


def test_format_spec_cannot_reach_attributes(normal_client: Connection, baseline: Baseline) -> None:
    root = normal_client.root
    with pytest.raises(TypeError):
        normal_client._request(Op.CALLATTR, root, ("__format__", "{0.__class__}"))
    with pytest.raises(TypeError):
        format(root, "{0.__init__.__globals__}")


def test_introspection_shows_only_exposed_names(normal_client: Connection, baseline: Baseline) -> None:
    root = normal_client.root
    visible = set(dir(root))
    assert {"echo", "make", "ItemClass"} <= visible
    assert not visible & {"secret", "public_method", "_private_method", "_lock", "live_items", "__dict__", "__class__"}
    descriptor = normal_client._request(Op.INSPECT, root)
    assert "echo" in descriptor[2] and not {"secret", "public_method", "_private_method"} & set(descriptor[2])
    item = root.make("y")
    assert set(dir(item)) & {"name", "secret", "_private", "_hidden", "public_method"} == set()
    assert "get_name" in dir(item)


def test_exposed_names_still_work(normal_client: Connection, baseline: Baseline) -> None:
    """The rules are not just "refuse everything": what is exposed is reachable by its public name."""
    root = normal_client.root
    item = root.make("z")
    assert item.get_name() == "z"
    assert root.ItemClass("w").get_name() == "w"
    assert root.get_service_name() == "TARGET"
    assert len(root.numbers()) == 100 and root.numbers()[3] == 3  # safe specials: len(), []


# -- through the proxy API ---------------------------------------------------------------------------


def test_proxies_refuse_dunders_locally(normal_client: Connection, baseline: Baseline, monkeypatch: pytest.MonkeyPatch) -> None:
    """No dunder lookup on a proxy is sent to the server: it is answered by the local proxy
    class (its own ``__class__``, ``__init__``...) or refused with an error naming it."""
    proxies = targets(normal_client)
    sent: list[tuple[Op, tuple[Any, ...]]] = []
    forward = normal_client._request

    def recording(op: Op, target: object, args: tuple[Any, ...] = (), *rest: Any) -> Any:
        sent.append((op, args))
        return forward(op, target, args, *rest)

    monkeypatch.setattr(normal_client, "_request", recording)
    for kind, target in proxies.items():
        for name in ESCAPES:
            try:
                getattr(target, name)
            except AttributeError as exc:
                assert name in str(exc), (kind, name, str(exc))
        cls = target.__class__
        assert cls is not TargetService and (issubclass(cls, Proxy) or cls in (list, type)), (kind, cls)
    assert not sent, f"dunder lookups were sent to the server: {sent}"


def test_proxies_forward_other_names_and_the_server_refuses_them(normal_client: Connection, baseline: Baseline) -> None:
    root = normal_client.root
    for name in PRIVATE + NOT_EXPOSED + EXPOSED_TRICKS:
        if name == "":
            continue
        refused(lambda: getattr(root, name), name)
    item = root.make("q")
    for name in ["name", "secret", "_private", "_hidden", "public_method", "exposed_name"]:
        refused(lambda: getattr(item, name), name)
    for name in ["secret", "_lock", "echo"]:
        with pytest.raises(AttributeError, match="not allowed"):
            setattr(root, name, "x")
        with pytest.raises(AttributeError, match="not allowed"):
            delattr(root, name)


def test_hostile_peer_without_proxies_gets_the_same_refusals(raw_peer: Callable[[], RawPeer], baseline: Baseline) -> None:
    """A raw peer addresses the server's objects by id (BACKREF): same rules, same messages."""
    peer = raw_peer()
    peer.handshake()
    for name in ["__class__", "__dict__", "__globals__", "_private_method", "secret", "exposed_secret"]:
        answer = peer.call(Op.GETATTR, peer.root_ref, (name,))
        assert isinstance(answer, wire.ErrorReply) and answer.exc_type == "AttributeError", answer
        assert name in str(answer.args[0])
    for op in (Op.SETATTR, Op.DELATTR):
        answer = peer.call(op, peer.root_ref, ("echo", 1) if op is Op.SETATTR else ("echo",))
        assert isinstance(answer, wire.ErrorReply) and answer.exc_type == "AttributeError"
    answer = peer.call(Op.PICKLE, peer.root_ref, (2,))
    assert isinstance(answer, wire.ErrorReply) and "allow_pickle" in str(answer.args[0])
    answer = peer.call(Op.CALL, peer.root_ref, ())
    assert isinstance(answer, wire.ErrorReply) and answer.exc_type == "TypeError"
