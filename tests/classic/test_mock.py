"""MockClassicConnection (issue 16 item 8): a classic connection's shortcuts without a peer."""

from __future__ import annotations

import builtins
import os
import xml.dom.minidom
from pathlib import Path
from typing import Any, Callable

import pytest

import rpc_classic
from rpc_classic import MockClassicConnection


def classic_code(conn: Any) -> tuple[str, int, bool]:
    """Code written for a classic connection: it must not care which kind it gets."""
    conn.execute("import os\nanswer = 6 * 7")
    return conn.modules.os.path.basename("/a/b.txt"), conn.eval("answer"), "answer" in conn.namespace


def test_runs_code_written_for_a_classic_connection() -> None:
    with MockClassicConnection() as mock:
        assert classic_code(mock) == ("b.txt", 42, True)
    assert mock.closed
    with rpc_classic.connect_thread() as real:
        assert classic_code(real) == ("b.txt", 42, True)


def test_modules_builtins_and_namespace_are_this_process() -> None:
    mock = MockClassicConnection()
    assert mock.modules.os is os
    assert mock.modules["xml.dom.minidom"] is xml.dom.minidom
    assert "os" in mock.modules and "surely_not_a_module_xyz" not in mock.modules
    assert mock.builtins is builtins and mock.builtin is builtins
    mock.namespace["x"] = [1, 2]
    mock.execute("x.append(3)")
    assert mock.eval("x") is mock.namespace["x"] == [1, 2, 3]
    with pytest.raises(ModuleNotFoundError):
        mock.modules["surely_not_a_module_xyz"]
    with pytest.raises(AttributeError):  # (as on a real classic connection)
        mock.modules.surely_not_a_module_xyz
    with pytest.raises(TypeError):
        mock.modules[3]  # type: ignore[index]  # what a careless caller passes
    with pytest.raises(NameError):
        mock.eval("undefined_name")


def test_namespaces_are_separate_and_can_be_given() -> None:
    first, second = MockClassicConnection(), MockClassicConnection({"y": 5})
    first.execute("y = 1")
    assert second.eval("y") == 5 and first.eval("y") == 1


def test_teleport_and_obtain() -> None:
    mock = MockClassicConnection()

    def double(v: int) -> int:
        return v * 2

    assert mock.teleport(double) is double
    assert mock.eval("double(21)") == 42
    assert rpc_classic.obtain(mock.eval("{'a': [1]}")) == {"a": [1]}


def test_helpers_needing_a_peer_refuse_it_clearly(tmp_path: Path) -> None:
    mock = MockClassicConnection()
    (tmp_path / "a.txt").write_text("x")
    refused: list[Callable[[], object]] = [
        lambda: rpc_classic.upload(mock, tmp_path / "a.txt", tmp_path / "b.txt"),
        lambda: rpc_classic.download(mock, tmp_path / "a.txt", tmp_path / "c.txt"),
        lambda: rpc_classic.redirected_stdio(mock).__enter__(),
        lambda: rpc_classic.interact(mock),
    ]
    for helper in refused:
        with pytest.raises(TypeError, match="MockClassicConnection"):
            helper()
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_deliver_and_teleport_function_work_here() -> None:
    mock = MockClassicConnection()
    value = {"a": [1, 2]}
    copied = rpc_classic.deliver(mock, value)
    assert copied == value and copied is not value and copied["a"] is not value["a"]
    assert rpc_classic.deliver(mock, 5) == 5
    with pytest.raises(rpc_classic.NotPlainDataError):
        rpc_classic.deliver(mock, [object()])

    def triple(v: int) -> int:
        return v * 3

    assert rpc_classic.teleport_function(mock, triple) is triple
    assert mock.eval("triple(2)") == 6
