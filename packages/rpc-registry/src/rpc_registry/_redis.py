"""Discovery on Redis: :class:`RedisRegistry`, a ``Registrar`` whose registrations are leases.

Owns the client side of the Redis backend: parsing and masking the URL, the redis-py client
(imported only when a ``RedisRegistry`` is made, so the minimal install needs no redis-py),
translating redis-py's errors into :class:`RegistryError` subclasses that name the URL, and
the back-off that spaces registration attempts while Redis is down and logs once per outage.
The data model and the Lua scripts live in ``_redis_scripts``. It must not depend on the
UDP/TCP registry servers, hold module-level state, or log a password.
"""

from __future__ import annotations

import builtins
import ipaddress
import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from . import _redis_scripts as scripts
from ._client import facing_address
from ._errors import RegistryError, RegistryRefusedError, RegistryUnavailableError
from ._messages import MAX_NAME_LENGTH, check_name

if TYPE_CHECKING:
    import redis

__all__ = ["DEFAULT_REDIS_URL", "DEFAULT_TTL", "RedisRegistry", "mask_url"]

Address = tuple[str, int]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Seconds a registration lives in Redis without a refresh; servers refresh every ``ttl / 3``.
DEFAULT_TTL = 30.0
_SCHEMES = ("redis", "rediss", "unix")
_UNSPECIFIED = ("", "0.0.0.0", "::")
_MAX_NAMES = 32  # per server, as the UDP/TCP registries accept
_FIRST_BACKOFF = 0.5  # seconds before the second attempt of an outage (then doubling, up to ttl)


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _check_names(aliases: Sequence[str]) -> builtins.list[str]:
    """The names to register, upper-cased and sorted, with the UDP/TCP registries' rules."""
    if isinstance(aliases, str):
        raise TypeError("aliases must be a sequence of names, not a single string")
    wanted: set[str] = set()
    for name in aliases:
        if not isinstance(name, str) or not name or not name.isprintable() or name != name.strip():
            raise ValueError(f"invalid service name {name!r:.60}")
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(f"service name longer than {MAX_NAME_LENGTH} characters")
        wanted.add(name.upper())
    if not wanted:
        raise ValueError("no names to register")
    if len(wanted) > _MAX_NAMES:
        raise ValueError(f"more than {_MAX_NAMES} names for one server")
    return sorted(wanted)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class RedisRegistry:
    """A registry on Redis: servers register leases, clients discover and list names.

    ``url``: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS (options
    such as ``?ssl_ca_certs=/path/ca.pem`` or ``?ssl_cert_reqs=none`` go in the query string, as
    redis-py reads them) or ``unix:///path/redis.sock?db=0``. ``prefix`` starts every key the
    registry writes, so registries can share a database. ``ttl``: seconds a registration lives
    without a refresh; a server refreshes every ``ttl / 3`` (``REREGISTER_INTERVAL``), so a
    server that dies disappears within ``ttl``. ``timeout`` bounds connecting to Redis and each
    command; a request that fails raises :class:`RegistryUnavailableError` (Redis unreachable
    or slow) or :class:`RegistryRefusedError` (wrong password, missing ACL permission), both
    naming the URL without its password.

    Names are case-insensitive (stored upper-cased) and a server registers every alias. Usable
    wherever a registrar is accepted: ``ThreadedServer(..., registrar=RedisRegistry(url))``,
    ``discover(name, registrar)``, ``connect_by_service(name, registrar)``. Needs redis-py:
    ``pip install "rpc-registry[redis]"``.
    """

    def __init__(
        self,
        url: str = DEFAULT_REDIS_URL,
        *,
        prefix: str = "rpc:",
        ttl: float = DEFAULT_TTL,
        timeout: float = 2.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if not ttl > 0:
            raise ValueError("ttl must be > 0")
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        if not isinstance(url, str):
            raise TypeError(f"url must be a Redis URL string (redis://, rediss:// or unix://), not {type(url).__name__}")
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"not a Redis URL (redis://, rediss:// or unix://): {mask_url(url)!r}")
        self.url = url
        self.prefix = prefix
        self.ttl = float(ttl)
        self.timeout = float(timeout)
        self.REREGISTER_INTERVAL: float = self.ttl / 3
        self.logger = logger or logging.getLogger("rpc_registry.RedisRegistry")
        self._where = mask_url(url)
        self._parts = parts
        self._redis = _make_client(url, self.timeout)
        self._register = self._redis.register_script(scripts.REGISTER)
        self._discover = self._redis.register_script(scripts.DISCOVER)
        self._list = self._redis.register_script(scripts.LIST)
        self._unregister = self._redis.register_script(scripts.UNREGISTER)
        self._lock = threading.Lock()
        self._registered: dict[int, tuple[str, builtins.list[str]]] = {}  # port -> (host, names)
        self._failures = 0  # consecutive failed registrations: > 0 during an outage
        self._retry_at = 0.0  # no registration attempt before this monotonic time

    def __repr__(self) -> str:
        return f"<RedisRegistry {self._where} prefix={self.prefix!r} ttl={self.ttl:g}>"

    def __enter__(self) -> RedisRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections to Redis (the registry reconnects if used again)."""
        self._redis.close()

    # -- asking -----------------------------------------------------------------------------

    def discover(self, name: str) -> builtins.list[Address]:
        """Every live ``(host, port)`` serving ``name`` (any letter case), oldest lease first;
        [] when none does. Raises :class:`MessageError` for an invalid name (as the UDP/TCP
        clients do) and :class:`RegistryError` when Redis cannot be asked."""
        key = check_name(name).upper()
        members = self._call(
            "discover", self._discover, [scripts.service_key(self.prefix, key), scripts.since_key(self.prefix, key)], []
        )
        found: builtins.list[Address] = []
        for member in members:
            host, _, port = str(member).rpartition(":")
            found.append((host, int(port)))
        return found

    def list(self, filter_host: str | None = None) -> builtins.list[str]:
        """Every live name, sorted; with ``filter_host``, only the names that a server on
        that host provides. Raises :class:`RegistryError` when Redis cannot be asked."""
        names = self._call("list", self._list, [scripts.names_key(self.prefix)], [self.prefix, filter_host or ""])
        return sorted(str(name) for name in names)

    # -- the Registrar protocol -----------------------------------------------------------

    def register(self, aliases: Sequence[str], port: int, interface: str = "") -> bool:
        """Register (or refresh) every alias as served on ``port``; True when Redis stored it.

        The address advertised is ``interface`` when given, else the local address that faces
        Redis. While Redis is down this returns False without trying until a back-off (doubling
        from 0.5 s up to ``ttl``) has passed, and logs one warning per outage.
        """
        names = _check_names(aliases)
        host = interface if interface not in _UNSPECIFIED else self._facing()
        member = f"{host}:{int(port)}"
        with self._lock:
            if time.monotonic() < self._retry_at:
                return False
            previous = self._registered.get(port)
        try:
            if previous is not None and (previous[0] != host or previous[1] != names):
                dropped = previous[1] if previous[0] != host else [n for n in previous[1] if n not in names]
                if dropped:
                    self._call("unregister", self._unregister, [scripts.names_key(self.prefix)],
                               [self.prefix, f"{previous[0]}:{int(port)}", *dropped])
            keys = [scripts.names_key(self.prefix)]
            for name in names:
                keys += [scripts.service_key(self.prefix, name), scripts.since_key(self.prefix, name)]
            self._call("register", self._register, keys, [str(round(self.ttl * 1000)), member, *names])
        except RegistryError as exc:
            self._failed(port, exc)
            return False
        with self._lock:
            outage, self._failures, self._retry_at = self._failures, 0, 0.0
            first = previous is None
            self._registered[port] = (host, names)
        if outage:
            self.logger.warning("registered port %d at %s again, after %d failed attempts", port, self._where, outage)
        if first and _is_loopback(host) and not _is_loopback(self._parts.hostname or "localhost"):
            self.logger.warning(
                "port %d is advertised as %s at %s: other hosts cannot reach it there "
                "(bind the server to a reachable address, e.g. hostname='0.0.0.0')", port, host, self._where,
            )
        return True

    def unregister(self, port: int) -> None:
        """Withdraw every name registered for ``port`` from this host; Redis trouble is only
        logged (never raised): the lease lapses within ``ttl`` anyway."""
        with self._lock:
            previous = self._registered.pop(port, None)
        host, names = previous if previous is not None else (self._facing(), [])
        try:
            self._call("unregister", self._unregister, [scripts.names_key(self.prefix)], [self.prefix, f"{host}:{int(port)}", *names])
        except RegistryError as exc:
            self.logger.warning("could not unregister port %d: %s", port, exc)

    # -- plumbing ---------------------------------------------------------------------------

    def _facing(self) -> str:
        """The local address facing Redis (127.0.0.1 for a unix socket or when unknown)."""
        if self._parts.scheme == "unix" or not self._parts.hostname:
            return "127.0.0.1"
        try:
            port = self._parts.port or 6379
        except ValueError:
            port = 6379
        return facing_address(self._parts.hostname, port) or "127.0.0.1"

    def _failed(self, port: int, exc: RegistryError) -> None:
        with self._lock:
            self._failures += 1
            failures = self._failures
            delay = min(self.ttl, _FIRST_BACKOFF * 2 ** min(failures - 1, 30))
            self._retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)  # jitter: no herd
        if failures == 1:
            self.logger.warning("could not register port %d, retrying with back-off until Redis answers: %s", port, exc)
        else:
            self.logger.debug("registration attempt %d for port %d failed: %s", failures, port, exc)

    def _call(self, what: str, script: Callable[..., Any], keys: builtins.list[str], args: builtins.list[str]) -> Any:
        """Run ``script``; translate redis-py's errors into registry errors naming the URL."""
        from redis import exceptions as errors

        try:
            return script(keys=keys, args=args)
        except (errors.AuthenticationError, errors.AuthenticationWrongNumberOfArgsError, errors.NoPermissionError) as exc:
            raise RegistryRefusedError(f"Redis at {self._where} refused to {what}: {exc}") from exc
        except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
            raise RegistryUnavailableError(f"cannot {what}: Redis at {self._where} did not answer: {exc}") from exc
        except errors.ResponseError as exc:
            if str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise RegistryRefusedError(f"Redis at {self._where} refused to {what}: {exc}") from exc
            raise RegistryError(f"Redis at {self._where} failed to {what}: {exc}") from exc
        except errors.RedisError as exc:
            raise RegistryError(f"Redis at {self._where} failed to {what}: {exc}") from exc


def _make_client(url: str, timeout: float) -> redis.Redis:
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        raise ImportError('RedisRegistry needs redis-py: pip install "rpc-registry[redis]"') from exc
    # One immediate retry on a broken connection (a pooled connection that Redis dropped when
    # it restarted), none on a timeout: a slow or silent Redis costs one `timeout`, not several.
    retry = Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=retry,
        decode_responses=True,
    )
