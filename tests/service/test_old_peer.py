"""A peer of the previous protocol version (1) still interoperates.

The peer here is a raw socket that announces versions 1..1 in its preface and reads what it
receives with a protocol connection settled at version 1, which fails on any version-2 frame
(a CONTEXT flag, a CANCEL). Against it, both drivers make calls under a deadline: the
deadline is not sent, the caller still gives up on time (``DeadlineExceeded``), no CANCEL
reaches the peer, its late answer is dropped, and the connection keeps serving. A version-1
client of a ThreadedServer is served as before, its handlers seeing no deadline.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import DeadlineExceeded, aio

from .aio.helpers import run

_V1_PREFACE = b"\x89RPC\x01\x01\x00\x00"  # magic, versions 1..1, reserved: the old version's bytes
_DESCRIPTOR = ("oldpeer", "OldService", ("echo", "hang"), (), "")  # rpc-service's type descriptor


def _joined(buffers: list[wire.Buffer]) -> bytes:
    return b"".join(bytes(buffer) for buffer in buffers)


class OldServer:
    """A one-connection version-1 server on a raw socket, in a thread: ``echo(x)`` answers at
    once; ``hang()`` is answered only after the next echo (late, after the caller gave up)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.seen: list[wire.Event] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.listener.settimeout(10)
            sock, _ = self.listener.accept()
            with sock:
                sock.settimeout(10)
                self._talk(sock)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            self.listener.close()

    def _talk(self, sock: socket.socket) -> None:
        proto = wire.Connection()
        preface = _joined(proto.send(wire.Preface(1, 1)))
        assert preface == _V1_PREFACE
        sock.sendall(preface)
        hung: list[int] = []
        hello_sent = False
        end = time.monotonic() + 20
        while time.monotonic() < end:
            data = sock.recv(65536)
            for event in proto.receive_data(data):  # raises on any version-2 frame
                self.seen.append(event)
                if isinstance(event, wire.Hello) and not hello_sent:
                    root = wire.Ref(1, 1, info=_DESCRIPTOR)
                    sock.sendall(_joined(proto.send(wire.Hello(services=("OLD",), root=root))))
                    hello_sent = True
                elif isinstance(event, wire.Request):
                    name = event.args[0]
                    if name == "hang":
                        hung.append(event.seq)
                        continue
                    out = proto.send_reply(event.seq, event.args[1])
                    for seq in hung:  # the late answers, after a fresh one
                        out += proto.send_reply(seq, "late")
                    hung.clear()
                    sock.sendall(_joined(out))
                elif isinstance(event, wire.Close):
                    sock.sendall(_joined(proto.send(wire.Close())))
                    return
            if not data:
                return
            assert proto.version == 1


def _check(server: OldServer) -> None:
    server.thread.join(10)
    assert not server.errors, server.errors
    requests = [event for event in server.seen if isinstance(event, wire.Request)]
    assert requests and all(request.context is None for request in requests)
    assert not any(isinstance(event, wire.Cancel) for event in server.seen)


def test_threaded_client_against_a_version_1_server() -> None:
    server = OldServer()
    with rpc_service.connect("127.0.0.1", server.port, config={"tracing": False}) as conn:
        assert conn._proto.version == 1
        with rpc_service.deadline(5):
            assert conn.root.echo("no context sent") == "no context sent"
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            with rpc_service.deadline(0.2):
                conn.root.hang()
        assert time.monotonic() - start < 0.2 + 0.05
        assert conn.root.echo(1) == 1  # the late answer to hang() comes with it, dropped
        assert conn.root.echo(2) == 2
    _check(server)


def test_aio_client_against_a_version_1_server() -> None:
    server = OldServer()

    async def main() -> None:
        async with await aio.connect("127.0.0.1", server.port, config={"tracing": False}) as conn:
            with rpc_service.deadline(5):
                assert await conn.root.echo("no context sent") == "no context sent"
            with pytest.raises(DeadlineExceeded):
                with rpc_service.deadline(0.2):
                    await conn.root.hang()
            assert await conn.root.echo(1) == 1
            assert await conn.root.echo(2) == 2

    run(main())
    _check(server)


class Budget(rpc_service.Service):
    def exposed_remaining(self) -> Any:
        return rpc_service.remaining()


def test_a_version_1_client_is_served_as_before() -> None:
    with rpc_service.ThreadedServer(Budget) as server:
        server.start_in_thread()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            proto = wire.Connection()
            sock.sendall(_joined([*proto.send(wire.Preface(1, 1)), *proto.send(wire.Hello())]))
            events: list[wire.Event] = []
            while not any(isinstance(event, wire.Hello) for event in events):
                events += proto.receive_data(sock.recv(65536))
            assert events[0] == wire.Preface(1, 2) and proto.version == 1  # it offers 1..2, settles on 1
            sock.sendall(_joined(proto.send_request(1, wire.Op.CALLATTR, wire.BackRef(events[-1].root.oid), ("remaining",))))  # type: ignore[union-attr]
            replies: list[wire.Event] = []
            while not replies:
                replies = [event for event in proto.receive_data(sock.recv(65536)) if isinstance(event, wire.Reply)]
            assert replies == [wire.Reply(1, None)]
