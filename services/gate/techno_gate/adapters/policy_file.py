"""Loads the policy from its YAML file and validates it against the schema."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from techno_core.periodic import Periodic
from techno_gate.application.policy_reload import PolicyReload
from techno_gate.domain.policy import Policy, PolicyDocument

log = logging.getLogger(__name__)


class PolicyError(Exception):
    """The policy file is missing or invalid; the message says where."""


def read_policy_source(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise PolicyError(f"cannot read policy file {path}: {error.strerror}") from error


def parse_policy(path: Path, source: bytes) -> Policy:
    try:
        document = PolicyDocument.model_validate(yaml.safe_load(source))
    except (yaml.YAMLError, ValidationError, ValueError) as error:
        raise PolicyError(f"invalid policy file {path}: {error}") from error
    return Policy.from_document(document, source)


def load_policy(path: Path) -> Policy:
    return parse_policy(path, read_policy_source(path))


class StaticPolicySource:
    """A fixed policy (tests, dry tooling)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    @property
    def current(self) -> Policy:
        return self._policy


class ReloadablePolicySource:
    """The policy file, loaded at start-up (an invalid file refuses to start) and again on ``reload()``
    (SIGHUP) or ``reload_if_changed()`` (the file watcher). A reload that fails validation keeps the last good
    policy, logs why and counts it; a good one replaces ``current`` in one assignment, so a request sees one whole
    policy or the other."""

    def __init__(self, path: Path, *, on_reload: Callable[[bool], None] = lambda ok: None) -> None:
        self._path = path
        self._on_reload = on_reload
        source = read_policy_source(path)
        self._policy = parse_policy(path, source)
        # The digest of the content last read, valid or not: the watcher reloads only when it changes, so an
        # invalid file is refused (and recorded) once, not at every poll.
        self._seen = hashlib.sha256(source).digest()

    @property
    def current(self) -> Policy:
        return self._policy

    async def reload(self) -> PolicyReload:
        try:
            source = await asyncio.to_thread(read_policy_source, self._path)  # file I/O off the event loop
        except PolicyError as error:
            return self._refused(error)
        return self._apply(source)

    async def reload_if_changed(self) -> PolicyReload | None:
        try:
            source = await asyncio.to_thread(read_policy_source, self._path)
        except PolicyError:  # mid-swap or removed: judged at the next poll (SIGHUP still reports it)
            return None
        if hashlib.sha256(source).digest() == self._seen:
            return None
        return self._apply(source)

    def _apply(self, source: bytes) -> PolicyReload:
        self._seen = hashlib.sha256(source).digest()
        try:
            policy = parse_policy(self._path, source)
        except PolicyError as error:
            return self._refused(error)
        previous, self._policy = self._policy, policy
        log.info("policy reloaded", extra={"previous_version": previous.version, "version": policy.version})
        self._on_reload(True)
        return PolicyReload(str(self._path), previous.version, policy.version)

    def _refused(self, error: PolicyError) -> PolicyReload:
        log.error("policy reload refused; keeping version %s", self._policy.version, extra={"error": str(error)})
        self._on_reload(False)
        return PolicyReload(str(self._path), self._policy.version, self._policy.version, error=str(error))


class PolicyFileWatcher:
    """Calls ``on_tick`` (``PolicyReloads.on_file_change``) every ``interval_seconds``, so an edited policy file
    is applied without a signal.

    It polls the file's content rather than watching file-system events: a Kubernetes ConfigMap volume updates a
    file by swapping the ``..data`` symlink of its directory to a new timestamped directory, so the path keeps
    its name while its inode changes, and an inotify watch on the file would keep watching the old one. Reading
    the path and comparing a digest follows the symlink, costs one small read per interval, and works the same
    for an editor's in-place write, a rename over the file and a ConfigMap swap."""

    def __init__(self, on_tick: Callable[[], Awaitable[None]], *, interval_seconds: float) -> None:
        self._on_tick = on_tick
        self._periodic = (
            Periodic(self._tick, interval_seconds=interval_seconds, name="policy-file-watch")
            if interval_seconds > 0
            else None
        )

    async def start(self) -> None:
        if self._periodic is not None:
            await self._periodic.start()

    async def _tick(self) -> None:
        try:
            await self._on_tick()
        except Exception:  # a failed check must not end the watch
            log.exception("policy file check failed")

    async def close(self) -> None:
        if self._periodic is not None:
            await self._periodic.close()
