"""Shared-key authentication of registry messages: HMAC signatures and replay protection.

Owns the signature (HMAC-SHA256 over a domain tag and the encoded message body), loading and
checking keys, and :class:`ReplayGuard`, which rejects a signed request whose timestamp lies
outside a window around the registry's clock or whose nonce was already seen inside that
window (the nonce cache is bounded, oldest first out). It decides nothing about *which*
messages must be signed (that is the handler's policy) and performs no network I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Union

__all__ = ["MAC_SIZE", "MIN_KEY_SIZE", "ReplayGuard", "check_key", "load_key", "sign", "verify"]

MAC_SIZE = 32
MIN_KEY_SIZE = 16
_DOMAIN = b"rpc-registry/1\x00"

KeyArg = Union[bytes, str, None]


def check_key(key: KeyArg) -> bytes | None:
    """Return ``key`` as bytes (a str is UTF-8 encoded), or None; refuse keys too short to trust."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"key must be bytes, str or None, not {type(key).__name__}")
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(f"a registry key must be at least {MIN_KEY_SIZE} bytes long")
    return bytes(key)


def load_key(path: str | Path) -> bytes:
    """Read a key file: its bytes, without surrounding whitespace (so ``echo secret > f`` works)."""
    key = check_key(Path(path).read_bytes().strip())
    assert key is not None
    return key


def sign(key: bytes, body: bytes) -> bytes:
    """The signature of an encoded message body under ``key``."""
    return hmac.new(key, _DOMAIN + body, hashlib.sha256).digest()


def verify(key: bytes, body: bytes, mac: bytes) -> bool:
    """True when ``mac`` is the signature of ``body`` under ``key`` (constant-time compare)."""
    return len(mac) == MAC_SIZE and hmac.compare_digest(sign(key, body), mac)


class ReplayGuard:
    """Rejects stale or replayed signed requests.

    A request is fresh when its timestamp is within ``max_skew`` seconds of ``wallclock()``
    and its nonce has not been seen within that window. Nonces are remembered until their
    window has passed, at most ``capacity`` of them (the oldest are forgotten first). Only
    requests whose signature was already verified are checked, so nobody without the key can
    fill the cache. Not thread-safe: the caller serializes access.
    """

    def __init__(self, max_skew: float = 60.0, capacity: int = 4096, wallclock: Callable[[], float] = time.time) -> None:
        if max_skew <= 0 or capacity < 1:
            raise ValueError("max_skew must be > 0 and capacity >= 1")
        self.max_skew = max_skew
        self.capacity = capacity
        self._wallclock = wallclock
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # nonce -> forget after

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: bytes, timestamp: float) -> str | None:
        """Record ``nonce``; return None when the request is fresh, else why it is refused."""
        now = self._wallclock()
        if not abs(now - timestamp) <= self.max_skew:  # also refuses NaN
            return f"timestamp {now - timestamp:+.1f} s away from the registry's clock"
        seen = self._seen
        while seen:  # forget nonces whose window has passed (they are in insertion order)
            oldest, forget_after = next(iter(seen.items()))
            if forget_after > now and len(seen) < self.capacity:
                break
            del seen[oldest]
        if nonce in seen:
            return "replayed request"
        seen[nonce] = now + 2 * self.max_skew
        return None
