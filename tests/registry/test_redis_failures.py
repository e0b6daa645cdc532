"""RedisRegistry when Redis refuses, is down, is slow, or restarts; passwords, ACL users, TLS.

Discovery must raise a clear ``RegistryError`` naming the URL (never its password) within a
bounded time; registration must return False, back off, log once per outage and come back by
itself; a server must keep serving its connected clients while Redis is away.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

import rpc_service
from rpc_registry import RedisRegistry, RegistryError, RegistryRefusedError, RegistryUnavailableError
from tests.registry.helpers import wait_for
from tests.registry.redis_helpers import (
    ACL_PASSWORD,
    ACL_USER,
    LIMITED_PASSWORD,
    LIMITED_USER,
    PASSWORD,
    RedisProcess,
    free_port,
    make_tls_files,
)

MakeRedis = Callable[..., RedisProcess]
LOGGER = "rpc_registry.RedisRegistry"


class EchoService(rpc_service.Service):
    def exposed_echo(self, value: object) -> object:
        return value


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER and record.levelno >= logging.WARNING]


# -- passwords and ACL users --------------------------------------------------------------


def test_password(make_redis: MakeRedis) -> None:
    server = make_redis(password=PASSWORD)
    with RedisRegistry(server.url()) as registry:
        assert registry.register(["secret"], 4001, "10.0.0.1") is True
        assert registry.discover("secret") == [("10.0.0.1", 4001)]


@pytest.mark.parametrize("password", ["wrong-password", ""])
def test_wrong_or_missing_password_is_refused_and_never_echoed(
    make_redis: MakeRedis, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_redis(password=PASSWORD)
    url = server.url(password=password) if password else f"redis://127.0.0.1:{server.port}/0"
    with RedisRegistry(url, timeout=1.0) as registry:
        started = time.monotonic()
        with pytest.raises(RegistryRefusedError) as caught:
            registry.discover("anything")
        assert time.monotonic() - started < 5.0
        message = str(caught.value)
        assert f"127.0.0.1:{server.port}" in message
        assert (password or PASSWORD) not in message
        with pytest.raises(RegistryRefusedError):
            registry.list()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert registry.register(["x"], 4001) is False
        logged = warnings_of(caplog)
        assert len(logged) == 1 and f"127.0.0.1:{server.port}" in logged[0]
        assert all(password not in line for line in logged if password)


def test_acl_user(make_redis: MakeRedis) -> None:
    server = make_redis(password=PASSWORD, acl=True)
    with RedisRegistry(server.url(user=ACL_USER, password=ACL_PASSWORD)) as registry:
        assert registry.register(["acl"], 4001, "10.0.0.1") is True
        assert registry.discover("ACL") == [("10.0.0.1", 4001)]
        assert registry.list() == ["ACL"]
    # the user's key pattern (~rpc:* ~acl:*) allows another prefix under acl:
    with RedisRegistry(server.url(user=ACL_USER, password=ACL_PASSWORD), prefix="acl:") as other:
        assert other.register(["mine"], 4002) is True
        assert other.list() == ["MINE"]
    # ...but not a prefix outside it
    with RedisRegistry(server.url(user=ACL_USER, password=ACL_PASSWORD), prefix="elsewhere:") as outside:
        with pytest.raises(RegistryRefusedError):
            outside.discover("acl")


def test_acl_user_without_the_permissions_is_refused(make_redis: MakeRedis) -> None:
    server = make_redis(password=PASSWORD, acl=True)
    with RedisRegistry(server.url(user=LIMITED_USER, password=LIMITED_PASSWORD)) as registry:
        with pytest.raises(RegistryRefusedError, match="refused"):
            registry.discover("anything")
        assert registry.register(["x"], 4001) is False
    with RedisRegistry(server.url(user=ACL_USER, password="not-the-acl-password")) as wrong:
        with pytest.raises(RegistryRefusedError):
            wrong.list()


# -- unreachable and slow -----------------------------------------------------------------


def test_unreachable_redis_raises_naming_the_url_quickly() -> None:
    port = free_port()  # nothing listens there
    with RedisRegistry(f"redis://:pw-not-shown@127.0.0.1:{port}/0", timeout=1.0) as registry:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError) as caught:
            registry.discover("anything")
        assert time.monotonic() - started < 3.0
        assert f"redis://:***@127.0.0.1:{port}/0" in str(caught.value)
        assert "pw-not-shown" not in str(caught.value)
        assert isinstance(caught.value, RegistryError)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a hung Redis)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_silent_redis_raises_within_the_timeout(silent_server: int, caplog: pytest.LogCaptureFixture) -> None:
    with RedisRegistry(f"redis://127.0.0.1:{silent_server}/0", timeout=0.5) as registry:
        for ask in (lambda: registry.discover("anything"), registry.list):
            started = time.monotonic()
            with pytest.raises(RegistryUnavailableError, match=f"127.0.0.1:{silent_server}"):
                ask()
            assert time.monotonic() - started < 0.5 * 4  # a bounded number of timeouts, not a hang
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert registry.register(["x"], 4001) is False
        assert time.monotonic() - started < 0.5 * 4
        assert len(warnings_of(caplog)) == 1


# -- outages and restarts -------------------------------------------------------------------


def test_registration_backs_off_and_logs_once_per_outage(make_redis: MakeRedis, caplog: pytest.LogCaptureFixture) -> None:
    server = make_redis()
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with RedisRegistry(server.url(), ttl=2.0, timeout=0.5) as registry:
        assert registry.register(["svc"], 4001, "10.0.0.1") is True
        server.stop()
        results = []
        deadline = time.monotonic() + 1.5
        calls = 0
        while time.monotonic() < deadline and calls < 1000:  # bounded
            results.append(registry.register(["svc"], 4001, "10.0.0.1"))
            calls += 1
            time.sleep(0.01)
        assert not any(results)
        attempts = [r for r in caplog.records if r.name == LOGGER and "attempt" in r.getMessage()]
        assert len(attempts) + 1 < calls / 4  # most calls were skipped by the back-off
        assert len(warnings_of(caplog)) == 1  # one warning for the whole outage
        server.start()  # same port, empty
        assert wait_for(lambda: registry.register(["svc"], 4001, "10.0.0.1"), timeout=2.0 + 2.0)
        assert registry.discover("svc") == [("10.0.0.1", 4001)]
        logged = warnings_of(caplog)
        assert len(logged) == 2 and "again" in logged[1]
        server.stop()  # a second outage is logged once more
        assert registry.register(["svc"], 4001, "10.0.0.1") is False
        assert len(warnings_of(caplog)) == 3


def test_servers_reregister_after_redis_restarts_and_keep_serving_meanwhile(make_redis: MakeRedis) -> None:
    server = make_redis(password=PASSWORD)
    ttl = 1.5
    registry = RedisRegistry(server.url(), ttl=ttl, timeout=0.5)
    services = [rpc_service.ThreadedServer(EchoService, registrar=registry) for _ in range(2)]
    for service in services:
        service.start_in_thread()
    expected = sorted(("127.0.0.1", service.port) for service in services)
    try:
        assert wait_for(lambda: sorted(registry.discover("echo")) == expected, timeout=5.0)
        conn = rpc_service.connect("127.0.0.1", services[0].port)
        server.stop()
        with pytest.raises(RegistryUnavailableError):
            registry.discover("echo")
        for value in range(20):  # clients keep being served while Redis is down
            assert conn.root.echo(value) == value
        time.sleep(ttl)  # let the lease loops fail a few times
        assert conn.root.echo("still here") == "still here"
        server.start()  # empty (no persistence): every lease is gone until the servers refresh
        # back within a refresh interval plus the longest back-off (ttl) and the server's retry
        assert wait_for(lambda: sorted(registry.discover("echo")) == expected, timeout=ttl / 3 + ttl + 5.0)
        conn.close()
    finally:
        for service in services:
            service.close()
        registry.close()


# -- TLS -------------------------------------------------------------------------------------


def test_rediss_tls_url(make_redis: MakeRedis, tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    server = make_redis(password=PASSWORD, tls=files)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{server.tls_port}/0?ssl_ca_certs={files.ca}"
    with RedisRegistry(url) as registry:
        assert registry.register(["tls"], 4001, "10.0.0.1") is True
        assert registry.discover("tls") == [("10.0.0.1", 4001)]
        assert registry.list() == ["TLS"]
    # a client that does not trust the CA gets a clear error, not a hang
    with RedisRegistry(f"rediss://:{PASSWORD}@127.0.0.1:{server.tls_port}/0", timeout=1.0) as untrusting:
        with pytest.raises(RegistryUnavailableError, match=f"rediss://:\\*\\*\\*@127.0.0.1:{server.tls_port}"):
            untrusting.discover("tls")
