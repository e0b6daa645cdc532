"""The classic surface: remote modules, eval, execute and namespace, remote exceptions,
and every classic factory returning a :class:`ClassicConnection`."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from pathlib import Path

import pytest

import rpc_classic
import rpc_classic._cli
import rpc_service
from rpc_classic import ClassicConnection, SlaveService, classic_config
from rpc_service import RemoteError, VoidService

from .conftest import server_side


def test_remote_getcwd_runs_in_the_child(subproc_conn: ClassicConnection, child_cwd: Path) -> None:
    assert os.path.realpath(subproc_conn.modules.os.getcwd()) == os.path.realpath(child_cwd)
    assert subproc_conn.modules.os.getpid() != os.getpid()


def test_eval(thread_conn: ClassicConnection) -> None:
    assert thread_conn.eval("6 * 7") == 42
    assert thread_conn.eval("'abc'.upper()") == "ABC"
    assert rpc_classic.obtain(thread_conn.eval("list(range(3))")) == [0, 1, 2]


def test_execute_then_namespace(subproc_conn: ClassicConnection) -> None:
    subproc_conn.execute("x = 6 * 7\ndef double(v):\n    return 2 * v")
    assert subproc_conn.namespace["x"] == 42
    assert subproc_conn.eval("double(x)") == 84
    assert subproc_conn.namespace["double"](5) == 10
    subproc_conn.namespace["y"] = "set from the client"
    assert subproc_conn.eval("y") == "set from the client"


def test_modules_by_dotted_name_and_attribute(thread_conn: ClassicConnection) -> None:
    minidom = thread_conn.modules["xml.dom.minidom"]
    assert minidom.parseString("<a><b/></a>").documentElement.tagName == "a"
    assert "xml.dom.minidom" in thread_conn.modules
    assert "surely_not_a_module_xyz" not in thread_conn.modules
    assert thread_conn.modules.os.path.join("a", "b") == os.path.join("a", "b")
    assert thread_conn.modules.os is thread_conn.modules["os"]  # one proxy per module
    with pytest.raises(ModuleNotFoundError):
        thread_conn.modules["surely_not_a_module_xyz"]
    # by attribute, as in RPyC: an AttributeError (the ImportError its cause), so that
    # hasattr() and getattr() with a default work
    with pytest.raises(AttributeError, match="surely_not_a_module_xyz") as info:
        thread_conn.modules.surely_not_a_module_xyz
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert not hasattr(thread_conn.modules, "surely_not_a_module_xyz")
    assert getattr(thread_conn.modules, "surely_not_a_module_xyz", None) is None


def test_builtins(thread_conn: ClassicConnection) -> None:
    assert thread_conn.builtins.max(3, 9, 4) == 9
    assert thread_conn.builtins is thread_conn.modules.builtins
    assert thread_conn.builtin is thread_conn.builtins  # (RPyC's other spelling)
    remote_list = thread_conn.builtins.list("abc")
    remote_list.append("d")
    assert len(remote_list) == 4 and rpc_classic.obtain(remote_list) == ["a", "b", "c", "d"]


def test_remote_exception_carries_the_remote_traceback(subproc_conn: ClassicConnection) -> None:
    with pytest.raises(ZeroDivisionError) as info:
        subproc_conn.eval("1 / 0")
    remote_tb: str = getattr(info.value, "remote_traceback")
    assert "ZeroDivisionError" in remote_tb and "<string>" in remote_tb

    subproc_conn.execute("class Boom(Exception):\n    pass\ndef explode():\n    raise Boom('bang')")
    with pytest.raises(RemoteError) as custom:
        subproc_conn.namespace["explode"]()
    assert custom.value.remote_type.endswith("Boom")
    assert custom.value.remote_args == ("bang",)
    assert "explode" in custom.value.remote_traceback


def test_connection_type_and_repr(thread_conn: ClassicConnection) -> None:
    assert isinstance(thread_conn, ClassicConnection)
    assert "ClassicConnection" in repr(thread_conn)
    assert thread_conn.root.get_service_name() == "SLAVE"
    assert set(thread_conn.peer_services) == {"SLAVE", "CLASSIC"}
    assert rpc_classic.ClassicService is SlaveService


def test_connect_over_tcp(classic_server: rpc_service.ThreadedServer) -> None:
    with rpc_classic.connect("127.0.0.1", classic_server.port) as conn:
        assert isinstance(conn, ClassicConnection)
        assert conn.eval("1 + 1") == 2


def test_unix_connect_takes_a_str_or_a_path(tmp_path: Path) -> None:
    path = tmp_path / "classic.sock"
    with rpc_service.ThreadedServer(SlaveService, socket_path=str(path), protocol_config=classic_config()) as server:
        server.start_in_thread()
        with rpc_classic.unix_connect(str(path)) as conn:
            assert conn.modules.sys.platform == __import__("sys").platform
        with rpc_classic.unix_connect(path) as conn:  # an os.PathLike
            assert conn.eval("1 + 1") == 2


def test_connect_stream_and_pipes() -> None:
    ours, theirs = socket.socketpair()

    def serve() -> None:
        rpc_service.connect_stream(rpc_service.SocketStream(theirs), SlaveService, classic_config()).serve_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with rpc_classic.connect_stream(rpc_service.SocketStream(ours)) as conn:
        assert conn.eval("2 ** 10") == 1024
    thread.join(timeout=5)
    assert not thread.is_alive()

    a_read, b_write = os.pipe()
    b_read, a_write = os.pipe()
    far = threading.Thread(
        target=lambda: rpc_service.connect_pipes(b_read, b_write, SlaveService, classic_config()).serve_all(), daemon=True
    )
    far.start()
    with rpc_classic.connect_pipes(a_read, a_write) as conn:
        assert conn.eval("'pipes'") == "pipes"
    far.join(timeout=5)


def test_client_config_is_classic_only_for_a_slave_client(classic_server: rpc_service.ThreadedServer) -> None:
    with rpc_classic.connect("127.0.0.1", classic_server.port, config={"sync_request_timeout": 5}) as conn:
        assert conn.config.allow_all_attrs and conn.config.allow_setattr and conn.config.allow_delattr
        assert conn.config.sync_request_timeout == 5
    with rpc_classic.connect("127.0.0.1", classic_server.port, service=VoidService) as closed:
        assert not closed.config.allow_all_attrs and not closed.config.allow_setattr
        assert closed.modules.os.getpid() == os.getpid()  # the shortcuts only need the server's side


def test_adopt_gives_a_plain_connection_the_shortcuts(classic_server: rpc_service.ThreadedServer) -> None:
    with rpc_service.connect("127.0.0.1", classic_server.port) as plain:
        conn = ClassicConnection.adopt(plain)
        assert conn is plain and isinstance(conn, ClassicConnection)
        assert conn.eval("3 * 3") == 9
        assert ClassicConnection.adopt(conn) is conn


def test_a_plain_threaded_server_serves_a_slave_fully(caplog: pytest.LogCaptureFixture) -> None:
    """SlaveService widens its own side's config (Service.connection_config), so a server
    given no protocol_config still serves classic mode, without the restricted-config warning."""
    with rpc_service.ThreadedServer(SlaveService) as server:
        server.start_in_thread()
        with caplog.at_level(logging.WARNING, logger="rpc_classic"):
            with rpc_classic.connect("127.0.0.1", server.port) as conn:
                server_side(server, conn)
                assert conn.modules.os.getcwd() == os.getcwd()
    assert not any("restricted config" in record.getMessage() for record in caplog.records)


def test_tls_needs_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rpc_tls", None)  # as if rpc-tls were not installed
    with pytest.raises(ImportError, match=r"rpc-classic\[tls\]"):
        rpc_classic.tls_connect("127.0.0.1", 1)
    with pytest.raises(SystemExit):
        rpc_classic._cli.main(["--certfile", "c.pem", "--keyfile", "k.pem"])
    monkeypatch.setitem(sys.modules, "rpc_registry", None)
    with pytest.raises(SystemExit):
        rpc_classic._cli.main(["--register"])
