"""Command line of the benchmark: run the workloads on each stack, print the tables, write JSON.

This module owns argument parsing, the order in which stacks and workloads run, turning errors
and missing libraries into ``n/a``/``error`` cells, and formatting. It must not time anything
itself (that is :mod:`bench.workloads`) and must stay runnable as ``python bench/run.py`` from
the repository root, from the hatch ``bench`` environment or from a plain virtualenv.

Run ``python bench/run.py --help`` for the options; bench/README.md explains the workloads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))
try:  # the hatch env installs the workspace packages; a plain venv gets them from the tree
    import rpc_service  # noqa: F401
except ImportError:
    for _src in sorted((_REPO / "packages").glob("*/src")):
        if str(_src) not in sys.path:
            sys.path.append(str(_src))

from bench.procs import raise_fd_limit  # noqa: E402
from bench.stacks import STACK_MODULES  # noqa: E402
from bench.workloads import (  # noqa: E402
    DEFAULT,
    FIGURES,
    QUICK,
    WORKLOADS,
    Figure,
    Measurement,
    Settings,
    StackRun,
)

REFERENCE = "raw"
#: File descriptors kept free for everything that is not an idle connection.
FD_SLACK = 256
CELL_REASON_MAX = 40


@dataclasses.dataclass
class StackResult:
    name: str
    module: str
    reason: str | None = None  # set when the stack could not be loaded
    info: dict[str, str] = dataclasses.field(default_factory=dict)
    measurements: dict[int, Measurement] = dataclasses.field(default_factory=dict)
    errors: dict[int, str] = dataclasses.field(default_factory=dict)
    seconds: dict[int, float] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- running

def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, ImportError) and first:  # "No module named 'rpyc'" says it all
        return first
    return f"{type(exc).__name__}: {first}".rstrip(": ")


def run_stack(name: str, settings: Settings, workloads: list[int]) -> StackResult:
    module = STACK_MODULES[name]
    result = StackResult(name, module)
    try:
        run = StackRun(module, settings)
    except Exception as exc:  # ImportError above all, but any failure to load counts
        result.reason = short_error(exc)
        log(f"[{name}] n/a: {result.reason}")
        return result
    result.info = run.stack.describe()
    log(f"[{name}] {', '.join(f'{k}={v}' for k, v in result.info.items())}")
    try:
        for number in workloads:
            t0 = time.monotonic()
            try:
                measurement = WORKLOADS[number](run)
            except Exception as exc:
                result.errors[number] = short_error(exc)
                log(f"[{name}] workload {number}: error: {result.errors[number]}")
            else:
                result.measurements[number] = measurement
                shown = ", ".join(f"{k}={v:.4g}" for k, v in measurement.figures.items())
                log(f"[{name}] workload {number}: {shown}")
            result.seconds[number] = time.monotonic() - t0
    finally:
        run.close()
    return result


# --------------------------------------------------------------------------- formatting

def fmt_value(value: float) -> str:
    if value >= 10000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    if ratio >= 0.1:
        return f"{ratio:.2f}x"
    return f"{ratio:.2g}x"


def cost_ratio(figure: Figure, value: float, reference: float) -> float | None:
    """How many times costlier ``value`` is than ``reference`` (>1 = slower or heavier)."""
    if value <= 0 or reference <= 0:
        return None
    return value / reference if figure.lower_is_better else reference / value


def figure_value(result: StackResult, figure: Figure) -> float | None:
    measurement = result.measurements.get(figure.workload)
    return None if measurement is None else measurement.figures.get(figure.key)


def missing_cell(result: StackResult, figure: Figure) -> str:
    if result.reason is not None:
        reason = result.reason
        return f"n/a ({reason[:CELL_REASON_MAX]}{'...' if len(reason) > CELL_REASON_MAX else ''})"
    error = result.errors.get(figure.workload)
    if error is not None:
        return f"error ({error[:CELL_REASON_MAX]}{'...' if len(error) > CELL_REASON_MAX else ''})"
    return "-"


def row_label(figure: Figure, settings: Settings) -> str:
    label = figure.label
    if figure.workload == 7:
        label = label.replace("idle conns", f"{settings.idle_connections} idle conns")
    if figure.workload == 5:
        label = label.replace("8 clients", f"{settings.concurrent_clients} clients")
    return f"{label} ({figure.unit})"


def render(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [" | ".join(h.ljust(w) if i == 0 else h.rjust(w)
                        for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    lines.append("-+-".join("-" * w for w in widths))
    for row in rows:
        lines.append(" | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def figures_table(results: list[StackResult], figures: list[Figure], settings: Settings) -> str:
    reference = next((r for r in results if r.name == REFERENCE), None)
    rows: list[list[str]] = []
    for figure in figures:
        row = [row_label(figure, settings)]
        ref_value = figure_value(reference, figure) if reference is not None else None
        for result in results:
            value = figure_value(result, figure)
            if value is None:
                row.append(missing_cell(result, figure))
                continue
            cell = fmt_value(value)
            measurement = result.measurements[figure.workload]
            opened = measurement.details.get("opened")
            if figure.workload == 7 and opened is not None and opened != settings.idle_connections:
                cell += f" [{opened} conns]"
            if result is not reference and ref_value is not None:
                ratio = cost_ratio(figure, value, ref_value)
                if ratio is not None:
                    cell += f" ({fmt_ratio(ratio)})"
            row.append(cell)
        rows.append(row)
    return render(["workload"] + [r.name for r in results], rows)


def ratio_table(subject: StackResult, others: list[StackResult], figures: list[Figure],
                settings: Settings) -> str:
    rows: list[list[str]] = []
    for figure in figures:
        row = [row_label(figure, settings).rsplit(" (", 1)[0]]
        mine = figure_value(subject, figure)
        for other in others:
            theirs = figure_value(other, figure)
            if mine is None:
                row.append(missing_cell(subject, figure))
            elif theirs is None:
                row.append(missing_cell(other, figure))
            else:
                ratio = cost_ratio(figure, mine, theirs)
                row.append("-" if ratio is None else fmt_ratio(ratio))
        rows.append(row)
    return render(["workload"] + [f"{subject.name} vs {o.name}" for o in others], rows)


def ratio_json(results: list[StackResult], figures: list[Figure]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in results:
        for b in results:
            if a is b:
                continue
            pair: dict[str, float] = {}
            for figure in figures:
                va, vb = figure_value(a, figure), figure_value(b, figure)
                if va is not None and vb is not None:
                    ratio = cost_ratio(figure, va, vb)
                    if ratio is not None:
                        pair[figure.key] = ratio
            if pair:
                out[f"{a.name}/{b.name}"] = pair
    return out


# --------------------------------------------------------------------------- CLI

def parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark rpc_service against a raw socket floor, RPyC, Pyro5 and "
                    "multiprocessing.managers.")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few iterations, about 30 s in all")
    parser.add_argument("--only", metavar="STACKS", type=parse_list,
                        default=list(STACK_MODULES),
                        help=f"comma-separated stacks to run (default: {','.join(STACK_MODULES)})")
    parser.add_argument("--workloads", metavar="N,N", type=parse_list,
                        default=[str(n) for n in WORKLOADS],
                        help="comma-separated workload numbers 1-7 (default: all)")
    parser.add_argument("--json", metavar="PATH", type=Path,
                        help="write every raw figure, sample and setting to PATH")
    parser.add_argument("--idle-conns", metavar="N", type=int,
                        help="idle connections held open in workload 7 (default 1000; 50 with "
                             "--quick; lowered automatically when the fd limit is too low)")
    parser.add_argument("--subject", default="rpc", metavar="STACK",
                        help="stack compared with each other one in the ratio table "
                             "(default: rpc)")
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through every finally: children get reaped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    unknown = [s for s in args.only if s not in STACK_MODULES]
    if unknown:
        log(f"unknown stack(s): {', '.join(unknown)}; known: {', '.join(STACK_MODULES)}")
        return 2
    try:
        workloads = sorted({int(w) for w in args.workloads})
    except ValueError:
        log(f"--workloads takes numbers, got {args.workloads}")
        return 2
    if not workloads or any(w not in WORKLOADS for w in workloads):
        log(f"--workloads takes numbers among {sorted(WORKLOADS)}")
        return 2
    stacks = [s for s in STACK_MODULES if s in args.only]  # table order, not argument order

    settings = QUICK if args.quick else DEFAULT
    if args.idle_conns is not None:
        settings = dataclasses.replace(settings, idle_connections=max(1, args.idle_conns))
    if 7 in workloads:
        limit = raise_fd_limit(settings.idle_connections + FD_SLACK)
        if limit < settings.idle_connections + FD_SLACK:
            lowered = max(10, min(200, limit - FD_SLACK))
            log(f"fd limit {limit} is too low for {settings.idle_connections} idle connections; "
                f"using {lowered} (see --idle-conns)")
            settings = dataclasses.replace(settings, idle_connections=lowered)

    log(f"bench: stacks={','.join(stacks)} workloads={','.join(map(str, workloads))} "
        f"mode={'quick' if args.quick else 'default'} cpus={os.cpu_count()}")
    started = time.monotonic()
    results = [run_stack(name, settings, workloads) for name in stacks]
    elapsed = time.monotonic() - started

    figures = [f for f in FIGURES if f.workload in workloads]
    print()
    print(f"Figures (ratio in parentheses: cost relative to {REFERENCE}; >1x = slower/heavier)")
    print(figures_table(results, figures, settings))
    subject = next((r for r in results if r.name == args.subject), None)
    others = [r for r in results if r is not subject]
    if subject is not None and subject.reason is not None:
        print()
        print(f"Ratios {subject.name} vs X: n/a ({subject.name} unavailable: {subject.reason})")
    elif subject is not None and others:
        print()
        print(f"Ratios {subject.name} vs X (cost of {subject.name} / cost of X; "
              f">1x = {subject.name} slower/heavier, <1x = faster/lighter)")
        print(ratio_table(subject, others, figures, settings))
    notes = [f"  {r.name}: n/a because {r.reason}" for r in results if r.reason]
    notes += [f"  {r.name}: workload {n} failed: {e}" for r in results for n, e in r.errors.items()]
    notes += [f"  {r.name}: {', '.join(f'{k}={v}' for k, v in r.info.items())}"
              for r in results if r.info]
    if notes:
        print()
        print("Notes:")
        print("\n".join(notes))
    print()
    print(f"total {elapsed:.1f} s on {os.cpu_count()} cpus, Python {platform.python_version()}")

    if args.json is not None:
        document = {
            "meta": {
                "python": sys.version,
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "mode": "quick" if args.quick else "default",
                "started_unix": time.time() - elapsed,
                "total_seconds": elapsed,
                "reference": REFERENCE,
                "ratio_meaning": "cost of A / cost of B for 'A/B'; >1 means A slower/heavier",
            },
            "settings": dataclasses.asdict(settings),
            "figures": [dataclasses.asdict(f) for f in figures],
            "stacks": {
                r.name: {
                    "module": r.module,
                    "available": r.reason is None,
                    "reason": r.reason,
                    "info": r.info,
                    "workloads": {
                        str(n): (
                            {"figures": r.measurements[n].figures,
                             "details": r.measurements[n].details,
                             "seconds": r.seconds.get(n)}
                            if n in r.measurements
                            else {"error": r.errors.get(n), "seconds": r.seconds.get(n)}
                        )
                        for n in workloads if r.reason is None
                    },
                }
                for r in results
            },
            "ratios": ratio_json(results, figures),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
