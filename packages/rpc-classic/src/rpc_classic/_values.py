"""Copying values across: :func:`obtain` (peer to here) and :func:`deliver` (here to peer).

Owns the choice of how a value is copied: plain data (see ``_plain``) travels packed through
the safe value codec; anything else is copied with pickle only when pickle is enabled on
*both* sides (``allow_pickle``), and otherwise refused with :class:`NotPlainDataError`.
Needs a classic peer (its ``SlaveService`` packs and unpacks on its side). It never
unpickles anything when this side's config does not allow pickle.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

from rpc_service import RemoteError, is_proxy

from ._errors import NotPlainDataError, translate_remote
from ._mock import MockClassicConnection
from ._plain import is_scalar, pack, unpack

__all__ = ["obtain", "deliver"]


def obtain(proxy: Any) -> Any:
    """A local copy of the remote object behind ``proxy`` (anything else is returned as is).

    Plain data (numbers, strings, bytes, and lists, dicts, sets, tuples of those, nested,
    shared or cyclic) is copied by value through the safe codec. Other objects need
    ``allow_pickle`` on both sides; without it :class:`NotPlainDataError` says so.
    """
    if not is_proxy(proxy):
        return proxy
    conn = proxy._rpc_conn
    try:
        return unpack(conn.root.pack(proxy))
    except RemoteError as exc:
        error = translate_remote(exc)
        if not isinstance(error, NotPlainDataError):
            raise error from None
        if not conn.config.allow_pickle:
            raise error from None
    except AttributeError:  # the peer is not a Slave: pickle is the only way
        if not conn.config.allow_pickle:
            raise NotPlainDataError(
                "obtain() needs a classic peer (SlaveService), or allow_pickle on both sides"
            ) from None
    return copy.copy(proxy)  # pickles on the peer, unpickles here (rpc_service checks allow_pickle)


def deliver(conn: Any, obj: Any) -> Any:
    """Copy the local ``obj`` to the peer; returns the peer's copy (a proxy, or the value
    itself for immutable scalars).

    Plain data travels by value through the safe codec; other objects need
    ``allow_pickle`` on both sides, else :class:`NotPlainDataError`. On a
    :class:`MockClassicConnection` ("the peer" is here) a copy of plain data, by the same codec.
    """
    if is_scalar(obj):
        return obj
    if isinstance(conn, MockClassicConnection):
        return unpack(pack(obj))
    try:
        packed = pack(obj)
    except NotPlainDataError:
        if not conn.config.allow_pickle:
            raise
        data = pickle.dumps(obj)
        try:
            return conn.root.unpickle(data)
        except RemoteError as exc:
            raise translate_remote(exc) from None
    return conn.root.unpack(packed)
