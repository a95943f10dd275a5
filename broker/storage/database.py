"""Engine and session factory construction, and running migrations.

Code outside broker/storage/ names the engine, the session factory and the database's
errors by the aliases below, so that only storage imports SQLAlchemy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from sqlalchemy import event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The migration heads this code's schema is at. Kept here, and checked against Alembic's
# own view of migrations/ by tests/unit/test_migration_heads.py, so that admin commands can
# tell whether the database is up to date without importing Alembic (a third of a second).
SCHEMA_HEADS = frozenset({"0027"})

Engine: TypeAlias = AsyncEngine
Sessions: TypeAlias = async_sessionmaker[AsyncSession]
DatabaseError: TypeAlias = SQLAlchemyError  # the base of every error the database layer raises


def create_engine(
    url: str,
    *,
    schema: str | None = None,
    pool_size: int | None = None,
    max_overflow: int | None = None,
) -> AsyncEngine:
    """An async engine; SQLite gets WAL and foreign keys, PostgreSQL an optional schema.
    `pool_size` / `max_overflow` (MRB_DATABASE_POOL_SIZE, MRB_DATABASE_MAX_OVERFLOW) for the
    long-running processes; a one-off command keeps SQLAlchemy's defaults."""
    # No pre-ping: it costs a round trip on every checkout (every request). A connection the
    # server dropped fails its request once; SQLAlchemy then discards the whole pool, a unit
    # of work raises that as a retriable Unavailable (503; the worker pauses and retries).
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    elif schema:
        kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    if pool_size is not None:
        kwargs["pool_size"] = pool_size
    if max_overflow is not None:
        kwargs["max_overflow"] = max_overflow
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # API reads while the worker writes
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str, schema: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = url
    cfg.attributes["schema"] = schema
    return cfg


def upgrade_sync(url: str, schema: str | None = None) -> None:
    """Apply every migration (blocking; call from a thread inside an event loop). "heads":
    migrations written side by side on branches apply before their merge revision lands."""
    from alembic import command

    command.upgrade(alembic_config(url, schema), "heads")


async def upgrade(url: str, schema: str | None = None) -> None:
    """Apply every migration from async code (Alembic's env runs its own loop)."""
    await asyncio.to_thread(upgrade_sync, url, schema)


def expected_heads(url: str) -> set[str]:
    """The migration heads this mrb's schema is at."""
    return set(SCHEMA_HEADS)


async def current_heads(url: str, schema: str | None = None) -> set[str]:
    """The migration heads the database is at (empty: no mrb schema); DatabaseError or
    OSError when it cannot be opened. Creates nothing. Reads Alembic's version table."""
    engine = create_engine(url, schema=schema)
    try:
        async with engine.connect() as conn:
            if not await conn.run_sync(lambda c: inspect(c).has_table(_VERSION_TABLE)):
                return set()
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return {r[0] for r in rows}
    finally:
        await engine.dispose()


_VERSION_TABLE = "alembic_version"  # Alembic's default (migrations/env.py keeps it)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
