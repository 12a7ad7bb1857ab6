"""Loads the policy from its YAML file and validates it against the schema."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import ValidationError

from techno_gate.domain.policy import Policy, PolicyDocument

log = logging.getLogger(__name__)


class PolicyError(Exception):
    """The policy file is missing or invalid; the message says where."""


def load_policy(path: Path) -> Policy:
    try:
        source = path.read_bytes()
    except OSError as error:
        raise PolicyError(f"cannot read policy file {path}: {error.strerror}") from error
    try:
        document = PolicyDocument.model_validate(yaml.safe_load(source))
    except (yaml.YAMLError, ValidationError, ValueError) as error:
        raise PolicyError(f"invalid policy file {path}: {error}") from error
    return Policy.from_document(document, source)


class StaticPolicySource:
    """A fixed policy (tests, dry tooling)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    @property
    def current(self) -> Policy:
        return self._policy


class ReloadablePolicySource:
    """The policy file, loaded at start-up (an invalid file refuses to start) and again on ``reload()``
    (SIGHUP). A reload that fails validation keeps the last good policy, logs why and counts it; a good one
    replaces ``current`` in one assignment, so a request sees one whole policy or the other."""

    def __init__(self, path: Path, *, on_reload: Callable[[bool], None] = lambda ok: None) -> None:
        self._path = path
        self._on_reload = on_reload
        self._policy = load_policy(path)

    @property
    def current(self) -> Policy:
        return self._policy

    async def reload(self) -> None:
        try:
            policy = await asyncio.to_thread(load_policy, self._path)  # file I/O off the event loop
        except PolicyError as error:
            log.error("policy reload refused; keeping version %s", self._policy.version, extra={"error": str(error)})
            self._on_reload(False)
            return
        previous, self._policy = self._policy, policy
        log.info("policy reloaded", extra={"previous_version": previous.version, "version": policy.version})
        self._on_reload(True)
