"""Remote exceptions: builtin types arrive as themselves with the remote traceback attached;
other types arrive as :class:`rpc_service.RemoteError` naming the remote type; the server's
config decides how much traceback and version text it gives away; exceptions that would
stop this process arrive as RemoteError; arguments that cannot cross arrive as their repr.
"""

from __future__ import annotations

import builtins
import sys
import threading
from typing import TYPE_CHECKING, Any, Iterator

import pytest

import rpc_service
from rpc_service import RemoteError, Service

from .helpers import OfUnhashableClass

if TYPE_CHECKING:
    from .conftest import ConnectTo


class MyError(Exception):
    pass


class MyValueError(ValueError):
    """A user subclass of a builtin: not a builtin itself."""


class NeedsTwo(Exception):
    def __init__(self, first: str, second: int) -> None:
        super().__init__(first, second)


UNENCODABLE = object()
# Servers send tracebacks only when configured to (the default gives type and message only).
TRACEBACKS: dict[str, Any] = {"include_local_traceback": True}


class Faulty(Service):
    def exposed_value_error(self) -> None:
        raise ValueError("bad value", 42)

    def exposed_key_error(self, key: str) -> None:
        raise KeyError(key)

    def exposed_divide(self, a: int, b: int) -> float:
        return a / b

    def exposed_my_error(self) -> None:
        raise MyError("custom", 7, ("nested", b"bytes"))

    def exposed_my_value_error(self) -> None:
        raise MyValueError("subclass")

    def exposed_needs_two(self) -> None:
        raise NeedsTwo("a", 2)

    def exposed_system_exit(self, code: int) -> None:
        raise SystemExit(code)

    def exposed_generator_exit(self) -> None:
        raise GeneratorExit("from a method")

    def exposed_unencodable(self) -> None:
        raise ValueError(UNENCODABLE, "plain", [1, 2])

    def exposed_my_unencodable(self) -> None:
        raise MyError(UNENCODABLE, 3)

    def exposed_not_found(self) -> None:
        raise FileNotFoundError(2, "No such file", "missing.txt")

    def exposed_chained(self) -> None:
        try:
            empty: dict[str, int] = {}
            empty["inner_key"]
        except KeyError as exc:
            raise RuntimeError("outer") from exc

    def exposed_numbers(self, count: int) -> Iterator[int]:
        return iter(range(count))

    def exposed_generate(self, count: int) -> Iterator[int]:
        yield from range(count)

    def exposed_call(self, func: Any, *args: Any) -> Any:
        return func(*args)

    def exposed_ok(self) -> str:
        return "ok"


# -- builtin types ---------------------------------------------------------------------------


def test_builtin_exceptions_arrive_as_their_own_type(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty).root
    with pytest.raises(ValueError) as value_error:
        root.value_error()
    assert type(value_error.value) is ValueError
    assert value_error.value.args == ("bad value", 42)
    with pytest.raises(KeyError) as key_error:
        root.key_error("missing")
    assert type(key_error.value) is KeyError and key_error.value.args == ("missing",)
    with pytest.raises(ZeroDivisionError):
        root.divide(1, 0)
    assert root.divide(1, 2) == 0.5  # and the connection is fine afterwards


def test_remote_traceback_names_the_remote_function(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty, TRACEBACKS).root
    with pytest.raises(ValueError) as info:
        root.value_error()
    traceback_text: str = getattr(info.value, "remote_traceback")
    assert "exposed_value_error" in traceback_text
    assert "ValueError: ('bad value', 42)" in traceback_text
    assert __file__ in traceback_text or "test_remote_errors.py" in traceback_text
    if sys.version_info >= (3, 11):  # the note makes it visible in this side's report too
        assert any("exposed_value_error" in note for note in info.value.__notes__)
    with pytest.raises(ZeroDivisionError) as zero:
        root.divide(1, 0)
    assert "exposed_divide" in getattr(zero.value, "remote_traceback")
    assert "a / b" in getattr(zero.value, "remote_traceback")


def test_the_traceback_of_a_chained_exception_shows_both(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty, TRACEBACKS).root
    with pytest.raises(RuntimeError, match="outer") as info:
        root.chained()
    text: str = getattr(info.value, "remote_traceback")
    assert "inner_key" in text and "direct cause" in text


def test_os_errors_keep_their_subclass_and_errno(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty).root
    with pytest.raises(FileNotFoundError) as info:
        root.not_found()
    assert info.value.errno == 2
    assert info.value.strerror == "No such file"


def test_stop_iteration_ends_a_for_loop_cleanly(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty).root
    seen = []
    for number in root.numbers(4):  # each next() is remote; the last one raises StopIteration there
        seen.append(number)
    assert seen == [0, 1, 2, 3]
    assert list(root.generate(3)) == [0, 1, 2]  # a remote generator too
    assert list(root.numbers(0)) == []
    iterator = root.numbers(1)
    assert next(iterator) == 0
    with pytest.raises(StopIteration):
        next(iterator)
    assert next(iterator, "default") == "default"


def test_an_exception_in_a_client_callback_travels_there_and_back(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty, TRACEBACKS, client_config=TRACEBACKS).root

    def callback() -> None:
        raise KeyError("raised on the client")

    with pytest.raises(KeyError, match="raised on the client") as info:
        root.call(callback)
    text: str = getattr(info.value, "remote_traceback")
    assert "exposed_call" in text  # the server's frame...
    assert "callback" in text  # ...and, nested in it, the client's own


def test_a_non_builtin_exception_keeps_its_type_name_there_and_back(connect_to: ConnectTo) -> None:
    """Regression: a callback's own exception type, re-raised by the server's handler, came
    back as RemoteError of type ``rpc_service._errors.RemoteError`` (its name among the args)."""
    root = connect_to(Faulty, TRACEBACKS, client_config=TRACEBACKS).root

    def callback() -> None:
        raise MyError("from the client", 3)

    with pytest.raises(RemoteError) as info:
        root.call(callback)
    assert info.value.remote_type == f"{MyError.__module__}.MyError"
    assert info.value.remote_args == ("from the client", 3)
    assert "callback" in info.value.remote_traceback


# -- other types --------------------------------------------------------------------------------


def test_non_builtin_exceptions_arrive_as_remote_error(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty, TRACEBACKS).root
    with pytest.raises(RemoteError) as info:
        root.my_error()
    error = info.value
    assert isinstance(error, rpc_service.RPCError)
    assert error.remote_type == f"{MyError.__module__}.MyError"
    assert error.remote_type.endswith("test_remote_errors.MyError")
    assert error.remote_args == ("custom", 7, ("nested", b"bytes"))
    assert "exposed_my_error" in error.remote_traceback
    assert "MyError" in str(error) and "'custom'" in str(error)


def test_a_subclass_of_a_builtin_is_not_a_builtin(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty).root
    with pytest.raises(RemoteError) as info:
        root.my_value_error()
    assert info.value.remote_type.endswith("test_remote_errors.MyValueError")
    assert info.value.remote_args == ("subclass",)
    with pytest.raises(RemoteError) as nested:
        root.needs_two()
    assert nested.value.remote_type.endswith("NeedsTwo") and nested.value.remote_args == ("a", 2)


def test_exit_is_not_re_raised_here(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty).root
    with pytest.raises(RemoteError) as info:
        root.system_exit(3)
    assert info.value.remote_type == "builtins.SystemExit"
    assert info.value.remote_args == (3,)
    assert not isinstance(info.value, SystemExit)
    assert root.ok() == "ok"  # the server went on serving


def test_generator_exit_raised_by_a_method_arrives_as_remote_error(connect_to: ConnectTo) -> None:
    """Regression: a method raising GeneratorExit (a BaseException) escaped the serving code
    and killed the whole connection instead of being reported to the caller."""
    root = connect_to(Faulty).root
    with pytest.raises(RemoteError) as info:
        root.generator_exit()
    assert info.value.remote_type == "builtins.GeneratorExit"
    assert info.value.remote_args == ("from a method",)
    assert root.ok() == "ok"


def test_unencodable_args_arrive_as_their_repr(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty).root
    with pytest.raises(ValueError) as info:
        root.unencodable()
    assert info.value.args == (repr(UNENCODABLE), "plain", repr([1, 2]))
    with pytest.raises(RemoteError) as custom:
        root.my_unencodable()
    assert custom.value.remote_args == (repr(UNENCODABLE), 3)


_NO_MODULE_ERROR: Any = eval("type('NoModuleError', (Exception,), {})", {})  # (no __name__ there: no __module__)
_NO_MODULE_CLASS: Any = eval("type('NoModule', (), {'exposed_ping': lambda self: 'pong'})", {})


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr broken")


class Awkward(Service):
    def exposed_no_module_error(self) -> None:
        raise _NO_MODULE_ERROR("boom")

    def exposed_no_module_value(self) -> Any:
        return _NO_MODULE_CLASS()

    def exposed_of_unhashable_class(self) -> Any:
        return OfUnhashableClass()

    def exposed_bad_repr_arg(self) -> None:
        raise ValueError(_BadRepr(), "plain")

    def exposed_ok(self) -> int:
        return 1


@pytest.mark.parametrize("config", [None, TRACEBACKS], ids=["no-traceback", "traceback"])
def test_awkward_exceptions_and_values_are_answered_and_the_connection_serves_on(
    connect_to: ConnectTo, config: dict[str, Any] | None
) -> None:
    """Regression: an exception class without __module__ (made by type() in a namespace
    without __name__, as classic mode's namespace is), a result of a class whose metaclass
    makes it unhashable, and an exception argument whose repr raises each broke the
    serving side (the connection hung or closed) instead of answering."""
    root = connect_to(Awkward, config).root
    with pytest.raises(RemoteError) as info:
        root.no_module_error()
    assert info.value.remote_type == "?.NoModuleError" and info.value.remote_args == ("boom",)
    assert root.no_module_value().ping() == "pong"  # (described with module "?")
    with pytest.raises(RemoteError, match="unhashable"):
        root.of_unhashable_class()
    with pytest.raises(ValueError) as bad:
        root.bad_repr_arg()
    assert bad.value.args == ("<_BadRepr object: repr raised RuntimeError>", "plain")
    assert root.ok() == 1


# -- what the server gives away ---------------------------------------------------------------------


@pytest.mark.parametrize("config", [None, {"include_local_traceback": False}], ids=["default", "explicit"])
def test_no_traceback_when_the_server_withholds_it(connect_to: ConnectTo, config: dict[str, Any] | None) -> None:
    root = connect_to(Faulty, config).root
    with pytest.raises(ValueError) as info:
        root.value_error()
    assert getattr(info.value, "remote_traceback") == ""
    assert not getattr(info.value, "__notes__", [])
    with pytest.raises(RemoteError) as custom:
        root.my_error()
    assert custom.value.remote_traceback == ""
    assert custom.value.remote_args == ("custom", 7, ("nested", b"bytes"))  # the args still cross
    assert "remote traceback" not in str(custom.value)


def test_version_line_is_included_with_the_traceback(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty, TRACEBACKS).root
    with pytest.raises(RemoteError) as info:
        root.my_error()
    first_line = info.value.remote_traceback.splitlines()[0]
    assert "Python" in first_line and rpc_service.__version__ in first_line


def test_version_line_is_omitted_when_configured(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty, {**TRACEBACKS, "include_local_version": False}).root
    with pytest.raises(RemoteError) as info:
        root.my_error()
    text = info.value.remote_traceback
    assert text.startswith("Traceback (most recent call last)")
    assert "Python" not in text.splitlines()[0]
    assert rpc_service.__version__ not in text
    assert "exposed_my_error" in text


def test_the_client_config_does_not_change_what_the_server_sends(connect_to: ConnectTo) -> None:
    conn = connect_to(Faulty, TRACEBACKS, client_config={"include_local_traceback": False, "include_local_version": False})
    with pytest.raises(RemoteError) as info:
        conn.root.my_error()
    assert "exposed_my_error" in info.value.remote_traceback
    assert rpc_service.__version__ in info.value.remote_traceback


def test_remote_errors_do_not_disturb_other_threads(connect_to: ConnectTo) -> None:
    root = connect_to(Faulty).root
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                with pytest.raises(KeyError):
                    root.key_error("k")
                assert root.ok() == "ok"
        except BaseException as exc:  # reported below, on the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


class Detailed(Service):
    def exposed_open(self, path: str) -> None:
        open(path, encoding="utf-8").close()

    def exposed_rename(self, source: str, target: str) -> None:
        import os

        os.rename(source, target)

    def exposed_group(self) -> None:
        raise _GROUP("many", [ValueError("a"), KeyError("k"), MyError("mine"), _GROUP("inner", [TypeError("t")])])


_GROUP: Any = getattr(builtins, "ExceptionGroup", None)  # (3.11+)


def test_an_os_error_keeps_its_file_names(connect_to: ConnectTo, tmp_path: Any) -> None:
    """Regression: only ``args`` crossed, and an OSError's file names are not among them
    (RPyC users rely on ``except FileNotFoundError as e: e.filename``)."""
    root = connect_to(Detailed).root
    missing = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError) as info:
        root.open(missing)
    assert info.value.filename == missing and info.value.errno == 2
    assert str(info.value) == f"[Errno 2] No such file or directory: {missing!r}"
    with pytest.raises(FileNotFoundError) as renamed:
        root.rename(missing, missing + "2")
    assert (renamed.value.filename, renamed.value.filename2) == (missing, missing + "2")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is 3.11+")
def test_an_exception_group_arrives_as_one_with_its_members(connect_to: ConnectTo) -> None:
    """Regression: an ExceptionGroup (a builtin subclass of Exception) arrived as RemoteError."""
    root = connect_to(Detailed).root
    with pytest.raises(_GROUP) as info:
        root.group()
    group = info.value
    assert group.message == "many"
    first, second, third, inner = group.exceptions
    assert (type(first), first.args, type(second), second.args) == (ValueError, ("a",), KeyError, ("k",))
    assert isinstance(third, RemoteError) and third.remote_type.endswith("MyError")
    assert type(inner) is _GROUP and [type(e) for e in inner.exceptions] == [TypeError]
    matched, rest = group.split(ValueError)
    assert matched is not None and rest is not None and len(rest.exceptions) == 3


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is 3.11+")
def test_a_group_member_keeps_its_type_name_there_and_back(connect_to: ConnectTo) -> None:
    """Regression: a member of a group re-raised through a second hop was described as
    ``rpc_service._errors.RemoteError`` (its own name among its args), unlike a lone one."""
    root = connect_to(Faulty, TRACEBACKS, client_config=TRACEBACKS).root

    def callback() -> None:
        raise _GROUP("from the client", [MyError("member", 2), ValueError("v")])

    with pytest.raises(_GROUP) as info:
        root.call(callback)
    member, builtin = info.value.exceptions
    assert isinstance(member, RemoteError)
    assert (member.remote_type, member.remote_args) == (f"{MyError.__module__}.MyError", ("member", 2))
    assert type(builtin) is ValueError and builtin.args == ("v",)
