"""Policy reloads, on SIGHUP or when the policy file changes, each recorded as an ``ADMIN`` ``policy.reload``
event: ``SUCCEEDED`` with the versions before and after, or ``REFUSED`` (the file is invalid; the last good
policy stays) with the reason. The principal is the trigger, ``system:sighup`` or ``system:policy-file``: the gate
cannot know who edited the file or sent the signal (the ConfigMap's history or the shell's can).

A reload is applied even when memory cannot record it: the policy in force is the file's, and every decision
records the version it was made under, so the trail shows the change either way; the missing event is logged and
counted (``gate_audit_write_failures_total{kind="ADMIN"}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from techno_gate.application.admin_audit import REFUSED, SUCCEEDED, AdminAudit, AdminOperation

SIGNAL = "system:sighup"
FILE = "system:policy-file"
POLICY_INVALID = "POLICY_INVALID"
_MAX_ERROR_LENGTH = 1000


@dataclass(frozen=True)
class PolicyReload:
    """What one reload did: ``version`` is the policy in force after it (``previous_version`` when refused)."""

    source: str
    previous_version: str
    version: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class ReloadablePolicies(Protocol):
    async def reload(self) -> PolicyReload:
        """Read the file again and apply it if valid."""
        ...

    async def reload_if_changed(self) -> PolicyReload | None:
        """``reload`` when the file's content differs from the last read (None otherwise)."""
        ...


@dataclass
class PolicyReloads:
    policies: ReloadablePolicies
    audit: AdminAudit

    async def on_signal(self) -> None:
        await self._record(SIGNAL, await self.policies.reload())

    async def on_file_change(self) -> None:
        if (reload := await self.policies.reload_if_changed()) is not None:
            await self._record(FILE, reload)

    async def _record(self, principal_id: str, reload: PolicyReload) -> None:
        attributes: dict[str, Any] = {
            "file": reload.source,
            "previous_version": reload.previous_version,
            "version": reload.version,
        }
        if reload.error:
            attributes["error"] = reload.error[:_MAX_ERROR_LENGTH]
        operation = AdminOperation("policy.reload", "policy", attributes)
        if reload.ok:
            await self.audit.record(principal_id, operation, SUCCEEDED)
        else:
            await self.audit.record(principal_id, operation, REFUSED, POLICY_INVALID)
