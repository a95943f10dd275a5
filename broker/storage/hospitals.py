"""The hospital registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.storage.tables import hospital


@dataclass(frozen=True)
class Hospital:
    id: str
    name: str
    region: str
    level: str
    timezone: str = "Asia/Shanghai"


class HospitalExists(Exception):
    """A hospital with this id is already registered."""


async def add(session: AsyncSession, h: Hospital, *, replace: bool = False) -> None:
    """Register a hospital; with `replace`, update an existing one instead of refusing."""
    existing = await get(session, h.id)
    values = {"name": h.name, "region": h.region, "level": h.level, "timezone": h.timezone}
    if existing is None:
        await session.execute(
            hospital.insert().values(id=h.id, created_at=datetime.now(UTC), **values)
        )
    elif replace:
        await session.execute(hospital.update().where(hospital.c.id == h.id).values(**values))
    else:
        raise HospitalExists(h.id)


async def get(session: AsyncSession, hospital_id: str) -> Hospital | None:
    row = (await session.execute(select(hospital).where(hospital.c.id == hospital_id))).first()
    return _from_row(row) if row else None


async def list_all(session: AsyncSession) -> list[Hospital]:
    rows = (await session.execute(select(hospital).order_by(hospital.c.id))).all()
    return [_from_row(r) for r in rows]


def _from_row(row: object) -> Hospital:
    m = row._mapping  # type: ignore[attr-defined]
    return Hospital(m["id"], m["name"], m["region"], m["level"], m["timezone"])
