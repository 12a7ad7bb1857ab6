"""Backups of the memory service's database: ``python -m techno_memory.backup backup|restore|list``.

PostgreSQL is dumped with ``pg_dump --format=custom`` and restored with ``pg_restore``; the embedded SQLite file
is copied with SQLite's online backup API (consistent while the service runs in WAL mode) and restored by
replacing the file. Backups are timestamped files in one directory, with a ``latest`` link and a retention in
days. See docs/backup.md."""

from __future__ import annotations

from techno_memory.backup.operations import (
    Backup,
    BackupError,
    BackupResult,
    create_backup,
    list_backups,
    mask_url,
    restore_backup,
)

__all__ = [
    "Backup",
    "BackupError",
    "BackupResult",
    "create_backup",
    "list_backups",
    "mask_url",
    "restore_backup",
]
