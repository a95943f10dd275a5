"""Re-sealing stored ciphertext under the active payload key after `mrb keys rotate`.

Works in small transactions over every table that holds data sealed with the payload
cipher: payloads (the messages as received), sealed birth dates and demographics, the
identifier a check was made with, the sealed clinical text and business identifiers of
the index, dead letters, CDS Hooks cards and HIS launch sessions (SEALED lists each
column; tests/unit/test_rekey_coverage.py fails on a binary column it does not name).
Each row is opened with the key it names and sealed again with the active key, so access
is never lost: a row is readable before, during and after, and an interrupted run resumes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.ports.his_launch import launch_context
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.sealed_fields import open_json, parse, seal_json
from broker.storage import dead_letters, demographics
from broker.storage.cds_store import card_context, card_envelope, stored_envelope
from broker.storage.cds_tables import cds_card
from broker.storage.launch_tables import his_launch_session
from broker.storage.people import birth_date_context
from broker.storage.retention import PURGED
from broker.storage.tables import (
    payload,
    person_birth_date,
    person_demographics,
    recognition_check,
    rejection,
    result,
    result_item,
)

BATCH = 200

# (table, column) of everything sealed with the payload cipher, as re-sealed below.
SEALED = frozenset(
    {
        ("payload", "ciphertext"),
        ("person_birth_date", "ciphertext"),
        ("person_demographics", "ciphertext"),
        ("recognition_check", "patient_sealed"),
        ("rejection", "value_sealed"),
        ("result", "clinical"),
        ("result", "business_id_sealed"),
        ("result_item", "clinical"),
        ("cds_card", "content"),
        ("his_launch_session", "launch"),
    }
)


async def reseal_all(
    sessions: async_sessionmaker[AsyncSession],
    cipher: PayloadCipher,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> Counter[str]:
    """Re-seal every row not under the active key; returns rows changed per table."""
    done: Counter[str] = Counter()
    steps: list[tuple[str, Callable[[AsyncSession, PayloadCipher], Any]]] = [
        ("payload", _payloads),
        ("person_birth_date", _birth_dates),
        ("person_demographics", _demographics),
        ("recognition_check", _checks),
        ("result", _results),
        ("result_item", _items),
        ("rejection", _dead_letters),
        ("cds_card", _cards),
        ("his_launch_session", _launches),
    ]
    for name, step in steps:
        while True:
            async with sessions() as s, s.begin():
                n = await step(s, cipher)
            done[name] += n
            if progress is not None and n:
                progress(name, done[name])
            if n < BATCH:
                break
    return done


async def keys_in_use(sessions: async_sessionmaker[AsyncSession]) -> Counter[str]:
    """How many stored rows each payload key id still seals (to know when one can go)."""
    used: Counter[str] = Counter()
    async with sessions() as s:
        for table in (payload, person_birth_date, person_demographics):
            rows = await s.execute(select(table.c.key_id).where(table.c.key_id != PURGED))
            used.update(r[0] for r in rows)
        checks = await s.execute(
            select(recognition_check.c.patient_key_id).where(
                recognition_check.c.patient_key_id.is_not(None)
            )
        )
        used.update(r[0] for r in checks)
        letters = await s.execute(
            select(rejection.c.value_key_id).where(rejection.c.value_key_id.is_not(None))
        )
        used.update(r[0] for r in letters)
        for table, columns in (
            (result, ("clinical", "business_id_sealed")),
            (result_item, ("clinical",)),
            (his_launch_session, ("launch",)),
        ):
            for column in columns:
                blobs = await s.execute(select(table.c[column]).where(table.c[column].is_not(None)))
                used.update(parse(b[0]).key_id for b in blobs)
        cards = await s.execute(select(cds_card.c.content))
        used.update(parse(blob).key_id for (c,) in cards if (blob := card_envelope(c)) is not None)
    return used


async def _payloads(s: AsyncSession, cipher: PayloadCipher) -> int:
    return await _reseal_key_columns(
        s,
        cipher,
        payload,
        lambda r: r.message_id.encode(),
        lambda r: payload.c.id == r.id,
    )


async def _birth_dates(s: AsyncSession, cipher: PayloadCipher) -> int:
    t = person_birth_date
    return await _reseal_key_columns(
        s,
        cipher,
        t,
        lambda r: birth_date_context(r.person_id, r.hospital_id),
        lambda r: (t.c.person_id == r.person_id) & (t.c.hospital_id == r.hospital_id),
    )


async def _demographics(s: AsyncSession, cipher: PayloadCipher) -> int:
    t = person_demographics
    return await _reseal_key_columns(
        s,
        cipher,
        t,
        lambda r: demographics.context(r.person_id, r.hospital_id),
        lambda r: (t.c.person_id == r.person_id) & (t.c.hospital_id == r.hospital_id),
    )


async def _reseal_key_columns(
    s: AsyncSession,
    cipher: PayloadCipher,
    table: Table,
    aad: Callable[[Any], bytes],
    row_filter: Callable[[Any], ColumnElement[bool]],
) -> int:
    """Rows of a table with key_id / algorithm / nonce / ciphertext columns, re-sealed."""
    rows = (
        await s.execute(
            select(table)
            .where(table.c.key_id != cipher.active_key_id, table.c.key_id != PURGED)
            .limit(BATCH)
        )
    ).all()
    for r in rows:
        context = aad(r)
        sealed = Sealed(r.key_id, r.algorithm, r.nonce, r.ciphertext)
        new = cipher.seal(cipher.open(sealed, associated=context), associated=context)
        await s.execute(
            update(table)
            .where(row_filter(r))
            .values(
                key_id=new.key_id,
                algorithm=new.algorithm,
                nonce=new.nonce,
                ciphertext=new.ciphertext,
            )
        )
    return len(rows)


async def _dead_letters(s: AsyncSession, cipher: PayloadCipher) -> int:
    """Dead letters' values, sealed bound to their message id header (as the DLQ copy)."""
    t = rejection
    rows = (
        await s.execute(
            select(t.c.id, t.c.value_key_id, t.c.value_algorithm, t.c.value_sealed, t.c.headers)
            .where(t.c.value_key_id.is_not(None) & (t.c.value_key_id != cipher.active_key_id))
            .limit(BATCH)
        )
    ).all()
    for r in rows:
        aad = dict(dead_letters.stored_headers(r.headers)).get(dead_letters.MESSAGE_ID_HEADER, b"")
        blob: bytes = r.value_sealed
        sealed = Sealed(r.value_key_id, r.value_algorithm, blob[:12], blob[12:])
        new = cipher.seal(cipher.open(sealed, associated=aad), associated=aad)
        await s.execute(
            update(t)
            .where(t.c.id == r.id)
            .values(
                value_key_id=new.key_id,
                value_algorithm=new.algorithm,
                value_sealed=new.nonce + new.ciphertext,
            )
        )
    return len(rows)


async def _checks(s: AsyncSession, cipher: PayloadCipher) -> int:
    t = recognition_check
    rows = (
        await s.execute(
            select(t.c.id, t.c.patient_sealed, t.c.patient_nonce, t.c.patient_key_id)
            .where(t.c.patient_key_id.is_not(None) & (t.c.patient_key_id != cipher.active_key_id))
            .limit(BATCH)
        )
    ).all()
    for r in rows:
        aad = r.id.encode()
        sealed = Sealed(r.patient_key_id, "A256GCM", r.patient_nonce, r.patient_sealed)
        new = cipher.seal(cipher.open(sealed, associated=aad), associated=aad)
        await s.execute(
            update(t)
            .where(t.c.id == r.id)
            .values(
                patient_sealed=new.ciphertext, patient_nonce=new.nonce, patient_key_id=new.key_id
            )
        )
    return len(rows)


async def _reseal_envelopes(
    s: AsyncSession,
    cipher: PayloadCipher,
    table: Table,
    columns: dict[str, Callable[[Any], str]],
    key: str,
    *,
    unwrap: Callable[[Any], bytes | None] = lambda stored: stored,
    wrap: Callable[[bytes], Any] = lambda blob: blob,
) -> int:
    """Rows of `table` whose envelopes (in `columns`, each with its context) name another
    key: the key id lives inside the blob, so rows are scanned in key order. `unwrap`
    finds the envelope in a stored value (None: nothing sealed), `wrap` stores one."""
    changed, after = 0, None
    while changed < BATCH:
        query = select(table).order_by(table.c[key]).limit(BATCH)
        if after is not None:
            query = query.where(table.c[key] > after)
        rows = (await s.execute(query)).all()
        if not rows:
            break
        for r in rows:
            values = {}
            for column, context in columns.items():
                blob = unwrap(getattr(r, column))
                if blob is not None and parse(blob).key_id != cipher.active_key_id:
                    ctx = context(r)
                    values[column] = wrap(
                        seal_json(cipher, open_json(cipher, blob, context=ctx), context=ctx)
                    )
            if values:
                await s.execute(
                    update(table).where(table.c[key] == getattr(r, key)).values(**values)
                )
                changed += 1
        after = getattr(rows[-1], key)
        if len(rows) < BATCH:
            break
    return changed


async def _results(s: AsyncSession, cipher: PayloadCipher) -> int:
    return await _reseal_envelopes(
        s,
        cipher,
        result,
        {
            "clinical": lambda r: f"result|{r.id}",
            "business_id_sealed": lambda r: f"business-id|{r.id}",
        },
        "id",
    )


async def _items(s: AsyncSession, cipher: PayloadCipher) -> int:
    return await _reseal_envelopes(
        s, cipher, result_item, {"clinical": lambda r: f"result-item|{r.result_id}"}, "id"
    )


async def _launches(s: AsyncSession, cipher: PayloadCipher) -> int:
    """HIS launch sessions (broker.services.his_launch), bound to their session hash."""
    return await _reseal_envelopes(
        s,
        cipher,
        his_launch_session,
        {"launch": lambda r: launch_context(r.id_hash)},
        "id_hash",
    )


async def _cards(s: AsyncSession, cipher: PayloadCipher) -> int:
    """CDS Hooks cards: the envelope sits base64 in the JSON column (broker.storage.cds_store)."""
    return await _reseal_envelopes(
        s,
        cipher,
        cds_card,
        {"content": lambda r: card_context(r.uuid)},
        "uuid",
        unwrap=card_envelope,
        wrap=stored_envelope,
    )
