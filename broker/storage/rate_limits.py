"""The rate limits' counters in mrb's database (tables rate_limit_counter and
rate_limit_patient), used when no Redis is configured (broker/services/rate_limits.py)."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from limits.aio.storage import Storage
from limits.aio.storage.base import SlidingWindowCounterSupport
from sqlalchemy import ColumnElement, case, delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from broker.storage.rate_limit_tables import rate_limit_counter, rate_limit_patient

_PURGE_EVERY = 60.0  # seconds between deletions of expired rows, per process


# -- request counters: the `limits` strategies on a database -----------------------------


class DatabaseStorage(Storage, SlidingWindowCounterSupport):
    """A `limits` storage in mrb's database (table rate_limit_counter).

    Counters are rows (key, count, expires_at). `incr` is one INSERT ... ON CONFLICT DO
    UPDATE ... RETURNING, atomic on SQLite and PostgreSQL. A sliding-window hit is one
    statement that increments the current window (which locks its row, or on SQLite the
    database) and returns the previous one's count with it, and rolls the increment back
    when the weighted count is over the limit: concurrent processes cannot both take the
    last slot.
    """

    STORAGE_SCHEME = None

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(uri=None, wrap_exceptions=False)
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._purged_at = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    def _upsert(self, key: str, expiry: float, amount: int, now: float) -> Any:
        t = rate_limit_counter
        expired: ColumnElement[bool] = t.c.expires_at <= now
        stmt = self._insert(t).values(key=key, count=amount, expires_at=now + expiry)
        return stmt.on_conflict_do_update(
            index_elements=[t.c.key],
            set_={
                "count": case((expired, amount), else_=t.c["count"] + amount),
                "expires_at": case((expired, now + expiry), else_=t.c.expires_at),
            },
        ).returning(t.c["count"])

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        await self._purge(now)
        async with self._engine.begin() as conn:
            return int((await conn.execute(self._upsert(key, expiry, amount, now))).scalar_one())

    async def get(self, key: str) -> int:
        now = time.time()
        t = rate_limit_counter
        async with self._engine.connect() as conn:
            count = await conn.scalar(
                select(t.c["count"]).where(t.c.key == key, t.c.expires_at > now)
            )
        return int(count or 0)

    async def get_expiry(self, key: str) -> float:
        now = time.time()
        t = rate_limit_counter
        async with self._engine.connect() as conn:
            at = await conn.scalar(
                select(t.c.expires_at).where(t.c.key == key, t.c.expires_at > now)
            )
        return float(at) if at is not None else now

    async def check(self) -> bool:
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    async def reset(self) -> int | None:
        async with self._engine.begin() as conn:
            done = await conn.execute(delete(rate_limit_counter))
        return int(getattr(done, "rowcount", 0) or 0)

    async def clear(self, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(rate_limit_counter).where(rate_limit_counter.c.key == key))

    @staticmethod
    def _window_keys(key: str, expiry: int, now: float) -> tuple[str, str]:
        # The same keys as limits' own storages (TimestampedSlidingWindow).
        return f"{key}/{int((now - expiry) / expiry)}", f"{key}/{int(now / expiry)}"

    async def acquire_sliding_window_entry(
        self, key: str, limit: int, expiry: int, amount: int = 1
    ) -> bool:
        if amount > limit:
            return False
        now = time.time()
        await self._purge(now)
        previous_key, current_key = self._window_keys(key, expiry, now)
        t = rate_limit_counter
        # The previous window's count comes back with the increment: one round trip on
        # every API request instead of two. It is another row, so the statement's
        # snapshot reads it as it stood before the increment, as the separate read did.
        previous_count = (
            select(t.c["count"])
            .where(t.c.key == previous_key, t.c.expires_at > now)
            .scalar_subquery()
        )
        upsert = self._upsert(current_key, 2 * expiry, amount, now).returning(previous_count)
        async with self._engine.connect() as conn:
            tx = await conn.begin()
            current, previous = (await conn.execute(upsert)).one()
            weighted = (previous or 0) * self._previous_ttl(expiry, now) / expiry + current
            if math.floor(weighted) > limit:
                await tx.rollback()
                return False
            await tx.commit()
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = time.time()
        previous_key, current_key = self._window_keys(key, expiry, now)
        t = rate_limit_counter
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(t.c.key, t.c["count"]).where(
                    t.c.key.in_([previous_key, current_key]), t.c.expires_at > now
                )
            )
            counts = {str(r[0]): int(r[1]) for r in rows}
        previous = counts.get(previous_key, 0)
        previous_ttl = self._previous_ttl(expiry, now) if previous else 0.0
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous, previous_ttl, counts.get(current_key, 0), current_ttl

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        now = time.time()
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(rate_limit_counter).where(
                    rate_limit_counter.c.key.in_(self._window_keys(key, expiry, now))
                )
            )

    @staticmethod
    def _previous_ttl(expiry: int, now: float) -> float:
        return (1 - (((now - expiry) / expiry) % 1)) * expiry

    async def _purge(self, now: float) -> None:
        """Delete expired counters now and then, so the table stays small."""
        if now - self._purged_at < _PURGE_EVERY:
            return
        self._purged_at = now
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(rate_limit_counter).where(rate_limit_counter.c.expires_at < now)
            )


class DatabasePatientCounter:
    """Table rate_limit_patient: one row per (person, patient) last looked up in the window.

    One transaction per lookup, serialised per person: on PostgreSQL by an advisory
    transaction lock on the person, on SQLite by the database write lock that its first
    statement (deleting the person's expired rows) takes. Two processes cannot both admit
    the person's last allowed patient.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._purged_at = 0.0

    async def look_up(self, person: str, patient: str, limit: int, window: int) -> float | None:
        now = time.time()
        t = rate_limit_patient
        mine = t.c.person == person
        async with self._engine.begin() as conn:
            if self._postgres:
                lock = int.from_bytes(
                    hashlib.sha256(person.encode()).digest()[:8], "big", signed=True
                )
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock})
            if now - self._purged_at >= _PURGE_EVERY:
                self._purged_at = now
                await conn.execute(delete(t).where(t.c.seen_at <= now - window))
            else:
                await conn.execute(delete(t).where(mine, t.c.seen_at <= now - window))
            again = await conn.execute(
                update(t).where(mine, t.c.patient == patient).values(seen_at=now)
            )
            if getattr(again, "rowcount", 0):
                return None
            count, oldest = (
                await conn.execute(select(func.count(), func.min(t.c.seen_at)).where(mine))
            ).one()
            if count >= limit:
                return max(0.0, float(oldest) + window - now)
            await conn.execute(t.insert().values(person=person, patient=patient, seen_at=now))
        return None

    async def close(self) -> None:
        return None
