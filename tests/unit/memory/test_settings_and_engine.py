"""Settings from the environment, and engine creation (no connection is opened)."""

from __future__ import annotations

from pathlib import Path

import pytest

from techno_memory.adapters.database import UnsupportedDatabase, create_database_engine, database_url
from techno_memory.settings import MemorySettings


def test_settings_come_from_techno_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TECHNO_MEMORY_PORT", "6000")
    monkeypatch.setenv("TECHNO_MEMORY_DATABASE_URL", "postgresql+psycopg://db/memory")
    monkeypatch.setenv("TECHNO_MEMORY_MAX_BATCH", "64")
    settings = MemorySettings()
    assert (settings.memory_port, settings.memory_database_url, settings.memory_max_batch) == (
        6000,
        "postgresql+psycopg://db/memory",
        64,
    )
    assert settings.memory_metrics_port == 9103


def test_every_setting_is_described() -> None:
    assert all(field.description for field in MemorySettings.model_fields.values())


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
    ],
)
def test_database_url_gets_the_async_driver(url: str, driver: str) -> None:
    assert database_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "sqlite+pysqlite:///x.db"])
def test_unsupported_databases_are_refused(url: str) -> None:
    with pytest.raises(UnsupportedDatabase):
        database_url(url)


async def test_sqlite_parent_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "memory.db"
    engine = create_database_engine(f"sqlite+aiosqlite:///{path}", pool_size=2, tracer_provider=None)
    await engine.dispose()
    assert path.parent.is_dir()
