"""The version of the ``rpc-tls`` distribution (read by hatchling and ``hatch version``)."""

from __future__ import annotations

__version__ = "0.1.0"
