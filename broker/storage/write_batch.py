"""How a unit of work's repositories send their INSERTs: at once, or together at commit.

A repository hands over a row (a table and its values). The INSERT for a table and a set of
columns is built once, with bound parameters, and reused: building SQLAlchemy expressions
per request cost more than the round trip it saves.

A check stores its record, its event and its audit entry: three rows that nothing reads
before the commit. Batched, they go to PostgreSQL as one statement (all but the last as
data-modifying CTEs: one round trip, atomic on its own); to SQLite one after the other in
the transaction. Repositories shared by several units of work (the audit, the event outbox)
write through whichever the unit of work gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Insert, Table, bindparam
from sqlalchemy.ext.asyncio import AsyncSession


@lru_cache(maxsize=64)
def _insert(table: Table, columns: tuple[str, ...], n: int = 0) -> Insert:
    return table.insert().values(
        {c: bindparam(f"w{n}_{c}", type_=table.c[c].type) for c in columns}
    )


@lru_cache(maxsize=64)
def _combined(shapes: tuple[tuple[Table, tuple[str, ...]], ...]) -> Insert:
    *first, last = (_insert(t, columns, n) for n, (t, columns) in enumerate(shapes))
    for n, statement in enumerate(first):
        last = last.add_cte(statement.cte(f"write_{n}"))
    return last


def _params(values: Mapping[str, Any], n: int = 0) -> dict[str, Any]:
    return {f"w{n}_{c}": v for c, v in values.items()}


class Writes:
    """Sends each row when it is written."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def write(self, table: Table, values: Mapping[str, Any]) -> None:
        await self._session.execute(_insert(table, tuple(values)), _params(values))

    async def flush(self) -> None:
        """Nothing is held back."""


class WriteBatch(Writes):
    """Holds the rows until `flush` (the unit of work's commit)."""

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self._pending: list[tuple[Table, Mapping[str, Any]]] = []

    async def write(self, table: Table, values: Mapping[str, Any]) -> None:
        self._pending.append((table, values))

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if len(pending) > 1 and self._session.get_bind().dialect.name == "postgresql":
            shapes = tuple((t, tuple(v)) for t, v in pending)
            params = {
                k: v for n, (_, values) in enumerate(pending) for k, v in _params(values, n).items()
            }
            await self._session.execute(_combined(shapes), params)
            return
        for table, values in pending:
            await Writes.write(self, table, values)
