"""RedisRegistry across processes: two servers of their own, ``kill -9``, and 1 000 services.

Each server runs in a child process (``redis_helpers.SERVE_SCRIPT``): a ThreadedServer with a
RedisRegistry as its registrar. The test process discovers, lists and connects through Redis
only, and kills a server with SIGKILL to show that its lease lapses within ``ttl``.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest

import rpc_registry
from rpc_registry import RedisRegistry
from tests.registry.helpers import wait_for
from tests.registry.redis_helpers import PASSWORD, RedisProcess, ServerProcess, spawn_server

TTL = 1.5
Spawn = list[ServerProcess]


@pytest.fixture
def children() -> Iterator[Spawn]:
    started: Spawn = []
    yield started
    for child in started:
        child.close()


def test_two_server_processes_kill_9_and_lease_expiry(make_redis: Callable[..., RedisProcess], children: Spawn) -> None:
    redis_server = make_redis(password=PASSWORD)
    url = redis_server.url()
    children.append(spawn_server(url, "Alpha", TTL))
    children.append(spawn_server(url, "Beta", TTL))
    alpha, beta = children
    with RedisRegistry(url, ttl=TTL) as registry:
        assert wait_for(lambda: registry.list() == ["ALPHA", "ALPHA-ALIAS", "BETA", "BETA-ALIAS"], timeout=10.0)
        assert registry.discover("alpha") == [("127.0.0.1", alpha.port)]
        assert registry.discover("beta-ALIAS") == [("127.0.0.1", beta.port)]
        assert registry.list(filter_host="127.0.0.1") == ["ALPHA", "ALPHA-ALIAS", "BETA", "BETA-ALIAS"]
        for name in ("alpha", "beta"):
            with rpc_registry.connect_by_service(name, registry) as conn:
                assert conn.root.whoami() == name.capitalize()

        time.sleep(TTL)  # both servers refresh their leases (every ttl / 3)
        assert registry.discover("alpha") == [("127.0.0.1", alpha.port)]

        alpha.kill9()  # no unregister: only the lease expiry can remove it
        killed = time.monotonic()
        assert wait_for(lambda: registry.discover("alpha") == [], timeout=TTL + 5.0)
        assert time.monotonic() - killed <= TTL + 1.0  # gone within ttl (+ slack for polling)
        assert registry.list() == ["BETA", "BETA-ALIAS"]
        assert registry.discover("beta") == [("127.0.0.1", beta.port)]

        beta.close()  # a clean shutdown unregisters at once
        assert wait_for(lambda: registry.list() == [], timeout=5.0)


def test_thousand_services_registered_and_discovered(redis_server: RedisProcess, capsys: pytest.CaptureFixture[str]) -> None:
    count = 1000
    with RedisRegistry(redis_server.url(), ttl=60.0) as registry:
        started = time.perf_counter()
        for index in range(count):
            assert registry.register([f"Service{index}", f"alias{index}"], 20000 + index, "10.1.0.1")
        registered = time.perf_counter()
        for index in range(count):
            assert registry.discover(f"service{index}") == [("10.1.0.1", 20000 + index)]
        discovered = time.perf_counter()
        names = registry.list()
        listed = time.perf_counter()
        assert len(names) == 2 * count and "SERVICE999" in names and "ALIAS0" in names
        assert len(registry.list(filter_host="10.1.0.1")) == 2 * count
        for index in range(count):
            registry.unregister(20000 + index)
        unregistered = time.perf_counter()
        assert registry.list() == []
    with capsys.disabled():
        print(
            f"\n[redis registry] {count} services: register {registered - started:.3f} s, "
            f"discover {discovered - registered:.3f} s, list {listed - discovered:.3f} s, "
            f"unregister {unregistered - listed:.3f} s"
        )
