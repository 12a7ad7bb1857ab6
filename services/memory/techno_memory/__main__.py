"""``python -m techno_memory [serve]`` runs the service until SIGTERM; ``python -m techno_memory migrate
[--downgrade REVISION]`` brings the database schema to the head revision (or down to REVISION);
``python -m techno_memory verify`` checks the audit trail's hash chain: exit 0 when intact, 1 when broken, 3 when
it could not be checked (database unreachable or not migrated)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from sqlalchemy.exc import InterfaceError, OperationalError

from techno_core.logging import configure_logging
from techno_core.runner import EXIT_STARTUP, StartupError, load_settings, run
from techno_memory.adapters.chain import verify_chain
from techno_memory.adapters.database import create_database_engine
from techno_memory.adapters.migrations import (
    current_revision,
    downgrade,
    ensure_schema_current,
    unreachable,
    upgrade,
)
from techno_memory.bootstrap import bootstrap
from techno_memory.domain.chain import ChainReport
from techno_memory.settings import MemorySettings

log = logging.getLogger("techno_memory")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m techno_memory", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the gRPC service (the default)")
    migrate = commands.add_parser("migrate", help="upgrade the database schema to the head revision")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION instead (`base`: empty)")
    commands.add_parser("verify", help="recompute the audit trail's hash chain and report the first broken link")
    return parser


async def migrate(settings: MemorySettings, downgrade_to: str | None) -> str | None:
    """Run the migration in one transaction; returns the revision the database is at afterwards."""
    engine = create_database_engine(settings.memory_database_url, pool_size=1, tracer_provider=None)
    try:
        if downgrade_to is None:
            await upgrade(engine)
        else:
            await downgrade(engine, downgrade_to)
        return await current_revision(engine)
    except (OperationalError, InterfaceError) as error:
        raise unreachable(engine, error) from error
    finally:
        await engine.dispose()


def _migrate(settings: MemorySettings, downgrade_to: str | None) -> int:
    try:
        revision = asyncio.run(migrate(settings, downgrade_to))
    except StartupError as error:  # unreachable or unsupported database: one line, no traceback
        log.error("cannot migrate: %s", error)
        return EXIT_STARTUP
    log.info("database schema at revision %s", revision or "base (empty)")
    return 0


EXIT_CHAIN_BROKEN = 1
EXIT_NOT_VERIFIED = 3


async def verify(settings: MemorySettings) -> ChainReport:
    """Verify the audit chain of the configured database (at the head revision)."""
    engine = create_database_engine(settings.memory_database_url, pool_size=1, tracer_provider=None)
    try:
        await ensure_schema_current(engine)
        return await verify_chain(engine)
    except (OperationalError, InterfaceError) as error:
        raise unreachable(engine, error) from error
    finally:
        await engine.dispose()


def _verify(settings: MemorySettings) -> int:
    try:
        report = asyncio.run(verify(settings))
    except StartupError as error:
        log.error("cannot verify: %s", error)
        return EXIT_NOT_VERIFIED
    print(report.summary())  # the command's result, on stdout
    return 0 if report.intact else EXIT_CHAIN_BROKEN


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings(MemorySettings)
    configure_logging("memory", settings.log_level)
    if args.command == "migrate":
        return _migrate(settings, args.downgrade)
    if args.command == "verify":
        return _verify(settings)
    return run(lambda: bootstrap(settings))


if __name__ == "__main__":
    sys.exit(main())
