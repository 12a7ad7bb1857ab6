"""The governance policy: which actions exist, and which actions and contexts each profile may use.

Evaluation is a pure function of (policy, profile, action, context), so it is easy to test exhaustively and
its answer always names the rule that decided it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from techno_gate.domain.reasons import Reason

_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class ActionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(min_length=1)


class ProfileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    actions: tuple[str, ...] = Field(description="Action names this profile may run.")
    contexts: tuple[str, ...] = Field(
        ("*",), min_length=1, description="Glob patterns of context ids this profile may use."
    )


class PolicyDocument(BaseModel):
    """The YAML file's schema. Unknown keys are errors, so a typo cannot silently widen access."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actions: dict[str, ActionSpec] = Field(min_length=1)
    profiles: dict[str, ProfileSpec] = Field(min_length=1)

    def model_post_init(self, context: object, /) -> None:
        bad_names = [n for n in [*self.actions, *self.profiles] if not re.match(_NAME, n)]
        if bad_names:
            raise ValueError(f"names must match {_NAME}: {sorted(bad_names)}")
        for name, profile in self.profiles.items():
            unknown = sorted(set(profile.actions) - set(self.actions))
            if unknown:
                raise ValueError(f"profile {name!r} names unknown actions {unknown}")


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    reason: Reason
    rule: str


@dataclass(frozen=True)
class Policy:
    document: PolicyDocument
    version: str

    @classmethod
    def from_document(cls, document: PolicyDocument, source: bytes) -> Policy:
        return cls(document=document, version=hashlib.sha256(source).hexdigest()[:16])

    def knows_action(self, action: str) -> bool:
        return action in self.document.actions

    def actions_for(self, profile: str) -> list[tuple[str, str]]:
        spec = self.document.profiles.get(profile)
        if spec is None:
            return []
        return [(name, self.document.actions[name].description) for name in spec.actions]

    def evaluate(self, profile: str, action: str, context_id: str) -> PolicyDecision:
        spec = self.document.profiles.get(profile)
        if spec is None:
            return PolicyDecision(False, Reason.PROFILE_UNKNOWN, f"profiles.{profile}")
        if action not in self.document.actions:
            return PolicyDecision(False, Reason.ACTION_UNKNOWN, "actions")
        if action not in spec.actions:
            return PolicyDecision(False, Reason.ACTION_NOT_ALLOWED, f"profiles.{profile}.actions")
        if not any(fnmatch.fnmatchcase(context_id, pattern) for pattern in spec.contexts):
            return PolicyDecision(False, Reason.CONTEXT_NOT_ALLOWED, f"profiles.{profile}.contexts")
        return PolicyDecision(True, Reason.ALLOWED, f"profiles.{profile}")
