"""Loads the policy from its YAML file and validates it against the schema."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from techno_gate.domain.policy import Policy, PolicyDocument


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
    """The policy loaded at start-up. (Hot reload on SIGHUP replaces ``current`` atomically.)"""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    @property
    def current(self) -> Policy:
        return self._policy
