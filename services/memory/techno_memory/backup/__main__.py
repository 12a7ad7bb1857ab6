"""``python -m techno_memory.backup backup|restore|list``: back up the memory database (``pg_dump`` custom format
for PostgreSQL, SQLite's online backup for the embedded file) into timestamped files with a ``latest`` link and a
retention, list them, and restore one. The database URL is ``--database-url`` or ``TECHNO_MEMORY_DATABASE_URL``.
Exit 0 on success, 1 on any failure (one line on stderr, never a password)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from techno_memory.backup.operations import (
    LATEST,
    BackupError,
    create_backup,
    list_backups,
    mask_url,
    resolve_source,
    restore_backup,
)
from techno_memory.settings import MemorySettings

DEFAULT_DIRECTORY = Path("var/backups")
DEFAULT_RETENTION_DAYS = 7.0
EXIT_OK = 0
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m techno_memory.backup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(command: argparse.ArgumentParser, *, url: bool) -> None:
        command.add_argument(
            "--dir",
            type=Path,
            default=DEFAULT_DIRECTORY,
            help=f"the backup directory (default {DEFAULT_DIRECTORY})",
        )
        if url:
            command.add_argument(
                "--database-url", help="SQLAlchemy URL of the database (default: TECHNO_MEMORY_DATABASE_URL)"
            )

    backup = commands.add_parser("backup", help="back up the database, update `latest`, delete expired backups")
    common(backup, url=True)
    backup.add_argument(
        "--retention-days",
        type=float,
        default=DEFAULT_RETENTION_DAYS,
        help=f"delete backups of the same kind older than this many days (default {DEFAULT_RETENTION_DAYS:g})",
    )
    restore = commands.add_parser("restore", help="replace the database's contents with a backup (service stopped)")
    restore.add_argument("source", help=f"a backup file, or `{LATEST}` for the newest in --dir")
    common(restore, url=True)
    listing = commands.add_parser("list", help="list the backups in --dir, oldest first")
    common(listing, url=False)
    return parser


def _database_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        return MemorySettings().memory_database_url
    except ValidationError as error:
        problems = ", ".join(f"TECHNO_{'_'.join(map(str, p['loc'])).upper()}: {p['msg']}" for p in error.errors())
        raise BackupError(f"invalid configuration: {problems}") from error


def _backup(args: argparse.Namespace) -> int:
    url = _database_url(args.database_url)
    result = create_backup(url, args.dir, retention_days=args.retention_days)
    print(f"backed up {mask_url(url)} to {result.backup} ({result.backup.stat().st_size} bytes)")
    print(f"{args.dir / LATEST} -> {result.backup.name}")
    for path in result.removed:
        print(f"deleted expired backup {path}")
    return EXIT_OK


def _restore(args: argparse.Namespace) -> int:
    url = _database_url(args.database_url)
    source = resolve_source(args.source, args.dir)
    # Said before starting: a running service would keep writing to (or hold open) the database being replaced.
    print(f"restoring {source} into {mask_url(url)}; the memory service must be stopped", flush=True)
    restore_backup(source, url)
    print(f"restored {source} into {mask_url(url)}; check it with `python -m techno_memory verify`, then start")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    link = args.dir / LATEST
    latest = link.resolve() if link.is_symlink() else None
    backups = list_backups(args.dir)
    if not backups:
        print(f"no backups in {args.dir}")
    for backup in backups:
        marker = f"  <- {LATEST}" if backup.path.resolve() == latest else ""
        print(
            f"{backup.path.name}\t{backup.kind}\t{backup.size} bytes\t"
            f"modified {backup.modified_at:%Y-%m-%dT%H:%M:%SZ}{marker}"
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"backup": _backup, "restore": _restore, "list": _list}
    try:
        return handlers[args.command](args)
    except BackupError as error:
        print(f"{args.command} failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"{args.command} failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{args.command} interrupted", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
