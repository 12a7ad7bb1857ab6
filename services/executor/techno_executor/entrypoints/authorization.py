"""Who may call the executor: only the gate, which records the decision before it asks for an execution, and
the operator's tools for the breaker and fault controls. Enforced by ``techno_core.authorization``."""

from __future__ import annotations

from techno_core.authorization import callers
from techno_core.identity import Identity

CALLERS = {
    **callers(
        {
            "Execute": frozenset({Identity.GATE}),
            "StreamExecute": frozenset({Identity.GATE}),
            # The gate answers ListModels from it; operators may ask which providers an executor runs.
            "ListProviders": frozenset({Identity.GATE, Identity.OPERATOR}),
        },
        "techno.executor.v1.ExecutorService",
    ),
    **callers(
        {
            "SetFaults": frozenset({Identity.GATE, Identity.OPERATOR}),
            "ListBreakers": frozenset({Identity.GATE, Identity.OPERATOR}),
            "SetBreaker": frozenset({Identity.GATE, Identity.OPERATOR}),
        },
        "techno.executor.v1.ExecutorAdminService",
    ),
}
