"""The other way round: a client facing a server that dies, freezes or lies.

A server killed mid-call (``kill -9`` of a server process) must give the waiting client a
``ConnectionClosedError`` promptly, never a hang; a frozen one (SIGSTOP) an
``AsyncResultTimeout`` at ``sync_request_timeout``. A hostile server, played in-process by a
:class:`~tests.adversarial.helpers.RawPeer` on an accepted socket, may answer requests never
sent, send garbage or claim huge frames: the client fails with a protocol error, at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
from typing import Any, Callable, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import AsyncResultTimeout, ConnectionClosedError, ConnectionFailedError
from tests.adversarial.helpers import Baseline, RawPeer, child_env, frame, joined, python_child, wait_until

@pytest.fixture(autouse=True)
def client_back_to_baseline() -> Iterator[None]:
    """The client side too: whatever the server did, no thread or descriptor is left behind
    (set up first, so it is checked after every other fixture is torn down)."""
    base = Baseline()
    yield
    base.assert_back(5.0)


SERVER = textwrap.dedent(
    """
    import sys, time
    import rpc_service

    class SleepyService(rpc_service.Service):
        def exposed_slow(self, seconds):
            print("started", flush=True)
            time.sleep(seconds)
            return "done"

        def exposed_echo(self, value):
            return value

    server = rpc_service.ThreadedServer(SleepyService)
    print(server.port, flush=True)
    server.start()
    """
)


@pytest.fixture
def server_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    child = subprocess.Popen(python_child(SERVER), env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # bounded: printed at once, or EOF if the child died
        assert line.strip().isdigit(), child.stderr.read() if child.stderr else line
        yield child, int(line)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.communicate(timeout=10)


def wait_started(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "started"


@pytest.mark.parametrize("mode", ["sync-on-a-thread", "async"])
def test_server_killed_mid_call(mode: str, server_process: tuple[subprocess.Popen[str], int]) -> None:
    child, port = server_process
    conn = rpc_service.connect("127.0.0.1", port, config={"sync_request_timeout": 30})
    try:
        assert conn.root.echo("up") == "up"
        outcome: list[BaseException | str] = []
        finished = threading.Event()
        if mode == "async":
            pending = rpc_service.async_(conn.root.slow)(30)
        else:

            def call() -> None:
                try:
                    outcome.append(conn.root.slow(30))
                except BaseException as exc:  # reported below
                    outcome.append(exc)
                finished.set()

            threading.Thread(target=call, name="caller", daemon=True).start()
        wait_started(child)
        os.kill(child.pid, signal.SIGKILL)
        start = time.monotonic()
        if mode == "async":
            with pytest.raises(ConnectionClosedError):
                pending.wait(10)
        else:
            assert finished.wait(10), "the caller hung after the server was killed"
            assert isinstance(outcome[0], ConnectionClosedError), outcome
        elapsed = time.monotonic() - start
        assert elapsed < 2.0, f"the client noticed the dead server after {elapsed:.2f} s"
        with pytest.raises(ConnectionClosedError):
            conn.root.echo("again")
    finally:
        conn.close()


def stopped(pid: int) -> bool:
    """Whether every thread of process ``pid`` is stopped (SIGSTOP takes effect asynchronously)."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as stat:
            states.append(stat.read().rsplit(")", 1)[1].split()[0])
    return all(state in ("T", "t") for state in states)


def test_frozen_server_times_out(server_process: tuple[subprocess.Popen[str], int]) -> None:
    child, port = server_process
    with rpc_service.connect("127.0.0.1", port, config={"sync_request_timeout": 1.0}) as conn:
        assert conn.root.echo("up") == "up"
        os.kill(child.pid, signal.SIGSTOP)
        try:
            assert wait_until(lambda: stopped(child.pid), 2.0), "SIGSTOP did not stop the server"
            start = time.monotonic()
            with pytest.raises(AsyncResultTimeout, match="sync_request_timeout"):
                conn.root.echo("anyone?")
            assert 0.9 < time.monotonic() - start < 3.0
        finally:
            os.kill(child.pid, signal.SIGCONT)


# -- a hostile server, in-process ------------------------------------------------------------------

ROOT = wire.Ref(1, 1, ("hostile", "HostileService", ("echo", "numbers"), (), ""))


class HostileServer:
    """Accepts one client, handshakes by hand, then runs ``script`` on the raw peer."""

    def __init__(self, script: Callable[[RawPeer], None], handshake: bool = True) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.do_handshake = handshake
        self.error: BaseException | None = None
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            sock, _ = self.listener.accept()
            self.sock = sock
            peer = RawPeer(sock)
            if self.do_handshake:
                peer.handshake(services=("HOSTILE",), root=ROOT)
            self.script(peer)
        except BaseException as exc:  # reported by close()
            self.error = exc

    def close(self) -> None:
        self.thread.join(timeout=10)
        if self.sock is not None:
            self.sock.close()
        self.listener.close()


@pytest.fixture
def hostile() -> Iterator[Callable[..., HostileServer]]:
    made: list[HostileServer] = []

    def make(script: Callable[[RawPeer], None], handshake: bool = True) -> HostileServer:
        made.append(HostileServer(script, handshake))
        return made[-1]

    yield make
    for server in made:
        server.close()


def next_request(peer: RawPeer) -> wire.Request:
    event = peer.wait_for(wire.Request)
    assert isinstance(event, wire.Request)
    return event


def linger(peer: RawPeer, seconds: float = 3.0) -> None:
    """Keep the connection open until the client hangs up (bounded)."""
    peer.sock.settimeout(seconds)
    try:
        while peer.sock.recv(65536):
            pass
    except OSError:
        pass


SCRIPTS: dict[str, tuple[Callable[[RawPeer, wire.Request], bytes], str]] = {
    # name: (what the server sends instead of a reply, the client's error message)
    "reply-never-requested": (lambda peer, req: frame(3, req.seq + 100, b"\x00"), "not in flight"),
    "error-never-requested": (lambda peer, req: frame(4, 999, b"\x18\x04\x10\x01m\x10\x01E\x18\x00\x10\x00"), "not in flight"),
    "pong-without-ping": (lambda peer, req: frame(7, 12345), "never sent"),
    "garbage": (lambda peer, req: b"\xee" * 50, "unknown frame type"),
    "oversized-header": (lambda peer, req: frame(3, req.seq, length=0xFFFFFFFF), "exceeds the limit"),
    "bad-descriptor": (lambda peer, req: frame(3, req.seq, b"\x21" + bytes(12) + b"\x18\x01\x10\x01x"), "malformed type descriptor"),
    "backref-never-lent": (lambda peer, req: frame(3, req.seq, b"\x22" + (77).to_bytes(8, "little")), "not lent"),
    "hash-flood": (
        lambda peer, req: frame(
            3,
            req.seq,
            b"\x1a" + (3000).to_bytes(4, "little")
            + b"".join(b"\x0a\x0c\x00\x00\x00" + (k * ((1 << 61) - 1)).to_bytes(12, "little") for k in range(1, 3001)),
        ),
        "hash flooding",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_client_fails_fast_on_a_lying_server(name: str, hostile: Callable[..., HostileServer]) -> None:
    make_bytes, message = SCRIPTS[name]

    def script(peer: RawPeer) -> None:
        request = next_request(peer)
        peer.sock.sendall(make_bytes(peer, request))
        linger(peer)

    server = hostile(script)
    conn = rpc_service.connect("127.0.0.1", server.port, config={"sync_request_timeout": 10})
    try:
        start = time.monotonic()
        with pytest.raises(wire.RemoteProtocolError, match=message):
            conn.root.echo(1)
        assert time.monotonic() - start < 2.0
        assert conn.closed
        with pytest.raises(ConnectionClosedError):
            conn.root.echo(2)
    finally:
        conn.close()


def test_hostile_server_pickle_reply_is_refused_or_checked(hostile: Callable[..., HostileServer]) -> None:
    """A client *with* allow_pickle asks for pickled bytes; a server answering with something
    else is a protocol error, not something handed to pickle."""
    numbers = wire.Ref(2, 2, ("builtins", "list", (), ("__iter__", "__len__"), "list"))

    def script(peer: RawPeer) -> None:
        request = next_request(peer)  # root.numbers()
        peer.sock.sendall(joined(peer.proto.send(wire.Reply(request.seq, numbers))))
        request = next_request(peer)  # the PICKLE request
        assert request.op is wire.Op.PICKLE
        peer.sock.sendall(joined(peer.proto.send(wire.Reply(request.seq, "not bytes"))))
        linger(peer)

    server = hostile(script)
    with rpc_service.connect("127.0.0.1", server.port, config={"allow_pickle": True}) as conn:
        proxy: Any = conn.root.numbers()
        with pytest.raises(wire.RemoteProtocolError, match="without bytes"):
            pickle_dumps(proxy)


def pickle_dumps(obj: object) -> bytes:
    import pickle

    return pickle.dumps(obj)


def test_server_that_never_speaks_fails_the_connect(hostile: Callable[..., HostileServer]) -> None:
    server = hostile(lambda peer: linger(peer, 3.0), handshake=False)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        rpc_service.connect("127.0.0.1", server.port, config={"handshake_timeout": 0.5})
    assert time.monotonic() - start < 2.0


def test_server_with_a_malformed_hello_fails_the_connect(hostile: Callable[..., HostileServer]) -> None:
    def script(peer: RawPeer) -> None:
        peer.sock.sendall(joined(peer.proto.send(wire.Preface())))
        peer.wait_for(wire.Hello)
        peer.sock.sendall(frame(1, 0, b"\x18\x04\x18\x00\x18\x01\x08\x01\x09" + (1 << 26).to_bytes(8, "little") + b"\x00"))
        linger(peer)

    server = hostile(script, handshake=False)
    with pytest.raises((wire.RemoteProtocolError, ConnectionFailedError)):
        rpc_service.connect("127.0.0.1", server.port, config={"handshake_timeout": 2})
