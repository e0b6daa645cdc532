"""Operators applied to a proxy of a remote *class* run as they would on the class there.

Python looks a special method up on an object's type: ``cls == other`` is the metaclass's
``__eq__``, not the unbound instance method the class holds. Regression: the serving side
looked ``__eq__``/``__format__``/``__len__``... up on the class itself, so comparing or
formatting a remote class raised TypeError (RPyC compares them as RPyC users expect).
"""

from __future__ import annotations

import asyncio
import builtins
import enum
from typing import Any

import pytest

import rpc_service
from rpc_service import Service, aio

from .conftest import ConnectTo

pytestmark = pytest.mark.timeout(60)


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Plain:
    pass


class StaticMeta(type):
    @staticmethod
    def __getitem__(key: Any) -> Any:
        return ("static", key)


class ClassMeta(type):
    @classmethod
    def __getitem__(cls, key: Any) -> Any:
        return ("class", cls.__name__, key)


class WithStatic(metaclass=StaticMeta):
    pass


class WithClass(metaclass=ClassMeta):
    pass


class ClassLender(Service):
    def exposed_with_static(self) -> type:
        return WithStatic

    def exposed_with_class(self) -> type:
        return WithClass

    def exposed_builtin(self, name: str) -> Any:
        return getattr(builtins, name)

    def exposed_plain(self) -> type[Plain]:
        return Plain

    def exposed_color(self) -> type[Color]:
        return Color

    def exposed_type_of(self, value: Any) -> type:
        return type(value)

    def exposed_new_list(self) -> list[int]:
        return [1, 2]


def test_remote_classes_compare_as_classes(connect_to: ConnectTo) -> None:
    root: Any = connect_to(ClassLender).root
    remote_int, remote_list = root.builtin("int"), root.builtin("list")
    assert remote_list == remote_list and root.builtin("list") == remote_list
    assert remote_int != remote_list and not (remote_int == remote_list)
    assert root.type_of(root.new_list()) == remote_list
    assert root.plain() == root.plain() and root.plain() not in [None, 1]
    with pytest.raises(TypeError):
        remote_int < remote_list  # noqa: B015  # (as between two local classes)


def test_remote_classes_format_and_their_metaclass_operators_apply(connect_to: ConnectTo) -> None:
    root: Any = connect_to(ClassLender).root
    assert f"{root.builtin('int')}" == "<class 'int'>" and format(root.builtin("str"), "") == "<class 'str'>"
    color = root.color()
    assert len(color) == 2 and bool(color)
    assert [str(member) for member in color] == ["Color.RED", "Color.GREEN"]
    assert str(color["GREEN"]) == "Color.GREEN" and color["RED"] in color
    # instances keep their own operators
    items = root.new_list()
    assert items == items and len(items) == 2 and 2 in items and items[1] == 2


def test_remote_classes_compare_on_an_aio_server() -> None:
    async def main() -> None:
        async with aio.Server(ClassLender) as server:
            await server.start()

            def client() -> None:
                with rpc_service.connect("127.0.0.1", server.port) as conn:
                    root: Any = conn.root
                    assert root.builtin("int") == root.builtin("int") and root.builtin("int") != root.builtin("list")
                    assert f"{root.builtin('str')}" == "<class 'str'>" and len(root.color()) == 2

            await asyncio.to_thread(client)

    asyncio.run(main())


def test_a_metaclass_static_or_class_method_binds_as_locally(connect_to: ConnectTo) -> None:
    """Regression: the metaclass's attribute was bound a second time (a staticmethod got the
    class as an argument, a classmethod the class instead of the metaclass)."""
    root: Any = connect_to(ClassLender).root
    assert root.with_static()[1] == WithStatic[1] == ("static", 1)
    assert root.with_class()[1] == WithClass[1] == ("class", "ClassMeta", 1)
