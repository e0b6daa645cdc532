"""Plain data by value: packing a value graph into immutables that the codec copies, and back.

Owns the *packed form* that :func:`~rpc_classic.obtain` and :func:`~rpc_classic.deliver`
carry over the wire: a flat table of nodes made only of tuples and immutable scalars, so
the safe value codec copies it whole (no proxies, no pickle). Lists, dicts and sets, nested
to any depth, shared references and even cycles survive the round trip. Anything that is
not plain data raises :class:`NotPlainDataError`; malformed packed input raises
``ValueError``, and so does a set, frozenset or dict whose members flood one hash (the
decoder's guard, ``rpc_protocol.check_hash_collisions``, applied before each is built). It
performs no I/O and never imports ``pickle`` or ``marshal``.

Packed form: ``(FORMAT, root, nodes)``. A *slot* is either a scalar or ``(index,)``, a
reference to ``nodes[index]``; each node is ``(kind, payload)`` where ``payload`` is a
tuple of slots (``"t"`` tuple, ``"l"`` list, ``"s"`` set, ``"f"`` frozenset, ``"S"`` slice
of three slots), alternating key and value slots (``"d"`` dict) or ``bytes`` (``"b"``
bytearray).
"""

from __future__ import annotations

import types
from typing import Any, Final

from rpc_protocol import RPCError, check_hash_collisions

from ._errors import NotPlainDataError

__all__ = ["FORMAT", "pack", "unpack", "is_scalar"]

FORMAT: Final = "rpc-classic/plain/1"

_SCALARS: Final = frozenset(
    {type(None), bool, int, float, complex, str, bytes, types.EllipsisType, types.NotImplementedType}
)
_KINDS: Final = {tuple: "t", list: "l", dict: "d", set: "s", frozenset: "f", bytearray: "b", slice: "S"}
_IMMUTABLE_KINDS: Final = frozenset({"t", "f", "S"})
_SLOT_KINDS: Final = frozenset({"t", "l", "d", "s", "f", "S"})
_PLAIN_NAMES: Final = (
    "None, bool, int, float, complex, str, bytes, bytearray, slice, Ellipsis, NotImplemented, "
    "and tuple, list, dict, set and frozenset of those"
)


def is_scalar(value: object) -> bool:
    """Whether ``value`` is an immutable scalar that the codec copies as it is."""
    return type(value) in _SCALARS


def pack(value: object) -> object:
    """The packed form of ``value`` (a scalar packs to itself, inside the envelope)."""
    nodes: list[Any] = []
    index_of: dict[int, int] = {}  # id(container) -> node index
    todo: list[tuple[int, Any]] = []

    def slot(item: object) -> object:
        cls = type(item)
        if cls in _SCALARS:
            return item
        kind = _KINDS.get(cls)
        if kind is None:
            raise NotPlainDataError(
                f"cannot copy a {cls.__module__}.{cls.__qualname__} by value: plain data is {_PLAIN_NAMES} "
                "(exact types); enable allow_pickle on both sides to copy other objects"
            )
        index = index_of.get(id(item))
        if index is None:
            index = index_of[id(item)] = len(nodes)
            nodes.append(None)
            todo.append((index, item))
        return (index,)

    root = slot(value)
    while todo:
        index, item = todo.pop()
        kind = _KINDS[type(item)]
        payload: object
        if kind == "d":
            payload = tuple(s for key, val in item.items() for s in (slot(key), slot(val)))
        elif kind == "b":
            payload = bytes(item)
        elif kind == "S":
            payload = (slot(item.start), slot(item.stop), slot(item.step))
        else:
            payload = tuple(slot(member) for member in item)
        nodes[index] = (kind, payload)
    return (FORMAT, root, tuple(nodes))


def _malformed(why: str) -> ValueError:
    return ValueError(f"malformed packed value: {why}")


def _check(packed: object) -> tuple[object, tuple[tuple[str, Any], ...]]:
    if type(packed) is not tuple or len(packed) != 3 or packed[0] != FORMAT:
        raise _malformed(f"not a {FORMAT} envelope")
    root, nodes = packed[1], packed[2]
    if type(nodes) is not tuple:
        raise _malformed("the node table is not a tuple")
    count = len(nodes)
    for node in nodes:
        if type(node) is not tuple or len(node) != 2 or node[0] not in _KINDS.values():
            raise _malformed(f"bad node {node!r:.80}")
        kind, payload = node
        if kind == "b":
            if type(payload) is not bytes:
                raise _malformed("bytearray payload is not bytes")
            continue
        if type(payload) is not tuple or (kind == "d" and len(payload) % 2) or (kind == "S" and len(payload) != 3):
            raise _malformed(f"bad {kind!r} payload")
        for item in payload:
            _check_slot(item, count)
    _check_slot(root, count)
    return root, nodes


def _check_slot(item: object, count: int) -> None:
    if type(item) in _SCALARS:
        return
    if type(item) is tuple and len(item) == 1 and type(item[0]) is int and 0 <= item[0] < count:
        return
    raise _malformed(f"bad slot {item!r:.80}")


def unpack(packed: object) -> Any:
    """Rebuild the value :func:`pack` packed (new objects, same shape, sharing and cycles)."""
    root, nodes = _check(packed)
    objects: list[Any] = [None] * len(nodes)
    # 1. mutable containers exist (empty) before anything refers to them: cycles go through them
    for index, (kind, payload) in enumerate(nodes):
        if kind == "l":
            objects[index] = []
        elif kind == "d":
            objects[index] = {}
        elif kind == "s":
            objects[index] = set()
        elif kind == "b":
            objects[index] = bytearray(payload)

    def resolve(item: object) -> Any:
        return objects[item[0]] if isinstance(item, tuple) else item

    # 2. immutable containers, children first (iteratively: depth is not bounded by the stack)
    state = [0] * len(nodes)  # 0 new, 1 children pending, 2 built
    for start, (start_kind, _) in enumerate(nodes):
        if start_kind not in _IMMUTABLE_KINDS or state[start]:
            continue
        stack = [start]
        while stack:
            index = stack[-1]
            kind, payload = nodes[index]
            if state[index] == 2:
                stack.pop()
            elif state[index] == 0:
                state[index] = 1
                for item in payload:
                    if type(item) is tuple and nodes[item[0]][0] in _IMMUTABLE_KINDS:
                        if state[item[0]] == 1:
                            raise _malformed("a cycle through immutable containers")
                        stack.append(item[0])
            else:
                objects[index] = _build_immutable(kind, [resolve(item) for item in payload])
                state[index] = 2
                stack.pop()
    # 3. fill the mutable containers
    try:
        for index, (kind, payload) in enumerate(nodes):
            target = objects[index]
            if kind == "l":
                target.extend(resolve(item) for item in payload)
            elif kind == "s":
                members = [resolve(item) for item in payload]
                check_hash_collisions(members)
                target.update(members)
            elif kind == "d":
                keys = [resolve(payload[pos]) for pos in range(0, len(payload), 2)]
                check_hash_collisions(keys)
                for key, pos in zip(keys, range(1, len(payload), 2)):
                    target[key] = resolve(payload[pos])
    except (TypeError, RPCError) as exc:  # an unhashable set member or dict key, or hash flooding
        raise _malformed(str(exc)) from None
    return resolve(root)


def _build_immutable(kind: str, items: list[Any]) -> Any:
    try:
        if kind == "t":
            return tuple(items)
        if kind == "f":
            check_hash_collisions(items)
            return frozenset(items)
        return slice(*items)
    except (TypeError, RPCError) as exc:
        raise _malformed(str(exc)) from None
