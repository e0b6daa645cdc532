"""The exceptions of classic mode, under the stack's root ``RPCError``.

Owns the errors that only classic mode raises; everything a connection can raise (closed
connections, timeouts, remote exceptions) comes from ``rpc_service`` unchanged::

    RPCError (rpc_protocol)
    └── ClassicError                 something classic mode refused to do
        ├── NotPlainDataError        a value cannot be copied by value (also a TypeError)
        ├── UnsafePathError          a transfer refused a name or path (also a ValueError)
        └── VersionMismatchError     the two interpreters cannot share code objects (also a ValueError)

A classic peer that raises one of these is re-raised locally as the same class (the peer
reports it as a ``rpc_classic._errors`` exception, which :func:`translate_remote` maps back).
"""

from __future__ import annotations

from types import MappingProxyType

from rpc_protocol import RPCError
from rpc_service import RemoteError

__all__ = ["ClassicError", "NotPlainDataError", "UnsafePathError", "VersionMismatchError", "translate_remote"]


class ClassicError(RPCError):
    """Classic mode refused an operation (the reason is in the message)."""


class NotPlainDataError(ClassicError, TypeError):
    """A value holds something other than plain data, so it cannot be copied by value.

    Plain data is ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``,
    ``bytearray``, ``slice``, ``...`` and ``NotImplemented``, and ``tuple``, ``list``,
    ``dict``, ``set`` and ``frozenset`` of plain data (exact types, not subclasses).
    Anything else needs pickle, enabled on both sides (``allow_pickle``).
    """


class UnsafePathError(ClassicError, ValueError):
    """A file transfer refused an entry: a name with a path separator, ``..``, an absolute
    or drive-qualified path, or a directory that resolves (through a symbolic link) outside
    the target tree. Nothing was written outside the tree."""


class VersionMismatchError(ClassicError, ValueError):
    """The two interpreters differ in implementation or ``major.minor`` version, so code
    objects (``marshal`` data) made by one cannot be loaded by the other."""


_BY_REMOTE_NAME: MappingProxyType[str, type[ClassicError]] = MappingProxyType(
    {f"{__name__}.{cls.__qualname__}": cls for cls in (ClassicError, NotPlainDataError, UnsafePathError, VersionMismatchError)}
)


def translate_remote(exc: BaseException) -> BaseException:
    """The local classic error for a :class:`RemoteError` reporting one, else ``exc`` itself."""
    if isinstance(exc, RemoteError):
        cls = _BY_REMOTE_NAME.get(exc.remote_type)
        if cls is not None:
            message = str(exc.remote_args[0]) if exc.remote_args else exc.remote_type
            local = cls(message)
            local.remote_traceback = exc.remote_traceback  # type: ignore[attr-defined]  # same extra attribute rpc_service sets
            return local
    return exc
