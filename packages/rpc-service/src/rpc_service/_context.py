"""The call context: deadlines, cancellation and the trace a call belongs to.

Owns the public ``deadline(seconds)``, ``remaining()`` and ``cancelled()``, and the one
context variable behind them (``CURRENT``, a :mod:`contextvars` variable, so each thread and
each asyncio task has its own). A call made while it is set carries a call context on the
wire (protocol version 2: the budget left, a W3C traceparent); serving a request that
carried one sets it for the handler, so calls the handler makes (callbacks included)
inherit what is left. It also decides whether tracing is on for a connection
(``tracer_for``); the OpenTelemetry code itself is in ``_otel``, imported only then. It
sends nothing itself: the drivers read ``CURRENT`` (one ``get()`` per call: None is the plain
path) and turn it into frames.
"""

from __future__ import annotations

import importlib.util
import time
from contextvars import ContextVar, Token
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final

from rpc_protocol import CallContext

from ._errors import DeadlineExceeded

if TYPE_CHECKING:
    from ._config import Config

__all__ = [
    "CURRENT",
    "CallState",
    "MAX_SECONDS",
    "Served",
    "cancelled",
    "deadline",
    "expired_error",
    "import_tracing",
    "remaining",
    "serving",
    "serving_state",
    "tracer_for",
    "wire_context",
]

_monotonic: Final = time.monotonic
_new_tuple: Final = tuple.__new__


class CallState:
    """What ``CURRENT`` holds: the deadline (``time.monotonic()`` seconds, or None), the
    request being served (for ``cancelled()``; a :class:`Served` is its own), and a
    traceparent to pass on (the caller's, when this side does not trace itself)."""

    __slots__ = ("deadline", "served", "traceparent", "entered", "token")
    entered: deadline | None  # the deadline whose __enter__ set it, with `token`
    token: Token[CallState | None] | None

    def __init__(self, deadline: float | None, served: Served | None = None, traceparent: str | None = None) -> None:
        self.deadline = deadline
        self.served = served
        self.traceparent = traceparent
        self.entered = None
        self.token = None


class Served(CallState):
    """The state a handler serving a request of the peer's runs under (one object per
    request served with a call context): the caller's deadline and traceparent, whether the
    peer cancelled it, and (threaded driver) the connection to read a CANCEL from when
    nobody else reads. Its ``served`` is None (it would be itself: :func:`serving`).
    The fast path (``_fastpath._serve_taken``) makes one without ``__init__`` (per call): a new slot
    must be set there too."""

    __slots__ = ("cancelled", "conn", "span")

    def __init__(self, deadline: float | None, traceparent: str | None = None, conn: Any = None) -> None:
        self.deadline = deadline
        self.served = None
        self.traceparent = traceparent
        self.cancelled = False
        self.conn = conn  # threaded driver: its _poll_cancels() reads what arrived
        self.span: Any = None  # the SERVER span (tracing), ended with the answer


def serving(state: CallState) -> Served | None:
    """The request being served under ``state`` (None: none)."""
    return state if type(state) is Served else state.served


CURRENT: Final[ContextVar[CallState | None]] = ContextVar("rpc_service.call", default=None)
_current: Final = CURRENT.get
_set_current: Final = CURRENT.set
_reset_current: Final = CURRENT.reset
_new_object: Final = object.__new__

#: The longest deadline (about 317 000 years): a longer one, infinity included, is this one,
#: so that its budget in microseconds always fits the wire's 64 bits.
MAX_SECONDS: Final = 1e13


class deadline:  # noqa: N801  # a context manager named as a function, like contextlib's
    """``with rpc_service.deadline(seconds):`` every call made inside, from this thread or
    asyncio task, carries the time left to the peer and gives up (``DeadlineExceeded``)
    when it runs out; the peer is told to cancel. Nested deadlines keep the earlier one,
    so a handler serving a call with a deadline can only shorten it. ``seconds`` may be 0
    or negative (already passed) or infinite (no limit in practice: at most
    :data:`MAX_SECONDS` are carried)."""

    __slots__ = ("_seconds",)

    def __init__(self, seconds: float) -> None:
        kind = type(seconds)
        if kind is not float and kind is not int:  # (the common cases first: one check per call)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise ValueError(f"deadline() needs a number of seconds, not {seconds!r}")
        if not -MAX_SECONDS < seconds < MAX_SECONDS:  # (one comparison per call)
            if seconds != seconds:
                raise ValueError(f"deadline() needs a number of seconds, not {seconds!r}")  # NaN
            seconds = MAX_SECONDS if seconds > 0 else -MAX_SECONDS  # (infinities and huge ints too)
        self._seconds = seconds if kind is float or kind is int else float(seconds)  # (no call for the common cases)

    def __enter__(self) -> deadline:
        end = _monotonic() + self._seconds
        outer = _current()
        state = _new_object(CallState)  # (CallState(end, ...) without its __init__ frame: per call)
        if outer is None:
            state.served = state.traceparent = None
        else:
            if outer.deadline is not None and outer.deadline < end:
                end = outer.deadline
            state.served = serving(outer)
            state.traceparent = outer.traceparent
        state.deadline = end
        state.entered = self  # (what __exit__ finds in this thread's or task's context: the
        state.token = _set_current(state)  # object itself may be entered by several at once)
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        state = _current()
        if type(state) is not CallState or state.entered is not self:  # (a Served is never a deadline's)
            raise RuntimeError("deadline exited without being entered (in this thread or task)")
        token = state.token
        assert token is not None
        _reset_current(token)

    def __repr__(self) -> str:
        return f"deadline({self._seconds!r})"


def remaining() -> float | None:
    """Seconds left before the current deadline (0.0 once passed); None without one.

    In a handler serving a call that carried a deadline, this is what the caller left
    it (less the time the request took to arrive)."""
    state = CURRENT.get()
    if state is None or state.deadline is None:
        return None
    return max(0.0, state.deadline - _monotonic())


def cancelled() -> bool:
    """True in a handler whose caller gave up: the peer cancelled the request, or the
    deadline it carried has passed. A long handler polls it and stops early (its answer
    would be dropped by the caller anyway). Outside a handler: whether the current
    ``deadline`` has passed (False without one)."""
    state = CURRENT.get()
    if state is None:
        return False
    served = serving(state)
    if served is not None:
        if not served.cancelled and served.conn is not None:
            served.conn._poll_cancels()
        if served.cancelled:
            return True
    return state.deadline is not None and state.deadline <= _monotonic()


def wire_context(state: CallState | None, now: float, traceparent: str | None = None) -> CallContext | None:
    """The call context a call made now under ``state`` carries (None: nothing to carry)."""
    budget: int | None = None
    if state is not None:
        if state.deadline is not None:
            left = state.deadline - now
            budget = 0 if left <= 0 else int(min(left, MAX_SECONDS) * 1_000_000)  # (MAX_SECONDS: a peer's budget may be longer)
        if traceparent is None:
            traceparent = state.traceparent
    if budget is None and traceparent is None:
        return None
    return _new_tuple(CallContext, (budget, traceparent))  # (CallContext(budget, traceparent), without its Python __new__: per call)


def serving_state(context: CallContext | None, conn: Any = None) -> Served:
    """The state a handler runs under, serving a request that carried ``context``
    (``conn``: the threaded driver's connection, see :class:`Served`): the request's own,
    whatever the serving thread waits on meanwhile (a thread waiting on a call of its own
    serves callbacks, which may belong to another thread's call)."""
    end: float | None = None
    if context is not None and context.budget_us is not None:
        end = _monotonic() + context.budget_us / 1_000_000
    return Served(end, context.traceparent if context is not None else None, conn)


def expired_error(what: str = "the call") -> DeadlineExceeded:
    return DeadlineExceeded(f"the deadline passed before {what} was answered")


# -- tracing ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _otel_installed() -> bool:
    """Whether opentelemetry-api is installed (found without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def import_tracing(config: Config) -> None:
    """Import now what :func:`tracer_for` would import for ``config`` on a connection's
    first use (a forking server does, before it forks: see ``ForkingServer``)."""
    if config.tracing is not False and _otel_installed():
        try:
            importlib.import_module("rpc_service._otel")
        except ImportError:
            pass  # (tracer_for says what is missing, when tracing=True)


def tracer_for(config: Config) -> Any:
    """The tracer of a connection with ``config`` (``_otel.Tracer``), or None: tracing off.

    ``tracing=None`` (the default) traces when opentelemetry-api is installed (the
    ``rpc-service[otel]`` extra) *and* a tracer provider is in place when the connection is
    made (``tracer_provider`` in the config, or one set globally: the SDK configured), so an
    application that merely has the API installed pays no span and no per-call cost (only
    the import of ``_otel`` and the API on its first connection, and a look for a provider
    on each new one); without the package ``_otel`` is never imported. ``tracing=True`` requires the package (the global provider,
    even the API's default one), ``False`` turns tracing off.
    """
    tracing = config.tracing
    if tracing is False or (tracing is None and not _otel_installed()):
        return None
    try:
        otel = _otel_module()
    except ImportError as exc:
        raise ValueError("tracing=True needs opentelemetry-api: install rpc-service[otel]") from exc
    provider = config.tracer_provider
    if tracing is None and provider is None and not otel.provider_configured():
        return None
    return otel.Tracer(provider)


@lru_cache(maxsize=1)
def _otel_module() -> Any:
    """``rpc_service._otel``, imported on first need (an import statement per connection
    costs more than this cache)."""
    return importlib.import_module("rpc_service._otel")
