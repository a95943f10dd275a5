"""INSERT … ON CONFLICT in the session's dialect (PostgreSQL or SQLite): the upserts."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


def insert_into(session: AsyncSession, table: Table) -> PgInsert | SqliteInsert:
    """An INSERT into `table` that can take `on_conflict_do_update` / `_do_nothing`."""
    if session.get_bind().dialect.name == "postgresql":
        return pg_insert(table)
    return sqlite_insert(table)
