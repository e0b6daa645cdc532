"""The Slave service: a connection end that imports, evaluates and executes what the peer asks.

Owns :class:`SlaveService` (alias :data:`ClassicService`) and :func:`classic_config`, the
connection config classic mode needs (every attribute reachable, settable, deletable).
The service's exposed surface is the classic one (``namespace``, ``execute``, ``eval``,
``getmodule``, ``getconn``) plus the peer-side halves of this package's helpers (packing
values, teleport, stdio redirection, directory listing). It deliberately offers the peer
*everything* this interpreter can do; it must never be served where untrusted peers can
reach it (see the package README's security notes). It does no I/O of its own.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Sequence

from rpc_service import Config, ConfigArg, Service

from ._plain import pack, unpack
from ._stdio import PatientReader, process_marker
from ._teleport import build_function, python_info
from ._transfer import Tree, walk_tree

if TYPE_CHECKING:
    from rpc_service import Connection

__all__ = ["SlaveService", "ClassicService", "FORWARD_DUNDERS", "classic_config", "forward_dunders", "is_slave"]

log = logging.getLogger("rpc_classic")



#: Dunder attributes a classic connection's proxies ask the peer for (``conn.modules.os.__name__``,
#: ``__file__``, ``__doc__``, ``conn.modules.sys.__dict__``...); the peer's Slave config allows them.
FORWARD_DUNDERS: Final = frozenset(
    """__name__ __qualname__ __module__ __file__ __doc__ __dict__ __path__ __package__ __spec__
    __loader__ __all__ __version__ __annotations__ __wrapped__ __self__ __func__ __code__
    __defaults__ __kwdefaults__ __globals__ __closure__ __bases__ __mro__ __slots__
    __builtins__ __cached__""".split()
)


def _as_config(config: ConfigArg) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    return Config(**config)


def forward_dunders(config: ConfigArg = None) -> Config:
    """``config`` whose proxies ask the peer for :data:`FORWARD_DUNDERS` (nothing more is
    exposed by this side: that is ``allow_*``'s business)."""
    base = _as_config(config)
    return dataclasses.replace(base, forward_dunders=base.forward_dunders | FORWARD_DUNDERS)


def classic_config(config: ConfigArg = None) -> Config:
    """``config`` (a :class:`rpc_service.Config`, a dict, or None) with everything opened:
    ``allow_all_attrs``, ``allow_setattr`` and ``allow_delattr`` set, the module dunders
    forwarded (:func:`forward_dunders`), and tracebacks sent (``include_local_traceback``: a
    peer that may read everything may read those); the rest kept."""
    base = forward_dunders(config)
    return dataclasses.replace(
        base, allow_all_attrs=True, allow_setattr=True, allow_delattr=True, include_local_traceback=True
    )


def is_slave(service: object) -> bool:
    """Whether ``service`` (a class or an instance) is a :class:`SlaveService`."""
    cls = service if isinstance(service, type) else type(service)
    return issubclass(cls, SlaveService)


class SlaveService(Service):
    """Makes this side a slave of the peer: remote import, eval and exec of anything.

    Exposed to the peer: ``namespace`` (a dict, the globals of ``execute``/``eval``),
    ``execute(text)``, ``eval(text)``, ``getmodule(name)`` (imports a dotted name) and
    ``getconn()`` (this side's connection). Classic mode also needs every attribute of every
    object reachable: serve it with :func:`classic_config` (the classic factories and the
    ``rpc-classic`` server do). Given as a class, each connection gets its own namespace.
    """

    ALIASES: ClassVar[Sequence[str]] = ("Slave", "Classic")

    def __init__(self) -> None:
        self.exposed_namespace: dict[str, Any] = {}
        self._conn: Connection | None = None
        self._redirections: dict[int, tuple[Any, Any, Any]] = {}
        self._next_token = 1

    # -- lifecycle -----------------------------------------------------------------------

    def connection_config(self, config: Config) -> Config:
        """The config of a connection serving this service: :func:`classic_config` of it.

        (The hook through which a service widens its connection's config; connections
        that do not consult it must be given :func:`classic_config` explicitly.)
        """
        return classic_config(config)

    def on_connect(self, conn: Connection) -> None:
        self._conn = conn
        if not conn.config.allow_all_attrs:
            log.warning(
                "%r serves a SlaveService with a restricted config; classic mode needs "
                "protocol_config=rpc_classic.classic_config() (the peer's modules, eval and "
                "namespace shortcuts will fail)",
                conn,
            )

    def on_disconnect(self, conn: Connection) -> None:
        # a peer gone while it had our stdio redirected must not leave dead proxies in sys
        for token in sorted(self._redirections, reverse=True):
            self.exposed_restore_stdio(token)

    # -- the classic surface -------------------------------------------------------------

    def exposed_execute(self, text: str) -> None:
        """Run ``text`` (statements) with :attr:`namespace` as its globals."""
        exec(text, self.exposed_namespace)

    def exposed_eval(self, text: str) -> Any:
        """Evaluate the expression ``text`` with :attr:`namespace` as its globals."""
        return eval(text, self.exposed_namespace)

    def exposed_getmodule(self, name: str) -> ModuleType:
        """Import the module called ``name`` (dotted names import the submodule)."""
        if type(name) is not str:
            raise TypeError(f"module names are strings, not {type(name).__name__}")
        return importlib.import_module(name)

    def exposed_getconn(self) -> Connection | None:
        """This side's connection (through which this side reaches the peer)."""
        return self._conn

    # -- peer-side halves of the package's helpers ---------------------------------------

    def exposed_pack(self, value: Any) -> object:
        """``value`` packed as plain data (for the peer's ``obtain``)."""
        return pack(value)

    def exposed_unpack(self, packed: object) -> Any:
        """A new local object from the peer's packed plain data (for its ``deliver``)."""
        return unpack(packed)

    def exposed_unpickle(self, data: bytes) -> Any:
        """``pickle.loads(data)``, only when this side's config allows pickle too."""
        if self._conn is None or not self._conn.config.allow_pickle:
            raise ValueError("pickle is not enabled on this side (allow_pickle)")
        if type(data) is not bytes:
            raise TypeError("unpickle needs bytes")
        import pickle

        return pickle.loads(data)

    def exposed_python_info(self) -> tuple[str, tuple[int, int, int]]:
        """This interpreter's implementation name and version (for teleport)."""
        return python_info()

    def exposed_teleport(
        self, code: bytes, name: str, defaults: object, kwdefaults: object, origin: object, namespace: Any = None, def_: bool = True
    ) -> Any:
        """Rebuild a function the peer marshalled (same interpreter version only), with
        ``namespace`` (default: :attr:`namespace`) as its globals."""
        target = self.exposed_namespace if namespace is None else namespace
        return build_function(code, name, defaults, kwdefaults, origin, target, def_)

    def exposed_redirect_stdio(self, stdout: Any, stderr: Any, stdin: Any = None, origin: object = None) -> int:
        """Point ``sys.stdout``/``sys.stderr`` (and ``sys.stdin`` when given) at the peer's
        streams; returns the token to pass to :meth:`exposed_restore_stdio`.

        Refused when the peer is this very process (``origin``, its process marker): every
        print would then wait on itself."""
        if origin == process_marker():
            raise RuntimeError("cannot redirect the stdio of this process to itself (the peer runs in the same process)")
        token = self._next_token
        self._next_token += 1
        self._redirections[token] = (sys.stdout, sys.stderr, sys.stdin)
        sys.stdout, sys.stderr = stdout, stderr
        if stdin is not None:
            sys.stdin = PatientReader(stdin)
        return token

    def exposed_restore_stdio(self, token: int) -> None:
        """Undo one :meth:`exposed_redirect_stdio` (unknown tokens are ignored)."""
        saved = self._redirections.pop(token, None)
        if saved is not None:
            sys.stdout, sys.stderr, sys.stdin = saved

    def exposed_walk(self, path: str) -> Tree:
        """The tree under directory ``path``: ``(relative dir, subdirs, files)`` per directory."""
        return walk_tree(os.fspath(path))


#: The other name of :class:`SlaveService` (RPyC has both).
ClassicService = SlaveService
