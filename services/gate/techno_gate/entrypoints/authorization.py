"""Who may call the gate over the internal network: the edge (every REST route) and the operator's tools.
Each call still authenticates its end user (API key or JWT) and is checked against the policy; this table only
decides which machines may ask. Enforced by ``techno_core.authorization``."""

from __future__ import annotations

from techno.gate.v1 import admin_pb2, gate_pb2
from techno_core.authorization import callers
from techno_core.identity import Identity

_FRONT = frozenset({Identity.EDGE, Identity.OPERATOR})

CALLERS = {
    **callers(
        {method.name: _FRONT for method in gate_pb2.DESCRIPTOR.services_by_name["GateService"].methods},
        "techno.gate.v1.GateService",
    ),
    **callers(
        {method.name: _FRONT for method in admin_pb2.DESCRIPTOR.services_by_name["GateAdminService"].methods},
        "techno.gate.v1.GateAdminService",
    ),
}
