"""Hardening (issue 13 item 8): ``allow_pickle`` on a server alone let a client read private state
(a raw PICKLE request on the root returned its ``_api_key``) and run code (service code that
deep-copied an argument unpickled the client's gadget).

Unless ``allow_all_attrs`` is also set (everything reachable: classic mode), ``allow_pickle``
covers plain data only, both ways: pickling refuses any object whose state the exposure
rules do not already open, and unpickling names no global beyond the builtins plain data needs.
"""

from __future__ import annotations

import copy
import pickle
import socket
from typing import Any, Callable, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import RemoteError, Service, ThreadedServer
from tests.adversarial.helpers import RawPeer

FIRED: list[str] = []
API_KEY = "sk-live-0123456789abcdef"


def fire(marker: str) -> str:
    FIRED.append(marker)
    return marker


class Gadget:
    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return fire, ("the gadget ran",)


class Keeper(Service):
    def __init__(self) -> None:
        self._api_key = API_KEY
        self.kept: Any = None

    def exposed_keep(self, value: Any) -> str:
        self.kept = copy.deepcopy(value)  # ordinary service code: keep a private copy
        return "kept"

    def exposed_numbers(self) -> list[Any]:
        return [1, 2.5, "three", b"four", (5, None), {"six": {7}}, frozenset({8}), complex(9, 1), range(3), bytearray(b"x")]


@pytest.fixture(autouse=True)
def no_gadget_fired() -> Iterator[None]:
    FIRED.clear()
    yield
    assert not FIRED, "peer bytes were unpickled into a call"


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadedServer(Keeper(), port=0, protocol_config={"allow_pickle": True, "sync_request_timeout": 5.0})
    thread = server.start_in_thread()
    try:
        yield server.port
    finally:
        server.close()
        thread.join(timeout=10)


def test_a_raw_pickle_request_does_not_reveal_private_state(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        peer = RawPeer(sock)
        peer.handshake()
        for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
            answer = peer.call(wire.Op.PICKLE, peer.root_ref, (protocol,))
            assert isinstance(answer, wire.ErrorReply), "the server pickled its service for the peer"
            assert API_KEY not in repr(answer)
            assert "allow_pickle covers plain data" in str(answer.args)


def test_a_peer_gadget_is_never_unpickled_by_service_code(port: int) -> None:
    # The attacker's side pickles anything (its config is its own business).
    attacker = {"allow_pickle": True, "allow_all_attrs": True, "sync_request_timeout": 5.0}
    with rpc_service.connect("127.0.0.1", port, config=attacker) as conn:
        with pytest.raises(RemoteError, match="refusing to unpickle"):
            conn.root.keep(Gadget())
        assert conn.root.keep([1, 2, 3]) == "kept"  # plain data still copies


def test_plain_data_still_pickles_both_ways(port: int) -> None:
    with rpc_service.connect("127.0.0.1", port, config={"allow_pickle": True, "sync_request_timeout": 5.0}) as conn:
        numbers = conn.root.numbers()
        copied = copy.deepcopy(numbers)
        assert type(copied) is list and copied == Keeper().exposed_numbers()
        assert pickle.loads(pickle.dumps(numbers)) == copied


def test_classic_mode_still_pickles_anything() -> None:
    """allow_all_attrs on both sides: everything is reachable anyway, so pickle is unrestricted."""
    from fractions import Fraction

    class Fractions(Service):
        def exposed_third(self) -> Fraction:
            return Fraction(1, 3)

    config = {"allow_pickle": True, "allow_all_attrs": True}
    with rpc_service.connect_thread(service=rpc_service.VoidService, remote_service=Fractions, config=config, remote_config=config) as conn:
        assert copy.deepcopy(conn.root.third()) == Fraction(1, 3)
