"""Coverage-guided fuzzing of the receive path with atheris (libFuzzer for Python).

Usage (from the repository root; see fuzz/README.md)::

    python fuzz/atheris_fuzz.py TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is ``value``, ``frames`` or ``service`` (see ``fuzz/targets.py``). With ``-seed_corpus``
absent the fuzzer starts from :func:`fuzz.targets.seeds`, written to a fresh temporary corpus
directory unless corpus directories are given. A crash is saved by libFuzzer as
``crash-<sha1>``; turn it into a regression test in ``tests/adversarial/test_fuzz.py``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in ("value", "frames", "service"):
        sys.exit(__doc__)
    name = argv.pop(1)
    sys.path[:0] = [str(REPO), *(str(src) for src in sorted((REPO / "packages").glob("*/src")))]
    atheris: Any = importlib.import_module("atheris")
    with atheris.instrument_imports(include=["rpc_protocol", "rpc_service", "fuzz"]):
        targets = importlib.import_module("fuzz.targets")
    logging.getLogger("rpc_service").setLevel(logging.CRITICAL)  # a dropped client logs a warning
    target: Callable[[bytes], None] = getattr(targets, f"{name}_target")
    if not any(not arg.startswith("-") for arg in argv[1:]):  # no corpus given: start from the seeds
        corpus = tempfile.mkdtemp(prefix=f"rpc-fuzz-{name}-")
        for index, seed in enumerate(targets.seeds()):
            Path(corpus, f"seed-{index}").write_bytes(seed)
        argv.append(corpus)
        print(f"corpus: {corpus}", file=sys.stderr)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    atheris.Setup(argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
