"""The governance policy: the action catalogue (with each action's declared input and providers) and the
profiles (which actions, contexts and providers each may use, and its limits).

Evaluation is a pure function of (policy, profile, action, context), so it is easy to test exhaustively and
its answer always names the rule that decided it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from techno_gate.domain.reasons import Reason

_NAME = r"[a-z][a-z0-9_]{0,63}"  # matched against the whole name (re.fullmatch): no trailing newline
_FIELD = r"[a-z][a-z0-9_]{0,63}"
_STRICT = ConfigDict(extra="forbid", frozen=True)

# In an action's providers: every provider the executor is configured with (its ListProviders), in its order.
EVERY_PROVIDER = "*"

FieldType = Literal["string", "number", "integer", "boolean", "array", "object"]


class InputField(BaseModel):
    """One declared payload field."""

    model_config = _STRICT

    type: FieldType
    required: bool = False
    description: str = ""
    max_length: PositiveInt | None = Field(None, description="strings: most characters")
    items: Literal["string", "number", "integer", "boolean"] | None = Field(None, description="arrays: item type")
    max_items: PositiveInt | None = Field(None, description="arrays: most items")


class ActionSpec(BaseModel):
    model_config = _STRICT

    description: str = Field(min_length=1)
    providers: tuple[str, ...] = Field(
        ("fake",),
        min_length=1,
        description=f"Providers to try, in order; {EVERY_PROVIDER!r} stands for every provider the executor has, "
        "in its order, that is not named before it.",
    )
    input: dict[str, InputField] = Field(default_factory=dict)


class LimitsSpec(BaseModel):
    """Limits of a profile. Per key unless named profile_*; absent means unlimited."""

    model_config = _STRICT

    requests_per_minute: PositiveInt | None = None
    burst: PositiveInt | None = Field(None, description="requests a key may send at once; default: the rate")
    max_in_flight: PositiveInt | None = None
    profile_requests_per_minute: PositiveInt | None = Field(None, description="shared by every key of the profile")


class ProfileSpec(BaseModel):
    model_config = _STRICT

    description: str = ""
    actions: tuple[str, ...] = Field(description="Action names this profile may run.")
    contexts: tuple[str, ...] = Field(("*",), min_length=1, description="Glob patterns of allowed context ids.")
    providers: tuple[str, ...] = Field(("*",), min_length=1, description="Glob patterns of allowed providers.")
    limits: LimitsSpec = LimitsSpec()


class PolicyDocument(BaseModel):
    """The YAML file's schema. Unknown keys are errors, so a typo cannot silently widen access."""

    model_config = _STRICT

    actions: dict[str, ActionSpec] = Field(min_length=1)
    profiles: dict[str, ProfileSpec] = Field(min_length=1)

    def model_post_init(self, context: object, /) -> None:
        bad_names = [n for n in [*self.actions, *self.profiles] if not re.fullmatch(_NAME, n)]
        if bad_names:
            raise ValueError(f"names must match {_NAME}: {sorted(bad_names)}")
        bad_fields = [f"{a}.{f}" for a, spec in self.actions.items() for f in spec.input if not re.fullmatch(_FIELD, f)]
        if bad_fields:
            raise ValueError(f"input field names must match {_FIELD}: {sorted(bad_fields)}")
        for name, profile in self.profiles.items():
            unknown = sorted(set(profile.actions) - set(self.actions))
            if unknown:
                raise ValueError(f"profile {name!r} names unknown actions {unknown}")


def glob_matches(value: str, pattern: str) -> bool:
    """``fnmatch`` globs, case-sensitive. Its ``*`` also matches control characters (a newline among them), so a
    value with any is matched by no pattern: ``public-*`` must not grant ``"public-x\\n"``, whatever checked the
    value before."""
    return value.isprintable() and fnmatch.fnmatchcase(value, pattern)


def _listed(action: ActionSpec, configured: Sequence[str]) -> tuple[str, ...]:
    """The action's providers in order, ``*`` standing for the configured ones not named before it."""
    named = (p for entry in action.providers for p in ((entry,) if entry != EVERY_PROVIDER else configured))
    return tuple(dict.fromkeys(named))


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    reason: Reason
    rule: str
    providers: tuple[str, ...] = ()


# Bounds the providers kept per policy: (profile, action, configured providers) are few, but the executor's
# configured list is not the policy's to bound.
_KEPT_PROVIDER_LISTS = 1024


@dataclass(frozen=True)
class Policy:
    document: PolicyDocument
    version: str
    # ``providers_for``'s answers, computed once per policy version (a new version is a new Policy): matching
    # every provider against every glob was most of a decision's cost.
    _providers: dict[tuple[str, str, tuple[str, ...]], tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_document(cls, document: PolicyDocument, source: bytes) -> Policy:
        return cls(document=document, version=hashlib.sha256(source).hexdigest()[:16])

    def action(self, name: str) -> ActionSpec | None:
        return self.document.actions.get(name)

    def profile(self, name: str) -> ProfileSpec | None:
        return self.document.profiles.get(name)

    def actions_for(self, profile: str) -> list[tuple[str, str]]:
        spec = self.document.profiles.get(profile)
        if spec is None:
            return []
        return [(name, self.document.actions[name].description) for name in spec.actions]

    def needs_configured_providers(self, action: str) -> bool:
        """Whether deciding on ``action`` needs the executor's configured providers (its list holds ``*``)."""
        spec = self.document.actions.get(action)
        return spec is not None and EVERY_PROVIDER in spec.providers

    def providers_for(
        self, profile: ProfileSpec, action: ActionSpec, configured: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """The action's providers the profile may use, in the action's order, ``*`` expanded to ``configured``."""
        return tuple(p for p in _listed(action, configured) if any(glob_matches(p, g) for g in profile.providers))

    def _allowed_providers(self, profile: str, action: str, configured: Sequence[str]) -> tuple[str, ...]:
        key = (profile, action, tuple(configured))
        providers = self._providers.get(key)
        if providers is None:
            if len(self._providers) >= _KEPT_PROVIDER_LISTS:
                self._providers.clear()
            providers = self._providers[key] = self.providers_for(
                self.document.profiles[profile], self.document.actions[action], configured
            )
        return providers

    def evaluate(
        self, profile: str, action: str, context_id: str, *, provider: str = "", configured: Sequence[str] = ()
    ) -> PolicyDecision:
        """``provider``: the one the caller asked to run on (empty: any the policy allows, in its order);
        ``configured``: the executor's providers, which ``*`` in the action's list stands for."""
        spec = self.document.profiles.get(profile)
        if spec is None:
            return PolicyDecision(False, Reason.PROFILE_UNKNOWN, f"profiles.{profile}")
        action_spec = self.document.actions.get(action)
        if action_spec is None:
            return PolicyDecision(False, Reason.ACTION_UNKNOWN, "actions")
        if action not in spec.actions:
            return PolicyDecision(False, Reason.ACTION_NOT_ALLOWED, f"profiles.{profile}.actions")
        if not any(glob_matches(context_id, pattern) for pattern in spec.contexts):
            return PolicyDecision(False, Reason.CONTEXT_NOT_ALLOWED, f"profiles.{profile}.contexts")
        providers = self._allowed_providers(profile, action, configured)
        if provider:
            if provider not in providers:  # the rule that excludes it: the action's list, or the profile's globs
                listed = provider in _listed(action_spec, configured)
                rule = f"profiles.{profile}.providers" if listed else f"actions.{action}.providers"
                return PolicyDecision(False, Reason.PROVIDER_NOT_ALLOWED, rule)
            providers = (provider,)
        if not providers:
            return PolicyDecision(False, Reason.PROVIDER_NOT_ALLOWED, f"profiles.{profile}.providers")
        return PolicyDecision(True, Reason.ALLOWED, f"profiles.{profile}", providers)
