"""Alembic migrations produce exactly the tables the code declares, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from broker.storage.database import create_engine, upgrade
from broker.storage.schema import metadata
from tests.conftest import DB_KINDS, PG_URL, Db, pg_sql


@pytest.fixture(params=DB_KINDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    """Migrated here by Alembic itself, not copied from a migrated template as the shared
    `db` fixture is: this is the test of what the migrations make."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'mrb.db'}"
        await upgrade(url)
        yield Db("sqlite", url, None)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await pg_sql(f'CREATE SCHEMA "{schema}"')
    try:
        await upgrade(PG_URL, schema)
        yield Db("postgres", PG_URL, schema)
    finally:
        await pg_sql(f'DROP SCHEMA "{schema}" CASCADE')


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrated_schema_matches_the_table_definitions(db: Db) -> None:
    engine = create_engine(db.url, schema=db.schema)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
