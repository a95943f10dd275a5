"""Run-time local-code mappings and the unmapped-code worklist."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.mapping import LocalCode
from broker.ports.mappings import Unmapped as Unmapped
from broker.storage.tables import code_mapping, result_item, unmapped_code


async def version(session: AsyncSession) -> tuple[int, int]:
    """Changes whenever a mapping is added or replaced (cheap to ask on every check)."""
    row = (await session.execute(select(func.count(), func.max(code_mapping.c.id)))).one()
    return int(row[0]), int(row[1] or 0)


async def all_mappings(session: AsyncSession) -> dict[tuple[str, str, str], str]:
    rows = await session.execute(
        select(
            code_mapping.c.hospital_id,
            code_mapping.c.system,
            code_mapping.c.code,
            code_mapping.c.catalog_code,
        )
    )
    return {(h, s, c): target for h, s, c, target in rows}


async def add_mapping(
    session: AsyncSession,
    hospital: str,
    system: str,
    code: str,
    catalog_code: str,
    by: str,
    now: datetime,
) -> int:
    """Map (or re-map) a code; take it off the worklist; return its indexed items."""
    await session.execute(
        code_mapping.delete().where(
            code_mapping.c.hospital_id == hospital,
            code_mapping.c.system == system,
            code_mapping.c.code == code,
        )
    )
    await session.execute(
        code_mapping.insert().values(
            hospital_id=hospital,
            system=system,
            code=code,
            catalog_code=catalog_code,
            added_by=by,
            added_at=now,
        )
    )
    await session.execute(
        update(unmapped_code)
        .where(
            unmapped_code.c.hospital_id == hospital,
            unmapped_code.c.system == system,
            unmapped_code.c.code == code,
        )
        .values(mapped_to=catalog_code, mapped_at=now)
    )
    found = await session.execute(
        select(func.count(func.distinct(result_item.c.result_id))).where(
            result_item.c.hospital_id == hospital,
            result_item.c.code_system == system,
            result_item.c.code == code,
        )
    )
    return int(found.scalar_one())


async def note_unmapped(
    session: AsyncSession, seen: Iterable[tuple[str, LocalCode, int]], now: datetime
) -> None:
    """Add codes to the worklist or count them again (safe against concurrent workers)."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for hospital, c, n in seen:  # one row per key: PostgreSQL updates a row once per statement
        key = (hospital, c.system[:300], c.code[:100])
        row = merged.setdefault(
            key,
            {
                "hospital_id": key[0],
                "system": key[1],
                "code": key[2],
                "display": (c.display or "")[:300] or None,
                "occurrences": 0,
                "first_seen": now,
                "last_seen": now,
            },
        )
        row["occurrences"] += n
    # In key order, as every worker writes them: two batches upserting the same codes
    # then wait for each other instead of deadlocking.
    rows = [merged[k] for k in sorted(merged)]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert: Any = (postgresql if dialect == "postgresql" else sqlite).insert(unmapped_code)
    statement = insert.on_conflict_do_update(
        index_elements=["hospital_id", "system", "code"],
        set_={
            "occurrences": unmapped_code.c.occurrences + insert.excluded.occurrences,
            "last_seen": insert.excluded.last_seen,
            "display": func.coalesce(unmapped_code.c.display, insert.excluded.display),
        },
    )
    await session.execute(statement, rows)


async def worklist(
    session: AsyncSession, hospital: str | None = None, *, include_mapped: bool = False
) -> list[Unmapped]:
    query = select(unmapped_code).order_by(
        unmapped_code.c.occurrences.desc(), unmapped_code.c.hospital_id, unmapped_code.c.code
    )
    if hospital:
        query = query.where(unmapped_code.c.hospital_id == hospital)
    if not include_mapped:
        query = query.where(unmapped_code.c.mapped_to.is_(None))
    return [
        Unmapped(
            r.hospital_id,
            r.system,
            r.code,
            r.display,
            r.occurrences,
            r.first_seen,
            r.last_seen,
            r.mapped_to,
        )
        for r in await session.execute(query)
    ]
