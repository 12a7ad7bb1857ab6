"""Runs the whole gateway locally as real processes: memory → executor → gate → edge, each started only after
the one before reports healthy. Used by ``make run``, ``make bench`` and the end-to-end tests."""
