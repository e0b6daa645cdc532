"""Proxies: local stand-ins for objects that live on the peer.

Owns the :class:`Proxy` base class and the per-type proxy classes built from the type
descriptors the peer sends (exposed method names become real methods, so
``proxy.method(...)`` is one round trip; special methods are defined only where the
remote type has them, so ``len()``/``iter()``/``in`` behave as they would locally). A
proxy holds only its connection and object id; every operation is a request on that
connection. Proxies never unpickle anything unless this side's config allows pickle.
"""

from __future__ import annotations

import builtins
import reprlib
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Final

from rpc_protocol import BackRef, Op, RemoteProtocolError

from ._exposure import MAX_DESCRIBED_METHODS, MAX_DESCRIBED_NAME, MAX_DESCRIBED_QUALNAME, OPTIONAL_SPECIALS

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["BY_VALUE_BUILTINS", "Proxy", "descriptor_members", "make_proxy_class", "is_proxy"]

_INTERNAL: Final = frozenset({"_rpc_conn", "_rpc_oid", "_rpc_ref"})
_NO_KWARGS: Final[dict[str, Any]] = {}
# The immutable builtins that cross by value. A proxy never claims to be one of them: code
# that checked isinstance(x, str) trusts x to behave as a str (an immutable value formatted,
# hashed and compared locally), and a peer's str subclass would format differently later.
BY_VALUE_BUILTINS: Final = frozenset(
    {"str", "bytes", "int", "float", "complex", "bool", "tuple", "frozenset", "range", "slice"}
)
# Builtin classes a proxy may report as its __class__ (so isinstance(proxy, list) works).
_BUILTIN_CLASSES: Final = frozenset(
    name for name in dir(builtins) if isinstance(getattr(builtins, name), type) and not name.startswith("_")
) - BY_VALUE_BUILTINS


class Proxy:
    """A reference to an object on the peer; every operation on it crosses the connection."""

    __slots__ = ("_rpc_conn", "_rpc_oid", "_rpc_ref", "__weakref__")
    _rpc_type: tuple[str, str] = ("", "")  # (module, qualname) of the remote type
    _rpc_builtin: type | None = None

    _rpc_conn: Connection
    _rpc_oid: int
    _rpc_ref: BackRef  # what this proxy is on the wire (the target of its requests), made once

    def __getattr__(self, name: str) -> Any:
        if name in _INTERNAL or name.startswith("__") and name.endswith("__"):
            if name not in _INTERNAL and name in _forwarded(self):  # the peer's exposure decides
                return self._rpc_conn._request(Op.GETATTR, self._rpc_ref, (name,))
            # not set yet, or a special method the remote type lacks (copy, pickle probes)
            raise AttributeError(name)
        return self._rpc_conn._request(Op.GETATTR, self._rpc_ref, (name,))

    def __setattr__(self, name: str, value: object) -> None:
        if name in _INTERNAL:
            object.__setattr__(self, name, value)
        else:
            self._rpc_conn._request(Op.SETATTR, self, (name, value))

    def __delattr__(self, name: str) -> None:
        self._rpc_conn._request(Op.DELATTR, self, (name,))

    def __dir__(self) -> list[str]:
        return list(self._rpc_conn._request(Op.DIR, self))

    def __hash__(self) -> int:
        value = self._rpc_conn._request(Op.HASH, self)
        if type(value) is not int:
            raise TypeError("the peer returned a non-integer hash")
        return value

    def __eq__(self, other: object) -> Any:
        return self._rpc_conn._request(Op.CALLATTR, self, ("__eq__", other))

    def __ne__(self, other: object) -> Any:
        return self._rpc_conn._request(Op.CALLATTR, self, ("__ne__", other))

    def __repr__(self) -> str:
        conn = self._rpc_conn
        if conn.closed:
            module, name = self._rpc_type
            return f"<proxy of {module}.{name} #{self._rpc_oid} on a closed connection>"
        return str(conn._request(Op.REPR, self))

    def __str__(self) -> str:
        return str(self._rpc_conn._request(Op.STR, self))

    def __format__(self, spec: str) -> str:
        return str(self._rpc_conn._request(Op.CALLATTR, self, ("__format__", spec)))

    def __instancecheck__(self, obj: object) -> bool:
        return bool(self._rpc_conn._request(Op.INSTANCECHECK, self, (obj,)))

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self._rpc_conn._reduce_proxy(self, protocol)

    @property  # type: ignore[misc]  # deliberately shadows __class__ so isinstance(proxy, list) works
    def __class__(self) -> type:
        cls = type(self)
        if cls._rpc_builtin is None:
            return cls
        reported: type | None = cls.__dict__.get("_rpc_reported_class")
        return reported if reported is not None else _reported_class(cls)


_REPORTED_LOCK: Final = threading.Lock()


def _reported_class(cls: type[Proxy]) -> type:
    """What proxies of ``cls`` report as their ``__class__`` when the remote type is a mutable
    builtin or a subclass of one: the builtin itself, or a local subclass of it named as the
    remote class (``__name__``, ``__qualname__``, ``__module__``), so that both
    ``isinstance(proxy, dict)`` and ``proxy.__class__.__name__ == "Counter"`` hold. Made once
    per proxy class and kept on it (so it is shared, and hashable, like the proxy class)."""
    builtin = cls._rpc_builtin
    assert builtin is not None
    module, qualname = cls._rpc_type
    with _REPORTED_LOCK:
        reported: type | None = cls.__dict__.get("_rpc_reported_class")
        if reported is None:
            reported = builtin
            if (module, qualname) != (builtin.__module__, builtin.__qualname__):
                namespace = {"__slots__": (), "__module__": module, "__qualname__": qualname or builtin.__qualname__}
                try:
                    reported = type(qualname.rpartition(".")[2] or builtin.__name__, (builtin,), namespace)
                except (TypeError, ValueError):  # a builtin that cannot be subclassed (memoryview), a peer's odd name
                    reported = builtin
            type.__setattr__(cls, "_rpc_reported_class", reported)
    return reported


def is_proxy(obj: object) -> bool:
    """True when ``obj`` is a proxy of a remote object (``isinstance`` is fooled on purpose)."""
    return isinstance(type(obj), type) and issubclass(type(obj), Proxy)


def _method(name: str) -> Callable[..., Any]:
    def method(self: Proxy, *args: Any, **kwargs: Any) -> Any:
        return self._rpc_conn._call(self._rpc_ref, name, args, kwargs)

    method.__name__ = method.__qualname__ = name
    method._rpc_name = name  # type: ignore[attr-defined]  # read by async_() to call it by name
    return method


def _special(name: str) -> Callable[..., Any]:
    def special(self: Proxy, *args: Any) -> Any:
        return self._rpc_conn._call(self._rpc_ref, name, args, _NO_KWARGS)

    special.__name__ = special.__qualname__ = name
    return special


def _call(self: Proxy, *args: Any, **kwargs: Any) -> Any:
    return self._rpc_conn._call(self._rpc_ref, None, args, kwargs, Op.CALL)


def _iter(self: Proxy) -> Any:
    return self._rpc_conn._iterate(self)


def _check_shape(info: object) -> None:
    """The shape and sizes of a descriptor (cheap, and before anything walks a peer's
    million names), and that it holds strings only: then hashing it (the cache lookup)
    runs no code of the peer's choosing (a proxy's ``__hash__`` is a remote call)."""
    if not (
        type(info) is tuple
        and len(info) == 5
        and type(info[0]) is str
        and type(info[1]) is str
        and type(info[2]) is tuple
        and type(info[3]) is tuple
        and type(info[4]) is str
    ):
        raise RemoteProtocolError(f"malformed type descriptor {_shown(info)}")
    if (
        len(info[2]) > MAX_DESCRIBED_METHODS
        or len(info[3]) > len(OPTIONAL_SPECIALS)
        or len(info[0]) > MAX_DESCRIBED_QUALNAME
        or len(info[1]) > MAX_DESCRIBED_QUALNAME
        or len(info[4]) > MAX_DESCRIBED_NAME
    ):
        raise RemoteProtocolError(
            f"type descriptor too large ({len(info[2])} methods, {len(info[3])} special methods; "
            f"at most {MAX_DESCRIBED_METHODS} methods of names up to {MAX_DESCRIBED_NAME} characters)"
        )
    for names in (info[2], info[3]):
        for name in names:
            if type(name) is not str or len(name) > MAX_DESCRIBED_NAME:
                raise RemoteProtocolError(f"malformed type descriptor {_shown(info)}")


def _shown(info: object) -> str:
    """A peer's descriptor in an error message: its repr when it holds plain values only; a
    reference in it would be a proxy, whose repr is a remote call (made while decoding,
    under the connection's lock: it would never return)."""
    if _plain(info, 0):
        try:
            return _SHORT.repr(info)
        except ValueError:  # (an int too long for str())
            pass
    return f"(a {type(info).__name__}, not shown: it holds references, nests deeply or is too long)"


_SHORT: Final = reprlib.Repr()  # (no repr of a 60 MB name built, then cut)
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlong = 40


def _plain(value: object, depth: int) -> bool:
    kind = type(value)
    if kind is tuple and depth < 3:
        return all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]  # a tuple
    return kind in (str, int, float, bool, bytes, type(None))


def _valid_names(info: tuple[Any, ...]) -> bool:
    """Whether a descriptor of the right shape (short strings) names only methods and specials a proxy may have."""
    return all(name.isidentifier() and not name.startswith(("_rpc_", "__")) for name in info[2]) and all(
        name in OPTIONAL_SPECIALS for name in info[3]
    )


def _forwarded(proxy: Proxy) -> frozenset[str]:
    """The dunder names this proxy's connection asks the peer for (config ``forward_dunders``)."""
    try:
        names: frozenset[str] = proxy._rpc_conn.config.forward_dunders
    except AttributeError:  # not fully built yet
        return frozenset()
    return names


def _get_doc(self: Proxy) -> Any:
    """The remote object's ``__doc__`` when the connection forwards it, else None."""
    return self._rpc_conn._request(Op.GETATTR, self._rpc_ref, ("__doc__",)) if "__doc__" in _forwarded(self) else None


_DOC: Final = property(_get_doc)


def descriptor_members(info: object) -> int:
    """How many members (methods and special methods) a valid descriptor gives its proxy class."""
    assert type(info) is tuple
    return len(info[2]) + len(info[3])


_KNOWN_KEPT: Final = 64  # descriptor objects _ProxyClasses knows by identity


class _ProxyClasses:
    """The proxy classes in use, shared by equal descriptors across connections.

    Proxy classes hold no connection state (a proxy finds its connection through itself),
    so equal descriptors share one class. The cache holds them *weakly*: a class lives as
    long as a connection that was described it, or one of its proxies, does, so what
    the cache costs is proportional to live use, never to what past peers described.
    """

    def __init__(self, build: Callable[[tuple[str, str, tuple[str, ...], tuple[str, ...], str]], type[Proxy]]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._classes: weakref.WeakValueDictionary[tuple[Any, ...], type[Proxy]] = weakref.WeakValueDictionary()
        # id(descriptor) -> (the descriptor, its class) for the descriptors last made a class
        # of, while the class lives: the same object again (a Hello every connection decodes
        # alike is one object: rpc_protocol.SharedCache) needs no check and no hashing
        self._known: dict[int, tuple[object, weakref.ref[type[Proxy]]]] = {}

    def make(self, info: object) -> type[Proxy]:
        """The proxy class for one remote type, from its descriptor (checked and bounded).

        Its shape is checked first (strings only: hashing it for the cache lookup runs no
        code of the peer's), its names only when the cache has no equal descriptor, which
        passed that check when it was put there (every connection describes its root)."""
        known = self._known.get(id(info))
        if known is not None and known[0] is info:
            cls = known[1]()
            if cls is not None:
                return cls
        _check_shape(info)
        assert type(info) is tuple
        try:
            with self._lock:
                cls = self._classes.get(info)
                if cls is None:
                    if not _valid_names(info):
                        raise ValueError
                    cls = self._classes[info] = self._build(info)
                self._know(info, cls)
                return cls
        except (TypeError, ValueError):  # unhashable, or a name type() refuses (a NUL in it): a peer's doing
            raise RemoteProtocolError(f"malformed type descriptor {_shown(info)}") from None

    def _know(self, info: object, cls: type[Proxy]) -> None:
        """Know ``info`` by identity while its class lives (under ``_lock``)."""
        known = self._known
        if len(known) >= _KNOWN_KEPT:
            known.clear()
        key = id(info)

        def forget(ref: weakref.ref[type[Proxy]]) -> None:
            entry = known.get(key)
            if entry is not None and entry[1] is ref:
                known.pop(key, None)  # (the class is gone: so goes the descriptor it held)

        known[key] = (info, weakref.ref(cls, forget))

    def __len__(self) -> int:
        return len(self._classes)



def _proxy_class(descriptor: tuple[str, str, tuple[str, ...], tuple[str, ...], str]) -> type[Proxy]:
    module, qualname, methods, specials, builtin_name = descriptor
    namespace: dict[str, Any] = {"__slots__": (), "_rpc_type": (module, qualname), "__doc__": _DOC}
    if builtin_name in _BUILTIN_CLASSES:
        namespace["_rpc_builtin"] = getattr(builtins, builtin_name)
    for name in methods:
        namespace[name] = _method(name)
    for name in specials:
        namespace[name] = _call if name == "__call__" else _iter if name == "__iter__" else _special(name)
    # Named as the remote class (as RPyC's netref classes are), so proxy.__class__.__name__,
    # __qualname__ and __module__ read as the remote type's; it is still a local Proxy
    # subclass, so isinstance() against a local class of the same name stays False.
    namespace["__module__"] = module
    namespace["__qualname__"] = qualname or "Proxy"
    return type(qualname.rpartition(".")[2] or "Proxy", (Proxy,), namespace)


_CLASSES: Final = _ProxyClasses(_proxy_class)
make_proxy_class: Final = _CLASSES.make  # the proxy class for a remote type's descriptor
