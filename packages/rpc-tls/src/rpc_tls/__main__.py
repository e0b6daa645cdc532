"""``python -m rpc_tls``: the same as the ``rpc-tls`` command (see :mod:`rpc_tls._cli`)."""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
