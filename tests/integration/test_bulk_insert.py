"""`insert_rows`, the ingest's bulk INSERT past SQLAlchemy's per-row parameter handling,
stores exactly what SQLAlchemy's own INSERT stores, on SQLite and PostgreSQL: timestamps
(made UTC), JSON, bytes, NULLs, a column named like a keyword, server defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, select

from broker.bootstrap import Container
from broker.storage.bulk_insert import insert_rows
from broker.storage.tables import rejection

SHANGHAI = timezone(timedelta(hours=8))


def _rows(prefix: str) -> list[dict[str, Any]]:
    at = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=SHANGHAI)
    return [
        {
            "message_id": f"{prefix}-{i}",
            "hospital_id": "H001" if i else None,
            "code": "SIGNATURE_INVALID",
            "detail": f"détail {i}: 化验",
            "topic": "mrb.results.v1",
            "partition": i,
            "offset": 2**40 + i,  # BIGINT, and a column named like a keyword
            "rejected_at": at + timedelta(minutes=i),
            "value_sealed": bytes([0, 255, i]),
            "headers": [["mrb-hospital", "SDAwMQ=="], ["n", i]] if i else None,
        }
        for i in range(3)
    ]


def _stored(row: Any) -> dict[str, Any]:
    values = dict(row._mapping)
    values.pop("id")
    values["message_id"] = values["message_id"].split("-", 1)[1]
    return values


async def test_rows_are_stored_as_sqlalchemys_insert_stores_them(container: Container) -> None:
    async with container.sessions() as s, s.begin():
        await insert_rows(s, rejection, _rows("bulk"))
        await s.execute(rejection.insert(), _rows("orm"))
    async with container.sessions() as s:
        got = (await s.execute(select(rejection).order_by(rejection.c.message_id))).all()
    bulk = [_stored(r) for r in got if r.message_id.startswith("bulk-")]
    orm = [_stored(r) for r in got if r.message_id.startswith("orm-")]
    assert len(bulk) == 3
    assert bulk == orm
    first = bulk[1]
    assert first["rejected_at"] == datetime(2026, 3, 1, 0, 31, 15, 123456, tzinfo=UTC)
    assert first["headers"] == [["mrb-hospital", "SDAwMQ=="], ["n", 1]]
    assert first["status"] == "open" and first["replays"] == 0  # server defaults
    assert bulk[0]["hospital_id"] is None and bulk[0]["headers"] is None


async def test_many_rows_are_one_statement(container: Container) -> None:
    sent: list[tuple[str, bool]] = []

    def record(_c: Any, _cur: Any, statement: str, _p: Any, _ctx: Any, many: bool) -> None:
        sent.append((statement.split()[0].upper(), many))

    engine = container.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with container.sessions() as s, s.begin():
            await insert_rows(s, rejection, _rows("many"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [v for v in sent if v[0] == "INSERT"] == [("INSERT", True)]


async def test_an_unknown_column_is_refused_and_nothing_is_written(container: Container) -> None:
    rows = [{**r, "payload_message_id": "x"} for r in _rows("bad")]
    with pytest.raises(KeyError, match="rejection has no column payload_message_id"):
        async with container.sessions() as s, s.begin():
            await insert_rows(s, rejection, rows)
    async with container.sessions() as s:
        assert (await s.execute(select(rejection))).all() == []


async def test_a_row_missing_a_column_of_the_first_is_refused(container: Container) -> None:
    rows = _rows("short")
    del rows[2]["detail"]
    with pytest.raises(KeyError):
        async with container.sessions() as s, s.begin():
            await insert_rows(s, rejection, rows)
    async with container.sessions() as s:
        assert (await s.execute(select(rejection))).all() == []
