"""Each hospital's demographics of a person, sealed, and the blocks they fall in, as keyed
pseudonyms (migration 0019): what patient matching reads; nothing demographic in clear."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, delete, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.demographics import Demographics
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.pseudonyms import Pseudonymiser
from broker.storage.tables import person_block, person_demographics

BLOCK_DOMAIN = "person-block"  # the pseudonym domain of blocking keys
_CHUNK = 400  # (person, hospital) pairs per DELETE: well under any bound-parameter limit


def context(person_id: str, hospital: str) -> bytes:
    """Associated data binding sealed demographics to their person and hospital."""
    return f"demographics|{person_id}|{hospital}".encode()


def seal(cipher: PayloadCipher, person_id: str, hospital: str, d: Demographics) -> Sealed:
    plain = asdict(d)
    plain["birth_date"] = d.birth_date.isoformat() if d.birth_date else None
    return cipher.seal(
        json.dumps(plain, ensure_ascii=False).encode(), associated=context(person_id, hospital)
    )


def open_sealed(
    cipher: PayloadCipher, person_id: str, hospital: str, sealed: Sealed
) -> Demographics:
    plain: dict[str, Any] = json.loads(cipher.open(sealed, associated=context(person_id, hospital)))
    born = plain.pop("birth_date", None)
    plain["identifiers"] = tuple(tuple(i) for i in plain.get("identifiers") or ())
    return Demographics(**plain, birth_date=date.fromisoformat(born) if born else None)


async def replace(
    session: AsyncSession,
    cipher: PayloadCipher,
    pseudonyms: Pseudonymiser,
    latest: Mapping[tuple[str, str], Demographics],
    now: datetime,
) -> None:
    """Store each (person, hospital)'s latest demographics and replace its blocks."""
    if not latest:
        return
    from broker.domain import matching  # pypinyin's dictionaries load only when needed
    from broker.reference.matching_rules import shipped_matching_rules

    rules = shipped_matching_rules()
    rows, blocks = [], []
    for (pid, hospital), d in latest.items():
        rows.append(sealed_row(pid, hospital, seal(cipher, pid, hospital, d), now))
        for key in matching.blocking_keys(matching.prepare(d, rules), rules.blocking):
            pseudonym = pseudonyms.of_text(BLOCK_DOMAIN, key)
            blocks.append({"pseudonym": pseudonym, "person_id": pid, "hospital_id": hospital})
    await session.execute(upsert_sealed(session, person_demographics), rows)
    for chunk in _chunks(list(latest)):
        await session.execute(
            delete(person_block).where(
                tuple_(person_block.c.person_id, person_block.c.hospital_id).in_(chunk)
            )
        )
    if blocks:
        await session.execute(person_block.insert(), blocks)


def sealed_row(person_id: str, hospital: str, sealed: Sealed, now: datetime) -> dict[str, Any]:
    """A row of a per-(person, hospital) sealed table (birth dates, demographics)."""
    return {
        "person_id": person_id,
        "hospital_id": hospital,
        "key_id": sealed.key_id,
        "algorithm": sealed.algorithm,
        "nonce": sealed.nonce,
        "ciphertext": sealed.ciphertext,
        "updated_at": now,
    }


def upsert_sealed(session: AsyncSession, table: Table) -> Any:
    """INSERT … ON CONFLICT (person, hospital) DO UPDATE, in the session's dialect: the
    latest value each hospital sent replaces the last, in one statement."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(table)
    replaced = ("key_id", "algorithm", "nonce", "ciphertext", "updated_at")
    return statement.on_conflict_do_update(
        index_elements=[table.c.person_id, table.c.hospital_id],
        set_={c: statement.excluded[c] for c in replaced},
    )


def _chunks(pairs: list[tuple[str, str]]) -> Iterable[list[tuple[str, str]]]:
    for i in range(0, len(pairs), _CHUNK):
        yield pairs[i : i + _CHUNK]
