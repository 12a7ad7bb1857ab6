"""The gate: the governed entry point of the gateway (authentication, policy, decision record, execution)."""
