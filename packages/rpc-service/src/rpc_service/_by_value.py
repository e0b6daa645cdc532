"""Results by value: plain data copied across instead of lent as proxies, without pickle.

Owns the :func:`by_value` mark (on a method: its results are copied; on a class: its
instances are copied wherever they are a result), the conversion of a marked result to
plain data (builtin containers and scalars, under the depth and size limits of the
connection), and :func:`obtain`, the caller's way to copy a proxy of plain data. Only the
exact builtin containers cross by value (the wire's LIST/DICT/SET/TUPLE/FROZENSET); any
other object inside a copied result still travels as a reference. It never pickles.
"""

from __future__ import annotations

import dataclasses
import types
from typing import TYPE_CHECKING, Any, Final, TypeVar

from rpc_protocol import Op

from ._proxy import is_proxy

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["ByValue", "BY_VALUE_MARK", "Marks", "by_value", "marked_result", "obtain"]

BY_VALUE_MARK: Final = "__rpc_by_value__"
_T = TypeVar("_T")
_SCALARS: Final = frozenset({type(None), bool, int, float, complex, str, bytes, type(...), type(NotImplemented), slice})
_CONTAINERS: Final = (dict, list, tuple, set, frozenset)  # a marked subclass arrives as the first base it has
_UNMARKABLE: Final = _SCALARS | frozenset(_CONTAINERS)  # builtin types take no mark: skipped at once


class ByValue:
    """A result the connection sends with its plain containers copied (dispatch -> connection)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value


class Marks:
    """Whether :func:`by_value` has marked anything in this process: until it has, no result
    needs :func:`marked_result` (the dispatchers skip it: a call fewer per request)."""

    made = False


def by_value(obj: _T) -> _T:
    """Mark a method's results, or a class's instances, as copied to the peer by value.

    On a function or method (also under ``staticmethod``/``classmethod``; combine freely
    with ``@exposed``): each result is copied, nested lists, dicts and sets included. On a
    class that is a dataclass or a subclass of ``dict``/``list``/``tuple``/``set``/
    ``frozenset`` (apply it outermost, after ``@dataclass``): an instance that is a result
    of a call or attribute read arrives as a plain ``dict`` (a dataclass: its fields) or as
    its builtin base. As with ``@exposed``, a subclass is not marked unless marked itself.
    Copies are bounded by the connection's ``max_depth`` and frame size; what is not plain
    data inside stays a reference.
    """
    Marks.made = True  # (before the mark: a request served meanwhile looks)
    if isinstance(obj, type):
        if not (dataclasses.is_dataclass(obj) or issubclass(obj, _CONTAINERS)):
            raise TypeError(f"by_value marks dataclasses and builtin container subclasses, not {obj.__qualname__}")
        setattr(obj, BY_VALUE_MARK, True)
        return obj
    target = getattr(obj, "__func__", obj)
    try:
        setattr(target, BY_VALUE_MARK, True)
    except (AttributeError, TypeError):
        raise TypeError(f"cannot mark {obj!r} as by_value") from None
    return obj


def _marked_type(cls: type) -> bool:
    """Whether ``cls`` itself is marked (as with ``@exposed``, a subclass is marked on its own)."""
    try:
        if cls in _UNMARKABLE:
            return False
    except TypeError:  # an unhashable class (its metaclass defines __eq__ alone): not a builtin
        pass
    return cls.__dict__.get(BY_VALUE_MARK) is True


def marked_result(function: object, value: object, config: Config) -> object:
    """``value``, or a :class:`ByValue` of its plain copy when ``function`` or its type is marked.

    On the path of every call: no attribute lookup that can miss (a miss raises inside).
    """
    func = function.__func__ if type(function) is types.MethodType else function
    if (type(func) is types.FunctionType and func.__dict__.get(BY_VALUE_MARK) is True) or _marked_type(type(value)):
        return ByValue(_Copier(config).plain(value, 0))
    return value


class _Copier:
    """One plain copy of a result, under a depth limit and an item budget."""

    __slots__ = ("_max_depth", "_budget")

    def __init__(self, config: Config) -> None:
        self._max_depth = config.max_depth
        self._budget = config.max_frame_size  # every item costs at least a byte on the wire

    def plain(self, value: Any, depth: int) -> Any:
        kind = type(value)
        try:
            if kind in _SCALARS:
                return value
        except TypeError:  # (an unhashable class, its metaclass defining __eq__ alone: no scalar)
            pass
        if depth >= self._max_depth:
            raise ValueError(f"a by-value result nests deeper than max_depth ({self._max_depth})")
        if _marked_type(kind):
            value = _unmarked(value)
            kind = type(value)
        if kind not in _CONTAINERS:
            return value  # not plain data: it stays a reference
        self._budget -= len(value)
        if self._budget < 0:
            raise ValueError("a by-value result is larger than this side's max_frame_size allows")
        deeper = depth + 1
        if kind is dict:
            return {self.plain(key, deeper): self.plain(item, deeper) for key, item in value.items()}
        return kind(self.plain(item, deeper) for item in value)


def _unmarked(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, dict):
        return dict(value.items())
    for base in _CONTAINERS[1:]:
        if isinstance(value, base):
            return base(value)
    return value


# -- the caller's side ------------------------------------------------------------------

# The remote builtin containers obtain() copies, each asked for with a safe special method
# every peer answers: list[:] and set | frozenset() are copies; a dict is read key by key.
_OBTAINABLE: Final = frozenset({"list", "tuple", "dict", "set", "frozenset"})
_WINDOW: Final = 128  # requests in flight while copying a dict's values (well under max_pending_requests)


def obtain(value: Any) -> Any:
    """A local copy of plain data: ``value`` itself when it is local, a copy of a proxy of a
    remote ``list``/``tuple``/``dict``/``set``/``frozenset`` (nested ones too), no pickle.

    A proxy of anything else raises TypeError (``rpc_classic.obtain`` copies other objects
    by pickle where both sides allow it). A remote subclass of a builtin container arrives
    as its builtin base. Bounded by the connection's ``max_depth``.
    """
    return _obtain(value, 0, 64)


def _obtain(value: Any, depth: int, max_depth: int) -> Any:
    kind = type(value)
    try:
        if kind in _SCALARS:
            return value
    except TypeError:  # (an unhashable class: no scalar)
        pass
    if depth >= max_depth:
        raise ValueError(f"obtain(): the value nests deeper than max_depth ({max_depth})")
    if is_proxy(value):
        conn = value._rpc_conn
        max_depth = conn.config.max_depth
        value = _fetch(conn, value)
        kind = type(value)
        if is_proxy(value):
            raise TypeError("obtain() copies plain data only; the peer lent this container by reference")
    if kind is dict:
        return {_obtain(key, depth + 1, max_depth): _obtain(item, depth + 1, max_depth) for key, item in value.items()}
    if kind in (list, tuple, set, frozenset):
        return kind(_obtain(item, depth + 1, max_depth) for item in value)
    return value


def _fetch(conn: Any, proxy: Any) -> Any:
    module, qualname = getattr(type(proxy), "_rpc_type", ("?", "?"))
    builtin = getattr(type(proxy), "_rpc_builtin", None)
    name = qualname if module == "builtins" else builtin.__name__ if isinstance(builtin, type) else ""
    if name not in _OBTAINABLE:
        raise TypeError(f"obtain() copies plain data only, not {module}.{qualname} (rpc_classic.obtain pickles)")
    if name in ("list", "tuple"):
        return _ask(conn, Op.CALLATTR, proxy, "__getitem__", slice(None))
    if name in ("set", "frozenset"):
        return _ask(conn, Op.CALLATTR, proxy, "__or__", frozenset())
    # a dict: its keys in batches, then its values, a window of requests in flight at a time
    iterator = conn._request(Op.CALLATTR, proxy, ("__iter__",))
    keys: list[Any] = []
    exhausted = False
    while not exhausted:
        items, exhausted = _ask(conn, Op.ITER_NEXT, iterator, conn.config.iter_batch)
        keys += items
    copy: dict[Any, Any] = {}
    for start in range(0, len(keys), _WINDOW):
        window = keys[start : start + _WINDOW]
        pending = [conn._async_request(Op.CALLATTR, proxy, ("__getitem__", key), {}, True) for key in window]
        for key, result in zip(window, pending):
            copy[key] = _value(conn, result)
    return copy


def _ask(conn: Any, op: Op, target: Any, *args: Any) -> Any:
    """One request whose reply carries plain containers by value (the BY_VALUE flag)."""
    return _value(conn, conn._async_request(op, target, args, {}, True))


def _value(conn: Any, result: Any) -> Any:
    timeout = conn.config.sync_request_timeout
    if timeout is not None:
        result.set_expiry(timeout)
    return result.value
