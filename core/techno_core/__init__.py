"""Shared concerns of every Techno service: settings, server bootstrap, health, interceptors, errors,
logging, metrics and tracing. Nothing here reads the environment or starts anything at import time."""
