"""The classic connection: an ``rpc_service.Connection`` with the classic shortcuts.

Owns :class:`ClassicConnection` (``modules``, ``builtins``, ``eval``, ``execute``,
``namespace``, ``teleport``, all reaching the *peer's* ``SlaveService``) and
:class:`ModuleNamespace`, the ``conn.modules`` object. The shortcuts work whatever this
side's own service is, because they only use the peer's root. It adds no behaviour to the
connection itself (requests, serving and closing are ``rpc_service``'s).
"""

from __future__ import annotations

from typing import Any, Callable, cast

from rpc_service import ConfigArg, Connection, Service, Stream

from ._teleport import teleport_function

__all__ = ["ClassicConnection", "ModuleNamespace"]


class ModuleNamespace:
    """``conn.modules``: the peer's modules by attribute (``conn.modules.os``) or by dotted
    name (``conn.modules["xml.dom.minidom"]``). Importing happens on the peer, on first use;
    each module's proxy is then kept for the connection's lifetime."""

    __slots__ = ("_conn", "_cache")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<modules of the peer of {self._conn!r}>"

    def __getitem__(self, name: str) -> Any:
        if type(name) is not str:
            raise TypeError(f"module names are strings, not {type(name).__name__}")
        module = self._cache.get(name)
        if module is None:
            module = self._cache[name] = self._conn.root.getmodule(name)
        return module

    def __getattr__(self, name: str) -> Any:
        """``conn.modules.os``; a module the peer cannot import is an AttributeError here (as
        in RPyC: ``hasattr`` and ``getattr(..., default)`` work), its ImportError the cause."""
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except ImportError as exc:
            raise AttributeError(f"the peer has no module {name!r}: {exc}") from exc

    def __contains__(self, name: object) -> bool:
        """Whether the peer has already imported ``name`` (nothing is imported)."""
        return type(name) is str and bool(self["sys"].modules.__contains__(name))


class ClassicConnection(Connection):
    """A connection whose peer serves :class:`~rpc_classic.SlaveService`, with shortcuts.

    ``conn.modules.os``, ``conn.modules["xml.dom.minidom"]``, ``conn.builtins``,
    ``conn.eval(text)``, ``conn.execute(text)``, ``conn.namespace`` (the peer's globals for
    those) and ``conn.teleport(func)``. Made by the classic factories.
    """

    def __init__(self, service: Service, stream: Stream, config: ConfigArg = None, *, credentials: Any = None) -> None:
        super().__init__(service, stream, config, credentials=credentials)
        self.modules = ModuleNamespace(self)

    @classmethod
    def adopt(cls, conn: Connection) -> ClassicConnection:
        """``conn`` (a plain connection whose peer is a Slave) with the classic shortcuts.

        For connections made by factories that cannot make a :class:`ClassicConnection`
        themselves (e.g. ``rpc_registry.connect_by_service``). The connection object itself
        becomes a ClassicConnection; its config (what this side exposes) is unchanged.
        """
        if isinstance(conn, cls):
            return conn
        if type(conn) is not Connection:
            raise TypeError(f"can only adopt a plain rpc_service.Connection, not {type(conn).__name__}")
        conn.__class__ = cls  # same layout: Connection has no __slots__ and ours adds no state but modules
        adopted = cast(ClassicConnection, conn)
        adopted.modules = ModuleNamespace(adopted)
        return adopted

    def __repr__(self) -> str:
        return super().__repr__().replace("rpc_service.Connection", "rpc_classic.ClassicConnection", 1)

    def __enter__(self) -> ClassicConnection:
        return self

    @property
    def builtins(self) -> Any:
        """The peer's ``builtins`` module."""
        return self.modules["builtins"]

    @property
    def builtin(self) -> Any:
        """``builtins`` (RPyC's other spelling)."""
        return self.modules["builtins"]

    @property
    def namespace(self) -> Any:
        """The peer's namespace (a dict proxy): the globals of ``eval`` and ``execute``."""
        return self.root.namespace

    def eval(self, text: str) -> Any:
        """Evaluate the expression ``text`` on the peer and return the result."""
        return self.root.eval(text)

    def execute(self, text: str) -> None:
        """Execute the statements ``text`` on the peer."""
        self.root.execute(text)

    def teleport(self, func: Callable[..., Any], globals: Any = None, def_: bool = True) -> Any:
        """:func:`~rpc_classic.teleport_function` on this connection."""
        return teleport_function(self, func, globals, def_)
