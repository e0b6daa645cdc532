"""Benchmark harness comparing ``rpc_service`` with its peers (see bench/README.md).

This package owns timing, process management and reporting for the benchmarks; it must not be
imported by the library packages, and nothing here is part of any public API.
"""
