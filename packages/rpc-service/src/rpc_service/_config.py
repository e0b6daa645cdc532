"""Connection configuration: the knobs of one connection, as a frozen value.

Owns :class:`Config` and the conversion from the plain dicts users pass (``config=`` on
every factory and ``protocol_config=`` on servers). Key names follow RPyC's where the
meaning is the same. Unknown keys are an error, so a typo never silently weakens or
loosens a setting.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any, Callable, Final, Iterable, Mapping, Union

__all__ = ["Config", "ConfigArg", "make_config"]


@dataclass(frozen=True)
class Config:
    """What this side of a connection allows and how it behaves.

    Exposure: only ``exposed_``-prefixed (or ``@exposed``) attributes and a fixed set of
    safe special methods (``__len__``, ``__iter__``, ``__getitem__``...) are reachable by the
    peer unless ``allow_public_attrs`` (every name not starting with ``_``, except frames,
    code, tracebacks and the names leading to them) or ``allow_all_attrs`` (everything;
    classic mode) is set. Setting and deleting attributes additionally need ``allow_setattr``
    / ``allow_delattr``, and never replace a method or any class-level attribute.
    ``allow_pickle`` must be set on both sides before any pickled bytes are accepted, and
    covers plain data only unless ``allow_all_attrs`` is set too.

    Limits: ``max_lent_objects`` (default 100 000) caps the distinct local objects the peer
    may hold references to at once; sending one more raises :class:`LentObjectsLimitError`
    (a reply that would do it reaches the peer as that error). ``max_proxies`` (default
    100 000) caps the distinct objects of the peer held here through proxies at once: a peer
    whose frame would pass it (which an honest peer, bound by its own ``max_lent_objects``,
    never sends) breaks the protocol and is disconnected (each proxy costs ~600 bytes, so
    references must not be a way to make this side allocate ~50 times a frame's size).

    Errors: the peer always learns an error's type and arguments (its message); the
    traceback text (file paths, source lines, chained exceptions' messages) and the Python
    and rpc-service versions only with ``include_local_traceback=True`` (default False;
    ``rpc_classic.classic_config()`` sets it, and ``include_local_version`` then adds the versions).

    ``forward_dunders``: dunder names (e.g. ``"__name__"``, ``"__doc__"``, ``"__dict__"``) that
    this side's proxies ask the peer for instead of refusing locally; the *peer's* exposure
    rules still decide (a peer without ``allow_all_attrs`` refuses them). Empty by default;
    the classic factories set it.

    As in RPyC, ``allow_safe_attrs=False`` turns the safe special methods off (calling stays allowed) and
    ``allow_exposed_attrs=False`` the ``exposed_`` names and ``@exposed`` marks.
    ``before_closed(root)`` runs with the peer's root when this side calls ``close()``, while
    requests can still be made (an exception it raises is logged; the connection closes anyway).

    ``tracing``: OpenTelemetry spans (a CLIENT span per call, a SERVER span per request
    served, the W3C traceparent carried to the peer). None (default): on when
    opentelemetry-api is installed (the ``rpc-service[otel]`` extra) and a tracer provider
    is set (``tracer_provider``, or globally) when the connection is made, else off at no
    cost; True: on (the package required); False: off. ``tracer_provider``: the provider to take the tracer from
    (None: OpenTelemetry's global one).

    ``write_timeout``: a write to a socket that makes no progress for this many seconds
    (the peer does not read) fails the connection instead of blocking its thread forever;
    None waits forever.
    """

    allow_public_attrs: bool = False
    allow_all_attrs: bool = False
    allow_setattr: bool = False
    allow_delattr: bool = False
    allow_pickle: bool = False
    allow_safe_attrs: bool = True
    allow_exposed_attrs: bool = True
    exposed_prefix: str = "exposed_"
    sync_request_timeout: float | None = 30.0
    handshake_timeout: float = 10.0
    write_timeout: float | None = 60.0
    include_local_traceback: bool = False
    include_local_version: bool = True
    max_frame_size: int = 64 * 1024 * 1024
    max_pending_requests: int = 1024
    max_depth: int = 64
    max_lent_objects: int = 100_000
    max_proxies: int = 100_000
    iter_batch: int = 256
    connid: str | None = None
    forward_dunders: frozenset[str] = frozenset()
    before_closed: Callable[[Any], object] | None = None
    tracing: bool | None = None
    tracer_provider: Any = None

    def __post_init__(self) -> None:
        # Every value is checked here, so that a wrong one fails where it is given (and a
        # string such as "no" can never pass for True: include_local_traceback guards secrets).
        for name in _FLAGS:
            if type(getattr(self, name)) is not bool:
                raise ValueError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.tracing is not None and type(self.tracing) is not bool:
            raise ValueError(f"tracing must be True, False or None, not {self.tracing!r}")
        for name in _COUNTS:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        for name, optional in _SECONDS:
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:  # (not > 0: NaN too)
                raise ValueError(f"{name} must be a positive number of seconds{' or None' if optional else ''}, not {value!r}")
        if type(self.exposed_prefix) is not str or not self.exposed_prefix:
            raise ValueError(f"exposed_prefix must be a non-empty string, not {self.exposed_prefix!r}")
        if self.connid is not None and type(self.connid) is not str:
            raise ValueError(f"connid must be a string or None, not {self.connid!r}")
        dunders: object = self.forward_dunders
        if isinstance(dunders, str) or not isinstance(dunders, Iterable):
            raise ValueError(f"forward_dunders holds dunder names such as '__name__' (a collection of them), not {dunders!r}")
        names = frozenset(dunders)
        if not all(type(name) is str and len(name) > 4 and name[:2] == name[-2:] == "__" for name in names):
            raise ValueError("forward_dunders holds dunder names such as '__name__'")
        object.__setattr__(self, "forward_dunders", names)
        if self.before_closed is not None and not callable(self.before_closed):
            raise ValueError("before_closed must be a callable taking the peer's root, or None")


_FLAGS = (
    "allow_public_attrs", "allow_all_attrs", "allow_setattr", "allow_delattr", "allow_pickle",
    "allow_safe_attrs", "allow_exposed_attrs", "include_local_traceback", "include_local_version",
)
_COUNTS = ("max_frame_size", "max_pending_requests", "max_depth", "max_lent_objects", "max_proxies", "iter_batch")
_SECONDS = (("sync_request_timeout", True), ("handshake_timeout", False), ("write_timeout", True))


ConfigArg = Union[Config, Mapping[str, Any], None]
_KEYS = frozenset(field.name for field in fields(Config))


def make_config(value: ConfigArg = None, **overrides: Any) -> Config:
    """Build a :class:`Config` from None, a Config, or a plain dict (unknown keys raise).

    A Config is immutable: the one a given dict of hashable values makes is built (and
    checked) once, and shared by the connections made with an equal dict (each connect
    used to spend ~5 us rebuilding it)."""
    if value is None:
        config = _built(())
    elif isinstance(value, Config):
        config = value
    else:
        try:  # (each value's type in the key: 1 and True are equal, and not equally valid)
            key = (tuple(value.items()), tuple(map(type, value.values())))
            config = _BY_ITEMS[key]
        except KeyError:
            config = _from_mapping(value)
            if len(_BY_ITEMS) >= _BY_ITEMS_KEPT:
                _BY_ITEMS.clear()
            _BY_ITEMS[key] = config
        except TypeError:  # an unhashable value: built each time
            config = _from_mapping(value)
    return replace(config, **overrides) if overrides else config


def _from_mapping(value: Mapping[str, Any]) -> Config:
    unknown = set(value) - _KEYS
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; valid keys are {sorted(_KEYS)}")
    try:
        return _built(tuple((key, type(item), item) for key, item in sorted(value.items())))
    except TypeError:  # an unhashable value: built each time
        return Config(**value)


# A mapping's items, in its order, with their types -> the Config it makes: the first look
# (a connect with the same dict literal finds it without sorting or checking its keys again)
_BY_ITEMS: Final[dict[tuple[tuple[Any, ...], tuple[type, ...]], Config]] = {}
_BY_ITEMS_KEPT: Final = 64


@lru_cache(maxsize=64)
def _built(items: tuple[tuple[str, type, Any], ...]) -> Config:
    return Config(**{key: item for key, _, item in items})
