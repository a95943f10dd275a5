"""The rate limits' counters in mrb's database (tables rate_limit_counter and
rate_limit_patient), used when no Redis is configured (broker/services/rate_limits.py)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from limits.aio.storage import Storage
from limits.aio.storage.base import SlidingWindowCounterSupport
from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    Table,
    bindparam,
    case,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.storage.dialect_insert import insert_for
from broker.storage.rate_limit_tables import rate_limit_counter, rate_limit_patient

_PURGE_EVERY = 60.0  # seconds between deletions of expired rows, per process


def _single_statement(
    engine: AsyncEngine,
) -> Callable[[], AbstractAsyncContextManager[AsyncConnection]]:
    """Where one atomic statement runs on its own: on PostgreSQL with no transaction
    around it (no BEGIN and COMMIT round trips on every API request), on SQLite in one."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT").connect
    return engine.begin


# -- request counters: the `limits` strategies on a database -----------------------------

_COUNTER = rate_limit_counter
_NOW = bindparam("now", type_=Float())
_AMOUNT = bindparam("amount", type_=Integer())
_EXPIRES = bindparam("expires", type_=Float())


def _upsert(insert: Callable[[Table], Any]) -> Any:
    """INSERT … ON CONFLICT DO UPDATE of one counter, built once with bound parameters:
    building it per request cost more than its round trip (0.3 ms of SQLAlchemy
    expressions and cache keys in a profile of 1,000 hits)."""
    t = _COUNTER
    expired: ColumnElement[bool] = t.c.expires_at <= _NOW
    return (
        insert(t)
        .values(key=bindparam("counter"), count=_AMOUNT, expires_at=_EXPIRES)
        .on_conflict_do_update(
            index_elements=[t.c.key],
            set_={
                "count": case((expired, _AMOUNT), else_=t.c["count"] + _AMOUNT),
                "expires_at": case((expired, _EXPIRES), else_=t.c.expires_at),
            },
        )
        .returning(t.c["count"])
    )


def _admitting_upsert(insert: Callable[[Table], Any]) -> Any:
    """A sliding-window hit as one statement: the current window's counter goes up by
    `amount` only when the previous window's count, weighted by what is left of it, plus
    the new count stays within the limit (`floor(weighted) <= limit`, i.e. `< limit + 1`,
    as `limits`' own storages decide); a row returned means admitted, none refused.

    Atomic like `limits`' Redis script: no transaction around it, no row lock held over
    a round trip, and an over-limit hit never counts (nothing to roll back)."""
    t = _COUNTER
    previous = t.alias("previous")  # another row of the same table, never correlated
    weighted = func.coalesce(
        select(previous.c["count"])
        .where(previous.c.key == bindparam("previous_key"), previous.c.expires_at > _NOW)
        .scalar_subquery(),
        0,
    ) * bindparam("weight", type_=Float())
    room = bindparam("room", type_=Float())  # limit + 1
    expired: ColumnElement[bool] = t.c.expires_at <= _NOW
    after = case((expired, _AMOUNT), else_=t.c["count"] + _AMOUNT)
    first = select(bindparam("counter", type_=String()), _AMOUNT, _EXPIRES).where(
        weighted + _AMOUNT < room
    )
    return (
        insert(t)
        .from_select(["key", "count", "expires_at"], first)
        .on_conflict_do_update(
            index_elements=[t.c.key],
            set_={"count": after, "expires_at": case((expired, _EXPIRES), else_=t.c.expires_at)},
            where=weighted + after < room,
        )
        .returning(t.c["count"])
    )


def _upsert_params(key: str, expiry: float, amount: int, now: float) -> dict[str, Any]:
    return {"counter": key, "amount": amount, "expires": now + expiry, "now": now}


class DatabaseStorage(Storage, SlidingWindowCounterSupport):
    """A `limits` storage in mrb's database (table rate_limit_counter).

    Counters are rows (key, count, expires_at). `incr` is one INSERT ... ON CONFLICT DO
    UPDATE ... RETURNING, atomic on SQLite and PostgreSQL. A sliding-window hit is one
    such statement that increments the current window only when the weighted count stays
    within the limit (`_admitting_upsert`): concurrent processes cannot both take the
    last slot, and a refused hit is never counted.
    """

    STORAGE_SCHEME = None

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(uri=None, wrap_exceptions=False)
        self._engine = engine
        insert = insert_for(engine.dialect.name)
        self._incr = _upsert(insert)
        self._hit = _admitting_upsert(insert)
        self._alone = _single_statement(engine)
        self._purged_at = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        await self._purge(now)
        async with self._engine.begin() as conn:
            found = await conn.execute(self._incr, _upsert_params(key, expiry, amount, now))
            return int(found.scalar_one())

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
        params = {
            **_upsert_params(current_key, 2 * expiry, amount, now),
            "previous_key": previous_key,
            "weight": self._previous_ttl(expiry, now) / expiry,
            "room": limit + 1,
        }
        async with self._alone() as conn:
            return (await conn.execute(self._hit, params)).first() is not None

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


# The distinct-patient counter's statements, built once (bound parameters: who (the
# person counting), whom (the patient), now, since = now - window).
_P = rate_limit_patient
_THEIRS = _P.c.person == bindparam("who")
_SINCE = bindparam("since", type_=Float())
_SEEN_AGAIN = (
    update(_P)
    .where(_THEIRS, _P.c.patient == bindparam("whom"), _P.c.seen_at > _SINCE)
    .values(seen_at=bindparam("now", type_=Float()))
)
_FORGET_THEIRS = delete(_P).where(_THEIRS, _P.c.seen_at <= _SINCE)
_FORGET_EVERYONES = delete(_P).where(_P.c.seen_at <= _SINCE)
# The person's patients in the window, the oldest of them, and whether `whom` is among
# them (counted by a concurrent lookup since this one's first statement).
_IN_WINDOW = select(
    func.count(),
    func.min(_P.c.seen_at),
    func.max(case((_P.c.patient == bindparam("whom"), 1), else_=0)),
).where(_THEIRS, _P.c.seen_at > _SINCE)
# PostgreSQL: the same steps as one function (migration 0026), one round trip.
_LOOK_UP = text(
    "SELECT mrb_patient_look_up(:who, :whom, :now, :since, :limit, :k, :purge)"
).bindparams(
    bindparam("now", type_=Float()),
    bindparam("since", type_=Float()),
    bindparam("limit", type_=Integer()),
)


def _lock_key(person: str) -> int:
    """The advisory lock serialising one person's look-ups (on every process alike)."""
    return int.from_bytes(hashlib.sha256(person.encode()).digest()[:8], "big", signed=True)


def _remember(insert: Callable[[Table], Any]) -> Any:
    """The patient counted as seen now: a new row, or their expired row renewed."""
    added = insert(_P).values(
        person=bindparam("who"), patient=bindparam("whom"), seen_at=bindparam("now")
    )
    return added.on_conflict_do_update(
        index_elements=[_P.c.person, _P.c.patient], set_={"seen_at": added.excluded.seen_at}
    )


class DatabasePatientCounter:
    """Table rate_limit_patient: one row per (person, patient) last looked up in the window.

    One transaction per lookup, serialised per person, so that two processes cannot both
    admit the person's last allowed patient. On PostgreSQL one call of a function
    (migration 0026: one round trip where the steps were six) that takes an advisory
    transaction lock on the person; expired rows wait there for the periodic purge (they
    no longer count). On SQLite the same steps from here, serialised by the database
    write lock that the transaction's first statement (deleting the person's expired
    rows) takes.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._alone = _single_statement(engine)
        self._remember = _remember(insert_for(engine.dialect.name))
        self._purged_at = 0.0

    async def look_up(self, person: str, patient: str, limit: int, window: int) -> float | None:
        now = time.time()
        params = {"who": person, "whom": patient, "now": now, "since": now - window}
        purge = now - self._purged_at >= _PURGE_EVERY
        if purge:
            self._purged_at = now
        if self._postgres:
            async with self._alone() as conn:
                found = await conn.execute(
                    _LOOK_UP, {**params, "limit": limit, "k": _lock_key(person), "purge": purge}
                )
                wait = found.scalar()
            return None if wait is None else float(wait)
        # A patient already counted in this window (the same patient again: order-select,
        # then order-sign) changes no count: one statement, no lock, no transaction.
        async with self._alone() as conn:
            again = await conn.execute(_SEEN_AGAIN, params)
        if getattr(again, "rowcount", 0):
            return None
        async with self._engine.begin() as conn:
            await conn.execute(_FORGET_EVERYONES if purge else _FORGET_THEIRS, params)
            count, oldest, counted = (await conn.execute(_IN_WINDOW, params)).one()
            if not counted and count >= limit:
                return max(0.0, float(oldest) + window - now)
            await conn.execute(self._remember, params)
        return None

    async def close(self) -> None:
        return None
