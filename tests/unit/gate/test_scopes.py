"""The scope of each gate RPC comes from one table (techno_core.contract.METHOD_SCOPES), and a method it does not
name is refused to everyone."""

from __future__ import annotations

import pytest

from techno.gate.v1 import admin_pb2, gate_pb2
from techno_core import errors
from techno_core.contract import METHOD_SCOPES
from techno_gate.application.scopes import Caller, authorize
from techno_gate.domain.principal import CredentialKind, Principal, Scope
from techno_gate.domain.reasons import Reason

SERVICES = [
    gate_pb2.DESCRIPTOR.services_by_name["GateService"],
    admin_pb2.DESCRIPTOR.services_by_name["GateAdminService"],
]
EVERY_SCOPE = frozenset(Scope)


def principal(*scopes: Scope) -> Principal:
    return Principal("key-1", CredentialKind.API_KEY, "default", frozenset(scopes))


def refusal(subject: Principal, method: str) -> errors.PermissionDenied:
    with pytest.raises(errors.PermissionDenied) as raised:
        authorize(subject, method)
    assert raised.value.reason == Reason.SCOPE_MISSING
    return raised.value


@pytest.mark.parametrize("method", [m.full_name for service in SERVICES for m in service.methods])
def test_every_gate_method_has_a_scope_a_credential_can_hold(method: str) -> None:
    assert method in METHOD_SCOPES
    assert METHOD_SCOPES[method] in {"", *(scope.value for scope in Scope)}


@pytest.mark.parametrize("method", sorted(METHOD_SCOPES))
def test_a_method_admits_exactly_the_callers_holding_its_scope(method: str) -> None:
    wanted = METHOD_SCOPES[method]
    authorize(principal(*EVERY_SCOPE), method)
    for scope in Scope:
        if wanted and scope != wanted:
            assert refusal(principal(scope), method).metadata == {"scope": wanted}
        else:
            authorize(principal(scope), method)
    if wanted:
        refusal(principal(), method)
    else:
        authorize(principal(), method)


def test_a_method_missing_from_the_table_is_refused_even_with_every_scope() -> None:
    assert "techno.gate.v1.GateService.Undeclared" not in METHOD_SCOPES
    refusal(principal(*EVERY_SCOPE), "techno.gate.v1.GateService.Undeclared")


def test_a_scope_no_credential_can_hold_refuses_everyone(monkeypatch: pytest.MonkeyPatch) -> None:
    method = "techno.gate.v1.GateAdminService.ListApiKeys"
    monkeypatch.setitem(METHOD_SCOPES, method, "admn")  # a typo in the table closes the method, never opens it
    refusal(principal(*EVERY_SCOPE), method)


def test_a_caller_gives_its_principal_only_once_it_holds_the_scope() -> None:
    admin, reader = principal(Scope.ADMIN), principal(Scope.AUDIT_READ)
    assert Caller(admin, "techno.gate.v1.GateAdminService.ListApiKeys").authorized() is admin
    refused = Caller(reader, "techno.gate.v1.GateAdminService.ListApiKeys")
    assert refused.id == "key-1"
    with pytest.raises(errors.PermissionDenied):
        refused.authorized()
