"""RedisRegistry against a real, private redis-server: names, leases, listing, the data model.

Covers what a registrar must do exactly as the UDP/TCP registries do (case-insensitive names,
every alias, oldest lease first, a re-registration replaces the names) and what Redis adds
(key prefixes, leases that lapse on the Redis clock, keys that vanish on their own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Iterator

import pytest
import redis

import rpc_registry
import rpc_service
from rpc_registry import RedisRegistry
from tests.registry.helpers import client_for, source_path, start_registry, wait_for
from tests.registry.redis_helpers import RedisProcess


@pytest.fixture
def registry(redis_server: RedisProcess) -> Iterator[RedisRegistry]:
    with RedisRegistry(redis_server.url(), ttl=5.0, timeout=2.0) as registry:
        yield registry


def keys(server: RedisProcess) -> list[str]:
    """Every key in the server's database 0, read directly with redis-py."""
    with redis.Redis.from_url(server.url()) as client:
        return sorted(key.decode() for key in client.keys("*"))


def test_register_discover_list_case_insensitive_every_alias(registry: RedisRegistry) -> None:
    assert registry.register(["Echo", "echo-v2", "ECHO"], 4001, "10.0.0.1") is True
    assert registry.register(("echo",), 4002, "10.0.0.2") is True
    assert registry.discover("echo") == [("10.0.0.1", 4001), ("10.0.0.2", 4002)]
    assert registry.discover("ECHO") == registry.discover("eCHo")
    assert registry.discover("Echo-V2") == [("10.0.0.1", 4001)]
    assert registry.discover("nobody") == []
    assert registry.list() == ["ECHO", "ECHO-V2"]


def test_list_filter_host(registry: RedisRegistry) -> None:
    registry.register(["alpha", "both"], 4001, "10.0.0.1")
    registry.register(["beta", "both"], 4002, "10.0.0.2")
    registry.register(["gamma"], 4003, "fe80::1")
    assert registry.list(filter_host="10.0.0.1") == ["ALPHA", "BOTH"]
    assert registry.list(filter_host="10.0.0.2") == ["BETA", "BOTH"]
    assert registry.list(filter_host="fe80::1") == ["GAMMA"]
    assert registry.list(filter_host="10.0.0.9") == []
    assert registry.list(filter_host=None) == ["ALPHA", "BETA", "BOTH", "GAMMA"]
    assert registry.discover("gamma") == [("fe80::1", 4003)]


def test_oldest_lease_first_and_refresh_keeps_the_place(registry: RedisRegistry) -> None:
    for port in (4003, 4001, 4002):
        registry.register(["svc"], port, "10.0.0.1")
        time.sleep(0.002)  # distinct milliseconds on the Redis clock
    registry.register(["svc"], 4003, "10.0.0.1")  # a refresh is not a new lease
    assert [port for _, port in registry.discover("svc")] == [4003, 4001, 4002]


def test_unregister_withdraws_every_name_of_the_port(registry: RedisRegistry, redis_server: RedisProcess) -> None:
    registry.register(["a", "b"], 4001, "10.0.0.1")
    registry.register(["a"], 4002, "10.0.0.1")
    registry.unregister(4001)
    assert registry.discover("a") == [("10.0.0.1", 4002)]
    assert registry.discover("b") == []
    assert registry.list() == ["A"]
    registry.unregister(4002)
    assert registry.list() == []
    assert keys(redis_server) == []  # nothing left behind


def test_unregister_by_another_instance_finds_the_names(redis_server: RedisProcess) -> None:
    with RedisRegistry(redis_server.url()) as first, RedisRegistry(redis_server.url()) as second:
        first.register(["a", "b"], 4001, "127.0.0.1")
        second.unregister(4001)  # knows nothing of 4001: looks through every name
        assert first.list() == []


def test_reregistering_with_other_names_drops_the_old_ones(registry: RedisRegistry) -> None:
    registry.register(["old", "kept"], 4001, "10.0.0.1")
    registry.register(["kept", "new"], 4001, "10.0.0.1")
    assert registry.list() == ["KEPT", "NEW"]
    registry.register(["kept"], 4001, "10.0.0.2")  # moved to another address
    assert registry.discover("kept") == [("10.0.0.2", 4001)]
    assert registry.list() == ["KEPT"]


def test_lease_lapses_after_ttl_and_keys_expire(redis_server: RedisProcess) -> None:
    with RedisRegistry(redis_server.url(), ttl=0.5) as registry:
        registry.register(["brief"], 4001, "10.0.0.1")
        assert registry.discover("brief") == [("10.0.0.1", 4001)]
        started = time.monotonic()
        assert wait_for(lambda: registry.discover("brief") == [], timeout=5.0)
        assert time.monotonic() - started < 0.5 + 1.0  # gone within ttl (+ slack for a loaded machine)
        assert registry.list() == []
        assert wait_for(lambda: keys(redis_server) == [], timeout=5.0)  # Redis expired the keys


def test_a_short_lease_does_not_cut_a_long_one(redis_server: RedisProcess) -> None:
    with RedisRegistry(redis_server.url(), ttl=30.0) as long, RedisRegistry(redis_server.url(), ttl=0.3) as short:
        long.register(["shared"], 4001, "10.0.0.1")
        short.register(["shared"], 4002, "10.0.0.2")
        assert wait_for(lambda: short.discover("shared") == [("10.0.0.1", 4001)], timeout=5.0)
        time.sleep(0.3)  # well past the short key expiry Redis would have applied
        assert short.discover("shared") == [("10.0.0.1", 4001)]
        assert short.list() == ["SHARED"]


def test_prefixes_keep_registries_apart(redis_server: RedisProcess) -> None:
    with RedisRegistry(redis_server.url(), prefix="one:") as one, RedisRegistry(redis_server.url(), prefix="two:") as two:
        one.register(["svc"], 4001, "10.0.0.1")
        assert two.discover("svc") == [] and two.list() == []
        assert one.list() == ["SVC"]
        assert all(key.startswith("one:") for key in keys(redis_server))


def test_names_are_checked_like_the_other_registries(registry: RedisRegistry) -> None:
    with pytest.raises(TypeError):
        registry.register("echo", 4001)
    for bad in ([], [""], [" padded"], ["x" * 129], ["tab\t"], [f"n{i}" for i in range(33)]):
        with pytest.raises(ValueError):
            registry.register(bad, 4001)
    assert registry.list() == []


def test_discover_checks_the_name_like_the_other_registries(registry: RedisRegistry) -> None:
    tcp = start_registry("tcp")
    try:
        for bad in (123, None, "", "x" * 300, "tab\t"):
            for registrar in (registry, client_for(tcp)):
                with pytest.raises(rpc_registry.MessageError, match="invalid service name"):
                    rpc_registry.discover(bad, registrar)  # type: ignore[arg-type]  # a wrong type on purpose
    finally:
        tcp.close()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisRegistry("http://user:pw@127.0.0.1/")
    with pytest.raises(ValueError):
        RedisRegistry(ttl=0)
    with pytest.raises(ValueError):
        RedisRegistry(timeout=-1)


def test_refresh_interval_follows_ttl_and_repr_hides_the_password() -> None:
    registry = RedisRegistry("redis://user:hunter2@127.0.0.1:1/0", ttl=9.0)
    assert registry.REREGISTER_INTERVAL == 3.0
    assert isinstance(registry, rpc_service.Registrar)
    assert "hunter2" not in repr(registry) and "***" in repr(registry)
    assert RedisRegistry().REREGISTER_INTERVAL == rpc_registry.DEFAULT_TTL / 3


def test_unix_socket_url(redis_server: RedisProcess) -> None:
    with RedisRegistry(f"unix://{redis_server.socket_path}?db=0") as registry:
        assert registry.register(["local"], 4001) is True
        assert registry.discover("local") == [("127.0.0.1", 4001)]


def test_a_server_registers_its_aliases_and_connect_by_service_reaches_it(redis_server: RedisProcess) -> None:
    class HelloService(rpc_service.Service):
        ALIASES = ["Hello", "Greeter"]

        def exposed_hi(self) -> str:
            return "hi"

    registry = RedisRegistry(redis_server.url(), ttl=1.5)
    server = rpc_service.ThreadedServer(HelloService, registrar=registry)
    server.start_in_thread()
    try:
        assert wait_for(lambda: registry.discover("greeter") == [("127.0.0.1", server.port)], timeout=5.0)
        assert registry.list() == ["GREETER", "HELLO"]
        assert rpc_registry.discover("hello", registry) == [("127.0.0.1", server.port)]
        assert "HELLO" in rpc_registry.list_services(registry)
        with rpc_registry.connect_by_service("HELLO", registry) as conn:
            assert conn.root.hi() == "hi"
        time.sleep(1.5 * 1.2)  # past one ttl: the lease loop refreshed it
        assert registry.discover("hello") == [("127.0.0.1", server.port)]
    finally:
        server.close()
    assert registry.discover("hello") == []  # close() unregistered
    registry.close()


def test_minimal_install_does_not_need_redis_py() -> None:
    """``import rpc_registry`` loads no redis-py; without it, RedisRegistry says what to install."""
    probe = (
        "import sys\n"
        "sys.modules['redis'] = None  # as if redis-py were not installed\n"
        "import rpc_registry\n"
        "assert [m for m in sys.modules if m.startswith('redis') and sys.modules[m] is not None] == []\n"
        "try:\n"
        "    rpc_registry.RedisRegistry()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=source_path()), stdin=subprocess.DEVNULL, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "rpc-registry[redis]"' in result.stdout


def test_redis_py_is_the_redis_extra_only() -> None:
    pyproject = Path(__file__).resolve().parents[2] / "packages" / "rpc-registry" / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text())["project"]
    assert not any(requirement.startswith("redis") for requirement in project["dependencies"])
    assert [r for r in project["optional-dependencies"]["redis"] if r.startswith("redis")] == ["redis>=5"]
