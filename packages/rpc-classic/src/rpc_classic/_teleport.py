"""Teleport: moving a plain Python function to the peer so that it runs there.

Owns :func:`teleport_function` (this side: marshal the function's code object, pack its
defaults as plain data, refuse closures and mismatched interpreters) and
:func:`build_function` (the peer side, called by ``SlaveService``: check the versions again,
unmarshal and bind the code to the peer's namespace). ``marshal`` data is only ever loaded
inside a Slave, which already executes whatever its peer sends; this module must not be
reachable from any other service.
"""

from __future__ import annotations

import marshal
import sys
import types
from typing import Any, Callable

from rpc_service import RemoteError

from ._errors import NotPlainDataError, VersionMismatchError, translate_remote
from ._mock import MockClassicConnection
from ._plain import pack, unpack

__all__ = ["teleport_function", "build_function", "python_info"]

Info = tuple[str, tuple[int, int, int]]


def python_info() -> Info:
    """This interpreter: implementation name and ``(major, minor, micro)``."""
    major, minor, micro = sys.version_info[:3]
    return sys.implementation.name, (major, minor, micro)


def _valid_info(info: object) -> bool:
    return (
        type(info) is tuple
        and len(info) == 2
        and type(info[0]) is str
        and type(info[1]) is tuple
        and len(info[1]) == 3
        and all(type(part) is int for part in info[1])
    )


def _describe(info: Info) -> str:
    name, (major, minor, micro) = info
    return f"{name} {major}.{minor}.{micro}"


def _check_compatible(here: Info, there: object, what: str) -> None:
    if not _valid_info(there):
        raise VersionMismatchError(f"cannot {what}: the other interpreter's version is unknown ({there!r:.80})")
    assert isinstance(there, tuple)
    if here[0] != there[0] or here[1][:2] != there[1][:2]:
        raise VersionMismatchError(
            f"cannot {what}: this interpreter is {_describe(here)} and the other is {_describe(there)}; "
            "code objects only move between the same implementation and major.minor version"
        )


def teleport_function(conn: Any, func: Callable[..., Any], globals: Any = None, def_: bool = True) -> Any:
    """Copy ``func`` to the peer of ``conn`` and return the peer's function (a proxy).

    The function runs on the peer with the peer's ``namespace`` as its globals (or
    ``globals``, a dict *on the peer*, e.g. ``conn.namespace``); with ``def_`` it is also
    stored there under its name, so ``conn.eval`` can call it (a lambda is not: it has
    none). Defaults must be plain
    data (they are copied); closures are refused, and so is a peer whose Python
    implementation or ``major.minor`` version differs (:class:`VersionMismatchError`).
    """
    if not isinstance(func, types.FunctionType):
        raise TypeError(f"only plain Python functions can be teleported, not {type(func).__name__}")
    if func.__code__.co_freevars:
        names = ", ".join(func.__code__.co_freevars)
        raise TypeError(
            f"cannot teleport {func.__qualname__}: it closes over {names}; pass those as arguments or default values"
        )
    if isinstance(conn, MockClassicConnection):
        return conn.teleport(func, globals, def_)  # this interpreter: nothing to copy
    here = python_info()
    _check_compatible(here, conn.root.python_info(), f"teleport {func.__qualname__}")
    code = marshal.dumps(func.__code__)
    try:
        defaults, kwdefaults = pack(func.__defaults__), pack(func.__kwdefaults__)
    except NotPlainDataError as exc:
        raise NotPlainDataError(f"the default values of {func.__qualname__} must be plain data to be teleported: {exc}") from None
    try:
        return conn.root.teleport(code, func.__name__, defaults, kwdefaults, here, globals, def_)
    except RemoteError as exc:
        raise translate_remote(exc) from None


def build_function(
    code: object, name: object, defaults: object, kwdefaults: object, origin: object, namespace: Any, def_: bool
) -> types.FunctionType:
    """The peer side of :func:`teleport_function`: a new function in ``namespace``."""
    _check_compatible(python_info(), origin, "load the teleported function")
    if type(code) is not bytes or type(name) is not str:
        raise TypeError("a teleported function is marshalled code bytes and a name")
    if type(namespace) is not dict:
        raise TypeError("the globals of a teleported function must be a dict on the receiving side")
    loaded = marshal.loads(code)
    if not isinstance(loaded, types.CodeType) or loaded.co_freevars:
        raise TypeError("the teleported code is not the code of a function without closure")
    argdefs, kwargs = unpack(defaults), unpack(kwdefaults)
    if not (argdefs is None or type(argdefs) is tuple) or not (kwargs is None or type(kwargs) is dict):
        raise TypeError("teleported defaults must be a tuple and keyword defaults a dict")
    func = types.FunctionType(loaded, namespace, name, argdefs)
    func.__kwdefaults__ = kwargs
    if def_ and name.isidentifier():  # (a lambda's "<lambda>" is not a name to define)
        namespace[name] = func
    return func
