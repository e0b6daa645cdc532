"""Pickle gadgets: nothing is ever unpickled unless the *local* side enabled pickle.

Copying or pickling a proxy is the one place the library calls ``pickle.loads``, on bytes the
peer produced. It must refuse, with a clear ``TypeError``, unless this side's config has
``allow_pickle`` (whatever the peer allows); the server side only ever *dumps* (and only with
its own ``allow_pickle``). A gadget whose unpickling would call :func:`fire` is thrown at every
other place bytes enter, to show none of them unpickles.
"""

from __future__ import annotations

import copy
import pickle
import time
from typing import Any, Callable, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_protocol import Op
from rpc_service import Connection, ThreadedServer
from tests.adversarial.helpers import Baseline, RawPeer, TargetService

FIRED: list[str] = []


def fire(marker: str) -> str:
    """What the gadget calls when unpickled: leaves a mark."""
    FIRED.append(marker)
    return marker


class Gadget:
    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return fire, ("the gadget ran",)


GADGET = pickle.dumps(Gadget())


@pytest.fixture(autouse=True)
def no_gadget_fired() -> Iterator[None]:
    FIRED.clear()
    yield
    assert not FIRED, "peer bytes were unpickled"


def copies(proxy: Any) -> dict[str, Callable[[], object]]:
    return {
        "pickle.dumps": lambda: pickle.dumps(proxy),
        "pickle.dumps-protocol-0": lambda: pickle.dumps(proxy, protocol=0),
        "copy.copy": lambda: copy.copy(proxy),
        "copy.deepcopy": lambda: copy.deepcopy(proxy),
        "deepcopy-in-a-list": lambda: copy.deepcopy([proxy]),
    }


def proxies(conn: Connection) -> dict[str, Any]:
    root = conn.root
    return {"service": root, "item": root.make("x"), "list": root.numbers(), "class": root.ItemClass}


class Recorder:
    """Wraps ``conn._request`` to see which operations a client actually sent."""

    def __init__(self, conn: Connection, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ops: list[Op] = []
        forward = conn._request

        def recording(op: Op, target: object, args: tuple[Any, ...] = (), *rest: Any) -> Any:
            self.ops.append(op)
            return forward(op, target, args, *rest)

        monkeypatch.setattr(conn, "_request", recording)


def test_without_allow_pickle_copying_a_proxy_is_a_clear_type_error(
    normal_client: Connection, baseline: Baseline, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = proxies(normal_client)
    sent = Recorder(normal_client, monkeypatch)
    for kind, proxy in targets.items():
        for how, attempt in copies(proxy).items():
            with pytest.raises(TypeError, match="pickle is not enabled on this side .allow_pickle.") as info:
                attempt()
            assert "proxy" in str(info.value), (kind, how)
    assert Op.PICKLE not in sent.ops


@pytest.mark.server_config({"allow_pickle": True})
def test_the_peer_allowing_pickle_is_not_enough(normal_client: Connection, baseline: Baseline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server would happily send pickled bytes: this client still never asks for them."""
    targets = proxies(normal_client)
    sent = Recorder(normal_client, monkeypatch)
    for proxy in targets.values():
        for attempt in copies(proxy).values():
            with pytest.raises(TypeError, match="this side"):
                attempt()
    assert Op.PICKLE not in sent.ops


def test_a_client_allowing_pickle_is_refused_by_a_server_that_does_not(server: ThreadedServer, baseline: Baseline) -> None:
    with rpc_service.connect("127.0.0.1", server.port, config={"allow_pickle": True}) as conn:
        for how, attempt in copies(conn.root.numbers()).items():
            with pytest.raises(ValueError, match="not allowed by the peer's config .allow_pickle."):
                attempt()


@pytest.mark.server_config({"allow_pickle": True})
def test_both_sides_allowing_pickle_copies_by_value(server: ThreadedServer, baseline: Baseline) -> None:
    with rpc_service.connect("127.0.0.1", server.port, config={"allow_pickle": True}) as conn:
        numbers = conn.root.numbers()
        copied = copy.deepcopy(numbers)
        assert type(copied) is list and copied == list(range(100))
        assert pickle.loads(pickle.dumps(numbers)) == list(range(100))


@pytest.mark.server_config({"allow_pickle": True})
def test_the_server_never_unpickles_what_a_peer_sends(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, service: TargetService
) -> None:
    """Even with allow_pickle on the server, gadget bytes sent as values, keyword values, ping
    payloads, PICKLE arguments and close reasons stay bytes."""
    peer = raw_peer()
    peer.handshake()
    answer = peer.call_root("echo", GADGET)
    assert isinstance(answer, wire.Reply) and answer.value == GADGET
    answer = peer.call(Op.CALLATTR, peer.root_ref, ("echo",), {"value": GADGET})
    assert isinstance(answer, wire.Reply) and answer.value == GADGET
    answer = peer.call(Op.PICKLE, peer.root_ref, (GADGET,))  # a protocol number that is a gadget
    assert isinstance(answer, wire.ErrorReply)
    seq = peer.proto.next_seq()
    peer.sock.sendall(b"".join(bytes(b) for b in peer.proto.send(wire.Ping(seq, GADGET))))
    pong = peer.wait_for(wire.Pong)
    assert isinstance(pong, wire.Pong) and pong.payload == GADGET
    answer = peer.call(Op.PICKLE, peer.root_ref, (pickle.HIGHEST_PROTOCOL,))  # dumping is what the server does
    assert isinstance(answer, wire.ErrorReply) or isinstance(answer.value, bytes)
    peer.sock.sendall(b"".join(bytes(b) for b in peer.proto.send(wire.Close(GADGET.decode("latin-1")))))
    time.sleep(0.05)
    assert normal_client.root.echo(GADGET) == GADGET
