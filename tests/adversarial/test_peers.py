"""Peers that behave badly in time rather than in bytes: silent, slow, vanishing, killed.

Every case runs against the ``server`` fixture (a ThreadedServer of ``TargetService``) with the
``normal_client`` connected alongside; the normal client must keep being served, promptly,
while the bad peer does its thing, and the server's threads and fds must come back to the
``baseline`` afterwards. Cases that wait on the handshake deadline shorten it with the
``server_config`` marker so the suite stays fast.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import struct
import subprocess
import textwrap
import threading
import time
from typing import Callable, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import Connection, ConnectionClosedError, ThreadedServer
from tests.adversarial.helpers import assert_prompt as prompt
from tests.adversarial.helpers import (
    Baseline,
    RawPeer,
    TargetService,
    child_env,
    preface,
    python_child,
    wait_until,
)
from tests.service.helpers import dropped_within


def assert_prompt(conn: Connection) -> None:
    """The normal client is served within 0.5 s (these peers only hold sockets and threads)."""
    prompt(conn, within=0.5)


def reset(sock: socket.socket) -> None:
    """Close abruptly: an RST instead of a FIN, as a crashed host's stack would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- silent and slow ------------------------------------------------------------------------------


@pytest.mark.server_config({"handshake_timeout": 1.0})
def test_silent_clients_are_dropped_at_the_handshake_deadline(
    raw: Callable[[], socket.socket], normal_client: Connection, baseline: Baseline, server: ThreadedServer
) -> None:
    silent = [raw() for _ in range(5)]  # connect, then never say a word (a port scanner's half-open probes)
    start = time.monotonic()
    assert wait_until(lambda: threads_serving(server) >= 5, 2.0)  # all five took a thread
    for _ in range(3):
        assert_prompt(normal_client)
    for sock in silent:
        assert dropped_within(sock, 3.0), "a silent client was never dropped"
    elapsed = time.monotonic() - start
    assert 0.8 < elapsed < 2.5, f"silent clients dropped after {elapsed:.2f} s; the deadline is 1 s"
    assert_prompt(normal_client)


def threads_serving(server: ThreadedServer) -> int:
    return sum(1 for thread in server._threads if thread.name.startswith("rpc-client-")) - len(server.clients)


@pytest.mark.server_config({"handshake_timeout": 1.5})
@pytest.mark.parametrize("stage", ["preface", "hello"])
def test_one_byte_per_second_client_is_dropped_at_the_handshake_deadline(
    stage: str, raw: Callable[[], socket.socket], normal_client: Connection, baseline: Baseline
) -> None:
    """A slowloris: valid bytes, one per second. The deadline covers the whole handshake,
    not each read, so the server drops it at 1.5 s; the normal client never waits."""
    sock = raw()
    proto = wire.Connection()
    opening = preface()
    if stage == "hello":  # the preface at once, then the Hello crawls
        sock.sendall(opening)
        proto.send(wire.Preface())
        proto.receive_data(preface())
        opening = b"".join(bytes(buf) for buf in proto.send(wire.Hello(services=("SLOW",))))
    start = time.monotonic()
    dropped = False
    for byte in opening:  # bounded: at most len(opening) seconds, and the deadline cuts it to 1.5
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # (already reset by the server)
            dropped = True
            break
        assert_prompt(normal_client)
        if dropped_within(sock, 1.0):  # doubles as the 1-second pause between bytes
            dropped = True
            break
    elapsed = time.monotonic() - start
    assert dropped, "a client sending one byte per second was never dropped"
    assert 1.2 < elapsed < 3.0, f"dropped after {elapsed:.2f} s; the handshake deadline is 1.5 s"
    assert_prompt(normal_client)


def test_a_client_that_never_reads_its_replies_stalls_only_itself(
    raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, service: TargetService
) -> None:
    """Requests for 1 MiB replies, never read: the server's thread for that client blocks in
    its write once the socket buffers fill; everyone else is served."""
    peer = raw_peer()
    peer.handshake()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    for _ in range(48):
        _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("blob", 1 << 20))
        peer.sock.sendall(data)
    for _ in range(5):
        assert_prompt(normal_client)
    reset(peer.sock)  # its server thread must wake from the blocked write and end
    assert wait_until(lambda: service.disconnects >= 1, 3.0)


def test_closing_the_server_is_bounded_with_a_client_that_never_reads(service: TargetService) -> None:
    base = Baseline()
    server = ThreadedServer(service, protocol_config={"handshake_timeout": 2.0})
    thread = server.start_in_thread()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        peer = RawPeer(sock)
        peer.handshake()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(48):
            _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("blob", 1 << 20))
            sock.sendall(data)
        time.sleep(0.2)  # let the server's write block
        start = time.monotonic()
        server.close()
        elapsed = time.monotonic() - start
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert elapsed < 3.0, f"close() took {elapsed:.2f} s with a client that never reads"
    finally:
        sock.close()
        server.close()
    base.assert_back(5.0)


# -- vanishing clients -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst", "half-close"])
def test_client_vanishing_mid_call(
    how: str, raw_peer: Callable[[], RawPeer], normal_client: Connection, baseline: Baseline, service: TargetService, server: ThreadedServer
) -> None:
    peer = raw_peer()
    peer.handshake()
    _, data = peer.request_bytes(wire.Op.CALLATTR, peer.root_ref, ("slow", 0.3))
    peer.sock.sendall(data)
    assert service.started.wait(3), "the slow call never started"
    if how == "rst":
        reset(peer.sock)
    elif how == "half-close":
        peer.sock.shutdown(socket.SHUT_WR)  # still reading, but nothing more to say
    else:
        peer.sock.close()
    assert_prompt(normal_client)  # while the vanished client's call is still running
    assert service.finished.wait(3), "the slow call never finished"
    if how == "half-close":  # the reply is still delivered, then the server hangs up
        # read until it has come, however the kernel splits the bytes
        peer.wait_for(lambda event: isinstance(event, wire.Reply) and event.value == "done", timeout=3.0)
    assert wait_until(lambda: len(server.clients) == 1, 3.0), "the vanished client was not cleaned up"
    assert wait_until(lambda: service.disconnects == 1, 1.0)
    assert_prompt(normal_client)


def test_a_real_client_vanishing_mid_call(normal_client: Connection, baseline: Baseline, service: TargetService, server: ThreadedServer) -> None:
    conn = rpc_service.connect("127.0.0.1", server.port)
    pending = rpc_service.async_(conn.root.slow)(0.3)
    assert service.started.wait(3)
    reset(conn._stream.sock)  # type: ignore[attr-defined]  # a SocketStream: pull the plug under the connection
    with pytest.raises(rpc_service.ConnectionClosedError):
        pending.wait()
    conn.close()
    assert service.finished.wait(3)
    assert wait_until(lambda: len(server.clients) == 1, 3.0)
    assert_prompt(normal_client)


def test_connect_and_hang_up_storm(raw: Callable[[], socket.socket], normal_client: Connection, baseline: Baseline) -> None:
    """A port scanner's full-connect probes: 100 connections opened and reset at once."""
    for n in range(100):
        sock = raw()
        if n % 2:
            sock.sendall(preface())
        reset(sock)
    assert_prompt(normal_client)


# -- a client killed while holding proxies ------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    import rpc_service
    conn = rpc_service.connect("127.0.0.1", int(sys.argv[1]))
    items = [conn.root.make(f"item-{n}") for n in range(5)]
    numbers = conn.root.numbers()
    assert items[0].get_name() == "item-0" and len(numbers) == 100
    print("holding", flush=True)
    time.sleep(60)  # killed long before
    """
)


@pytest.fixture
def holder(server: ThreadedServer) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(
        [*python_child(HOLDER), str(server.port)], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)  # reaps it and closes the pipes


def test_client_killed_while_holding_proxies(
    holder: subprocess.Popen[str], normal_client: Connection, baseline: Baseline, service: TargetService, server: ThreadedServer
) -> None:
    assert holder.stdout is not None
    line = holder.stdout.readline()  # bounded: the child prints within a second or dies (EOF)
    assert line.strip() == "holding", holder.stderr.read() if holder.stderr else line
    assert service.live_items() == 5, "the server does not hold the objects the client holds proxies of"
    # the server's side of the holder's connection: the one lending it more than its root
    (conn,) = [client for client in server.clients if client._boxer.lent > 1]
    assert conn._boxer.lent == 7  # root, 5 items, the list
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=5)
    start = time.monotonic()

    def released() -> bool:
        gc.collect()
        return service.live_items() == 0

    assert wait_until(released, 5.0), f"{service.live_items()} objects still alive after the client was killed"
    assert wait_until(lambda: len(server.clients) == 1, 2.0), "the killed client's connection was not cleaned up"
    assert conn.closed and conn._boxer.lent == 0, "the killed client's object table survived it"
    assert time.monotonic() - start < 3.0
    assert wait_until(lambda: service.disconnects >= 1, 2.0)  # on_disconnect runs after the close
    assert_prompt(normal_client)


# -- running out of threads or descriptors ----------------------------------------------------------


def test_no_thread_for_a_client_refuses_only_that_client(
    raw: Callable[[], socket.socket], normal_client: Connection, baseline: Baseline, server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of silent connections can exhaust the threads a process may start. That used
    to kill the accept loop (and close the server); now only the clients it cannot serve are
    turned away. The exhaustion is simulated: the next three client threads fail to start."""
    real_start = threading.Thread.start
    failed: list[str] = []

    def start(thread: threading.Thread) -> None:
        if thread.name.startswith("rpc-client-") and len(failed) < 3:
            failed.append(thread.name)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    turned_away = [raw() for _ in range(3)]
    for sock in turned_away:
        assert dropped_within(sock, 2.0), "a client the server could not serve was left hanging"
    assert len(failed) == 3
    with rpc_service.connect("127.0.0.1", server.port) as conn:  # the server still accepts
        assert conn.root.echo("accepted") == "accepted"
    assert_prompt(normal_client)


FD_STARVED_SERVER = textwrap.dedent(
    """
    import logging, resource, sys, threading, time
    import rpc_service

    failures = []

    class Count(logging.Handler):
        def emit(self, record):
            if "accept" in record.getMessage():
                failures.append(record.levelno)

    logging.getLogger("rpc_service").addHandler(Count())  # (and nothing to stderr)
    logging.getLogger("rpc_service").setLevel(logging.DEBUG)

    class EchoService(rpc_service.Service):
        def exposed_echo(self, value):
            return value

    resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
    server = rpc_service.ThreadedServer(EchoService, protocol_config={"handshake_timeout": 30})
    print(server.port, flush=True)
    threading.Thread(target=server.start, daemon=True).start()
    for line in sys.stdin:  # "report": accept failures so far and CPU seconds used
        print(len(failures), time.process_time(), flush=True)
    """
)


def test_running_out_of_descriptors_does_not_spin_the_accept_loop() -> None:
    """With every descriptor in use, accept() fails with EMFILE at once, every time: the
    loop used to retry (and log a traceback) as fast as it could, burning a core and
    flooding the log for as long as the clients stayed. It now backs off, and serves again
    once descriptors are free."""
    child = subprocess.Popen(
        python_child(FD_STARVED_SERVER), env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    socks: list[socket.socket] = []
    try:
        assert child.stdout is not None and child.stdin is not None
        port = int(child.stdout.readline())

        def report() -> tuple[int, float]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("report\n")
            child.stdin.flush()
            count, cpu = child.stdout.readline().split()
            return int(count), float(cpu)

        for _ in range(60):  # silent: each holds a descriptor (and a thread) until the 30 s deadline
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.3)
        failures_before, cpu_before = report()
        time.sleep(0.5)
        failures_after, cpu_after = report()
        assert failures_after - failures_before < 25, f"{failures_after - failures_before} accept failures in 0.5 s"
        assert cpu_after - cpu_before < 0.25, f"the starved server used {cpu_after - cpu_before:.2f} s of CPU in 0.5 s"
        for sock in socks:
            sock.close()
        socks.clear()
        deadline = time.monotonic() + 5
        while True:  # bounded: descriptors come back as the server notices the hang-ups
            try:
                with rpc_service.connect("127.0.0.1", port, config={"handshake_timeout": 2}) as conn:
                    assert conn.root.echo("again") == "again"
                break
            except (rpc_service.ConnectionFailedError, ConnectionClosedError, TimeoutError, OSError):
                assert time.monotonic() < deadline, "the server did not serve again once descriptors were free"
                time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
        child.kill()
        child.communicate(timeout=10)
