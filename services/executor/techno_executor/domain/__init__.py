"""Plain-Python core of the executor: actions, provider port, circuit breaker, retry policy (no grpc)."""
