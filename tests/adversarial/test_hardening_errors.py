"""Hardening (issue 13): what a peer's error descriptions and a server's error replies may do.

- Item 4: a peer describing its error as ``builtins.BaseException`` (or ``KeyboardInterrupt``,
  ``SystemExit``, ``GeneratorExit``) must never have it rebuilt outside ``Exception``; it
  arrives as :class:`RemoteError`, and no server worker dies from it (a pool of two workers
  survives many such callbacks).
- Item 19: by default a server sends the type and message of an error only; the traceback
  text (paths, chained messages, versions) only with ``include_local_traceback=True``.
"""

from __future__ import annotations

import socket
import threading
from typing import Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import RemoteError, ThreadPoolServer
from tests.adversarial.helpers import RawPeer, TargetService

# What a hostile client offers as a callback: a callable object of its own.
CALLBACK = wire.Ref(1, 1, ("hostile", "Callback", (), ("__call__",), ""))
NOT_EXCEPTIONS = ["BaseException", "KeyboardInterrupt", "SystemExit", "GeneratorExit", "BaseExceptionGroup"]


@pytest.fixture
def pool_server() -> Iterator[ThreadPoolServer]:
    server = ThreadPoolServer(TargetService(), port=0, nbthreads=2, protocol_config={"sync_request_timeout": 5.0})
    thread = server.start_in_thread()
    try:
        yield server
    finally:
        server.close()
        thread.join(timeout=10)


def answer_callback_with(peer: RawPeer, exc_type: str) -> wire.Reply | wire.ErrorReply:
    """Ask the server to call our callback; answer its call with a ``builtins.exc_type`` error."""
    seq, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("call", CALLBACK))
    peer.sock.sendall(data)
    request = peer.wait_for(wire.Request)
    assert isinstance(request, wire.Request) and request.op is wire.Op.CALL
    error = wire.ErrorReply(request.seq, "builtins", exc_type, ("from the peer",), "")
    peer.sock.sendall(b"".join(bytes(buf) for buf in peer.proto.send(error)))
    return peer.answer(seq)


@pytest.mark.parametrize("exc_type", NOT_EXCEPTIONS)
def test_a_peer_error_outside_exception_arrives_as_remote_error(pool_server: ThreadPoolServer, exc_type: str) -> None:
    with socket.create_connection(("127.0.0.1", pool_server.port), timeout=5) as sock:
        peer = RawPeer(sock)
        peer.handshake()
        answer = answer_callback_with(peer, exc_type)
        # The service's call raised what the callback "raised": a RemoteError, reported to us.
        assert isinstance(answer, wire.ErrorReply), answer
        assert (answer.exc_module, answer.exc_type) == ("rpc_service._errors", "RemoteError")
        assert f"builtins.{exc_type}" in str(answer.args)


def test_no_pool_worker_dies_from_peer_errors(pool_server: ThreadPoolServer) -> None:
    """Ten BaseException answers against a pool of two workers: the pool still serves."""
    threads_before = threading.active_count()
    with socket.create_connection(("127.0.0.1", pool_server.port), timeout=5) as sock:
        peer = RawPeer(sock)
        peer.handshake()
        for index in range(10):
            answer_callback_with(peer, NOT_EXCEPTIONS[index % len(NOT_EXCEPTIONS)])
    with rpc_service.connect("127.0.0.1", pool_server.port, config={"sync_request_timeout": 5.0}) as conn:
        assert conn.root.echo("still served") == "still served"
    assert threading.active_count() >= threads_before - 1  # (the raw peer's own connection may be gone)


class Raiser(rpc_service.Service):
    def exposed_own_base_exception(self) -> None:
        class Stop(BaseException):
            pass

        raise Stop("a handler's own BaseException")

    def exposed_leaky(self) -> None:
        try:
            raise ConnectionError("connect to postgres://admin:hunter2@db/prod failed")
        except ConnectionError as exc:
            raise ValueError("could not load the user") from exc


@pytest.fixture
def raiser_port() -> Iterator[int]:
    server = rpc_service.ThreadedServer(Raiser, port=0)
    thread = server.start_in_thread()
    try:
        yield server.port
    finally:
        server.close()
        thread.join(timeout=10)


def test_a_handlers_own_base_exception_is_answered_not_fatal(raiser_port: int) -> None:
    with rpc_service.connect("127.0.0.1", raiser_port, config={"sync_request_timeout": 5.0}) as conn:
        for _ in range(3):
            with pytest.raises(RemoteError, match="Stop"):
                conn.root.own_base_exception()
        assert conn.root.own_base_exception is not None  # the connection is still served


def test_traceback_withheld_by_default(raiser_port: int) -> None:
    with rpc_service.connect("127.0.0.1", raiser_port, config={"sync_request_timeout": 5.0}) as conn:
        with pytest.raises(ValueError, match="could not load the user") as info:
            conn.root.leaky()
    assert getattr(info.value, "remote_traceback") == ""
    assert "hunter2" not in str(info.value) and "hunter2" not in "".join(getattr(info.value, "__notes__", []))
