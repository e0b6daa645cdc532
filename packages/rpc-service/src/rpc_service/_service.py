"""The Service model: what one side of a connection offers the other.

Owns :class:`Service` (naming, aliases, lifecycle hooks), :class:`VoidService` (offers
nothing) and the :func:`exposed` decorator. Which attributes of a service the peer may
reach is decided by ``_exposure``; this module only marks and names things.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Sequence, TypeVar, Union

if TYPE_CHECKING:
    from ._config import Config
    from ._connection import Connection

__all__ = ["Service", "ServiceArg", "VoidService", "exposed", "EXPOSED_MARK"]

EXPOSED_MARK = "__rpc_exposed__"
_T = TypeVar("_T")


def exposed(obj: _T) -> _T:
    """Mark a method, property, nested class or attribute as reachable by the peer.

    The alternative to naming it with the ``exposed_`` prefix: the peer reaches it under
    its own name. Works on functions, ``staticmethod``/``classmethod``/``property``
    objects (apply it outermost) and classes.
    """
    target = getattr(obj, "__func__", None) or getattr(obj, "fget", None) or obj
    try:
        setattr(target, EXPOSED_MARK, True)
    except (AttributeError, TypeError):
        raise TypeError(f"cannot mark {obj!r} as exposed; use the exposed_ prefix instead") from None
    return obj


class Service:
    """Base class of everything a connection offers as its ``root``.

    Attributes named ``exposed_<name>`` (or decorated with :func:`exposed`) are reachable
    by the peer as ``conn.root.<name>``; nothing else is, unless the connection's config
    widens it. A service given to a server or factory as a *class* gets one instance per
    connection; given as an *instance* it is shared by every connection.

    Naming: the class name without its ``Service`` suffix, or the ``ALIASES`` list when
    set (the first alias is then the name). Names compare case-insensitively and are
    reported upper-cased.
    """

    ALIASES: ClassVar[Sequence[str]] = ()

    def connection_config(self, config: Config) -> Config:
        """The config of this side of a new connection, given the one the factory or server
        was asked for. The default keeps it; a service that needs more (classic mode's
        unrestricted attribute access) returns a changed copy."""
        return config

    def on_connect(self, conn: Connection) -> object:
        """Called once the connection is up, before any request of the peer is served.
        (On the asyncio driver either hook may be ``async def``; hence ``-> object``.)"""

    def on_disconnect(self, conn: Connection) -> object:
        """Called once the connection has closed (it can no longer be used)."""

    @classmethod
    def get_service_aliases(cls) -> tuple[str, ...]:
        if cls.ALIASES:
            if isinstance(cls.ALIASES, str):
                raise TypeError(f"{cls.__name__}.ALIASES must be a list of names, not a string")
            return tuple(alias.upper() for alias in cls.ALIASES)
        name = cls.__name__
        if name.upper().endswith("SERVICE") and len(name) > len("SERVICE"):
            name = name[: -len("SERVICE")]
        return (name.upper(),)

    @classmethod
    def get_service_name(cls) -> str:
        return cls.get_service_aliases()[0]

    @classmethod
    def exposed_get_service_aliases(cls) -> tuple[str, ...]:
        return cls.get_service_aliases()

    @classmethod
    def exposed_get_service_name(cls) -> str:
        return cls.get_service_name()


class VoidService(Service):
    """A service that offers nothing but its name: the default local service everywhere."""

    __slots__ = ()


def check_service(service: object) -> None:
    """TypeError unless ``service`` is a Service subclass or instance."""
    if not (isinstance(service, Service) or (isinstance(service, type) and issubclass(service, Service))):
        raise TypeError(f"service must be a Service subclass or instance, not {service!r}")


def instantiate(service: type[Service] | Service | Any, *, accepting: bool = False) -> Service:
    """One service object for a new connection: a fresh instance of a class, or the shared
    instance. ``accepting``: a constructor that raises gives an :class:`Unmade` instead."""
    check_service(service)
    if isinstance(service, Service):
        return service
    try:
        made: Service = service()
    except Exception as exc:
        if not accepting:
            raise
        return Unmade(service, exc)
    return made


ServiceArg = Union[type[Service], Service]
"""What factories and servers accept as a service: a class (one instance per connection)
or an instance (shared)."""


class Unmade(Service):
    """Stands in, on the accepting side, for a service class whose constructor raised: the
    handshake rejects the client with that error as when ``on_connect`` raises (the client
    gets ConnectionRejectedError naming it; a server logs it at ERROR with its traceback),
    instead of dropping the client without a word."""

    def __init__(self, cls: type[Service], error: Exception) -> None:
        self.cls = cls
        self.error = error

    def on_connect(self, conn: Any) -> None:
        raise self.error


def rejection(service: Service, exc: Exception) -> str:
    """Why the accepting side rejects a client: ``on_connect`` (or making ``service``) raised ``exc``."""
    step = f"{service.cls.__name__}()" if type(service) is Unmade else "on_connect"
    return f"{step} failed: {type(exc).__name__}: {exc}"
