"""The hospital registry: hospitals, their alliances and QC certifications."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.registry import Certification, CertifyingBody, HospitalProfile
from broker.ports.registry import Hospital as Hospital
from broker.ports.registry import HospitalExists as HospitalExists
from broker.ports.registry import KeyExists as KeyExists
from broker.ports.registry import UnknownHospital as UnknownHospital
from broker.storage.tables import certification, hospital, hospital_alliance, hospital_key


async def add(session: AsyncSession, h: Hospital, *, replace: bool = False) -> None:
    """Register a hospital; with `replace`, update an existing one instead of refusing."""
    existing = await get(session, h.id)
    values = {
        "name": h.name,
        "region": h.region,
        "level": h.level,
        "timezone": h.timezone,
        "grade": h.grade,
        "ownership": h.ownership,
        "price_tier": h.price_tier,
    }
    if existing is None:
        await session.execute(
            hospital.insert(), {"id": h.id, "created_at": datetime.now(UTC), **values}
        )
    elif replace:
        await session.execute(hospital.update().where(hospital.c.id == h.id).values(**values))
        await session.execute(
            delete(hospital_alliance).where(hospital_alliance.c.hospital_id == h.id)
        )
    else:
        raise HospitalExists(h.id)
    if h.alliances:
        await session.execute(
            hospital_alliance.insert(),
            [{"alliance_id": a, "hospital_id": h.id} for a in sorted(h.alliances)],
        )


async def get(session: AsyncSession, hospital_id: str) -> Hospital | None:
    row = (await session.execute(select(hospital).where(hospital.c.id == hospital_id))).first()
    if row is None:
        return None
    alliances = await _alliances(session)
    return _from_row(row, alliances.get(hospital_id, frozenset()))


async def list_all(session: AsyncSession) -> list[Hospital]:
    rows = (await session.execute(select(hospital).order_by(hospital.c.id))).all()
    alliances = await _alliances(session)
    return [_from_row(r, alliances.get(r.id, frozenset())) for r in rows]


async def certify(session: AsyncSession, cert: Certification, reference: str | None) -> None:
    """Record a QC certification (raises UnknownHospital)."""
    if await get(session, cert.hospital) is None:
        raise UnknownHospital(cert.hospital)
    await session.execute(
        certification.insert(),
        {
            "hospital_id": cert.hospital,
            "scope": cert.scope,
            "body": cert.body.value,
            "valid_from": cert.valid_from,
            "valid_to": cert.valid_to,
            "reference": reference,
            "created_at": datetime.now(UTC),
        },
    )


async def certifications(
    session: AsyncSession, hospital_id: str | None = None
) -> list[Certification]:
    query = select(certification).order_by(certification.c.hospital_id, certification.c.id)
    if hospital_id is not None:
        query = query.where(certification.c.hospital_id == hospital_id)
    return [_cert(r) for r in (await session.execute(query)).all()]


async def profiles(session: AsyncSession) -> dict[str, HospitalProfile]:
    """Every hospital as the recognition rules see it (a small table: read it whole)."""
    certs: dict[str, list[Certification]] = {}
    for c in await certifications(session):
        certs.setdefault(c.hospital, []).append(c)
    return {
        h.id: replace(h, certifications=tuple(certs.get(h.id, ()))) for h in await list_all(session)
    }


async def _alliances(session: AsyncSession) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for alliance_id, hospital_id in (await session.execute(select(hospital_alliance))).all():
        out.setdefault(hospital_id, set()).add(alliance_id)
    return {k: frozenset(v) for k, v in out.items()}


def _from_row(row: Row[tuple[object, ...]], alliances: frozenset[str]) -> Hospital:
    m = row._mapping
    return Hospital(
        m["id"],
        m["name"],
        m["region"],
        m["level"],
        grade=m["grade"],
        ownership=m["ownership"],
        price_tier=m["price_tier"],
        alliances=alliances,
        timezone=m["timezone"],
    )


def _cert(row: Row[tuple[object, ...]]) -> Certification:
    m = row._mapping
    return Certification(
        m["hospital_id"], m["scope"], CertifyingBody(m["body"]), m["valid_from"], m["valid_to"]
    )


@dataclass(frozen=True)
class SigningKey:
    hospital: str
    key_id: str
    public_key: str  # base64 of the raw Ed25519 key
    added_at: datetime
    revoked_at: datetime | None


async def add_key(session: AsyncSession, hospital_id: str, key_id: str, public_b64: str) -> None:
    """Register a hospital's public key (raises UnknownHospital, KeyExists)."""
    if await get(session, hospital_id) is None:
        raise UnknownHospital(hospital_id)
    found = await session.execute(
        select(hospital_key.c.key_id).where(
            hospital_key.c.hospital_id == hospital_id, hospital_key.c.key_id == key_id
        )
    )
    if found.first() is not None:
        raise KeyExists(key_id)
    await session.execute(
        hospital_key.insert(),
        {
            "hospital_id": hospital_id,
            "key_id": key_id,
            "algorithm": "Ed25519",
            "public_key": public_b64,
            "added_at": datetime.now(UTC),
            "revoked_at": None,
        },
    )


async def revoke_key(session: AsyncSession, hospital_id: str, key_id: str) -> bool:
    """Revoke a key: messages signed with it are refused from now on. False if unknown."""
    done = await session.execute(
        hospital_key.update()
        .where(
            hospital_key.c.hospital_id == hospital_id,
            hospital_key.c.key_id == key_id,
            hospital_key.c.revoked_at.is_(None),
        )
        .values(revoked_at=datetime.now(UTC))
    )
    return bool(getattr(done, "rowcount", 0))


async def signing_keys(session: AsyncSession) -> dict[tuple[str, str], SigningKey]:
    rows = (await session.execute(select(hospital_key))).all()
    return {
        (r.hospital_id, r.key_id): SigningKey(
            r.hospital_id, r.key_id, r.public_key, r.added_at, r.revoked_at
        )
        for r in rows
    }
