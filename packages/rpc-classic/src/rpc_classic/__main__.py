"""``python -m rpc_classic``: the ``rpc-classic`` command line (see :mod:`rpc_classic._cli`).

Owns nothing but the entry point; all argument handling lives in ``_cli``.
"""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
