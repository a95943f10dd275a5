"""Alembic migrations produce exactly the tables the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from broker.storage.database import create_engine
from broker.storage.schema import metadata
from tests.conftest import Db


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migrated_schema_matches_the_table_definitions(db: Db) -> None:
    engine = create_engine(db.url, schema=db.schema)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
