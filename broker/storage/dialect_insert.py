"""INSERT … ON CONFLICT in the database's dialect (PostgreSQL or SQLite): the upserts."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import Insert as PgInsert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(dialect: str) -> Callable[[Table], PgInsert | SqliteInsert]:
    """The INSERT construct of `dialect` ("postgresql", else SQLite's): one that can take
    `on_conflict_do_update` / `_do_nothing`."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


def insert_into(session: AsyncSession, table: Table) -> PgInsert | SqliteInsert:
    """An upsert-capable INSERT into `table`, in the session's dialect."""
    return insert_for(session.get_bind().dialect.name)(table)
