"""Exposure rules: what the peer may reach on this side's objects, under each config.

Private (``_x``) and dunder names are refused by default, even with ``allow_public_attrs``;
non-exposed public names need ``allow_public_attrs``; ``allow_all_attrs`` opens everything;
setting and deleting need ``allow_setattr`` / ``allow_delattr``; asking for a name by its
``exposed_`` spelling is no way around the rules; unknown config keys are refused.

A proxy answers dunder lookups locally (``proxy.__dict__`` never leaves this process), so
``proxy.__dict__`` raising proves nothing about the *server*. To check the server's own
refusal, :func:`raw` sends the request a hostile peer would send (the same request a proxy
sends for ``proxy.name``) through the connection's request primitive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

import rpc_service
from rpc_protocol import Op
from rpc_service import Connection, Service, exposed

if TYPE_CHECKING:
    from .conftest import ConnectTo


def raw(conn: Connection, op: Op, target: Any, *args: Any) -> Any:
    """Send one request as a peer ignoring the proxy layer would, and return the reply."""
    return conn._request(op, target, args)


def module_function(x: int) -> int:
    """A plain function reachable by the peer: its __globals__ are this module's."""
    return x + 1


class Target:
    exposed_value = 1
    public = "public"
    _private = "private"

    def exposed_method(self) -> str:
        return "method"

    def public_method(self) -> str:
        return "public method"

    def _private_method(self) -> str:
        return "private method"


class TargetSubclass(Target):
    pass


class ExposureService(Service):
    exposed_helper = staticmethod(module_function)
    exposed_Target = Target

    def __init__(self) -> None:
        self.target = Target()
        self.public_attr = "public attr"
        self._secret = "secret"
        # instance attributes under the prefix are exposed too
        self.exposed_instance_value = "instance value"

    def exposed_get_target(self) -> Target:
        return self.target

    def exposed_foo(self) -> str:
        return "foo"

    def exposed_functions(self) -> tuple[Any, ...]:
        """A plain function and a bound method, handed out as objects (so the peer holds proxies)."""
        return module_function, self.exposed_foo

    def exposed_peek(self, obj: Any, name: str) -> Any:
        """Read an attribute of an object the peer sent (the peer's config governs it)."""
        return getattr(obj, name)

    def exposed_target_state(self) -> tuple[Any, ...]:
        return tuple(sorted((key, value) for key, value in vars(self.target).items() if isinstance(value, (int, str))))

    def public_method(self) -> str:
        return "public"

    def _private_method(self) -> str:
        return "private"


DUNDERS_ON_INSTANCES = (
    "__class__",
    "__dict__",
    "__init__",
    "__init_subclass__",
    "__reduce__",
    "__reduce_ex__",
    "__getattribute__",
    "__setattr__",
    "__module__",
    "__weakref__",
    "__subclasshook__",
)
DUNDERS_ON_CLASSES = ("__subclasses__", "__init_subclass__", "__bases__", "__mro__", "__base__", "__dict__", "__class__")
DUNDERS_ON_FUNCTIONS = ("__globals__", "__code__", "__closure__", "__builtins__", "__defaults__", "__kwdefaults__")
PRIVATE = ("_secret", "_private_method", "_Target__mangled", "_")

# the exposure rules that leave dunder and private names closed
CLOSED_CONFIGS = [
    pytest.param(None, id="default"),
    pytest.param({"allow_public_attrs": True}, id="public"),
    pytest.param({"allow_public_attrs": True, "allow_setattr": True, "allow_delattr": True}, id="public+set+del"),
]


# -- private and dunder names ---------------------------------------------------------------


@pytest.mark.parametrize("config", CLOSED_CONFIGS)
def test_private_names_are_refused(connect_to: ConnectTo, config: dict[str, Any] | None) -> None:
    conn = connect_to(ExposureService, config)
    for name in PRIVATE:
        with pytest.raises(AttributeError, match="denied"):
            getattr(conn.root, name)
        with pytest.raises(AttributeError, match="denied"):
            raw(conn, Op.CALLATTR, conn.root, name)
    with pytest.raises(AttributeError):
        conn.root.get_target()._private


@pytest.mark.parametrize("config", CLOSED_CONFIGS)
def test_dunder_names_are_refused_by_the_server(connect_to: ConnectTo, config: dict[str, Any] | None) -> None:
    conn = connect_to(ExposureService, config)
    root = conn.root
    target = root.get_target()
    for obj in (root, target):
        for name in DUNDERS_ON_INSTANCES:
            with pytest.raises(AttributeError, match="denied"):
                raw(conn, Op.GETATTR, obj, name)
    # what a proxy answers itself for these is its own (local) business, never the server's
    assert root.__class__ is type(root)
    with pytest.raises(AttributeError):
        root.__dict__
    # a reducer would hand out the object's class and state
    with pytest.raises(AttributeError, match="denied"):
        raw(conn, Op.CALLATTR, target, "__reduce_ex__", 2)
    with pytest.raises(AttributeError, match="denied"):
        raw(conn, Op.CALLATTR, target, "__reduce__")


@pytest.mark.parametrize("config", CLOSED_CONFIGS)
def test_function_globals_are_refused(connect_to: ConnectTo, config: dict[str, Any] | None) -> None:
    conn = connect_to(ExposureService, config)
    for function in conn.root.functions():  # a plain function and a bound method
        assert rpc_service.is_proxy(function)
        for name in DUNDERS_ON_FUNCTIONS + ("__func__", "__self__"):
            with pytest.raises(AttributeError):
                getattr(function, name)
            with pytest.raises(AttributeError, match="denied"):
                raw(conn, Op.GETATTR, function, name)
    assert conn.root.functions()[0](1) == 2  # while calling it is fine


@pytest.mark.parametrize("config", CLOSED_CONFIGS)
def test_class_internals_are_refused(connect_to: ConnectTo, config: dict[str, Any] | None) -> None:
    conn = connect_to(ExposureService, config)
    target_class = conn.root.Target
    for name in DUNDERS_ON_CLASSES:
        with pytest.raises(AttributeError, match="denied"):
            raw(conn, Op.GETATTR, target_class, name)
    with pytest.raises(AttributeError, match="denied"):
        raw(conn, Op.CALLATTR, target_class, "__subclasses__")
    with pytest.raises(AttributeError, match="denied"):
        raw(conn, Op.CALLATTR, target_class, "__init_subclass__")
    assert conn.root.Target().method() == "method"  # while instantiating it is fine


def test_safe_specials_are_invocable_but_their_values_are_harmless(connect_to: ConnectTo) -> None:
    conn = connect_to(ExposureService)
    # what len(), x[i], ==, repr need is always allowed, on any object the peer holds
    assert raw(conn, Op.CALLATTR, conn.root, "__eq__", conn.root) is True
    assert raw(conn, Op.CALLATTR, conn.root, "__format__", "") == str(conn.root)
    # the method object itself can be fetched, but nothing behind it can
    method = raw(conn, Op.GETATTR, conn.root, "__eq__")
    with pytest.raises(AttributeError, match="denied"):
        raw(conn, Op.GETATTR, method, "__self__")


def test_non_string_names_are_refused(connect_to: ConnectTo) -> None:
    class Sneaky(str):
        """A str subclass crosses by reference: the server must not treat it as a name."""

    conn = connect_to(ExposureService)
    for name in (5, None, ("foo",), Sneaky("foo")):
        with pytest.raises(AttributeError, match="strings"):
            raw(conn, Op.GETATTR, conn.root, name)


# -- public names ----------------------------------------------------------------------------


def test_non_exposed_public_names_are_refused_by_default(connect_to: ConnectTo) -> None:
    root = connect_to(ExposureService).root
    for name in ("public_method", "public_attr", "target", "on_connect", "on_disconnect", "get_service_name_"):
        with pytest.raises(AttributeError, match="no exposed attribute"):
            getattr(root, name)
    target = root.get_target()
    with pytest.raises(AttributeError):
        target.public
    with pytest.raises(AttributeError):
        target.public_method()
    # what is exposed works
    assert root.foo() == "foo"
    assert root.instance_value == "instance value"
    assert target.value == 1 and target.method() == "method"


def test_allow_public_attrs_opens_public_names(connect_to: ConnectTo) -> None:
    root = connect_to(ExposureService, {"allow_public_attrs": True}).root
    assert root.public_method() == "public"
    assert root.public_attr == "public attr"
    target = root.get_target()
    assert target.public == "public"
    assert target.public_method() == "public method"
    assert root.target.public == "public"
    names = set(dir(root))
    assert {"public_method", "public_attr", "target", "foo"} <= names
    assert not {"_secret", "_private_method", "__dict__"} & names


def test_the_owner_config_governs_not_the_peer_config(connect_to: ConnectTo) -> None:
    # the client opening everything on its side does not open the server
    conn = connect_to(ExposureService, client_config={"allow_all_attrs": True})
    with pytest.raises(AttributeError):
        conn.root._secret
    with pytest.raises(AttributeError):
        conn.root.public_method

    # and an object the client sends is governed by the client's config
    class Mine:
        public = "mine"
        _hidden = "hidden"

        @exposed
        def shown(self) -> str:
            return "shown"

    closed = connect_to(ExposureService)
    with pytest.raises(AttributeError):
        closed.root.peek(Mine(), "public")
    assert rpc_service.is_proxy(closed.root.peek(Mine(), "shown"))
    opened = connect_to(ExposureService, client_config={"allow_public_attrs": True})
    assert opened.root.peek(Mine(), "public") == "mine"
    with pytest.raises(AttributeError):
        opened.root.peek(Mine(), "_hidden")


# -- allow_all_attrs -------------------------------------------------------------------------


def test_allow_all_attrs_opens_everything(connect_to: ConnectTo) -> None:
    conn = connect_to(ExposureService, {"allow_all_attrs": True})
    root = conn.root
    assert root._secret == "secret"
    assert root._private_method() == "private"
    assert root.public_method() == "public"
    target = root.get_target()
    assert target._private == "private"
    # dunders too (through a raw request: proxies never forward dunder lookups)
    assert raw(conn, Op.GETATTR, target, "__class__") is root.Target
    target_dict = raw(conn, Op.GETATTR, target, "__dict__")
    assert isinstance(target_dict, dict) and len(target_dict) == 0  # the real (empty) instance dict
    helper_globals = raw(conn, Op.GETATTR, root.functions()[0], "__globals__")
    assert "module_function" in helper_globals
    subclasses = raw(conn, Op.CALLATTR, root.Target, "__subclasses__")
    assert TargetSubclass.__name__ in repr(subclasses)
    names = set(dir(root))
    assert {"_secret", "__dict__", "__class__", "exposed_foo", "foo", "get_target", "public_method"} <= names
    # setting and deleting are open too
    target.anything = 5
    assert root.target_state() == (("anything", 5),)
    del target.anything
    assert root.target_state() == ()


def test_exposed_names_keep_working_under_allow_all_attrs(connect_to: ConnectTo) -> None:
    """Regression: allow_all_attrs used to turn off the exposed_ mapping, so ``conn.root.foo()``
    looked for a plain ``foo`` and every exposed method of a service broke in classic mode."""
    root = connect_to(ExposureService, {"allow_all_attrs": True}).root
    assert root.foo() == "foo"
    assert root.get_service_name() == "EXPOSURE"
    assert root.instance_value == "instance value"
    assert root.get_target().value == 1
    assert root.exposed_foo() == "foo"  # the full name is an ordinary attribute here


# -- setattr / delattr ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config", [None, {"allow_public_attrs": True}, {"allow_delattr": True}], ids=["default", "public", "delattr-only"]
)
def test_setattr_is_refused_unless_allowed(connect_to: ConnectTo, config: dict[str, Any] | None) -> None:
    root = connect_to(ExposureService, config).root
    target = root.get_target()
    for name in ("value", "public", "new_name"):
        with pytest.raises(AttributeError, match="not allowed"):
            setattr(target, name, 5)
    assert target.value == 1
    assert root.target_state() == ()


@pytest.mark.parametrize(
    "config", [None, {"allow_public_attrs": True}, {"allow_setattr": True}], ids=["default", "public", "setattr-only"]
)
def test_delattr_is_refused_unless_allowed(connect_to: ConnectTo, config: dict[str, Any] | None) -> None:
    root = connect_to(ExposureService, config).root
    with pytest.raises(AttributeError, match="not allowed"):
        del root.instance_value
    assert root.instance_value == "instance value"


def test_allow_setattr_sets_exposed_attributes_only(connect_to: ConnectTo) -> None:
    root = connect_to(ExposureService, {"allow_setattr": True}).root
    root.instance_value = "changed"  # the peer's name; the server sets exposed_instance_value
    assert root.instance_value == "changed"
    target = root.get_target()
    with pytest.raises(AttributeError, match="class-level"):
        target.value = 5  # exposed_value is a class attribute: never replaced (issue 13 item 9)
    for name in ("public", "new_name", "_private", "_new"):
        with pytest.raises(AttributeError):
            setattr(target, name, "x")
    assert root.target_state() == ()


def test_allow_setattr_with_public_attrs_sets_public_names(connect_to: ConnectTo) -> None:
    root = connect_to(ExposureService, {"allow_setattr": True, "allow_public_attrs": True}).root
    target = root.get_target()
    target.brand_new = 1
    target.brand_new = 2
    with pytest.raises(AttributeError, match="class-level"):
        target.public = "changed"  # a class attribute
    assert target.public == "public"
    assert root.target_state() == (("brand_new", 2),)
    with pytest.raises(AttributeError, match="denied"):
        target._private = "x"


def test_allow_delattr_deletes_exposed_attributes(connect_to: ConnectTo) -> None:
    root = connect_to(ExposureService, {"allow_setattr": True, "allow_delattr": True}).root
    target = root.get_target()
    with pytest.raises(AttributeError, match="class-level"):
        del target.value  # the class attribute stays
    assert target.value == 1
    del root.instance_value
    with pytest.raises(AttributeError):
        root.instance_value
    with pytest.raises(AttributeError, match="denied"):
        del target._private


def test_special_methods_cannot_be_replaced_or_deleted(connect_to: ConnectTo) -> None:
    """Regression: with allow_setattr a peer could plant an instance attribute named after a
    safe special (``__eq__``, ``__getitem__``...) on a shared object; every peer's ``==`` or
    ``x[i]`` on that object would then have run the planter's callback."""
    conn = connect_to(ExposureService, {"allow_setattr": True, "allow_delattr": True, "allow_public_attrs": True})
    target = conn.root.get_target()
    for name in ("__eq__", "__getitem__", "__call__", "__repr__", "__hash__", "__iter__"):
        with pytest.raises(AttributeError, match="denied"):
            setattr(target, name, lambda *args: "hijacked")
        with pytest.raises(AttributeError, match="denied"):
            delattr(target, name)
    assert conn.root.target_state() == ()
    assert (target == target) is True


# -- the exposed_ spelling -----------------------------------------------------------------------


def test_the_prefixed_spelling_is_no_way_around_the_rules(connect_to: ConnectTo) -> None:
    conn = connect_to(ExposureService)
    root = conn.root
    # the full name exposed_foo reaches what foo does (as in RPyC, issue 16), and prefixing
    # other names never reaches them
    for name in (
        "exposed_",
        "exposed_exposed_foo",
        "exposed_public_method",
        "exposed__secret",
        "exposed__private_method",
        "exposed___class__",
        "exposed___dict__",
        "exposed___init_subclass__",
    ):
        with pytest.raises(AttributeError):
            raw(conn, Op.GETATTR, root, name)
    with pytest.raises(AttributeError):
        raw(conn, Op.GETATTR, root, "")


def test_the_prefixed_spelling_with_public_attrs_reaches_only_the_same_thing(connect_to: ConnectTo) -> None:
    root = connect_to(ExposureService, {"allow_public_attrs": True}).root
    # exposed_foo is now a public name: it is the very same method as foo
    assert root.exposed_foo() == root.foo() == "foo"
    for name in ("exposed__secret", "exposed___class__", "exposed___dict__"):
        with pytest.raises(AttributeError):
            getattr(root, name)


# -- configuration ----------------------------------------------------------------------------------


def test_unknown_config_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="allow_publc_attrs"):
        rpc_service.connect_thread(config={"allow_publc_attrs": True})
    with pytest.raises(ValueError, match="unknown config keys"):
        rpc_service.ThreadedServer(Service, protocol_config={"allow_everything": True})
    with rpc_service.ThreadedServer(ExposureService) as server:
        server.start_in_thread()
        with pytest.raises(ValueError, match="exposed_prefx"):
            rpc_service.connect("127.0.0.1", server.port, config={"exposed_prefx": "x_"})
        with rpc_service.connect("127.0.0.1", server.port) as conn:  # the server is unaffected
            assert conn.root.foo() == "foo"
    with pytest.raises(TypeError):
        rpc_service.Config(allow_everything=True)  # type: ignore[call-arg]  # the mistake under test


def test_a_config_object_is_accepted_as_well_as_a_dict(connect_to: ConnectTo) -> None:
    config = rpc_service.Config(allow_public_attrs=True)
    conn = rpc_service.connect_thread(remote_service=ExposureService, remote_config=config)
    with conn:
        assert conn.root.public_method() == "public"
    assert connect_to(ExposureService, {"allow_public_attrs": True}).root.public_attr == "public attr"


def test_restricted_hands_out_only_the_named_attributes(connect_to: ConnectTo) -> None:
    class Keeper(Service):
        def __init__(self) -> None:
            self.target = Target()

        def exposed_view(self) -> Any:
            return rpc_service.restricted(self.target, ["public", "public_method"])

    view = connect_to(Keeper).root.view()
    assert view.public == "public"
    assert view.public_method() == "public method"
    for name in ("value", "method", "exposed_value", "_private"):
        with pytest.raises(AttributeError):
            getattr(view, name)


def test_descriptions_are_shared_per_exposure_settings() -> None:
    """describe() is computed once per class and settings: equal settings share it, other
    settings get their own."""
    from rpc_service._config import make_config
    from rpc_service._exposure import Exposure

    plain = Exposure(make_config(None))
    public = Exposure(make_config({"allow_public_attrs": True}))
    first = plain.describe(Target)
    assert Exposure(make_config(None)).describe(Target) is first
    assert "method" in first[2] and "public_method" not in first[2]
    assert "public_method" in public.describe(Target)[2]
    assert plain.describe(Target) is first


class _Changing:
    def exposed_old(self) -> str:
        return "old"


class _ChangingService(Service):
    def exposed_thing(self) -> _Changing:
        return _Changing()


def test_a_class_changed_at_runtime_is_resolved_by_its_new_rules() -> None:
    """Regression: names resolved once per (type, name) and connection were used after the
    class changed: a method made @exposed in place of exposed_old was refused, and a name
    whose exposed_ spelling was deleted still reached a __getattr__ answering it."""
    with rpc_service.connect_thread(remote_service=_ChangingService) as conn:
        thing = conn.root.thing()
        assert thing.old() == "old"
        original = _Changing.__dict__["exposed_old"]
        try:
            del _Changing.exposed_old
            _Changing.old = exposed(lambda self: "new")  # type: ignore[attr-defined]  # changed at runtime: the test
            assert conn.root.thing().old() == "new"
            del _Changing.old  # type: ignore[attr-defined]  # (as above)
            _Changing.__getattr__ = lambda self, name: (lambda: f"dynamic {name}")  # type: ignore[attr-defined]  # (as above)
            with pytest.raises(AttributeError, match="no exposed attribute 'old'"):
                conn.root.thing().old()
        finally:
            for name in ("old", "__getattr__"):
                if name in _Changing.__dict__:
                    delattr(_Changing, name)
            _Changing.exposed_old = original  # type: ignore[method-assign]  # (restored: changed at runtime by the test)
