"""The scope each gate RPC needs, read from ``techno_core.contract.METHOD_SCOPES``: the table the edge's OpenAPI
document states per operation, so what clients are told and what the gate enforces cannot drift apart.

A method the table does not name is refused to every caller (fail closed: a new RPC stays shut until someone
states its scope there). Methods are named in full, as in the table: ``techno.gate.v1.GateService.Process``.
"""

from __future__ import annotations

import logging

from techno_core import errors
from techno_core.contract import METHOD_SCOPES
from techno_gate.domain.principal import Principal
from techno_gate.domain.reasons import Reason

log = logging.getLogger(__name__)


def authorize(principal: Principal, method: str) -> None:
    """Refuses ``principal`` (SCOPE_MISSING) unless it holds the scope ``method`` needs ("" in the table: any
    authenticated caller)."""
    scope = METHOD_SCOPES.get(method)
    if scope is None:
        log.error("no scope is declared for %s; refused", method)  # a gate bug, not the caller's: say so once
        raise errors.PermissionDenied(
            reason=Reason.SCOPE_MISSING, message="no scope is declared for this method; it is refused to everyone"
        )
    # A table value no credential can hold (a typo) refuses everyone too: scopes are compared as strings.
    if scope and scope not in principal.scopes:
        raise errors.PermissionDenied(
            reason=Reason.SCOPE_MISSING, message=f"this needs the {scope!r} scope", metadata={"scope": scope}
        )


class Caller:
    """An authenticated principal calling ``method``, its scope not checked yet: for a use case that records a
    refusal itself (an admin change is audited REFUSED), so the check happens there, from the same table. The
    principal is had only through ``authorized``, so no use case can act for a caller without checking it."""

    __slots__ = ("_principal", "method")

    def __init__(self, principal: Principal, method: str) -> None:
        self._principal = principal
        self.method = method

    @property
    def id(self) -> str:
        """Who asked, for the record of a refusal: never a secret."""
        return self._principal.id

    def authorized(self) -> Principal:
        authorize(self._principal, self.method)
        return self._principal
