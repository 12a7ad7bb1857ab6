"""Implementations of the executor's ports: providers and telemetry."""
