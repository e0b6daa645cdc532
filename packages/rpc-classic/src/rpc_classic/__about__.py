"""The version of the rpc-classic distribution (read by hatch; bump it with ``hatch version``)."""

from __future__ import annotations

__version__ = "0.1.0"
