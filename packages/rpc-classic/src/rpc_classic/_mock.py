"""An in-process stand-in for a classic connection: :class:`MockClassicConnection`.

Owns an object with a :class:`~rpc_classic.ClassicConnection`'s shortcuts (``modules``,
``builtins``, ``eval``, ``execute``, ``namespace``, ``teleport``, ``close``) whose "peer" is
this very interpreter, for code that wants a classic connection when there is no peer to
talk to (tests, a local fallback). There is no socket, no thread, no proxy and no
serialisation: values are this process's own objects. It must not import anything of
``rpc_service``'s connection machinery. :func:`need_peer` is how the helpers that need a
real peer refuse a mock.
"""

from __future__ import annotations

import builtins as _builtins
import importlib
import sys
from types import ModuleType
from typing import Any, Callable

__all__ = ["LocalModules", "MockClassicConnection", "need_peer"]


class LocalModules:
    """``mock.modules``: this interpreter's modules by attribute or by dotted name, imported
    on first use (like ``conn.modules`` on a real classic connection)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<modules of this process>"

    def __getitem__(self, name: str) -> ModuleType:
        if type(name) is not str:
            raise TypeError(f"module names are strings, not {type(name).__name__}")
        return importlib.import_module(name)

    def __getattr__(self, name: str) -> ModuleType:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except ImportError as exc:  # (as ``conn.modules``: an AttributeError, the ImportError its cause)
            raise AttributeError(f"no module {name!r}: {exc}") from exc

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is already imported (nothing is imported)."""
        return type(name) is str and name in sys.modules


class MockClassicConnection:
    """A classic connection to this same interpreter, without a peer.

    ``modules``, ``builtins``, ``eval(text)``, ``execute(text)`` and ``namespace`` (the
    globals of those two, a fresh dict per instance) behave as on a
    :class:`~rpc_classic.ClassicConnection`, but everything runs here and returns real
    objects; ``teleport(func)`` returns ``func`` itself (stored in ``namespace`` under its
    name unless ``def_=False``). A context manager; ``close()`` only marks it closed.
    Helpers that need a peer's ``SlaveService`` (``upload``, ``download``,
    ``redirected_stdio``, ``interact``) refuse it with TypeError; ``obtain`` returns values
    as they are, ``deliver`` returns a copy (plain data only, as without ``allow_pickle``)
    and ``teleport_function`` is :meth:`teleport`.
    """

    def __init__(self, namespace: dict[str, Any] | None = None) -> None:
        self.namespace: dict[str, Any] = {} if namespace is None else namespace
        self.modules = LocalModules()
        self.closed = False

    def __repr__(self) -> str:
        return f"<rpc_classic.MockClassicConnection (this process){' closed' if self.closed else ''}>"

    def __enter__(self) -> MockClassicConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    @property
    def builtins(self) -> ModuleType:
        """This interpreter's ``builtins`` module."""
        return _builtins

    @property
    def builtin(self) -> ModuleType:
        """``builtins`` (RPyC's other spelling)."""
        return _builtins

    def eval(self, text: str) -> Any:
        """Evaluate the expression ``text`` with :attr:`namespace` as its globals."""
        return eval(text, self.namespace)

    def execute(self, text: str) -> None:
        """Execute the statements ``text`` with :attr:`namespace` as its globals."""
        exec(text, self.namespace)

    def teleport(self, func: Callable[..., Any], globals: Any = None, def_: bool = True) -> Callable[..., Any]:
        """``func`` itself (already "there"); stored in :attr:`namespace` under its name when ``def_``."""
        if def_ and func.__name__.isidentifier():  # (as teleport_function: a lambda has no name to define)
            (self.namespace if globals is None else globals)[func.__name__] = func
        return func


def need_peer(conn: object, what: str) -> None:
    """TypeError when ``conn`` is a :class:`MockClassicConnection`: ``what`` needs a real peer."""
    if isinstance(conn, MockClassicConnection):
        raise TypeError(f"{what} needs a connection to a classic peer, not a MockClassicConnection (it has no peer)")
