"""Who can reach whom: by default a classic client is a Slave of its server too (as the seed
says); with ``service=VoidService`` the server cannot reach the client at all, and the
client's shortcuts still work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import rpc_classic
import rpc_service
from rpc_classic import ClassicConnection
from rpc_service import VoidService

from .conftest import child_env, server_side


def test_server_reaches_the_client_side_by_default(classic_server: rpc_service.ThreadedServer) -> None:
    with rpc_classic.connect("127.0.0.1", classic_server.port) as conn:
        back = server_side(classic_server, conn)
        serving = rpc_service.BgServingThread(conn)  # the client answers while this thread talks as the server
        try:
            back.root.execute("planted = 'by the server'")
            assert conn.service.exposed_namespace["planted"] == "by the server"  # type: ignore[attr-defined]  # a SlaveService
            assert back.root.getmodule("os").getpid() == os.getpid()
            assert back.root.eval("planted") == "by the server"
        finally:
            serving.stop()


def test_server_cannot_reach_a_void_client(classic_server: rpc_service.ThreadedServer) -> None:
    with rpc_classic.connect("127.0.0.1", classic_server.port, service=VoidService) as conn:
        back = server_side(classic_server, conn)
        serving = rpc_service.BgServingThread(conn)
        try:
            for name in ("execute", "eval", "getmodule", "namespace", "getconn", "teleport", "redirect_stdio"):
                with pytest.raises(AttributeError):
                    getattr(back.root, name)
        finally:
            serving.stop()
        # the client's own shortcuts keep working
        conn.execute("y = 2")
        assert conn.eval("y * 21") == 42
        assert conn.namespace["y"] == 2
        assert conn.modules.os.getpid() == os.getpid()


def test_remote_server_reaches_the_client_cwd(subproc_conn: ClassicConnection, tmp_path: Path) -> None:
    """Over a real process boundary: code running on the server imports ``os`` on the client."""
    subproc_conn.namespace["back"] = subproc_conn.root.getconn()  # the server's own connection to us
    subproc_conn.execute("client_pid = back.root.getmodule('os').getpid()")
    assert subproc_conn.namespace["client_pid"] == os.getpid()


def test_remote_server_cannot_reach_a_void_client(child_cwd: Path) -> None:
    with rpc_classic.connect_subproc(service=VoidService, env=child_env(), cwd=child_cwd) as conn:
        conn.namespace["back"] = conn.root.getconn()
        with pytest.raises(AttributeError):
            conn.execute("back.root.getmodule('os')")
        # and what the client lends the server (a callback) exposes nothing beyond being called
        conn.namespace["callback"] = lambda: "called"
        assert conn.eval("callback()") == "called"
        with pytest.raises(AttributeError):
            conn.eval("callback.__globals__")
