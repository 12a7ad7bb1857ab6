"""Running the real Prometheus tool chain in the infra tests: the binaries are required (a missing one fails the
test, never skips it), and a server is used only once its ``/-/ready`` answers."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

READY_SECONDS = 30.0


def required_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is required: apt-get install prometheus prometheus-alertmanager (or make obs-tools)")
    return path


@contextlib.contextmanager
def serving(command: list[str], url: str, log: Path) -> Iterator[None]:
    """Run ``command`` (Prometheus or Alertmanager listening at ``url``) for the block, once it is ready; its
    output goes to ``log``, shown when it exits early or is not ready in time."""
    with log.open("w") as output, subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT) as process:
        try:
            _wait_ready(url, process, Path(command[0]).name, log)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling interval, not synchronisation: the deadline bounds the wait
    pytest.fail(f"{url} not ready within {READY_SECONDS}s:\n{log.read_text()}")
