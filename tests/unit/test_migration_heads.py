"""The schema heads admin commands compare the database with are Alembic's own."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from broker.storage.database import SCHEMA_HEADS, alembic_config


def test_the_recorded_heads_are_the_heads_of_the_migrations() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert set(script.get_heads()) == SCHEMA_HEADS, (
        "a migration was added: set SCHEMA_HEADS in broker/storage/database.py to its heads"
    )
