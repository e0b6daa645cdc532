"""The lease table on its own: names, aliases, letter case, lease expiry on a fake clock, limits.

No sockets and no sleeping: time is the injected :class:`FakeClock`.
"""

from __future__ import annotations

import pytest

from rpc_registry import RegistryTable
from rpc_service import Service
from tests.registry.helpers import FakeClock


class Chat1Service(Service):
    pass


class Chat2Service(Service):
    pass


class Chat3Service(Service):
    ALIASES = ["Chat3", "Chat"]


def make_table(clock: FakeClock, *, max_servers: int = 4096, max_names: int = 32) -> RegistryTable:
    return RegistryTable(10.0, clock, max_servers=max_servers, max_names=max_names)


def test_register_and_query_any_letter_case(clock: FakeClock) -> None:
    table = make_table(clock)
    assert table.register(["Echo"], "10.0.0.1", 5000)
    for name in ("echo", "ECHO", "Echo", "eChO"):
        assert table.query(name) == [("10.0.0.1", 5000)]
    assert table.query("other") == []
    assert table.names() == ["ECHO"]


def test_versioned_services_resolve_like_the_seed(clock: FakeClock) -> None:
    table = make_table(clock)
    for port, service in ((1001, Chat1Service), (1002, Chat2Service), (1003, Chat3Service)):
        assert table.register(service.get_service_aliases(), "10.0.0.1", port)
    for spelling in ("chat", "CHAT", "Chat"):
        assert table.query(spelling) == [("10.0.0.1", 1003)]
    for spelling in ("chat1", "CHAT1", "Chat1"):
        assert table.query(spelling) == [("10.0.0.1", 1001)]
    assert table.query("chat2") == [("10.0.0.1", 1002)]
    assert table.query("chat3") == [("10.0.0.1", 1003)]
    assert table.names() == ["CHAT", "CHAT1", "CHAT2", "CHAT3"]


def test_every_alias_is_registered_and_several_providers_are_kept_oldest_first(clock: FakeClock) -> None:
    table = make_table(clock)
    table.register(["Calculator", "Calc"], "10.0.0.2", 2000)
    clock.advance(1)
    table.register(["calc"], "10.0.0.1", 1000)
    assert table.query("calc") == [("10.0.0.2", 2000), ("10.0.0.1", 1000)]
    assert table.query("calculator") == [("10.0.0.2", 2000)]
    assert table.services() == {"CALC": [("10.0.0.2", 2000), ("10.0.0.1", 1000)], "CALCULATOR": [("10.0.0.2", 2000)]}


def test_registering_again_replaces_the_names_and_keeps_the_age(clock: FakeClock) -> None:
    table = make_table(clock)
    table.register(["Old", "Both"], "h", 1)
    clock.advance(1)
    table.register(["x"], "h", 2)
    clock.advance(1)
    table.register(["New", "Both"], "h", 1)
    assert table.query("old") == []
    assert table.query("new") == [("h", 1)]
    assert [lease.port for lease in table.leases()] == [1, 2]  # the refresh did not make it younger
    assert len(table) == 2


def test_a_lease_lapses_after_the_pruning_timeout_unless_refreshed(clock: FakeClock) -> None:
    table = make_table(clock)
    table.register(["Echo"], "h", 1)
    clock.advance(9.9)
    assert table.query("echo") == [("h", 1)]
    table.register(["Echo"], "h", 1)  # the refresh
    clock.advance(9.9)
    assert table.query("echo") == [("h", 1)]
    clock.advance(0.2)
    assert table.query("echo") == []
    assert table.names() == [] and table.services() == {} and len(table) == 0
    assert table.lease("h", 1) is None
    assert table.prune() == 1
    assert table.prune() == 0


def test_an_expired_lease_comes_back_as_new(clock: FakeClock) -> None:
    table = make_table(clock)
    table.register(["a"], "h", 1)
    clock.advance(20)
    table.register(["b"], "h", 2)
    table.register(["a"], "h", 1)
    assert [lease.port for lease in table.leases()] == [2, 1]


def test_unregister(clock: FakeClock) -> None:
    table = make_table(clock)
    table.register(["a"], "h", 1)
    table.register(["a"], "h", 2)
    assert table.unregister("h", 1)
    assert not table.unregister("h", 1)
    assert not table.unregister("other", 2)
    assert table.query("a") == [("h", 2)]
    clock.advance(11)
    assert not table.unregister("h", 2)  # it had lapsed already


@pytest.mark.parametrize("names", [[""], [" padded"], ["tab\there"], ["x" * 129], [f"n{i}" for i in range(33)], []])
def test_names_it_cannot_accept_are_refused(clock: FakeClock, names: list[str]) -> None:
    table = make_table(clock)
    with pytest.raises(ValueError):
        table.register(names, "h", 1)
    assert len(table) == 0


def test_a_single_string_is_not_a_list_of_names(clock: FakeClock) -> None:
    with pytest.raises(TypeError):
        make_table(clock).register("Echo", "h", 1)


def test_duplicate_names_in_any_case_count_once(clock: FakeClock) -> None:
    table = make_table(clock, max_names=2)
    assert table.register(["a", "A", "b", "B"], "h", 1)
    assert table.names() == ["A", "B"]


def test_a_full_table_refuses_new_servers_until_leases_lapse(clock: FakeClock) -> None:
    table = make_table(clock, max_servers=2)
    assert table.register(["a"], "h", 1)
    clock.advance(5)
    assert table.register(["a"], "h", 2)
    assert not table.register(["a"], "h", 3)
    assert table.register(["b"], "h", 2)  # a known server may still refresh
    clock.advance(6)  # port 1 lapses
    assert table.register(["a"], "h", 3)
    assert table.query("a") == [("h", 3)]
    assert table.query("b") == [("h", 2)]


def test_bad_settings_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError):
        RegistryTable(0, clock)
    with pytest.raises(ValueError):
        RegistryTable(10, clock, max_servers=0)
