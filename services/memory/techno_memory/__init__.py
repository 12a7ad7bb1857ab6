"""The memory service: owns the database (API key hashes and the append-only audit trail)."""
