"""Database access: engine, tables, repository, migrations runner."""
