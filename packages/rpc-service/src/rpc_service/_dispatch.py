"""Dispatch: carrying out the peer's requests on local objects, and exceptions both ways.

Owns what each request operation does to its target (under the exposure rules), how a
local exception is described to the peer (type, args that can cross, traceback text as
the config allows) and how a remote exception description becomes a local exception.
It never sends anything itself.
"""

from __future__ import annotations

import builtins
import pickle
import sys
import traceback
from itertools import islice
from typing import Any, Callable, Final

from rpc_protocol import ErrorReply, Op

from .__about__ import __version__
from ._config import Config
from ._errors import RemoteError
from ._exposure import Exposure

__all__ = ["Dispatcher", "HANDLERS", "describe_exception", "rebuild_exception"]

_PLAIN: Final = (type(None), bool, int, float, complex, str, bytes)
# Remote exceptions of these builtin types arrive as RemoteError, never as themselves:
# re-raising them here would stop or exit this process on the peer's say-so.
_NOT_REBUILT: Final = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit"})
# Items one ITER_NEXT request may take: the peer's count is capped (it may ask for 10**12 of
# an endless iterator); a short batch that is not exhausted just makes the peer ask again.
_MAX_ITER_ITEMS: Final = 1 << 16

class Dispatcher:
    """Carries out request operations on local objects for one connection (see HANDLERS)."""

    def __init__(self, config: Config, exposure: Exposure) -> None:
        self._config = config
        self._exposure = exposure

    def _dir(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        return self._exposure.visible_names(target)

    def _inspect(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._exposure.describe(type(target))

    def _call(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return target(*args, **kwargs)

    def _callattr(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = self._exposure.resolve(target, args[0])
        return getattr(target, name)(*args[1:], **kwargs)

    def _getattr(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(target, self._exposure.resolve(target, args[0]))

    def _setattr(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        name, value = args
        setattr(target, self._exposure.resolve_for(target, name, self._config.allow_setattr, "setting"), value)

    def _delattr(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        delattr(target, self._exposure.resolve_for(target, args[0], self._config.allow_delattr, "deleting"))

    def _iter_next(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], bool]:
        """Up to ``args[0]`` items from the iterator ``target``, and whether it is exhausted."""
        count = args[0]
        if type(count) is not int or count < 1:
            raise ValueError("ITER_NEXT needs a positive item count")
        count = min(count, _MAX_ITER_ITEMS)
        items = tuple(islice(target, count))
        return items, len(items) < count  # a full batch: whether more follow is learnt next time

    def _pickle(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        if not self._config.allow_pickle:
            raise ValueError("pickling is not allowed by the peer's config (allow_pickle)")
        return pickle.dumps(target, args[0] if args else pickle.DEFAULT_PROTOCOL)


# What each operation does (docs/protocol.md §5): HANDLERS[op](dispatcher, target, args, kwargs)
# is the reply. Functions, not bound methods: the table is built once, not per connection.
HANDLERS: Final[dict[Op, Callable[..., Any]]] = {
    Op.CALL: Dispatcher._call,
    Op.CALLATTR: Dispatcher._callattr,
    Op.GETATTR: Dispatcher._getattr,
    Op.SETATTR: Dispatcher._setattr,
    Op.DELATTR: Dispatcher._delattr,
    Op.DIR: Dispatcher._dir,
    Op.HASH: lambda self, target, args, kwargs: hash(target),
    Op.REPR: lambda self, target, args, kwargs: repr(target),
    Op.STR: lambda self, target, args, kwargs: str(target),
    Op.INSTANCECHECK: lambda self, target, args, kwargs: isinstance(args[0], target),
    Op.ITER_NEXT: Dispatcher._iter_next,
    Op.INSPECT: Dispatcher._inspect,
    Op.PICKLE: Dispatcher._pickle,
}


def _crossable(value: object, depth: int = 0) -> bool:
    if type(value) in _PLAIN:
        return True
    if type(value) in (tuple, frozenset) and depth < 8:
        return all(_crossable(item, depth + 1) for item in value)  # type: ignore[attr-defined]  # tuple/frozenset
    return False


def describe_exception(seq: int, exc: BaseException, config: Config) -> ErrorReply:
    """The error reply telling the peer that request ``seq`` raised ``exc``."""
    cls = type(exc)
    args = tuple(arg if _crossable(arg) else repr(arg) for arg in exc.args)
    text = ""
    if config.include_local_traceback:
        text = "".join(traceback.format_exception(exc))
        nested = getattr(exc, "remote_traceback", None)
        if nested and not hasattr(exc, "add_note"):  # 3.10 has no notes to carry an earlier hop's traceback
            text += "\n========= remote traceback =========\n" + nested.rstrip() + "\n"
        if config.include_local_version:
            text = f"(peer: Python {sys.version.split()[0]}, rpc-service {__version__})\n{text}"
    return ErrorReply(seq, cls.__module__, cls.__qualname__, args, text)


def rebuild_exception(error: ErrorReply) -> BaseException:
    """The local exception for a remote one: the builtin type itself, else RemoteError."""
    if error.exc_module == "builtins" and error.exc_type not in _NOT_REBUILT:
        cls = getattr(builtins, error.exc_type, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            try:
                exc = cls(*error.args)
            except Exception:
                pass  # a constructor that wants other arguments: fall back to RemoteError
            else:
                exc.remote_traceback = error.traceback  # type: ignore[attr-defined]  # documented extra attribute
                if error.traceback and hasattr(exc, "add_note"):  # Python 3.11+
                    exc.add_note("\n========= remote traceback =========\n" + error.traceback.rstrip())
                return exc
    return RemoteError(f"{error.exc_module}.{error.exc_type}", error.args, error.traceback)
