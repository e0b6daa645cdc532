"""Results by value (issue 16): ``@by_value`` on a method or a type, and ``obtain()``.

RPyC users' most common request: a plain ``dict``/``list`` back instead of a proxy, so that
``json.dumps``, ``==`` with local data and ``isinstance`` just work. No pickle is involved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import rpc_protocol
import rpc_service
from rpc_service import Service, by_value, exposed, obtain

from .conftest import ConnectTo
from .helpers import OfUnhashableClass, count_requests

pytestmark = pytest.mark.timeout(60)


class Opaque:
    """Not plain data: always a reference."""

    def exposed_name(self) -> str:
        return "opaque"


@by_value
@dataclasses.dataclass
class Point:
    x: int
    y: int


@by_value
class Settings(dict):  # type: ignore[type-arg]  # a plain dict subclass, as users write them
    pass


@dataclasses.dataclass
class SubPoint(Point):  # not marked itself: marks are not inherited (as with @exposed)
    z: int = 0


class DataService(Service):
    exposed_origin = Point(0, 0)

    def __init__(self) -> None:
        self.table: dict[str, Any] = {"rows": [[1, 2], [3, 4]], "tags": {"a", "b"}, "meta": {"n": 2}}

    @by_value
    def exposed_table(self) -> dict[str, Any]:
        return self.table

    def exposed_table_by_reference(self) -> dict[str, Any]:
        return self.table

    @exposed
    @by_value
    def rows(self) -> list[list[int]]:
        rows: list[list[int]] = self.table["rows"]
        return rows

    @by_value
    def exposed_with_object(self) -> list[Any]:
        return [1, Opaque(), {"k": [Point(1, 2)]}]

    @by_value
    def exposed_with_unhashable_class(self) -> list[Any]:
        return [1, OfUnhashableClass()]

    @by_value
    @staticmethod
    def exposed_static() -> list[int]:
        return [1, 2, 3]

    def exposed_point(self) -> Point:
        return Point(3, 4)

    def exposed_sub_point(self) -> SubPoint:
        return SubPoint(1, 2, 3)

    def exposed_settings(self) -> Settings:
        return Settings(debug=True, paths=["/a"])

    @by_value
    def exposed_deep(self, depth: int) -> list[Any]:
        value: list[Any] = []
        for _ in range(depth):
            value = [value]
        return value

    @by_value
    def exposed_big(self, count: int) -> list[int]:
        return list(range(count))

    def exposed_opaque(self) -> Opaque:
        return Opaque()

    def exposed_frozen(self) -> frozenset[Any]:
        return frozenset({1, Opaque()})


def test_marked_method_returns_plain_data(connect_to: ConnectTo) -> None:
    service = DataService()
    conn = connect_to(service)
    table = conn.root.table()
    assert type(table) is dict and type(table["rows"]) is list and type(table["tags"]) is set
    assert table == {"rows": [[1, 2], [3, 4]], "tags": {"a", "b"}, "meta": {"n": 2}}
    assert json.dumps(table["rows"]) == "[[1, 2], [3, 4]]"
    table["rows"].append([5])  # a copy: the service's data is untouched
    assert service.table["rows"] == [[1, 2], [3, 4]]
    assert conn.root.rows() == [[1, 2], [3, 4]] and type(conn.root.rows()) is list
    assert conn.root.static() == [1, 2, 3]
    assert rpc_service.is_proxy(conn.root.table_by_reference())  # unmarked: by reference as before


def test_marked_method_result_costs_one_round_trip(connect_to: ConnectTo) -> None:
    conn = connect_to(DataService())
    root = conn.root
    counter = count_requests(conn)
    table = root.table()
    assert sorted(table["meta"].items()) == [("n", 2)]
    assert counter[0] == 1


def test_objects_inside_a_copy_stay_references(connect_to: ConnectTo) -> None:
    conn = connect_to(DataService())
    value = conn.root.with_object()
    assert type(value) is list and value[0] == 1
    assert rpc_service.is_proxy(value[1]) and value[1].name() == "opaque"
    assert value[2] == {"k": [{"x": 1, "y": 2}]}  # a marked type nested in a copy is copied too


def test_an_object_of_an_unhashable_class_inside_a_copy(connect_to: ConnectTo) -> None:
    """Regression: the copier looked the class up in a set and failed with a TypeError of
    its own (for a class whose metaclass defines __eq__ alone); such an object stays a
    reference, as any other, and lending it is what is refused (EncodeError)."""
    conn = connect_to(DataService())
    with pytest.raises(rpc_service.RemoteError, match="its class is unhashable"):
        conn.root.with_unhashable_class()
    assert conn.root.static() == [1, 2, 3]


def test_marked_types_arrive_as_plain_data(connect_to: ConnectTo) -> None:
    conn = connect_to(DataService())
    point = conn.root.point()
    assert type(point) is dict and point == {"x": 3, "y": 4}
    settings = conn.root.settings()
    assert type(settings) is dict and settings == {"debug": True, "paths": ["/a"]}
    assert conn.root.origin == {"x": 0, "y": 0}  # an attribute read, too
    assert rpc_service.is_proxy(conn.root.sub_point())


def test_async_call_of_a_marked_method_gets_the_copy(connect_to: ConnectTo) -> None:
    conn = connect_to(DataService())
    result = rpc_service.async_(conn.root.table)()
    assert type(result.value) is dict and result.value["rows"] == [[1, 2], [3, 4]]


def test_copies_keep_the_depth_and_size_limits(connect_to: ConnectTo) -> None:
    conn = connect_to(DataService(), {"max_depth": 16, "max_frame_size": 4096})
    assert conn.root.deep(5) == [[[[[[]]]]]]
    with pytest.raises(ValueError, match="max_depth"):
        conn.root.deep(40)
    assert len(conn.root.big(100)) == 100
    with pytest.raises(ValueError, match="max_frame_size"):
        conn.root.big(10_000)
    assert conn.root.big(3) == [0, 1, 2]  # the connection is fine afterwards


def test_by_value_refuses_what_it_cannot_copy() -> None:
    with pytest.raises(TypeError, match="dataclasses"):
        by_value(Opaque)
    with pytest.raises(TypeError):
        by_value(42)


# -- obtain() on the caller side ------------------------------------------------------


def test_obtain_copies_remote_plain_containers(connect_to: ConnectTo) -> None:
    conn = connect_to(DataService())
    remote = conn.root.table_by_reference()
    assert rpc_service.is_proxy(remote)
    counter = count_requests(conn)
    local = obtain(remote)
    assert type(local) is dict and local == {"rows": [[1, 2], [3, 4]], "tags": {"a", "b"}, "meta": {"n": 2}}
    assert type(local["rows"]) is list and not rpc_service.is_proxy(local["rows"][0])
    assert counter[0] <= 6  # iterator, a batch of keys, three values (pipelined): not one per item
    assert obtain(remote["rows"]) == [[1, 2], [3, 4]]
    assert obtain(remote["tags"]) == {"a", "b"}


def test_obtain_of_local_values_is_the_value(connect_to: ConnectTo) -> None:
    assert obtain(5) == 5 and obtain("s") == "s"
    value = {"a": [1, (2, 3)]}
    assert obtain(value) == value
    conn = connect_to(DataService())
    mixed = [conn.root.table_by_reference()["meta"], 7]
    assert obtain(mixed) == [{"n": 2}, 7]


def test_obtain_refuses_what_is_not_plain_data(connect_to: ConnectTo) -> None:
    conn = connect_to(DataService())
    with pytest.raises(TypeError, match="plain data"):
        obtain(conn.root.opaque())
    with pytest.raises(TypeError, match="plain data"):
        obtain(conn.root.frozen())  # holds an object: it crosses by reference only


def test_obtain_of_a_large_dict(connect_to: ConnectTo) -> None:
    class Big(Service):
        def exposed_data(self) -> dict[int, list[int]]:
            return {key: [key] for key in range(1000)}

    conn = connect_to(Big)
    copy = obtain(conn.root.data())
    assert copy == {key: [key] for key in range(1000)}


_FIRST_MARK_LATE = """
import rpc_service

class Late(rpc_service.Service):
    def exposed_get(self):
        return {"a": [1, 2]}

with rpc_service.connect_thread(remote_service=Late) as conn:
    before = conn.root.get()
    assert rpc_service.is_proxy(before), before  # nothing marked in this process yet
    rpc_service.by_value(Late.exposed_get)  # the process's first mark, after calls were served
    after = conn.root.get()
    assert type(after) is dict and after == {"a": [1, 2]}, after
print("ok")
"""


def test_the_first_mark_made_after_calls_were_served_applies() -> None:
    """Dispatch skips looking for marks until by_value has made one in the process (a fresh
    process here: this one has made marks already)."""
    roots = [str(Path(module.__file__ or "").resolve().parents[1]) for module in (rpc_protocol, rpc_service)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(roots)}
    done = subprocess.run([sys.executable, "-c", _FIRST_MARK_LATE], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
