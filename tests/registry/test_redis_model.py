"""RedisRegistry answers exactly as the UDP/TCP registries' table does (a property test).

Random sequences of registrations (several servers, overlapping names in any letter case) and
unregistrations run against a real redis-server and against ``RegistryTable``, the in-memory
model the UDP/TCP registries use; after every step both must give the same providers per name
and the same listing, per host too. Leases are long here: expiry has tests of its own.
"""

from __future__ import annotations

import uuid
from typing import Union

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpc_registry import RedisRegistry, RegistryTable
from tests.registry.redis_helpers import RedisProcess

NAMES = ["echo", "Echo", "ECHO", "chat", "Chat3", "files", "x"]
PORTS = [4001, 4002, 4003, 4004]


def host_of(port: int) -> str:
    return f"10.0.0.{port % 2 + 1}"  # two hosts, so that filter_host has something to tell apart


Register = tuple[str, int, list[str]]
Unregister = tuple[str, int]
Step = Union[Register, Unregister]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("register"), st.sampled_from(PORTS), st.lists(st.sampled_from(NAMES), min_size=1, max_size=4)),
        st.tuples(st.just("unregister"), st.sampled_from(PORTS)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_same_answers_as_the_registry_table(redis_server: RedisProcess, steps: list[Step]) -> None:
    table = RegistryTable(pruning_timeout=3600.0)
    with RedisRegistry(redis_server.url(), prefix=f"model-{uuid.uuid4().hex}:", ttl=3600.0) as registry:
        for step in steps:
            if step[0] == "register":
                _, port, names = step  # type: ignore[misc]  # a Register, by its tag
                assert registry.register(names, port, host_of(port)) is True
                table.register(names, host_of(port), port)
            else:
                port = step[1]
                registry.unregister(port)
                table.unregister(host_of(port), port)
            assert registry.list() == table.names()
            for host in ("10.0.0.1", "10.0.0.2"):
                expected = sorted({name for lease in table.leases() if lease.host == host for name in lease.names})
                assert registry.list(filter_host=host) == expected
            for name in {*NAMES, "nobody"}:
                # same providers; the order may differ only between leases begun in one millisecond
                assert sorted(registry.discover(name)) == sorted(table.query(name))
