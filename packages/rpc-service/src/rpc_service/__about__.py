"""The version of the ``rpc-service`` distribution (read by hatchling and ``hatch version``)."""

from __future__ import annotations

__version__ = "0.1.0"
