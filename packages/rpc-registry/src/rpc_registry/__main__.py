"""``python -m rpc_registry``: the same as the ``rpc-registry`` command (see ``_cli``).

Owns nothing but the entry point; it must not hold any logic of its own.
"""

from __future__ import annotations

import sys

from ._cli import main

sys.exit(main())
