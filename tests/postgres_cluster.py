"""Restarting the machine's PostgreSQL cluster, for the tests that prove a restart loses nothing. A restart
disturbs every other test using PostgreSQL at that moment: CI runs the suite serially, so only the restarting
test sees it. Needs root (or the postgres user) and Debian's cluster tools; a test fails, never skips, without
them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

# The cluster the tests' PostgreSQL runs as (`pg_lsclusters`).
CLUSTER = os.environ.get("TECHNO_TEST_POSTGRES_CLUSTER", "15 main").split()


def require_cluster_tools() -> None:
    for tool in ("pg_ctlcluster", "pg_isready"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is required to restart PostgreSQL (Debian's postgresql-common / postgresql-client)")


def pg_isready(url: str) -> bool:
    return subprocess.run(["pg_isready", "-q", "-d", url], check=False, timeout=10).returncode == 0


def wait_until_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pg_isready(url):
        if time.monotonic() > deadline:
            raise AssertionError(f"PostgreSQL is not ready {timeout:g} s after its restart")
        time.sleep(0.2)


def pg_ctlcluster(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pg_ctlcluster", *CLUSTER, action], capture_output=True, text=True, check=False, timeout=60)


def ensure_running(libpq_url: str) -> None:
    """PostgreSQL is up again, whatever a test did to it."""
    if not pg_isready(libpq_url):
        pg_ctlcluster("start")  # a no-op error when it is merely still starting
    wait_until_ready(libpq_url)
