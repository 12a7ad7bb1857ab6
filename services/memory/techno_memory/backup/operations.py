"""Making, listing, pruning and restoring backups (no argument parsing, no printing: see ``__main__``)."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import URL
from sqlalchemy.exc import ArgumentError

from techno_memory.adapters.database import UnsupportedDatabase, database_url

LATEST = "latest"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# memory-20250601T120000Z.dump, or memory-20250601T120000Z-1.dump for a second backup within the same second.
_NAME = re.compile(r"^memory-(?P<ts>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?\.(?P<ext>dump|sqlite)$")
_PARTIAL_SUFFIX = ".partial"
_EXTENSIONS = {"postgresql": "dump", "sqlite": "sqlite"}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PGDUMP_MAGIC = b"PGDMP"
CLIENT_PACKAGE = "postgresql-client"
_IN_MEMORY = {None, "", ":memory:"}


class BackupError(Exception):
    """A backup or restore that could not be done; the message is one line, without passwords."""


@dataclass(frozen=True)
class Backup:
    path: Path
    kind: str  # "postgresql" or "sqlite"
    taken_at: datetime
    size: int
    modified_at: datetime


@dataclass(frozen=True)
class BackupResult:
    backup: Path
    removed: list[Path] = field(default_factory=list)


def mask_url(url: str | URL) -> str:
    """The URL with its password (if any) replaced by ``***``; a URL that cannot be parsed is not echoed."""
    try:
        parsed = url if isinstance(url, URL) else database_url(url)
    except (ArgumentError, UnsupportedDatabase, ValueError):
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def _parse(url: str) -> URL:
    try:
        return database_url(url)
    except UnsupportedDatabase as error:
        raise BackupError(str(error)) from error
    except (ArgumentError, ValueError) as error:
        raise BackupError(f"invalid database URL {mask_url(url)}") from error


def _kind(url: URL) -> str:
    return url.get_backend_name()


def _sqlite_path(url: URL) -> Path:
    if url.database in _IN_MEMORY:
        raise BackupError("an in-memory SQLite database has nothing to back up or restore")
    return Path(url.database or "")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "no error output"
    errors = [line for line in lines if "error:" in line.lower() or "fatal:" in line.lower()]
    return " | ".join(errors or lines[:1])


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} not found on PATH: install the PostgreSQL client tools (Debian/Ubuntu package "
            f"{CLIENT_PACKAGE}, the same major version as the server or newer)"
        )
    return path


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq connection URI without the password, and the environment passing it (so it never appears in a
    command line, ``ps`` or an error message)."""
    uri = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    env.setdefault("PGCONNECT_TIMEOUT", "10")
    return uri, env


def _run(command: list[str], env: dict[str, str], what: str, url: URL) -> None:
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError as error:
        raise BackupError(f"{what} could not run: {error}") from error
    if completed.returncode != 0:
        reason = _one_line(completed.stderr)
        if url.password:
            reason = reason.replace(str(url.password), "***")
        raise BackupError(f"{what} failed for {mask_url(url)} (exit {completed.returncode}): {reason}")


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def _new_path(directory: Path, now: datetime, extension: str) -> Path:
    stem = f"memory-{_timestamp(now)}"
    candidate = directory / f"{stem}.{extension}"
    n = 0
    while candidate.exists() or candidate.with_name(candidate.name + _PARTIAL_SUFFIX).exists():
        n += 1
        candidate = directory / f"{stem}-{n}.{extension}"
    return candidate


def create_backup(url: str, directory: Path, *, retention_days: float = 7, now: datetime | None = None) -> BackupResult:
    """Back up the database at ``url`` into ``directory``, point ``latest`` at the new file and delete backups of
    the same kind whose modification time is older than ``retention_days`` (never the new one)."""
    if retention_days < 0:
        raise BackupError("the retention must be zero or more days")
    parsed = _parse(url)
    kind = _kind(parsed)
    now = now or datetime.now(UTC)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BackupError(f"cannot create the backup directory {directory}: {error}") from error
    target = _new_path(directory, now, _EXTENSIONS[kind])
    partial = target.with_name(target.name + _PARTIAL_SUFFIX)
    try:
        if kind == "postgresql":
            _dump_postgresql(parsed, partial)
        else:
            _backup_sqlite(_sqlite_path(parsed), partial)
        os.replace(partial, target)  # only a complete backup ever carries the final name
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _point_latest(directory, target)
    removed = prune(directory, kind, retention_days=retention_days, keep=target, now=now)
    return BackupResult(backup=target, removed=removed)


def _dump_postgresql(url: URL, destination: Path) -> None:
    pg_dump = _pg_tool("pg_dump")
    uri, env = _libpq(url)
    command = [pg_dump, "--format=custom", "--no-owner", f"--file={destination}", f"--dbname={uri}"]
    _run(command, env, "pg_dump", url)


def _backup_sqlite(source: Path, destination: Path) -> None:
    if not source.is_file():
        raise BackupError(f"the SQLite database {source} does not exist")
    try:
        # Opened read-write (not mode=ro) so that a WAL database's shared memory can be used even when the service
        # is not running; the backup API only reads it, page by page, on a consistent snapshot.
        with closing(sqlite3.connect(source, timeout=30)) as src, closing(sqlite3.connect(destination)) as dst:
            src.backup(dst)
            # A self-contained file: no -wal/-shm beside it, whatever mode the live database is in.
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise BackupError(f"the backup of {source} failed its integrity check: {check}")
    except sqlite3.Error as error:
        raise BackupError(f"SQLite backup of {source} failed: {error}") from error


def _point_latest(directory: Path, target: Path) -> None:
    """Replace ``latest`` atomically with a relative symlink to ``target``."""
    link = directory / LATEST
    temporary = directory / f".{LATEST}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    try:
        temporary.symlink_to(target.name)
        os.replace(temporary, link)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise BackupError(f"cannot point {link} at {target.name}: {error}") from error


def _parse_name(path: Path) -> tuple[str, datetime] | None:
    match = _NAME.match(path.name)
    if match is None:
        return None
    kind = "postgresql" if match["ext"] == "dump" else "sqlite"
    return kind, datetime.strptime(match["ts"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def list_backups(directory: Path) -> list[Backup]:
    """The complete backups in ``directory``, oldest first (by the timestamp in their name)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        parsed = _parse_name(path)
        if parsed is None or path.is_symlink() or not path.is_file():
            continue
        stat = path.stat()
        found.append(
            Backup(
                path=path,
                kind=parsed[0],
                taken_at=parsed[1],
                size=stat.st_size,
                modified_at=datetime.fromtimestamp(stat.st_mtime, UTC),
            )
        )
    return sorted(found, key=lambda backup: (backup.taken_at, backup.path.name))


def prune(directory: Path, kind: str, *, retention_days: float, keep: Path, now: datetime) -> list[Path]:
    """Delete the backups of ``kind`` (and leftover partial files) modified more than ``retention_days`` before
    ``now``; ``keep`` and whatever ``latest`` points at are never deleted."""
    cutoff = (now - timedelta(days=retention_days)).timestamp()
    protected = {keep.resolve()}
    link = directory / LATEST
    if link.is_symlink():
        protected.add(link.resolve())
    removed = []
    for path in _candidates(directory, kind):
        if path.resolve() in protected:
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue  # another run pruned it first
        except OSError as error:
            raise BackupError(f"cannot delete the expired backup {path}: {error}") from error
    return sorted(removed)


def _candidates(directory: Path, kind: str) -> Iterable[Path]:
    for path in directory.iterdir():
        if path.is_symlink() or not path.is_file():
            continue
        name = path.name.removesuffix(_PARTIAL_SUFFIX)
        parsed = _parse_name(path.with_name(name))
        if parsed is not None and parsed[0] == kind:
            yield path


def resolve_source(source: str, directory: Path) -> Path:
    """``latest`` (in ``directory``) or a path, resolved to the backup file it names."""
    path = directory / LATEST if source == LATEST else Path(source)
    if source == LATEST and not path.is_symlink() and not path.exists():
        raise BackupError(f"no {LATEST} backup in {directory}")
    if not path.exists():
        raise BackupError(f"backup file {path} does not exist")
    resolved = path.resolve()
    if not resolved.is_file():
        raise BackupError(f"{path} is not a file")
    return resolved


def restore_backup(source: Path, url: str) -> None:
    """Restore the backup file ``source`` into the database at ``url``, replacing its contents. The memory service
    must be stopped: PostgreSQL's restore drops and recreates every object, SQLite's replaces the file."""
    parsed = _parse(url)
    kind = _kind(parsed)
    with source.open("rb") as file:
        head = file.read(len(_SQLITE_MAGIC))
    if kind == "postgresql":
        if not head.startswith(_PGDUMP_MAGIC):
            raise BackupError(f"{source} is not a pg_dump custom-format archive (a PostgreSQL backup)")
        _restore_postgresql(source, parsed)
    else:
        if head != _SQLITE_MAGIC:
            raise BackupError(f"{source} is not a SQLite database (an embedded-database backup)")
        _restore_sqlite(source, _sqlite_path(parsed))


def _restore_postgresql(source: Path, url: URL) -> None:
    pg_restore = _pg_tool("pg_restore")
    uri, env = _libpq(url)
    command = [
        pg_restore,
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={uri}",
        str(source),
    ]
    _run(command, env, "pg_restore", url)


def _restore_sqlite(source: Path, target: Path) -> None:
    try:
        with closing(sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)) as connection:
            check = connection.execute("PRAGMA quick_check").fetchone()
    except sqlite3.Error as error:
        raise BackupError(f"{source} is not a valid SQLite database: {error}") from error
    if check is None or check[0] != "ok":
        raise BackupError(f"{source} failed SQLite's integrity check: {check}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.restore-{os.getpid()}")
    try:
        shutil.copyfile(source, partial)
        # The old database's write-ahead log and shared memory belong to the old file: applied to the restored one
        # they would corrupt it, so they go before the new file takes the name.
        for suffix in ("-wal", "-shm", "-journal"):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(partial, target)
    except OSError as error:
        raise BackupError(f"cannot replace {target}: {error}") from error
    finally:
        partial.unlink(missing_ok=True)
