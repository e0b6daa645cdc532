"""Tests of ``rpc_protocol``, the sans-I/O wire layer."""
