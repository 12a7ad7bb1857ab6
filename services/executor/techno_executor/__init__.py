"""The executor service: runs actions the gate has allowed on a language-model provider, behind a circuit
breaker, a retry policy and the caller's deadline."""
