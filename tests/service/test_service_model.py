"""The Service model: naming and aliases, VoidService, per-connection vs shared instances,
lifecycle hooks, the ``@exposed`` decorator, ``exposed_prefix`` and exposed nested classes.

Every test that opens a connection goes through ``connect_to`` and so runs over TCP (a
ThreadedServer) and over the in-process pair.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

import rpc_service
from rpc_service import Connection, Service, VoidService, exposed

if TYPE_CHECKING:
    from .conftest import ConnectTo

WAIT = 5.0  # upper bound for events that happen on the server's thread


def _public_names(proxy: Any) -> set[str]:
    return {name for name in dir(proxy) if not name.startswith("_")}


# -- naming -------------------------------------------------------------------------------


class EchoService(Service):
    def exposed_echo(self, value: object) -> object:
        return value


class Chat1Service(Service):
    def exposed_version(self) -> int:
        return 1


class Chat2Service(Service):
    def exposed_version(self) -> int:
        return 2


class Chat3Service(Service):
    ALIASES = ["Chat3", "Chat"]

    def exposed_version(self) -> int:
        return 3


def test_name_is_class_name_without_service_suffix_upper_cased() -> None:
    assert EchoService.get_service_name() == "ECHO"
    assert EchoService.get_service_aliases() == ("ECHO",)
    # works on instances too, and the suffix is matched case-insensitively
    assert EchoService().get_service_name() == "ECHO"

    class Lowerservice(Service):
        pass

    class Calculator(Service):  # no suffix: the whole name
        pass

    assert Lowerservice.get_service_name() == "LOWER"
    assert Calculator.get_service_name() == "CALCULATOR"
    # a class called just "Service" keeps its name rather than becoming empty
    assert Service.get_service_name() == "SERVICE"
    assert VoidService.get_service_name() == "VOID"


def test_versioned_services_resolve_as_the_seed_describes() -> None:
    assert Chat1Service.get_service_name() == "CHAT1"
    assert Chat1Service.get_service_aliases() == ("CHAT1",)
    assert Chat2Service.get_service_name() == "CHAT2"
    # ALIASES replaces the derived name: the first alias is the name
    assert Chat3Service.get_service_name() == "CHAT3"
    assert Chat3Service.get_service_aliases() == ("CHAT3", "CHAT")
    # only Chat3 answers to the unversioned "chat"
    offering_chat = [cls for cls in (Chat1Service, Chat2Service, Chat3Service) if "CHAT" in cls.get_service_aliases()]
    assert offering_chat == [Chat3Service]


def test_names_are_reported_upper_cased_whatever_the_spelling() -> None:
    class MixedService(Service):
        ALIASES = ["mIxEd", "other-Name"]

    class chatservice(Service):  # noqa: N801 - lower-case on purpose
        pass

    assert MixedService.get_service_aliases() == ("MIXED", "OTHER-NAME")
    assert chatservice.get_service_name() == "CHAT"
    # names compare case-insensitively: any spelling, upper-cased, matches the report
    for spelling in ("chat", "Chat", "CHAT", "cHaT"):
        assert spelling.upper() == chatservice.get_service_name()


def test_aliases_given_as_a_string_is_a_clear_error() -> None:
    class BadService(Service):
        ALIASES = "Bad"  # the mistake under test: a str is a Sequence[str], so only runtime catches it

    with pytest.raises(TypeError, match="ALIASES"):
        BadService.get_service_aliases()


def test_peer_reads_the_name_and_aliases(connect_to: ConnectTo) -> None:
    conn = connect_to(Chat3Service)
    assert conn.root.get_service_name() == "CHAT3"
    assert conn.root.get_service_aliases() == ("CHAT3", "CHAT")
    assert conn.root.version() == 3
    # the handshake announced the same names
    assert conn.peer_services == ("CHAT3", "CHAT")
    assert "CHAT3" in repr(conn)


def test_peer_reads_the_derived_name(connect_to: ConnectTo) -> None:
    conn = connect_to(Chat1Service)
    assert conn.root.get_service_name() == "CHAT1"
    assert conn.root.get_service_aliases() == ("CHAT1",)
    assert conn.peer_services == ("CHAT1",)


# -- VoidService --------------------------------------------------------------------------


def test_void_service_exposes_nothing(connect_to: ConnectTo) -> None:
    conn = connect_to(VoidService)
    assert conn.root.get_service_name() == "VOID"
    with pytest.raises(AttributeError, match="anything"):
        conn.root.anything
    with pytest.raises(AttributeError, match="on_connect"):
        conn.root.on_connect(None)
    # nothing but the naming methods is visible
    assert _public_names(conn.root) == {"get_service_name", "get_service_aliases"}


class AskPeerNameService(Service):
    conn: Connection | None = None

    def on_connect(self, conn: Connection) -> None:
        self.conn = conn

    def exposed_peer_name(self) -> str:
        assert self.conn is not None
        name: str = self.conn.root.get_service_name()
        return name

    def exposed_peer_attr(self, name: str) -> object:
        assert self.conn is not None
        return getattr(self.conn.root, name)

    def exposed_peer_services(self) -> tuple[str, ...]:
        assert self.conn is not None
        return self.conn.peer_services


def test_void_service_is_the_default_client_service(connect_to: ConnectTo) -> None:
    conn = connect_to(AskPeerNameService)  # no client_service given
    assert type(conn.service) is VoidService
    assert conn.root.peer_name() == "VOID"
    assert conn.root.peer_services() == ("VOID",)
    # the server cannot reach anything on a default client
    with pytest.raises(AttributeError):
        conn.root.peer_attr("service")


def test_default_service_of_the_factories_is_void() -> None:
    with rpc_service.connect_thread() as conn:  # both sides default
        assert type(conn.service) is VoidService
        assert conn.root.get_service_name() == "VOID"


# -- one instance per connection, or shared ----------------------------------------------


class IdentityService(Service):
    def __init__(self) -> None:
        self.calls = 0

    def exposed_identity(self) -> int:
        self.calls += 1
        return id(self)

    def exposed_calls(self) -> int:
        return self.calls


def test_service_class_gives_one_instance_per_connection(connect_to: ConnectTo) -> None:
    first = connect_to(IdentityService)
    second = connect_to(IdentityService)
    assert first.root.identity() != second.root.identity()
    first.root.identity()
    assert first.root.calls() == 2
    assert second.root.calls() == 1
    # the same connection keeps talking to the same instance
    assert first.root.identity() == first.root.identity()


def test_service_instance_is_shared_across_connections(connect_to: ConnectTo) -> None:
    shared = IdentityService()
    first = connect_to(shared)
    second = connect_to(shared)
    assert first.root.identity() == second.root.identity() == id(shared)
    assert shared.calls == 2
    assert second.root.calls() == 2


def test_one_server_instantiates_a_service_class_per_client() -> None:
    with rpc_service.ThreadedServer(IdentityService) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port) as first, rpc_service.connect("127.0.0.1", server.port) as second:
            assert first.root.identity() != second.root.identity()


def test_service_must_be_a_service() -> None:
    with pytest.raises(TypeError, match="Service"):
        rpc_service.connect_thread(service=object)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(TypeError, match="Service"):
        rpc_service.connect_thread(service=object())  # type: ignore[arg-type]  # the mistake under test


# -- lifecycle hooks ----------------------------------------------------------------------


class HookService(Service):
    """Records what its hooks saw; the test reads the records of the server-side instance."""

    instances: ClassVar[list[HookService]]

    def __init__(self) -> None:
        self.connected: list[tuple[Connection, bool, Any]] = []
        self.disconnected: list[tuple[Connection, bool]] = []
        self.gone = threading.Event()
        type(self).instances.append(self)

    def on_connect(self, conn: Connection) -> None:
        self.connected.append((conn, conn.closed, conn.service))

    def on_disconnect(self, conn: Connection) -> None:
        self.disconnected.append((conn, conn.closed))
        self.gone.set()

    def exposed_hello(self) -> str:
        return "hi"


def _hook_service_class() -> type[HookService]:
    class Hooks(HookService):
        instances: ClassVar[list[HookService]] = []

    return Hooks


def test_on_connect_gets_the_connection_before_the_first_request(connect_to: ConnectTo) -> None:
    hooks = _hook_service_class()
    conn = connect_to(hooks)
    assert conn.root.hello() == "hi"
    [service] = hooks.instances
    [(server_conn, closed, conn_service)] = service.connected
    assert isinstance(server_conn, Connection)
    assert server_conn is not conn  # the server's end, not the client's
    assert closed is False
    assert conn_service is service  # the connection it got is the one serving this instance
    assert service.disconnected == []


def test_on_disconnect_runs_after_the_connection_closed(connect_to: ConnectTo) -> None:
    hooks = _hook_service_class()
    conn = connect_to(hooks)
    assert conn.root.hello() == "hi"
    [service] = hooks.instances
    conn.close()
    assert service.gone.wait(WAIT), "on_disconnect was not called on the server"
    [(server_conn, closed_inside)] = service.disconnected
    assert closed_inside is True
    assert server_conn is service.connected[0][0]
    assert server_conn.closed


def test_client_service_hooks_run_on_the_client(connect_to: ConnectTo) -> None:
    client = _hook_service_class()()
    conn = connect_to(EchoService, client_service=client)
    [(hook_conn, closed, conn_service)] = client.connected
    assert hook_conn is conn
    assert closed is False and conn_service is client
    assert client.disconnected == []
    conn.close()
    # closing from this side runs the hook synchronously, after the close
    assert client.disconnected == [(conn, True)]
    conn.close()  # idempotent: the hook runs once
    assert len(client.disconnected) == 1


def test_on_disconnect_runs_when_the_server_side_goes_away(connect_to: ConnectTo) -> None:
    client = _hook_service_class()()
    closer = _hook_service_class()
    conn = connect_to(closer, client_service=client)
    assert conn.root.hello() == "hi"  # served only after the server's on_connect returned
    [service] = closer.instances
    server_conn = service.connected[0][0]
    server_conn.close()  # the server closes its end
    # the client notices on its next use
    with pytest.raises(rpc_service.ConnectionClosedError):
        conn.root.hello()
    assert client.disconnected == [(conn, True)]


# -- @exposed ------------------------------------------------------------------------------


class Counter:
    """A plain class exposed as a nested class of a service."""

    def __init__(self, start: int) -> None:
        self.value = start

    def exposed_increment(self, by: int = 1) -> int:
        self.value += by
        return self.value

    @exposed
    def current(self) -> int:
        return self.value

    def hidden(self) -> int:
        return self.value


class DecoratedService(Service):
    exposed_Counter = Counter
    exposed_version = "1.2"
    motto = "not exposed"

    def __init__(self) -> None:
        self._secret = 41

    @exposed
    def method(self, x: int, *, y: int = 0) -> int:
        return x + y

    @exposed  # type: ignore[prop-decorator]  # the documented order (exposed outermost); mypy cannot type it
    @property
    def prop(self) -> int:
        return self._secret + 1

    @property
    @exposed
    def inner_marked_prop(self) -> str:
        return "inner"

    @exposed
    @staticmethod
    def static(x: int) -> int:
        return x * 10

    @exposed
    @classmethod
    def klass(cls) -> str:
        return cls.__name__

    @exposed
    class Point:
        def __init__(self, x: int, y: int) -> None:
            self.x, self.y = x, y

        @exposed
        def norm1(self) -> int:
            return abs(self.x) + abs(self.y)

    def not_exposed(self) -> str:
        return "nope"


def test_exposed_decorator_on_every_kind_of_attribute(connect_to: ConnectTo) -> None:
    root = connect_to(DecoratedService).root
    assert root.method(2, y=3) == 5
    assert root.method(2) == 2
    assert root.prop == 42
    assert root.inner_marked_prop == "inner"
    assert root.static(4) == 40
    assert root.klass() == "DecoratedService"
    assert root.version == "1.2"  # a plain value under the exposed_ prefix
    point = root.Point(3, -4)
    assert point.norm1() == 7
    for name in ("not_exposed", "motto", "_secret"):
        with pytest.raises(AttributeError):
            getattr(root, name)
    with pytest.raises(AttributeError):
        point.x  # attributes of an exposed class's instances are not exposed by that
    assert _public_names(root) == {
        "Counter",
        "Point",
        "get_service_aliases",
        "get_service_name",
        "inner_marked_prop",
        "klass",
        "method",
        "prop",
        "static",
        "version",
    }


def test_exposed_nested_class_is_instantiable_by_the_peer(connect_to: ConnectTo) -> None:
    root = connect_to(DecoratedService).root
    counter = root.Counter(3)
    assert rpc_service.is_proxy(counter)
    assert counter.increment() == 4
    assert counter.increment(by=10) == 14
    assert counter.current() == 14
    with pytest.raises(AttributeError):
        counter.hidden()
    # two instances are independent objects on the server
    other = root.Counter(100)
    assert other.current() == 100 and counter.current() == 14
    assert type(other) is type(counter)


def test_exposed_rejects_what_it_cannot_mark() -> None:
    with pytest.raises(TypeError, match="exposed"):
        exposed(len)
    with pytest.raises(TypeError, match="exposed"):
        exposed(3)


@exposed
class Settings:
    def __init__(self) -> None:
        self.token = "s3cret"

    @exposed
    def name(self) -> str:
        return "settings"


class AdminSettings(Settings):
    pass


class MarkLeakService(Service):
    exposed_Settings = Settings  # exposed on purpose
    defaults = Settings()  # an *instance* of a marked class: not marked itself
    AdminPanel = AdminSettings  # a *subclass* of a marked class: not marked itself

    def exposed_make_settings(self) -> Settings:
        return Settings()


def test_the_exposed_mark_is_not_inherited_by_instances_or_subclasses(connect_to: ConnectTo) -> None:
    """Regression: marking a class with @exposed used to expose every instance and subclass of
    it stored on a service (the mark was found through ordinary attribute inheritance)."""
    root = connect_to(MarkLeakService).root
    assert root.Settings().name() == "settings"
    assert root.make_settings().name() == "settings"
    with pytest.raises(AttributeError, match="defaults"):
        root.defaults
    with pytest.raises(AttributeError, match="AdminPanel"):
        root.AdminPanel
    assert "defaults" not in dir(root) and "AdminPanel" not in dir(root)


# -- exposed_prefix --------------------------------------------------------------------------


class PrefixService(Service):
    def remote_add(self, a: int, b: int) -> int:
        return a + b

    def exposed_add(self, a: int, b: int) -> int:
        return -1

    def exposed_sub(self, a: int, b: int) -> int:
        return a - b

    @exposed
    def mul(self, a: int, b: int) -> int:
        return a * b


def test_exposed_prefix_is_configurable(connect_to: ConnectTo) -> None:
    conn = connect_to(PrefixService, {"exposed_prefix": "remote_"})
    root = conn.root
    assert root.add(2, 3) == 5  # remote_add, not exposed_add
    assert root.mul(2, 3) == 6  # @exposed does not depend on the prefix
    with pytest.raises(AttributeError):
        root.sub(5, 1)  # exposed_ means nothing any more
    with pytest.raises(AttributeError):
        root.get_service_name()  # nor does the base class's exposed_get_service_name
    assert _public_names(root) == {"add", "mul"}


def test_default_prefix_when_not_configured(connect_to: ConnectTo) -> None:
    root = connect_to(PrefixService).root
    assert root.add(2, 3) == -1
    assert root.sub(5, 1) == 4
    with pytest.raises(AttributeError):
        root.remote_add(1, 1)


def test_the_server_prefix_governs_not_the_client_prefix(connect_to: ConnectTo) -> None:
    conn = connect_to(PrefixService, client_config={"exposed_prefix": "remote_"})
    assert conn.root.add(2, 3) == -1


def test_empty_exposed_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="exposed_prefix"):
        rpc_service.connect_thread(config={"exposed_prefix": ""})


class AsyncHandlers(Service):
    async def exposed_fetch(self) -> int:
        return 1

    def exposed_plain(self) -> int:
        return 2


def test_an_async_def_handler_on_a_threaded_connection_is_a_clear_error(connect_to: ConnectTo) -> None:
    import gc
    import warnings

    conn = connect_to(AsyncHandlers)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would fail the test
        with pytest.raises(TypeError, match=r"AsyncHandlers\.exposed_fetch is an async def handler.*aio\.Server"):
            conn.root.fetch()
        gc.collect()
    assert conn.root.plain() == 2  # the connection keeps serving


def test_an_async_def_handler_called_under_a_deadline_is_the_same_clear_error(connect_to: ConnectTo) -> None:
    conn = connect_to(AsyncHandlers)
    with rpc_service.deadline(5), pytest.raises(TypeError, match="is an async def handler"):
        conn.root.fetch()
