"""Migration 0027 labels the national links made before it (the resident ID) and leaves
those of a person holding several unlabelled, on both databases, from a 0026 schema with
rows in it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from broker.storage.database import alembic_config, create_engine, upgrade
from mrb_wire import resident_id
from tests.conftest import DB_KINDS, PG_URL, Db, pg_sql

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(params=DB_KINDS)
async def at_0026(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'mrb.db'}"
        await asyncio.to_thread(command.upgrade, alembic_config(url, None), "0026")
        yield Db("sqlite", url, None)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await pg_sql(f'CREATE SCHEMA "{schema}"')
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(PG_URL, schema), "0026")
        yield Db("postgres", PG_URL, schema)
    finally:
        await pg_sql(f'DROP SCHEMA "{schema}" CASCADE')


LINKS = [  # (pseudonym, person, scope)
    ("one-rid", "P1", "national"),
    ("p1-mrn", "P1", "hospital"),
    ("first-rid", "P2", "national"),  # P2: two resident IDs, linked before the rule
    ("second-rid", "P2", "national"),
    ("p3-mrn", "P3", "hospital"),
]


async def test_existing_national_links_are_labelled_unless_a_person_holds_several(
    at_0026: Db,
) -> None:
    db = at_0026
    engine = create_engine(db.url, schema=db.schema)
    try:
        async with engine.begin() as c:
            for pid in ("P1", "P2", "P3"):
                await c.execute(
                    text("INSERT INTO person (id, created_at) VALUES (:id, :now)"),
                    {"id": pid, "now": NOW},
                )
            for pseudonym, pid, scope in LINKS:
                await c.execute(
                    text(
                        "INSERT INTO person_link (pseudonym, person_id, scope, hospital_id, "
                        "created_at) VALUES (:p, :pid, :scope, :h, :now)"
                    ),
                    {
                        "p": pseudonym,
                        "pid": pid,
                        "scope": scope,
                        "h": "H001" if scope == "hospital" else None,
                        "now": NOW,
                    },
                )
        await upgrade(db.url, db.schema)
        async with engine.connect() as c:
            found: dict[str, str | None] = dict(
                (await c.execute(text("SELECT pseudonym, national_system FROM person_link"))).all()
            )
            assert found == {
                "one-rid": resident_id.SYSTEM,
                "p1-mrn": None,
                "first-rid": None,
                "second-rid": None,
                "p3-mrn": None,
            }
        with pytest.raises(IntegrityError):  # the partial unique index
            async with engine.begin() as c:
                await c.execute(
                    text(
                        "INSERT INTO person_link (pseudonym, person_id, scope, created_at, "
                        "national_system) VALUES ('another-rid', 'P1', 'national', :now, :s)"
                    ),
                    {"now": NOW, "s": resident_id.SYSTEM},
                )
    finally:
        await engine.dispose()
