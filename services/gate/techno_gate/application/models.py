"""Which providers (with their models) a caller may run an action on: ``ListModels``, the catalogue behind
``ProcessRequest.provider`` and the OpenAI-compatible ``model``.

The answer is the policy's: the action's providers (``*`` standing for every provider the executor has) that the
caller's profile allows, in the action's order; the models are the executor's. A provider the policy allows but
no executor is configured with is left out: a request for it could not run. Like ``ListActions`` it needs only an
authenticated caller and is not recorded (it decides nothing); an action outside the catalogue is
``ACTION_UNKNOWN``, one the profile may not run ``ACTION_NOT_ALLOWED``, as ``Process`` would answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from techno_core import errors
from techno_gate.application.ports import PolicySource, ProviderInfo
from techno_gate.application.providers import ProviderCatalogue
from techno_gate.domain.principal import Principal
from techno_gate.domain.reasons import Reason


@dataclass
class Models:
    policies: PolicySource
    providers: ProviderCatalogue

    async def for_action(self, principal: Principal, action: str) -> list[ProviderInfo]:
        policy = self.policies.current
        profile, spec = policy.profile(principal.profile), policy.action(action)
        if profile is None:
            raise errors.PermissionDenied(
                reason=Reason.PROFILE_UNKNOWN, message="the caller's governance profile is not in the policy"
            )
        if spec is None:
            raise errors.InvalidArgument(
                reason=Reason.ACTION_UNKNOWN,
                message="the action does not exist",
                violations=[errors.FieldViolation("action", "must be an action of ListActions")],
            )
        if action not in profile.actions:
            raise errors.PermissionDenied(
                reason=Reason.ACTION_NOT_ALLOWED, message="the action is not allowed for this profile"
            )
        configured = {p.name: p for p in await self.providers.providers()}
        allowed = policy.providers_for(profile, spec, tuple(configured))
        return [configured[name] for name in allowed if name in configured]
