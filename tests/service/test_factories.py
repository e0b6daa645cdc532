"""Factories: every way of opening a connection, and how each one fails.

Each factory (``connect``, ``unix_connect``, ``connect_stream``, ``connect_pipes``,
``connect_subproc``, ``connect_thread``) reaches the same :class:`PeerService` and must
honour ``service=`` (the peer can call back into it) and ``config=`` (applied to this
side). Failures to connect are :class:`ConnectionFailedError`, which is also a
``ConnectionError``/``OSError`` and names the address.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import rpc_protocol
import rpc_service
from rpc_service import ConnectionClosedError, ConnectionFailedError, Connection, Service, SocketStream, VoidService

from . import stdio_child
from .stdio_child import PeerService

ServiceArg = type[Service] | Service
Opener = Callable[..., Connection]  # (service=..., config=...) -> a connection to PeerService

FACTORIES = ["connect", "unix_connect", "connect_stream", "connect_pipes", "connect_subproc", "connect_thread"]


class ClientService(Service):
    """The client's own service: the peer calls back into it."""

    public_value = "public, not exposed"

    def exposed_whoami(self) -> str:
        return "client"


def child_args() -> list[str]:
    return [sys.executable, stdio_child.__file__]


def child_env() -> dict[str, str]:
    """The environment for the stdio child: the two packages importable from source."""
    roots = [str(Path(module.__file__ or "").resolve().parents[1]) for module in (rpc_protocol, rpc_service)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*roots, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


class Openers:
    """Builds an opener per factory and tears down everything it started."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self.servers: list[rpc_service.Server] = []
        self.conns: list[Connection] = []
        self.threads: list[threading.Thread] = []

    def _serve_on_thread(self, make: Callable[[], Connection]) -> None:
        def run() -> None:
            try:
                conn = make()
            except Exception:
                return  # the client side failed first; its test reports that
            conn.serve_all()

        thread = threading.Thread(target=run, name="factory-peer", daemon=True)
        thread.start()
        self.threads.append(thread)

    def opener(self, factory: str) -> Opener:
        def open_(service: ServiceArg = VoidService, config: dict[str, Any] | None = None) -> Connection:
            conn = self._open(factory, service, config)
            self.conns.append(conn)
            return conn

        return open_

    def _open(self, factory: str, service: ServiceArg, config: dict[str, Any] | None) -> Connection:
        if factory == "connect":
            server = rpc_service.ThreadedServer(PeerService)
            self.servers.append(server)
            server.start_in_thread()
            return rpc_service.connect("127.0.0.1", server.port, service=service, config=config)
        if factory == "unix_connect":
            path = str(self._tmp_path / f"peer{len(self.servers)}.sock")
            server = rpc_service.ThreadedServer(PeerService, socket_path=path)
            self.servers.append(server)
            server.start_in_thread()
            return rpc_service.unix_connect(path, service=service, config=config)
        if factory == "connect_stream":
            ours, theirs = socket.socketpair()
            self._serve_on_thread(lambda: rpc_service.connect_stream(SocketStream(theirs), PeerService))
            return rpc_service.connect_stream(SocketStream(ours), service=service, config=config)
        if factory == "connect_pipes":
            to_client_r, to_client_w = os.pipe()
            to_server_r, to_server_w = os.pipe()
            self._serve_on_thread(lambda: rpc_service.connect_pipes(to_server_r, to_client_w, PeerService))
            return rpc_service.connect_pipes(to_client_r, to_server_w, service=service, config=config)
        if factory == "connect_subproc":
            return rpc_service.connect_subproc(child_args(), service=service, config=config, env=child_env())
        assert factory == "connect_thread"
        return rpc_service.connect_thread(service=service, config=config, remote_service=PeerService)

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        for server in self.servers:
            server.close()
        for thread in self.threads:
            thread.join(timeout=5)
            assert not thread.is_alive(), "a peer thread did not stop when its client closed"


@pytest.fixture
def openers(tmp_path: Path) -> Iterator[Openers]:
    made = Openers(tmp_path)
    yield made
    made.close()


@pytest.fixture(params=FACTORIES)
def open_peer(request: pytest.FixtureRequest, openers: Openers) -> Opener:
    return openers.opener(request.param)


# -- every factory -------------------------------------------------------------------------


def test_factory_reaches_the_peer_service(open_peer: Opener, request: pytest.FixtureRequest) -> None:
    conn = open_peer()
    assert not conn.closed
    assert conn.peer_services == ("PEER",)
    assert conn.root.echo(("a", 1, b"b")) == ("a", 1, b"b")
    assert conn.root.get_service_name() == "PEER"
    if "connect_subproc" in request.node.name:
        assert conn.root.pid() != os.getpid()
    else:
        assert conn.root.pid() == os.getpid()
    assert isinstance(conn.fileno(), int) and conn.fileno() >= 0
    conn.ping(b"hi", timeout=5)
    assert "open" in repr(conn)
    conn.close()
    assert conn.closed
    assert "closed" in repr(conn)
    with pytest.raises(ConnectionClosedError):
        conn.root.echo(1)


def test_factory_uses_the_given_service_class_and_config(open_peer: Opener) -> None:
    conn = open_peer(service=ClientService, config={"allow_public_attrs": True, "sync_request_timeout": 7.5, "connid": "custom-id"})
    assert isinstance(conn.service, ClientService)
    assert conn.root.ask_client() == "client"  # the peer called back into our service
    # allow_public_attrs is ours: it lets the peer read a public, non-exposed attribute
    assert conn.root.read_client_attr("public_value") == "public, not exposed"
    assert conn.config.sync_request_timeout == 7.5
    assert "custom-id" in repr(conn)


def test_factory_shares_a_service_instance(open_peer: Opener) -> None:
    shared = ClientService()
    conn = open_peer(service=shared, config=rpc_service.Config(connid="as-config-object"))
    assert conn.service is shared
    assert conn.root.ask_client() == "client"
    assert conn.config.connid == "as-config-object"


def test_factory_defaults_to_a_closed_void_service(open_peer: Opener) -> None:
    conn = open_peer()
    assert isinstance(conn.service, VoidService)
    with pytest.raises(AttributeError):
        conn.root.ask_client()
    with pytest.raises(AttributeError):  # default config: public attributes stay private
        conn.root.read_client_attr("public_value")
    assert conn.root.echo("still fine") == "still fine"


def test_factory_rejects_unknown_config_keys(open_peer: Opener) -> None:
    with pytest.raises(ValueError, match="unknown config keys"):
        open_peer(config={"allow_everything_please": True})


# -- TCP and unix ----------------------------------------------------------------------------


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound by us but not listening: connecting to it is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_connect_refused_raises_connection_failed(refusing_port: int) -> None:
    with pytest.raises(ConnectionFailedError) as info:
        rpc_service.connect("127.0.0.1", refusing_port)
    error = info.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error, OSError)
    assert isinstance(error, rpc_protocol.RPCError)
    assert f"127.0.0.1:{refusing_port}" in str(error)
    assert isinstance(error.__cause__, ConnectionRefusedError)


def test_connect_ipv6_refused_raises_connection_failed() -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
            with pytest.raises(ConnectionFailedError) as info:
                rpc_service.connect("::1", port, ipv6=True)
    except OSError as exc:
        if isinstance(exc, ConnectionFailedError):
            raise
        pytest.skip(f"::1 is not available here: {exc}")
    assert f"::1:{port}" in str(info.value)


def test_unix_connect_to_a_missing_path_raises_connection_failed(tmp_path: Path) -> None:
    path = str(tmp_path / "nobody-listens.sock")
    with pytest.raises(ConnectionFailedError) as info:
        rpc_service.unix_connect(path)
    assert isinstance(info.value, ConnectionError)
    assert path in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_connect_resolves_a_host_name(no_thread_leak: None) -> None:
    with rpc_service.ThreadedServer(PeerService) as server:
        server.start_in_thread()
        try:
            conn = rpc_service.connect("localhost", server.port)
        except ConnectionFailedError as exc:  # "localhost" may resolve to ::1 first
            pytest.skip(f"localhost does not reach 127.0.0.1 here: {exc}")
        with conn:
            assert conn.root.echo(5) == 5


def test_an_address_literal_is_connected_to_without_resolving_it(monkeypatch: pytest.MonkeyPatch, no_thread_leak: None) -> None:
    """``127.0.0.1`` (and ``::1`` without ipv6=True) need no name resolution: connect works
    with getaddrinfo failing, while a name still goes through it."""
    with rpc_service.ThreadedServer(PeerService) as server:
        server.start_in_thread()

        def no_resolver(*args: Any, **kwargs: Any) -> Any:
            raise socket.gaierror(socket.EAI_FAIL, "no resolver in this test")

        monkeypatch.setattr(socket, "getaddrinfo", no_resolver)
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            assert conn.root.echo(5) == 5
        with pytest.raises(ConnectionFailedError, match="no resolver"):
            rpc_service.connect("localhost", server.port)
    if socket.has_ipv6:
        try:
            v6 = rpc_service.ThreadedServer(PeerService, ipv6=True)
        except (OSError, ValueError) as exc:
            pytest.skip(f"::1 is not available here: {exc}")
        with v6:
            v6.start_in_thread()
            with rpc_service.connect("::1", v6.port) as conn:
                assert conn.root.echo(6) == 6


def test_unix_connect_reaches_a_socket_path_server(tmp_path: Path, no_thread_leak: None) -> None:
    path = str(tmp_path / "srv.sock")
    with rpc_service.ThreadedServer(PeerService, socket_path=path) as server:
        server.start_in_thread()
        with rpc_service.unix_connect(path) as first, rpc_service.unix_connect(path) as second:
            assert first.root.echo("one") == "one"
            assert second.root.echo("two") == "two"
            assert first.peer_services == ("PEER",)


def test_connect_to_a_silent_server_times_out_the_handshake() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # never accepts, never speaks
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="handshake"):
            rpc_service.connect("127.0.0.1", port, config={"handshake_timeout": 0.3})
        assert time.monotonic() - start < 3


def test_connect_to_a_non_rpc_server_fails_cleanly() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def http_server() -> None:
            sock, _ = listener.accept()
            with sock:
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                sock.settimeout(2)
                try:
                    sock.recv(100)
                except OSError:
                    pass

        thread = threading.Thread(target=http_server, daemon=True)
        thread.start()
        with pytest.raises(rpc_protocol.RPCError):
            rpc_service.connect("127.0.0.1", port, config={"handshake_timeout": 3})
        thread.join(timeout=5)
        assert not thread.is_alive()


# -- pipes, streams, threads, subprocesses ------------------------------------------------------


def test_connect_pipes_over_two_os_pipes(no_thread_leak: None) -> None:
    to_client_r, to_client_w = os.pipe()
    to_server_r, to_server_w = os.pipe()
    served: list[str] = []

    def serve() -> None:
        conn = rpc_service.connect_pipes(to_server_r, to_client_w, PeerService)
        conn.serve_all()
        served.append("done")

    thread = threading.Thread(target=serve, name="pipes-peer")
    thread.start()
    try:
        with rpc_service.connect_pipes(to_client_r, to_server_w, service=ClientService) as conn:
            assert list(conn.root.echo([1, 2, 3])) == [1, 2, 3]
            assert conn.root.ask_client() == "client"
    finally:
        thread.join(timeout=5)
    assert served == ["done"], "the serving end did not finish when the client closed"
    for fd in (to_client_r, to_client_w, to_server_r, to_server_w):
        with pytest.raises(OSError):
            os.fstat(fd)  # both connections closed the descriptors they owned


def test_connect_pipes_accepts_file_objects(no_thread_leak: None) -> None:
    to_client_r, to_client_w = os.pipe()
    to_server_r, to_server_w = os.pipe()
    thread = threading.Thread(
        target=lambda: rpc_service.connect_pipes(os.fdopen(to_server_r, "rb", 0), os.fdopen(to_client_w, "wb", 0), PeerService).serve_all()
    )
    thread.start()
    try:
        with rpc_service.connect_pipes(os.fdopen(to_client_r, "rb", 0), os.fdopen(to_server_w, "wb", 0)) as conn:
            assert conn.root.echo(b"via file objects") == b"via file objects"
    finally:
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_connect_pipes_closes_the_descriptors_when_it_fails() -> None:
    read_fd, write_fd = os.pipe()
    with pytest.raises(ValueError):
        rpc_service.connect_pipes(read_fd, write_fd, config={"no_such_key": 1})
    for fd in (read_fd, write_fd):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_connect_stream_refuses_what_is_not_a_stream() -> None:
    """Regression: a raw socket (a likely slip) failed with AttributeError: 'socket' object
    has no attribute 'write', and a string with one about 'close'."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with pytest.raises(TypeError, match=r"needs a Stream .*SocketStream\(sock\)"):
            rpc_service.connect_stream(ours)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="not str"):
        rpc_service.connect_stream("x")  # type: ignore[arg-type]  # the error under test


def test_connect_stream_over_a_socketpair(no_thread_leak: None) -> None:
    ours, theirs = socket.socketpair()
    thread = threading.Thread(target=lambda: rpc_service.connect_stream(SocketStream(theirs), PeerService).serve_all())
    thread.start()
    try:
        stream = SocketStream(ours)
        with rpc_service.connect_stream(stream, ClientService) as conn:
            assert conn.root.echo("over a socketpair") == "over a socketpair"
            assert conn.root.ask_client() == "client"
        assert stream.closed
    finally:
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_connect_thread_is_symmetric_and_leaves_no_threads(no_thread_leak: None) -> None:
    with rpc_service.connect_thread(service=ClientService, remote_service=PeerService) as conn:
        assert conn.root.echo(42) == 42
        assert conn.root.ask_client() == "client"
        assert conn.peer_services == ("PEER",)
        assert conn.root.pid() == os.getpid()


def test_connect_subproc_calls_the_child_then_reaps_it() -> None:
    conn = rpc_service.connect_subproc(child_args(), env=child_env())
    stream = conn._stream  # semi-private: the only handle on the child process
    assert isinstance(stream, rpc_service.SubprocessStream)
    process = stream.process
    try:
        assert conn.root.echo("from the child") == "from the child"
        assert conn.root.pid() == process.pid
        # a stray print in the child goes to /dev/null, not into the protocol stream
        assert conn.root.print_to_stdout("noise") == "noise"
        assert conn.root.echo(b"x" * 200_000) == b"x" * 200_000
    finally:
        conn.close()
    assert conn.closed
    assert process.returncode == 0, "the child did not exit on its own when its stdin closed"


def test_connect_subproc_to_a_child_that_does_not_serve() -> None:
    start = time.monotonic()
    with pytest.raises(rpc_protocol.RPCError):
        rpc_service.connect_subproc([sys.executable, "-c", "pass"], config={"handshake_timeout": 5})
    assert time.monotonic() - start < 8


def test_connect_subproc_accepts_popen_keywords(tmp_path: Path) -> None:
    with rpc_service.connect_subproc(child_args(), env=child_env(), cwd=str(tmp_path), stderr=subprocess.DEVNULL) as conn:
        assert conn.root.echo("cwd ok") == "cwd ok"


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "path"])
def test_connect_subproc_takes_a_program_alone_as_popen_does(tmp_path: Path, as_path: bool) -> None:
    """Regression: a string was split into characters (``cannot start 'p'``)."""
    program = tmp_path / "serve-peer"
    program.write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({stdio_child.__file__!r}, run_name='__main__')\n")
    program.chmod(0o755)
    with rpc_service.connect_subproc(program if as_path else str(program), env=child_env()) as conn:
        assert conn.root.echo("alone") == "alone"
    with pytest.raises(rpc_service.ConnectionFailedError, match="cannot start '/no/such/program'"):
        rpc_service.connect_subproc("/no/such/program")
    with pytest.raises(ValueError, match="needs a program"):
        rpc_service.connect_subproc([])


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_connect_to_a_port_out_of_range_is_a_clear_rpc_error(port: int) -> None:
    with pytest.raises(rpc_service.ConnectionFailedError, match=f"port must be between 1 and 65535, not {port}"):
        rpc_service.connect("127.0.0.1", port, timeout=2)


@pytest.mark.parametrize("port", ["80", True, 1.5, None])
def test_a_port_of_another_type_is_a_type_error(port: Any) -> None:
    with pytest.raises(TypeError, match="port must be an int"):
        rpc_service.connect("127.0.0.1", port, timeout=2)
    with pytest.raises(TypeError, match="port must be an int"):
        rpc_service.ThreadedServer(rpc_service.VoidService, port=port)


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_server_port_out_of_range_is_a_value_error(port: int) -> None:
    with pytest.raises(ValueError, match="port must be between 0 and 65535"):
        rpc_service.ThreadedServer(rpc_service.VoidService, port=port)
