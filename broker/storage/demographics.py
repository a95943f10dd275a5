"""Each hospital's demographics of a person, sealed, and the blocks they fall in, as keyed
pseudonyms (migration 0019): what patient matching reads; nothing demographic in clear."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from sqlalchemy import Table, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.demographics import Demographics
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.pseudonyms import Pseudonymiser
from broker.storage.bulk_insert import insert_rows
from broker.storage.dialect_insert import insert_into
from broker.storage.one_of import one_of
from broker.storage.tables import person_block, person_demographics

BLOCK_DOMAIN = "person-block"  # the pseudonym domain of blocking keys
_CHUNK = 400  # (person, hospital) pairs per DELETE: well under any bound-parameter limit
_T = TypeVar("_T")


def context(person_id: str, hospital: str) -> bytes:
    """Associated data binding sealed demographics to their person and hospital."""
    return f"demographics|{person_id}|{hospital}".encode()


def seal(cipher: PayloadCipher, person_id: str, hospital: str, d: Demographics) -> Sealed:
    return cipher.seal(plaintext(d), associated=context(person_id, hospital))


def plaintext(d: Demographics) -> bytes:
    """What is sealed: the same demographics always give the same bytes.

    The fields in declaration order, as `dataclasses.asdict` gives them (the bytes stored
    so far), read directly: every field is text, None or a tuple of text pairs, which
    asdict would only copy (it was 1-2 % of an ingest batch)."""
    plain = {name: getattr(d, name) for name in _FIELDS}
    plain["birth_date"] = d.birth_date.isoformat() if d.birth_date else None
    return json.dumps(plain, ensure_ascii=False).encode()


_FIELDS = tuple(f.name for f in fields(Demographics))


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
    plain: Mapping[tuple[str, str], bytes] | None = None,
) -> None:
    """Store each (person, hospital)'s latest demographics and replace its blocks
    (`plain`: their `plaintext`, when the caller has it already)."""
    if not latest:
        return
    from broker.domain import matching  # pypinyin's dictionaries load only when needed
    from broker.reference.matching_rules import shipped_matching_rules

    rules = shipped_matching_rules()
    rows, blocks = [], []
    # Rows in key order, as every worker writes them: concurrent batches wait, not deadlock.
    for pid, hospital in sorted(latest):
        d = latest[(pid, hospital)]
        text = plain[(pid, hospital)] if plain is not None else plaintext(d)
        sealed = cipher.seal(text, associated=context(pid, hospital))
        rows.append(sealed_row(pid, hospital, sealed, now))
        for key in matching.blocking_keys(matching.prepare(d, rules), rules.blocking):
            pseudonym = pseudonyms.of_text(BLOCK_DOMAIN, key)
            blocks.append({"pseudonym": pseudonym, "person_id": pid, "hospital_id": hospital})
    await session.execute(upsert_sealed(session, person_demographics), rows)
    for chunk in _chunks(sorted(latest)):
        await session.execute(
            delete(person_block).where(
                tuple_(person_block.c.person_id, person_block.c.hospital_id).in_(chunk)
            )
        )
    if blocks:
        blocks.sort(key=lambda b: (b["pseudonym"], b["person_id"], b["hospital_id"]))
        await insert_rows(session, person_block, blocks)


@dataclass(frozen=True)
class Stored:
    """What a per-(person, hospital) sealed table holds of some records."""

    present: frozenset[tuple[str, str]]  # records with a row
    same: frozenset[tuple[str, str]]  # ... whose row opens to the same plaintext


async def stored(
    session: AsyncSession,
    cipher: PayloadCipher,
    table: Table,
    plain: Mapping[tuple[str, str], bytes],
    associated: Callable[[str, str], bytes],
) -> Stored:
    """Which of these records are stored, and which already hold this very plaintext:
    one read (per-column IN lists: an index search on SQLite too; pairs filtered here),
    rows opened in memory. Nothing is compared in clear in the database and no digest of
    the values is stored. A row sealed under an older key (or that cannot be opened)
    counts as changed, so it is sealed again under the active one."""
    if not plain:
        return Stored(frozenset(), frozenset())
    present: set[tuple[str, str]] = set()
    same: set[tuple[str, str]] = set()
    hospitals = sorted({h for _, h in plain})
    for chunk in _chunks(sorted({p for p, _ in plain})):
        rows = await session.execute(
            select(
                table.c.person_id,
                table.c.hospital_id,
                table.c.key_id,
                table.c.algorithm,
                table.c.nonce,
                table.c.ciphertext,
            ).where(one_of(table.c.person_id, chunk), one_of(table.c.hospital_id, hospitals))
        )
        for pid, hospital, key_id, algorithm, nonce, ciphertext in rows:
            pair = (pid, hospital)
            if pair not in plain:
                continue
            present.add(pair)
            if key_id != cipher.active_key_id:
                continue
            try:
                opened = cipher.open(
                    Sealed(key_id, algorithm, nonce, ciphertext),
                    associated=associated(pid, hospital),
                )
            except (InvalidTag, ValueError, KeyError):
                continue
            if opened == plain[pair]:
                same.add(pair)
    return Stored(frozenset(present), frozenset(same))


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
    statement = insert_into(session, table)
    replaced = ("key_id", "algorithm", "nonce", "ciphertext", "updated_at")
    return statement.on_conflict_do_update(
        index_elements=[table.c.person_id, table.c.hospital_id],
        set_={c: statement.excluded[c] for c in replaced},
    )


def _chunks(items: list[_T]) -> Iterable[list[_T]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
