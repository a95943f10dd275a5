"""`one_of(column, values)`: the ingest's lookups by many keys. It must select exactly what
`column.in_(values)` selects, on SQLite (an IN list) and PostgreSQL (one array parameter),
also when a cached statement runs again with another number of values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, event, select

from broker.bootstrap import Container
from broker.storage.bulk_insert import insert_rows
from broker.storage.one_of import one_of
from broker.storage.tables import rejection

IDS = ["m-1", "m-2", "m-3", "m-4", "x" * 64]


def _row(message_id: str | None) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "hospital_id": "H001",
        "code": "SIGNATURE_INVALID",
        "detail": "d",
        "topic": None,
        "partition": None,
        "offset": None,
        "rejected_at": datetime(2026, 3, 1, tzinfo=UTC),
        "value_sealed": None,
        "headers": None,
    }


@pytest.fixture
async def stored(container: Container) -> Container:
    async with container.sessions() as s, s.begin():
        await insert_rows(s, rejection, [_row(m) for m in [*IDS, None]])
    return container


@pytest.mark.parametrize(
    "wanted",
    [
        ["m-1"],
        ["m-2", "m-4", "absent"],
        [],  # matches nothing, as an empty IN does
        ["m-3", "m-3"],
        IDS,
        # 65 characters: a cast to the column's VARCHAR(64)[] would cut it to the stored
        # 64-character id and match it; compared whole, it matches nothing.
        ["x" * 65],
    ],
)
async def test_selects_what_in_selects(stored: Container, wanted: list[str]) -> None:
    async with stored.sessions() as s:
        for values in (wanted, ["m-1", "m-2"], wanted):  # the cached statement, reused
            ours = await s.scalars(
                select(rejection.c.message_id).where(one_of(rejection.c.message_id, values))
            )
            theirs = await s.scalars(
                select(rejection.c.message_id).where(rejection.c.message_id.in_(values))
            )
            assert sorted(ours) == sorted(theirs)


async def test_postgresql_gets_one_parameter_and_sqlite_a_plain_in_list(
    stored: Container,
) -> None:
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = stored.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        async with stored.sessions() as s, s.begin():
            for values in (["m-1"], ["m-1", "m-2", "m-3"]):
                await s.execute(delete(rejection).where(one_of(rejection.c.message_id, values)))
            left = await s.scalars(select(rejection.c.message_id))
            assert sorted(m for m in left if m) == ["m-4", "x" * 64]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    deletes = [sql for sql in sent if sql.lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 2
    if engine.dialect.name == "postgresql":
        assert deletes[0] == deletes[1]  # one text, prepared once by asyncpg
        assert "= ANY" in deletes[0] and "VARCHAR(64)" not in deletes[0]
    else:
        # A bare IN list (no `= 1` wrapped around it), which SQLite answers from the index.
        assert deletes[0].rstrip().endswith("IN (?)")
        assert deletes[1].rstrip().endswith("IN (?, ?, ?)")
