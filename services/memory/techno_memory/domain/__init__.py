"""The memory service's domain: plain records and their validation rules (no grpc, no SQLAlchemy)."""
