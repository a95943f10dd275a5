"""The database's sliding window weighs the previous window as `limits`' own storages do.

The previous window's count comes back with the current window's increment, in one
statement (broker/storage/rate_limits.py); these pin what that count does to a hit, with
the clock set so that the weight of the previous window is known.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from asyncpg.transaction import Transaction
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from sqlalchemy import event, text

from broker.bootstrap import Container
from broker.settings import Settings
from broker.storage.rate_limits import DatabasePatientCounter, DatabaseStorage

MINUTE = 60
LIMIT = RateLimitItemPerMinute(5)


def _at(monkeypatch: pytest.MonkeyPatch, moment: float) -> None:
    """The wall clock both storages read (`time.time`; the event loop runs on monotonic)."""
    monkeypatch.setattr(time, "time", lambda: moment)


async def _admitted(storage: Storage, key: str, hits: int) -> int:
    limiter = SlidingWindowCounterRateLimiter(storage)
    return sum([await limiter.hit(LIMIT, key) for _ in range(hits)])


@pytest.mark.parametrize(
    ("into_the_window", "previous_hits", "admitted"),
    [
        (0.0, 5, 0),  # the previous window weighs in full: nothing more
        (0.0, 2, 3),
        (30.0, 4, 3),  # half of it: 4 × 0.5 = 2, so 3 more
        (59.0, 5, 5),  # almost nothing of it is left
    ],
)
async def test_the_previous_window_counts_by_its_weight(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    into_the_window: float,
    previous_hits: int,
    admitted: int,
) -> None:
    container = Container.build(settings)
    try:
        storage = DatabaseStorage(container.engine)
        key = f"token/{uuid.uuid4()}"
        start = 1_800_000_000.0 - 1_800_000_000.0 % MINUTE  # a window's first second
        _at(monkeypatch, start - MINUTE + 1)  # in the previous window
        assert await _admitted(storage, key, previous_hits) == previous_hits
        _at(monkeypatch, start + into_the_window)
        assert await _admitted(storage, key, 10) == admitted
    finally:
        await container.close()


async def test_the_same_hits_as_limits_memory_storage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same sequence against `limits`' in-memory storage, on the same clock."""
    moments = [0.0, 10.0, 61.0, 62.0, 90.0, 119.0, 125.0, 200.0]
    container = Container.build(settings)
    try:
        ours: list[bool] = []
        theirs: list[bool] = []
        db = SlidingWindowCounterRateLimiter(DatabaseStorage(container.engine))
        memory = MemoryStorage()
        reference = SlidingWindowCounterRateLimiter(memory)
        key = f"token/{uuid.uuid4()}"
        base = 1_800_000_000.0 - 1_800_000_000.0 % MINUTE
        for moment in moments:
            now = base + moment
            _at(monkeypatch, now)
            for _ in range(3):
                ours.append(await db.hit(LIMIT, key))
                theirs.append(await reference.hit(LIMIT, key))
        assert ours == theirs
        assert 0 < sum(ours) < len(ours)  # some refused, some admitted
    finally:
        await container.close()


def _statements(
    engine: Any, monkeypatch: pytest.MonkeyPatch, sent: list[str]
) -> Callable[[], None]:
    """Record each statement's first word and each BEGIN (asyncpg's, or SQLite's)."""

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement.split()[0])

    def begun(_conn: Any) -> None:
        sent.append("BEGIN")

    start = Transaction.start

    async def started(self: Transaction) -> None:
        sent.append("BEGIN")
        await start(self)

    monkeypatch.setattr(Transaction, "start", started)
    event.listen(engine, "before_cursor_execute", record)
    if engine.dialect.name != "postgresql":
        event.listen(engine, "begin", begun)

    def stop() -> None:
        event.remove(engine, "before_cursor_execute", record)
        if engine.dialect.name != "postgresql":
            event.remove(engine, "begin", begun)
        monkeypatch.setattr(Transaction, "start", start)

    return stop


async def test_a_hit_is_one_statement(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every API request takes a hit: the previous window is read with the increment, and
    on PostgreSQL no transaction is opened around it (no BEGIN and COMMIT round trips)."""
    container = Container.build(settings)
    try:
        limiter = SlidingWindowCounterRateLimiter(DatabaseStorage(container.engine))
        key = f"token/{uuid.uuid4()}"
        await limiter.hit(LIMIT, key)  # the first one also purges expired counters
        engine = container.engine.sync_engine
        postgres = engine.dialect.name == "postgresql"
        sent: list[str] = []
        stop = _statements(engine, monkeypatch, sent)
        try:
            assert await limiter.hit(LIMIT, key)
        finally:
            stop()
        assert sent == (["INSERT"] if postgres else ["BEGIN", "INSERT"])
    finally:
        await container.close()


async def test_a_refused_hit_is_not_counted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = Container.build(settings)
    try:
        storage = DatabaseStorage(container.engine)
        key = f"token/{uuid.uuid4()}"
        _at(monkeypatch, 1_800_000_000.0 - 1_800_000_000.0 % MINUTE + 5)
        assert await _admitted(storage, key, 8) == 5
        counted = await storage.get_sliding_window(LIMIT.key_for(key), MINUTE)
        _previous, _ttl, current, _left = counted
        assert current == 5  # the three refused hits left no trace
    finally:
        await container.close()


async def test_the_counters_write_no_wal_on_postgresql(settings: Settings) -> None:
    """Ephemeral by design: UNLOGGED (migration 0025), so a hit waits for no WAL flush."""
    container = Container.build(settings)
    try:
        if container.engine.dialect.name != "postgresql":
            return
        async with container.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.relname, c.relpersistence::text FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                    "AND c.relname LIKE 'rate_limit_%'"
                )
            )
            assert dict(rows.all()) == {
                "rate_limit_counter": "u",
                "rate_limit_patient": "u",
            }
    finally:
        await container.close()


async def test_a_new_patient_is_counted_in_one_short_transaction(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A patient new to the doctor's window: on PostgreSQL one function call, with no
    transaction around it; on SQLite the statement that finds them new, then the write
    lock (the delete), the count and the upsert."""
    container = Container.build(settings)
    try:
        counter = DatabasePatientCounter(container.engine)
        doctor = f"H002/{uuid.uuid4()}"
        assert await counter.look_up(doctor, "p0", 5, 3600) is None  # purges, once
        engine = container.engine.sync_engine
        sent: list[str] = []
        stop = _statements(engine, monkeypatch, sent)
        try:
            assert await counter.look_up(doctor, "p1", 5, 3600) is None
        finally:
            stop()
        if engine.dialect.name == "postgresql":
            # Was UPDATE, then the lock, BEGIN, DELETE, UPDATE, count, INSERT and COMMIT
            # (2026-12-04 morning); then UPDATE, lock, BEGIN, count, INSERT (migration 0026).
            assert sent == ["SELECT"]
        else:
            assert sent == ["BEGIN", "UPDATE", "BEGIN", "DELETE", "SELECT", "INSERT"]
    finally:
        await container.close()


async def _patients_of(container: Container, person: str) -> list[tuple[str, float]]:
    """The rows of rate_limit_patient of `person`: (patient, seen_at)."""
    async with container.engine.connect() as conn:
        found = await conn.execute(
            text("SELECT patient, seen_at FROM rate_limit_patient WHERE person = :p"),
            {"p": person},
        )
        return [(str(p), float(s)) for p, s in found]


async def test_an_expired_patient_counts_afresh_and_no_longer_counts_before(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expired rows wait for the periodic purge: they do not count, and the same patient
    looked up again renews their row rather than colliding with it."""
    container = Container.build(settings)
    try:
        counter = DatabasePatientCounter(container.engine)
        doctor = f"H002/{uuid.uuid4()}"
        start = 1_800_000_000.0
        _at(monkeypatch, start)
        assert await counter.look_up(doctor, "p1", 1, 10) is None
        assert await counter.look_up(doctor, "p2", 1, 10) == pytest.approx(10)
        _at(monkeypatch, start + 11)  # p1's window is over; the purge is not due (60 s)
        assert await counter.look_up(doctor, "p1", 1, 10) is None  # renewed, counted again
        assert await counter.look_up(doctor, "p2", 1, 10) == pytest.approx(10)
        _at(monkeypatch, start + 22)
        assert await counter.look_up(doctor, "p2", 1, 10) is None
        rows = await _patients_of(container, doctor)
        # p1's expired row is deleted with the doctor's next lookup on SQLite, by the
        # periodic purge on PostgreSQL; either way it no longer counts.
        live = [(p, s) for p, s in rows if s > start + 12]
        assert live == [("p2", start + 22)]
    finally:
        await container.close()


async def test_concurrent_look_ups_admit_exactly_the_limit_across_processes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes (two engines), many new patients of one doctor at once: the person's
    lock lets exactly `limit` in; the same patient sent at once counts once."""
    _at(monkeypatch, 1_800_000_000.0)  # the clock stands still: waits are exact
    first, second = Container.build(settings), Container.build(settings)
    try:
        counters = [DatabasePatientCounter(c.engine) for c in (first, second)]
        doctor = f"H002/{uuid.uuid4()}"
        answers = await asyncio.gather(
            *(counters[i % 2].look_up(doctor, f"p{i}", 5, 3600) for i in range(12))
        )
        assert sum(a is None for a in answers) == 5
        assert {a for a in answers if a is not None} == {3600.0}
        other = f"H002/{uuid.uuid4()}"
        same = await asyncio.gather(
            *(counters[i % 2].look_up(other, "p-same", 1, 3600) for i in range(8))
        )
        assert same == [None] * 8
        assert [p for p, _ in await _patients_of(first, other)] == ["p-same"]
    finally:
        await first.close()
        await second.close()
