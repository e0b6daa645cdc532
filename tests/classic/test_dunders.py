"""Module dunders on a classic connection (issue 16 item 5): ``conn.modules.os.__name__``,
``__file__``, ``__doc__`` and ``conn.modules.sys.__dict__`` reach the peer's values, as in
RPyC; the peer's exposure decides, so a non-classic peer still refuses them."""

from __future__ import annotations

import os
import sys

import pytest

import rpc_classic
import rpc_service
from rpc_classic import ClassicConnection
from rpc_service import VoidService


def test_module_dunders_reach_the_peer(subproc_conn: ClassicConnection) -> None:
    ros = subproc_conn.modules.os
    assert ros.__name__ == "os"
    assert ros.__file__ == subproc_conn.eval("__import__('os').__file__")
    assert ros.__doc__ == subproc_conn.eval("__import__('os').__doc__") and ros.__doc__
    sys_dict = subproc_conn.modules.sys.__dict__
    assert rpc_service.is_proxy(sys_dict)
    assert "path" in sys_dict and sys_dict["platform"] == sys.platform
    assert subproc_conn.modules["os.path"].__name__ == os.path.__name__
    assert subproc_conn.modules.json.dumps.__name__ == "dumps"


def test_a_closed_client_still_reads_the_servers_dunders() -> None:
    with rpc_classic.connect_thread(service=VoidService) as conn:
        assert conn.modules.os.__name__ == "os"
        assert "getcwd" in conn.modules.os.__dict__


class Plain(rpc_service.Service):
    def exposed_thing(self) -> object:
        return os


def test_a_non_classic_peer_still_refuses_them() -> None:
    config = rpc_classic.classic_config()
    with rpc_service.connect_thread(VoidService, config, Plain) as conn:
        thing = conn.root.thing()
        with pytest.raises(AttributeError):
            thing.__name__
        with pytest.raises(AttributeError):
            thing.__dict__


def test_plain_connections_do_not_forward_dunders() -> None:
    with rpc_service.connect_thread(VoidService, None, Plain) as conn:
        thing = conn.root.thing()
        with pytest.raises(AttributeError):
            thing.__name__
        assert thing.__doc__ is None
