"""RPyC compatibility: remote context managers see the exception of the with-block (issue 16).

A ``with`` over a proxy calls the remote ``__exit__``; when the block raised, the remote side
gets a real exception (a builtin as itself, others as RemoteError) so a
``@contextlib.contextmanager`` generator runs its ``except``/``finally``, and the caller still
gets its own, original exception.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import pytest

import rpc_service
from rpc_service import RemoteError, Service

from .conftest import ConnectTo

pytestmark = pytest.mark.timeout(60)


class LocalProblem(Exception):
    """An exception type only the caller knows."""


class ContextService(Service):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.seen: list[BaseException] = []

    @contextlib.contextmanager
    def exposed_context(self, base: int) -> Iterator[int]:
        self.events.append("enter")
        try:
            yield base + 17
        except Exception as exc:
            self.events.append("except")
            self.seen.append(exc)
            raise
        finally:
            self.events.append("finally")

    @contextlib.contextmanager
    def exposed_swallowing(self) -> Iterator[None]:
        try:
            yield
        except ValueError as exc:
            self.seen.append(exc)

    @contextlib.contextmanager
    def exposed_replacing(self) -> Iterator[None]:
        try:
            yield
        except Exception:
            raise KeyError("replaced by the remote side") from None

    def exposed_plain(self) -> Any:
        service = self

        class Plain:
            def __enter__(self) -> str:
                return "entered"

            def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
                service.seen.append(exc)
                service.events.append(f"exit {exc_type.__name__ if exc_type else None} {tb}")

        return Plain()


def test_no_exception(connect_to: ConnectTo) -> None:
    service = ContextService()
    conn = connect_to(service)
    with conn.root.context(3) as value:
        assert value == 20
        assert service.events == ["enter"]
    assert service.events == ["enter", "finally"]


def test_builtin_exception_reaches_the_generator_and_the_caller_gets_the_original(connect_to: ConnectTo) -> None:
    service = ContextService()
    conn = connect_to(service)
    original = ValueError("inside the block")
    with pytest.raises(ValueError) as info:
        with conn.root.context(3):
            raise original
    assert info.value is original
    assert service.events == ["enter", "except", "finally"]
    (seen,) = service.seen
    assert type(seen) is ValueError and seen.args == ("inside the block",)


def test_caller_only_exception_arrives_as_remote_error(connect_to: ConnectTo) -> None:
    service = ContextService()
    conn = connect_to(service)
    with pytest.raises(LocalProblem, match="only here"):
        with conn.root.context(0):
            raise LocalProblem("only here")
    assert service.events == ["enter", "except", "finally"]
    (seen,) = service.seen
    assert isinstance(seen, RemoteError)
    assert seen.remote_type.endswith("LocalProblem") and seen.remote_args == ("only here",)


def test_remote_generator_may_swallow_the_exception(connect_to: ConnectTo) -> None:
    service = ContextService()
    conn = connect_to(service)
    with conn.root.swallowing():
        raise ValueError("swallowed")
    assert [str(exc) for exc in service.seen] == ["swallowed"]


def test_remote_generator_may_replace_the_exception(connect_to: ConnectTo) -> None:
    conn = connect_to(ContextService())
    with pytest.raises(KeyError, match="replaced by the remote side"):
        with conn.root.replacing():
            raise ValueError("replaced")


def test_plain_exit_method_gets_a_local_type_and_no_traceback(connect_to: ConnectTo) -> None:
    service = ContextService()
    conn = connect_to(service, {"allow_public_attrs": True})
    with pytest.raises(OSError):
        with conn.root.plain() as entered:
            assert entered == "entered"
            raise OSError("disk")
    assert service.events == ["exit OSError None"]
    assert type(service.seen[0]) is OSError


@pytest.mark.parametrize(
    "raised",
    [KeyError("k"), ValueError("v", 2), FileNotFoundError(2, "No such file", "/x"), IndexError(), LocalProblem(1, "two")],
    ids=repr,
)
def test_the_remote_exit_gets_the_exceptions_args(connect_to: ConnectTo, raised: Exception) -> None:
    """Regression: the remote __exit__ got the exception rebuilt from its str() (KeyError('k')
    as KeyError("'k'"), ValueError('v', 2) as one string, an OSError without errno or file
    name). Now with its args, and an OSError's file names, as a raised one crosses."""
    service = ContextService()
    conn = connect_to(service)
    with pytest.raises(type(raised)):
        with conn.root.context(0):
            raise raised
    (seen,) = service.seen
    if isinstance(raised, LocalProblem):
        assert isinstance(seen, RemoteError) and seen.remote_args == (1, "two")
        return
    assert type(seen) is type(raised) and seen.args == raised.args
    if isinstance(raised, OSError):
        assert isinstance(seen, OSError) and (seen.errno, seen.strerror, seen.filename) == (2, "No such file", "/x")


def test_the_remote_exit_gets_no_live_reference_to_what_the_exception_carries(connect_to: ConnectTo) -> None:
    """Regression (security): reading a lent exception's args handed the peer live proxies of
    the objects in them (a dict it could write into, a function it could call). It gets what
    raising the exception would send: plain values, the rest as their repr."""
    service = ContextService()
    conn = connect_to(service, {"allow_public_attrs": True})
    state = {"token": "s3cret"}
    called: list[bool] = []
    with pytest.raises(ValueError):
        with conn.root.plain():
            raise ValueError(state, lambda: called.append(True), 7)
    (seen,) = service.seen
    assert type(seen) is ValueError and seen.args[2] == 7
    assert all(type(arg) is str for arg in seen.args[:2]) and "s3cret" in seen.args[0]
    assert state == {"token": "s3cret"} and not called


def test_forwarded_context_manager() -> None:
    """rpc over rpc: the middle lends the owner's context manager on; the owner still sees it."""
    service = ContextService()

    class Middle(Service):
        def __init__(self) -> None:
            self.upstream = rpc_service.connect_thread(remote_service=service)

        def exposed_context(self, base: int) -> Any:
            return self.upstream.root.context(base)

    middle = Middle()
    conn = rpc_service.connect_thread(remote_service=middle)
    try:
        with pytest.raises(ZeroDivisionError):
            with conn.root.context(1) as value:
                assert value == 18
                1 / 0  # noqa: B018
        assert service.events == ["enter", "except", "finally"]
        assert type(service.seen[0]) is ZeroDivisionError
    finally:
        conn.close()
        middle.upstream.close()
