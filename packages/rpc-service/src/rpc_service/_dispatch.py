"""Dispatch: carrying out the peer's requests on local objects, and exceptions both ways.

Owns what each request operation does to its target (under the exposure rules), how a
local exception is described to the peer (type, args that can cross, traceback text as
the config allows) and how a remote exception description becomes a local exception
(also for a peer's with-block that raised, see :func:`local_exit_args`). Results that
the service marked by value leave here wrapped (``_by_value``). It never sends anything
itself; only reading a peer's exception text goes through that exception's proxy.
"""

from __future__ import annotations

import array
import builtins
import collections
import io
import pickle
import re
import sys
import threading
import traceback
from itertools import islice
from types import CoroutineType
from typing import Any, Callable, Final

from rpc_protocol import ErrorReply, Op, RemoteProtocolError

from .__about__ import __version__
from ._by_value import Marks, marked_result
from ._config import Config
from ._errors import RemoteError
from ._exposure import INTERNAL_TYPES, Exposure
from ._proxy import is_proxy

__all__ = [
    "AMPLIFIERS", "Dispatcher", "HANDLERS", "check_amplification", "method_of", "checked_batch", "describe_exception", "dumps_plain", "loads_plain", "must_propagate", "rebuild_exception", "unpickler",
]

_PLAIN: Final = (type(None), bool, int, float, complex, str, bytes)
# Items one ITER_NEXT request may take: the peer's count is capped (it may ask for 10**12 of
# an endless iterator); a short batch that is not exhausted just makes the peer ask again.
_MAX_ITER_ITEMS: Final = 1 << 16

# Empty batches in a row that a peer may answer ITER_NEXT with, unfinished, before it is a
# protocol error (ours never sends one: a short batch means exhausted). Without a bound, a
# peer answering every ITER_NEXT with ((), False) makes `for x in proxy` spin forever.
MAX_EMPTY_BATCHES: Final = 3


def checked_batch(reply: object, empties: int) -> tuple[tuple[Any, ...], bool, int]:
    """The items and exhausted flag of an ITER_NEXT reply, and the count of empty unfinished
    batches in a row so far (``empties`` before this one); RemoteProtocolError when the reply
    is malformed or the peer keeps answering with empty unfinished batches."""
    if type(reply) is not tuple or len(reply) != 2 or type(reply[0]) is not tuple or type(reply[1]) is not bool:
        raise RemoteProtocolError("the peer answered ITER_NEXT with something other than (items, exhausted)")
    items, exhausted = reply
    if items or exhausted:
        return items, exhausted, 0
    if empties + 1 > MAX_EMPTY_BATCHES:
        raise RemoteProtocolError(f"the peer answered ITER_NEXT with {empties + 1} empty unfinished batches in a row")
    return items, exhausted, empties + 1


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
        value = target(*args, **kwargs)
        return marked_result(target, value, self._config) if Marks.made else value

    def _callattr(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = self._exposure.resolve(target, args[0])
        if name in AMPLIFIERS:
            check_amplification(target, name, args, self._config.max_frame_size)
        if name == "__exit__" and len(args) == 4 and is_proxy(args[2]):
            return getattr(target, name)(*local_exit_args(args[2]))
        method = method_of(target, name) if name in _TYPE_LEVEL else getattr(target, name)
        value = method(*args[1:], **kwargs)
        return marked_result(method, value, self._config) if Marks.made else value

    def is_async_handler(self, op: Op, target: Any, args: tuple[Any, ...], coroutine: CoroutineType[Any, Any, Any]) -> bool:
        """Whether ``coroutine`` (what a CALL or CALLATTR request returned) is the call of an
        ``async def`` handler itself, rather than a coroutine object a handler returned."""
        if op is Op.CALLATTR:
            try:
                target = getattr(target, self._exposure.resolve(target, args[0]))
            except Exception:
                return False
        elif op is not Op.CALL:
            return False
        return getattr(getattr(target, "__func__", target), "__code__", None) is coroutine.cr_code

    def _getattr(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            name = self._exposure.resolve(target, args[0])
        except AttributeError:
            if args[0] == "args" and isinstance(target, BaseException):
                # a lent exception's args as raising it would send them: plain values, others
                # as their repr, an OSError's file names added (a remote __exit__ rebuilds it)
                return _crossing_args(target)
            raise
        value = getattr(target, name)
        if isinstance(value, INTERNAL_TYPES) and not self._config.allow_all_attrs:
            # a frame, code object or traceback reached through any name: its attributes lead
            # to globals and builtins; only allow_all_attrs hands those out
            raise AttributeError(f"the attribute {args[0]!r} is a {type(value).__name__} object, which is not handed out")
        return marked_result(None, value, self._config)

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
        protocol = args[0] if args else pickle.DEFAULT_PROTOCOL
        if type(protocol) is not int:
            raise ValueError("PICKLE needs an integer protocol number")
        if self._config.allow_all_attrs:
            return pickle.dumps(target, protocol)  # everything is reachable anyway
        return dumps_plain(target, protocol)


# -- pickle, as far as the exposure rules reach ----------------------------------------------------
#
# Pickling an object hands out its whole state (private attributes included), and unpickling
# runs whatever callables the bytes name. Unless ``allow_all_attrs`` (everything reachable,
# classic mode), ``allow_pickle`` therefore covers plain data only, both ways: what the
# peer could read item by item through the safe special methods anyway.

_PLAIN_PICKLED: Final = frozenset(
    {type(None), bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset,
     range, slice, type(...), type(NotImplemented)}
)
# The globals plain data needs when unpickled (the rest have opcodes of their own).
_PLAIN_GLOBALS: Final = frozenset({"complex", "bytearray", "range", "slice", "set", "frozenset", "Ellipsis", "NotImplemented"})


class _PlainPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in _PLAIN_PICKLED or (type(obj) is type and obj in _PLAIN_PICKLED):
            return NotImplemented  # the usual way (complex, range... name their class as a global)
        raise pickle.PicklingError(
            f"cannot pickle a {type(obj).__qualname__!r} object for the peer: allow_pickle covers plain data "
            "(None, bool, numbers, str, bytes, bytearray, tuple, list, dict, set, frozenset, range, slice) "
            "unless allow_all_attrs is also set"
        )


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in _PLAIN_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name} from the peer: allow_pickle accepts plain data "
            "unless allow_all_attrs is also set"
        )


def dumps_plain(obj: object, protocol: int) -> bytes:
    """``pickle.dumps`` of plain data only (PicklingError for anything else inside)."""
    buffer = io.BytesIO()
    _PlainPickler(buffer, protocol).dump(obj)
    return buffer.getvalue()


def loads_plain(data: bytes) -> Any:
    """``pickle.loads`` that names no global beyond the builtins plain data needs."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def unpickler(config: Config) -> Callable[[bytes], Any]:
    """How this side unpickles a proxy's bytes: fully only under ``allow_all_attrs``."""
    return pickle.loads if config.allow_all_attrs else loads_plain


# Special methods Python's operators look up on an object's type, never on the object: for a
# class as target (a proxy of a remote class compared, formatted, tested for `in`, ...) they
# are its metaclass's, bound to the class, as `cls == other` runs locally.
_TYPE_LEVEL: Final = frozenset({
    "__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__format__", "__len__", "__iter__",
    "__reversed__", "__contains__", "__getitem__", "__bool__", "__or__", "__ror__", "__and__", "__rand__",
    "__instancecheck__", "__subclasscheck__", "__dir__", "__sizeof__",
})


_MISSING: Final = object()


def method_of(target: Any, name: str) -> Any:
    """``getattr(target, name)``, except that when ``target`` is a class, a special method
    Python's operators look up on the type (``_TYPE_LEVEL``) is its metaclass's, bound to it
    (``remote_cls == other``, ``format(remote_cls)``); ``cls[item]`` is ``__class_getitem__``
    where the metaclass has no ``__getitem__``."""
    if name in _TYPE_LEVEL and isinstance(target, type):
        meta: type = type(target)
        for klass in type.__getattribute__(meta, "__mro__"):  # (the descriptor itself, bound as Python binds it: a
            found = klass.__dict__.get(name, _MISSING)  # staticmethod or classmethod too)
            if found is not _MISSING:
                get = getattr(type(found), "__get__", None)
                return found if get is None else get(found, target, meta)
        if name == "__getitem__":
            return getattr(target, "__class_getitem__")
    return getattr(target, name)


# Safe special methods whose result a tiny request can make huge (a lent list times 10**9,
# format(obj, "999999999"), a lent int subclass ** 10**9, a lent list added to itself over and
# over): refused past max_frame_size bytes, characters or bits, the most a peer could have sent
# itself (a list's or tuple's items counted as the 8-byte pointers they are). Checked by name,
# before the call.
AMPLIFIERS: Final = frozenset({
    "__mul__", "__rmul__", "__imul__", "__add__", "__radd__", "__iadd__", "__lshift__", "__ilshift__",
    "__pow__", "__ipow__", "__rpow__", "__format__",
})
_FORMAT_NUMBER: Final = re.compile(r"\d+")
# the builtin sequences that repeat (`*`) and concatenate (`+`), and their item sizes in bytes
_SEQUENCES: Final = (str, bytes, bytearray, list, tuple, collections.deque, array.array)
_POINTERS: Final = (list, tuple, collections.deque)


def _item_bytes(target: object) -> int:
    if isinstance(target, _POINTERS):
        return 8
    return target.itemsize if isinstance(target, array.array) else 1


def _bits(number: object) -> int:
    return number.bit_length() if isinstance(number, int) else 0


def _over(digits: str, budget: int) -> bool:
    digits = digits.lstrip("0")
    return len(digits) > 18 or (bool(digits) and int(digits) > budget)


def check_amplification(target: Any, name: str, args: tuple[Any, ...], budget: int) -> None:
    if len(args) != 2:
        return
    operand = args[1]
    if name == "__format__":
        if type(operand) is str and any(_over(number, budget) for number in _FORMAT_NUMBER.findall(operand)):
            raise ValueError(f"a format width or precision over {budget} (max_frame_size) is refused")
        return
    if name.endswith("pow__"):  # (an int or a Fraction raised to a whole power: its digits times the power)
        base, power = (operand, target) if name == "__rpow__" else (target, operand)
        if isinstance(power, int) and power > 1:
            bits = max(_bits(getattr(base, "numerator", None)), _bits(getattr(base, "denominator", None)))
            if bits > 1 and bits * power > budget * 8:
                raise ValueError(f"raising a {bits}-bit number to the power {power} is refused: over max_frame_size ({budget} bytes)")
        return
    if name.endswith("add__"):  # (concatenation: a local operand, as a proxy's items must cross)
        if isinstance(target, _SEQUENCES) and isinstance(operand, _SEQUENCES):
            size = len(target) + len(operand)
            if size * _item_bytes(target) > budget:
                raise ValueError(f"joining {len(target)} and {len(operand)} items is refused: over max_frame_size ({budget} bytes)")
        return
    if not isinstance(operand, int):
        if isinstance(target, _SEQUENCES) and name.endswith("mul__"):
            # (a proxy's __index__ would be asked by the repetition itself, and could answer anything)
            raise TypeError(f"a {type(target).__name__} is repeated by an int only, not by {type(operand).__name__}")
        return
    if operand <= 1:
        return
    if name.endswith("shift__"):
        if operand > budget * 8:
            raise ValueError(f"shifting by {operand} bits is refused: over max_frame_size ({budget} bytes)")
        return
    size = len(target) if hasattr(target, "__len__") else 0
    if size and size * operand * _item_bytes(target) > budget:
        raise ValueError(f"repeating {size} items {operand} times is refused: over max_frame_size ({budget} bytes)")


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


def must_propagate(exc: BaseException) -> bool:
    """Whether an exception raised while serving a request must stop the serving thread
    instead of being answered to the peer: only a real Ctrl-C, which arrives on the main
    thread. Anything else (a handler's own ``BaseException`` subclass, ``SystemExit``...) is
    the request's outcome, so no worker dies from a request."""
    return isinstance(exc, KeyboardInterrupt) and threading.current_thread() is threading.main_thread()


def local_exit_args(exc: Any) -> tuple[type[BaseException], BaseException, None]:
    """``__exit__`` arguments for a with-block of the peer's that raised ``exc`` (a proxy).

    A remote ``__exit__`` (a ``@contextlib.contextmanager`` generator above all) needs a real
    exception to throw in, not a proxy: the exception is rebuilt here as the peer would see
    one of ours (a builtin type as itself, others as RemoteError), with the peer's args (an
    OSError's file names too), or its message from a peer that does not let them be read.
    The traceback stays with the peer; the caller re-raises its original exception.
    """
    module, qualname = getattr(type(exc), "_rpc_type", ("", ""))
    args: tuple[Any, ...]
    try:
        args = exc.args  # (one request: the peer answers with _crossing_args, see _getattr)
        if type(args) is not tuple:
            raise TypeError("args is not a tuple")
    except Exception:
        try:
            message = str(exc)  # (STR is always answered)
        except Exception:
            message = ""
        args = (message,) if message else ()
    local = rebuild_exception(ErrorReply(0, module, qualname, args, ""))
    return type(local), local, None


def describe_exception(seq: int, exc: BaseException, config: Config) -> ErrorReply:
    """The error reply telling the peer that request ``seq`` raised ``exc``."""
    module, name, args = _described(exc)
    text = ""
    if config.include_local_traceback:
        try:
            text = "".join(traceback.format_exception(exc))
        except Exception as failure:  # (a class without __module__ say: the traceback module gives up)
            text = f"(no traceback: {type(failure).__name__} formatting it)\n{name}: {args!r:.500}\n"
        nested = getattr(exc, "remote_traceback", None)
        if nested and not hasattr(exc, "add_note"):  # 3.10 has no notes to carry an earlier hop's traceback
            text += "\n========= remote traceback =========\n" + nested.rstrip() + "\n"
        if config.include_local_version:
            text = f"(peer: Python {sys.version.split()[0]}, rpc-service {__version__})\n{text}"
    return ErrorReply(seq, module, name, args, text)


def _described(exc: BaseException, depth: int = 0) -> tuple[str, str, tuple[Any, ...]]:
    """``exc`` as it crosses: its type's module and name, and its arguments. A RemoteError
    from an earlier hop is described as the type it stands for (one of a builtin type that
    did not arrive as itself, KeyboardInterrupt say, goes on as the RemoteError it is here)."""
    if type(exc) is RemoteError and "." in exc.remote_type and not exc.remote_type.startswith("builtins."):
        module, _, name = exc.remote_type.rpartition(".")
        return module, name, _plain_args(exc.remote_args)
    cls = type(exc)
    of: object = getattr(cls, "__module__", None)  # (a class made by type() where no __name__ is set has none)
    return of if type(of) is str else "?", cls.__qualname__, _crossing_args(exc, depth)


def _crossing_args(exc: BaseException, depth: int = 0) -> tuple[Any, ...]:
    """The arguments ``exc`` is described by (values that cannot cross as their repr), such
    that its builtin type rebuilds it whole: an OSError's ``filename``/``filename2`` (not in
    its ``args``) are passed as its constructor takes them, and an ExceptionGroup's
    exceptions as ``(module, type, args)`` triples (builtin ones rebuilt as themselves)."""
    raw: tuple[Any, ...] = exc.args
    if isinstance(exc, OSError) and len(raw) == 2 and (exc.filename is not None or exc.filename2 is not None):
        raw = (*raw, exc.filename, None, exc.filename2)  # OSError(errno, strerror, filename, winerror, filename2)
    elif _GROUP is not None and type(exc) is _GROUP and depth < _MAX_GROUP_DEPTH:
        group: Any = exc
        raw = (group.message, tuple(_described(e, depth + 1) for e in group.exceptions))
        return raw if _crossable(raw) else (group.message, repr(group.exceptions))
    return _plain_args(raw)


def _plain_args(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    """``raw`` with each value that cannot cross given as its repr."""
    return tuple(arg if _crossable(arg) else _repr(arg) for arg in raw)


def _repr(value: object) -> str:
    try:
        return repr(value)
    except Exception as exc:  # (the error reply must go out whatever the argument does)
        return f"<{type(value).__qualname__} object: repr raised {type(exc).__name__}>"


_GROUP: Final[Any] = getattr(builtins, "ExceptionGroup", None)  # (3.11+)
_MAX_GROUP_DEPTH: Final = 2  # nested groups deeper than this cross as their repr (RemoteError)


def _rebuilt_group(args: tuple[Any, ...]) -> Exception | None:
    """``ExceptionGroup(message, exceptions)`` from what :func:`_crossing_args` sent, or None."""
    if _GROUP is None or len(args) != 2 or type(args[0]) is not str or type(args[1]) is not tuple or not args[1]:
        return None
    members: list[BaseException] = []
    for member in args[1]:
        if not (type(member) is tuple and len(member) == 3 and type(member[0]) is str and type(member[1]) is str and type(member[2]) is tuple):
            return None
        members.append(rebuild_exception(ErrorReply(0, member[0], member[1], member[2], "")))
    if not all(isinstance(member, Exception) for member in members):
        return None
    group: Exception = _GROUP(args[0], members)
    return group


def rebuild_exception(error: ErrorReply) -> BaseException:
    """The local exception for a remote one: the builtin type itself, else RemoteError.

    Only builtin subclasses of :class:`Exception` are rebuilt as themselves. ``BaseException``
    and everything else outside ``Exception`` (``KeyboardInterrupt``, ``SystemExit``,
    ``GeneratorExit``, ``BaseExceptionGroup``) arrive as :class:`RemoteError`: raised here they
    would stop a thread or the process on the peer's say-so, past every ``except Exception``.
    """
    if error.exc_module == "builtins":
        cls = getattr(builtins, error.exc_type, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = _rebuilt_group(error.args) if cls is _GROUP else cls(*error.args)
            except Exception:
                exc = None  # a constructor that wants other arguments: fall back to RemoteError
            if exc is not None:
                exc.remote_traceback = error.traceback  # type: ignore[attr-defined]  # documented extra attribute
                if error.traceback and hasattr(exc, "add_note"):  # Python 3.11+
                    exc.add_note("\n========= remote traceback =========\n" + error.traceback.rstrip())
                return exc
    return RemoteError(f"{error.exc_module}.{error.exc_type}", error.args, error.traceback)
