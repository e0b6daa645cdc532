"""RPyC compatibility: ``proxy.__class__`` of a non-builtin type (issue 16).

The proxy's class reads as the remote class (``__name__``, ``__qualname__``, ``__module__``)
and is hashable and shared by every proxy of that type, yet it is a local Proxy subclass:
a proxy never passes ``isinstance`` for a local class of the same name.
"""

from __future__ import annotations

import pytest

import rpc_service
from rpc_service import Proxy, Service

from .conftest import ConnectTo

pytestmark = pytest.mark.timeout(60)


class Widget:
    class Part:
        def exposed_size(self) -> int:
            return 1

    def exposed_part(self) -> Widget.Part:
        return Widget.Part()


class ClassService(Service):
    def exposed_widget(self) -> Widget:
        return Widget()


def test_proxy_class_reads_as_the_remote_class(connect_to: ConnectTo) -> None:
    conn = connect_to(ClassService)
    widget = conn.root.widget()
    cls = widget.__class__
    assert cls.__name__ == "Widget"
    assert cls.__qualname__ == "Widget"
    assert cls.__module__ == Widget.__module__
    part = widget.part()
    assert part.__class__.__name__ == "Part" and part.__class__.__qualname__ == "Widget.Part"
    assert type(conn.root).__name__ == "ClassService"


def test_proxy_class_is_hashable_and_shared(connect_to: ConnectTo) -> None:
    conn = connect_to(ClassService)
    first, second = conn.root.widget(), conn.root.widget()
    assert first.__class__ is second.__class__
    assert hash(first.__class__) == hash(second.__class__)
    assert {first.__class__: "widget"}[second.__class__] == "widget"
    assert first.__class__ is not Widget and first.__class__ != Widget


def test_proxy_never_passes_isinstance_for_the_local_class(connect_to: ConnectTo) -> None:
    conn = connect_to(ClassService)
    widget = conn.root.widget()
    assert not isinstance(widget, Widget)
    assert not isinstance(widget.part(), Widget.Part)
    assert isinstance(widget, Proxy) and rpc_service.is_proxy(widget)
    assert issubclass(widget.__class__, Proxy)
