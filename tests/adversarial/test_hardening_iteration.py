"""Hardening (issue 13 item 18): a server answering every ``ITER_NEXT`` with an empty, unfinished
batch made ``for x in proxy`` spin forever. A few empty unfinished batches in a row are a
protocol error (an honest peer never sends one: a short batch means the iterator is exhausted).
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from tests.adversarial.helpers import RawPeer, joined
from tests.adversarial.test_hostile_server import HostileServer, next_request

LIST = wire.Ref(2, 2, ("builtins", "list", (), ("__iter__", "__len__"), "list"))
ITERATOR = wire.Ref(3, 3, ("builtins", "list_iterator", (), ("__iter__", "__next__"), ""))
MAX_SPINS = 200


@pytest.fixture
def spinning() -> Iterator[tuple[HostileServer, list[int]]]:
    asked: list[int] = []

    def script(peer: RawPeer) -> None:
        request = next_request(peer)  # root.numbers()
        peer.sock.sendall(joined(peer.proto.send(wire.Reply(request.seq, LIST))))
        request = next_request(peer)  # iter(proxy): CALLATTR __iter__
        peer.sock.sendall(joined(peer.proto.send(wire.Reply(request.seq, ITERATOR))))
        for _ in range(MAX_SPINS):  # bounded: a client that never stops asking fails the test
            request = next_request(peer)
            if request.op is not wire.Op.ITER_NEXT:
                return
            asked.append(request.seq)
            peer.sock.sendall(joined(peer.proto.send(wire.Reply(request.seq, ((), False)))))

    server = HostileServer(script)
    yield server, asked
    server.close()


def test_empty_unfinished_batches_are_a_protocol_error(spinning: tuple[HostileServer, list[int]]) -> None:
    server, asked = spinning
    conn = rpc_service.connect("127.0.0.1", server.port, config={"sync_request_timeout": 5.0})
    try:
        with pytest.raises(wire.RemoteProtocolError, match="empty unfinished batches"):
            for _ in conn.root.numbers():
                pass
    finally:
        conn.close()
    assert 1 <= len(asked) <= 4, f"the client asked {len(asked)} times"


class Numbers(rpc_service.Service):
    def exposed_numbers(self, count: int) -> list[int]:
        return list(range(count))


def test_honest_batches_still_iterate() -> None:
    server = rpc_service.ThreadedServer(Numbers, port=0)
    thread = server.start_in_thread()
    try:
        with rpc_service.connect("127.0.0.1", server.port, config={"iter_batch": 1}) as conn:
            for count in (0, 1, 2, 3, 1000):
                assert list(conn.root.numbers(count)) == list(range(count))
    finally:
        server.close()
        thread.join(timeout=10)
