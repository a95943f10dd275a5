"""Keeping the FHIR search index current, and opening the payloads behind it.

The index (broker.storage.fhir_tables) is derived from each result's current version.
Before a search or read touches a patient (or a result), the rows built from an older
version (or missing) are rebuilt from the sealed payload: one cheap query when nothing
changed, and only that patient's changed results are opened. Every read is about one
patient, so the work is bounded by one patient's results. Two requests rebuilding the
same rows at once is harmless: the second one's insert fails and is dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.exceptions import InvalidTag
from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.fhir.resources import IndexRow, ResultInfo, ResultView
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.sealed_fields import open_json
from broker.storage.fhir_tables import fhir_resource, fhir_token
from broker.storage.retention import PURGED
from broker.storage.tables import hospital, payload, result, result_version

logger = logging.getLogger(__name__)
_CHUNK = 500
UNREADABLE = "unreadable"  # the resource_type of a result whose payload cannot be read


# Identifier token values (accession numbers, filler order numbers) are stored as a keyed
# hash under this domain (Pseudonymiser.of_text); searches hash the value they look for.
IDENTIFIER_DOMAIN = "fhir-identifier"
IdentifierKey = Callable[[str], str]


async def refresh_person(
    sessions: async_sessionmaker[AsyncSession],
    cipher: PayloadCipher,
    person_id: str,
    *,
    identifiers: IdentifierKey,
) -> int:
    """Rebuild the index rows of the person's results that changed; how many were rebuilt."""
    return await _refresh(sessions, cipher, result.c.person_id == person_id, identifiers)


async def refresh_results(
    sessions: async_sessionmaker[AsyncSession],
    cipher: PayloadCipher,
    result_ids: Sequence[str],
    *,
    identifiers: IdentifierKey,
) -> int:
    """Rebuild the index rows of these results if they changed."""
    if not result_ids:
        return 0
    return await _refresh(sessions, cipher, result.c.id.in_(list(result_ids)), identifiers)


async def load_views(
    session: AsyncSession,
    cipher: PayloadCipher,
    version_ids: Iterable[int],
    *,
    purged: set[int] | None = None,
) -> dict[int, ResultView]:
    """The result views of these versions (each payload opened once), by version id.

    Versions whose payload was purged (retention) have no view; they are added to
    `purged` when given."""
    wanted = sorted(set(version_ids))
    if not wanted:
        return {}
    rows = (
        await session.execute(
            select(
                result_version.c.id.label("version_id"),
                *_result_columns(),
                *_payload_columns(),
            )
            .select_from(result_version)
            .join(result, result.c.id == result_version.c.result_id)
            .join(payload, payload.c.id == result_version.c.payload_id)
            .where(result_version.c.id.in_(wanted))
        )
    ).all()
    docs: dict[str, dict[str, Any]] = {}
    views: dict[int, ResultView] = {}
    for row in rows:
        if row.algorithm == PURGED:
            if purged is not None:
                purged.add(row.version_id)
            continue
        views[row.version_id] = ResultView(_document(cipher, row, docs), _info(cipher, row))
    return views


async def _refresh(
    sessions: async_sessionmaker[AsyncSession],
    cipher: PayloadCipher,
    which: ColumnElement[bool],
    identifiers: IdentifierKey,
) -> int:
    main = fhir_resource.alias("main_row")
    async with sessions() as session:
        stale = (
            await session.execute(
                select(
                    result_version.c.id.label("version_id"),
                    hospital.c.timezone,
                    *_result_columns(),
                    *_payload_columns(),
                )
                .select_from(result)
                .join(
                    result_version,
                    (result_version.c.result_id == result.c.id)
                    & result_version.c.is_current.is_(True),
                )
                .join(payload, payload.c.id == result_version.c.payload_id)
                .join(hospital, hospital.c.id == result.c.hospital_id)
                .outerjoin(main, main.c.id == result.c.id)
                .where(which, or_(main.c.id.is_(None), main.c.version_id != result_version.c.id))
            )
        ).all()
    if not stale:
        return 0
    docs: dict[str, dict[str, Any]] = {}
    zones: dict[str, tzinfo] = {}
    resources: list[dict[str, Any]] = []
    tokens: list[dict[str, Any]] = []
    for row in stale:
        if row.algorithm == PURGED:
            # Nothing left to read: one row, so that a read by id finds it and says 410
            # Gone, and a search by patient counts it; no token can match it any more.
            resources.append(_purged_row(row))
            continue
        try:
            view = ResultView(_document(cipher, row, docs), _info(cipher, row))
            built = view.index_rows(_zone(row.timezone, zones))
        except (ValueError, KeyError, TypeError, InvalidTag) as exc:
            # Never expected (ingest stored and parsed it); indexed as unreadable so it is
            # not retried on every request, and never matches a search.
            logger.error(
                "FHIR index: result %s cannot be read (%s)", row.result_id, type(exc).__name__
            )
            built = [IndexRow(row.result_id, UNREADABLE, None, None, None, frozenset())]
        seen: set[str] = set()
        for ir in built:
            if ir.served_id in seen:  # the same resource twice in one bundle: index it once
                continue
            seen.add(ir.served_id)
            resources.append(
                {
                    "id": ir.served_id,
                    "result_id": row.result_id,
                    "version_id": row.version_id,
                    "resource_type": ir.resource_type,
                    "entry": ir.entry,
                    "status": ir.status,
                    "date_low": ir.dates.low if ir.dates else None,
                    "date_high": ir.dates.high if ir.dates else None,
                }
            )
            tokens.extend(
                {
                    "resource_id": ir.served_id,
                    "param": p,
                    "system": s,
                    "code": identifiers(c) if p == "identifier" else c,
                }
                for p, s, c in sorted(ir.tokens)
            )
    ids = [row.result_id for row in stale]
    async with sessions() as session:
        try:
            async with session.begin():
                for chunk in _chunks(ids):
                    old = select(fhir_resource.c.id).where(fhir_resource.c.result_id.in_(chunk))
                    await session.execute(
                        delete(fhir_token).where(fhir_token.c.resource_id.in_(old))
                    )
                    await session.execute(
                        delete(fhir_resource).where(fhir_resource.c.result_id.in_(chunk))
                    )
                await session.execute(fhir_resource.insert(), resources)
                if tokens:
                    await session.execute(fhir_token.insert(), tokens)
        except IntegrityError:
            # Another request rebuilt the same rows first; theirs are as good as ours.
            logger.info("FHIR index rows of %d results were rebuilt concurrently", len(ids))
            return 0
    logger.debug("FHIR index: rebuilt %d results", len(ids))
    return len(ids)


def _purged_row(row: Any) -> dict[str, Any]:
    return {
        "id": row.result_id,
        "result_id": row.result_id,
        "version_id": row.version_id,
        "resource_type": row.resource_type,
        "entry": None,
        "status": None,
        "date_low": None,
        "date_high": None,
    }


def _result_columns() -> list[Any]:
    return [
        result.c.id.label("result_id"),
        result.c.resource_type,
        result.c.business_id,
        result.c.business_id_sealed,
        result.c.hospital_id,
        result.c.person_id,
        result.c.updated_at,
    ]


def _payload_columns() -> list[Any]:
    return [
        payload.c.message_id,
        payload.c.key_id,
        payload.c.algorithm,  # PURGED: erased under the retention policy
        payload.c.nonce,
        payload.c.ciphertext,
    ]


def _info(cipher: PayloadCipher, row: Any) -> ResultInfo:
    """The result as stored; its business identifier opened from its sealed copy (the
    column itself holds only a keyed hash)."""
    business_id = (
        open_json(cipher, row.business_id_sealed, context=f"business-id|{row.result_id}")
        if row.business_id_sealed is not None
        else row.business_id
    )
    return ResultInfo(
        result_id=row.result_id,
        resource_type=row.resource_type,
        business_id=str(business_id),
        hospital=row.hospital_id,
        person_id=row.person_id,
        updated_at=row.updated_at,
    )


def _document(cipher: PayloadCipher, row: Any, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The payload as JSON; one message may hold several results, so it is opened once."""
    if row.message_id not in cache:
        sealed = Sealed(row.key_id, row.algorithm, row.nonce, row.ciphertext)
        plain = cipher.open(sealed, associated=row.message_id.encode())
        doc = json.loads(plain.decode("utf-8-sig"))
        cache[row.message_id] = doc if isinstance(doc, dict) else {}
    return cache[row.message_id]


def _zone(name: str, cache: dict[str, tzinfo]) -> tzinfo:
    if name not in cache:
        try:
            cache[name] = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            cache[name] = ZoneInfo("Asia/Shanghai")
    return cache[name]


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
