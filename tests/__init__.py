"""The rpc stack's test tree: one folder per layer, plus ``workspace`` for cross-package checks."""
