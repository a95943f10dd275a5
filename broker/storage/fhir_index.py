"""The FHIR search index: rows built from a result's current version, and its payloads opened.

Ingest writes a result's rows in its own transaction, from the message it just parsed
(`IndexRows`, used by broker/storage/result_writer.py). Before a search or read touches a
patient (or a result), `refresh_person`/`refresh_results` catch up rows that ingest did not
write (results indexed before it did so): one cheap query when nothing is missing, and only
those results' payloads are opened. Two requests rebuilding the same rows at once is
harmless: the second one's insert fails and is dropped.
"""

from __future__ import annotations

import functools
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

from broker.fhir.resources import ResultInfo, ResultView
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.pseudonyms import Pseudonymiser
from broker.security.sealed_fields import open_json
from broker.storage.bulk_insert import insert_rows
from broker.storage.fhir_tables import fhir_resource, fhir_token
from broker.storage.one_of import one_of
from broker.storage.people import with_merged
from broker.storage.retention import PURGED
from broker.storage.tables import hospital, payload, result, result_version

logger = logging.getLogger(__name__)
_CHUNK = 500
UNREADABLE = "unreadable"  # the resource_type of a result whose payload cannot be read


# Identifier token values (accession numbers, filler order numbers) are stored as a keyed
# hash under this domain (Pseudonymiser.of_text); searches hash the value they look for.
IDENTIFIER_DOMAIN = "fhir-identifier"
IdentifierKey = Callable[[str], str]


def identifier_key(pseudonyms: Pseudonymiser) -> IdentifierKey:
    """Identifier token values (accession numbers ...) as indexed: a keyed hash."""
    return lambda value: pseudonyms.of_text(IDENTIFIER_DOMAIN, value)


async def refresh_person(
    sessions: async_sessionmaker[AsyncSession],
    cipher: PayloadCipher,
    person_id: str,
    *,
    identifiers: IdentifierKey,
) -> int:
    """Rebuild the index rows of the person's results that changed; how many were rebuilt."""
    return await _refresh(
        sessions, cipher, result.c.person_id.in_(with_merged(person_id)), identifiers
    )


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
    unreadable: set[int] | None = None,
) -> dict[int, ResultView]:
    """The result views of these versions (each payload opened once), by version id.

    Versions whose payload was purged (retention) have no view; they are added to
    `purged` when given. Versions whose payload cannot be opened (never expected: a key
    lost, the bytes damaged) have none either: they are logged, added to `unreadable`,
    and their search rows marked unreadable so that no later search finds them."""
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
        try:
            views[row.version_id] = ResultView(_document(cipher, row, docs), _info(cipher, row))
        except (ValueError, KeyError, TypeError, InvalidTag) as exc:
            if unreadable is not None:
                unreadable.add(row.version_id)
            spoiled = IndexRows(lambda value: value)
            spoiled.unreadable(row.result_id, row.version_id, type(exc).__name__)
            await spoiled.replace(session, [row.result_id])
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
    rows = IndexRows(identifiers)
    for row in stale:
        if row.algorithm == PURGED:
            # Nothing left to read: one row, so that a read by id finds it and says 410
            # Gone, and a search by patient counts it; no token can match it any more.
            rows.resources.append(_purged_row(row))
            continue
        try:
            view = ResultView(_document(cipher, row, docs), _info(cipher, row))
        except (ValueError, KeyError, TypeError, InvalidTag) as exc:
            rows.unreadable(row.result_id, row.version_id, type(exc).__name__)
            continue
        rows.add(view, row.version_id, zone_named(row.timezone))
    ids = [row.result_id for row in stale]
    async with sessions() as session:
        try:
            async with session.begin():
                await rows.replace(session, ids)
        except IntegrityError:
            # Another request rebuilt the same rows first; theirs are as good as ours.
            logger.info("FHIR index rows of %d results were rebuilt concurrently", len(ids))
            return 0
    logger.debug("FHIR index: rebuilt %d results", len(ids))
    return len(ids)


class IndexRows:
    """The index rows of some results, built from their views, then written in place of
    the rows those results had."""

    def __init__(self, identifiers: IdentifierKey) -> None:
        self._identifiers = identifiers
        self.resources: list[dict[str, Any]] = []
        self.tokens: list[dict[str, Any]] = []

    def add(self, view: ResultView, version_id: int, zone: tzinfo) -> None:
        result_id = view.info.result_id
        try:
            built = view.index_rows(zone)
        except (ValueError, KeyError, TypeError) as exc:
            self.unreadable(result_id, version_id, type(exc).__name__)
            return
        seen: set[str] = set()
        for ir in built:
            if ir.served_id in seen:  # the same resource twice in one bundle: index it once
                continue
            seen.add(ir.served_id)
            self.resources.append(
                {
                    "id": ir.served_id,
                    "result_id": result_id,
                    "version_id": version_id,
                    "resource_type": ir.resource_type,
                    "entry": ir.entry,
                    "status": ir.status,
                    "date_low": ir.dates.low if ir.dates else None,
                    "date_high": ir.dates.high if ir.dates else None,
                }
            )
            self.tokens.extend(
                {
                    "resource_id": ir.served_id,
                    "param": p,
                    "system": s,
                    "code": self._identifiers(c) if p == "identifier" else c,
                }
                for p, s, c in sorted(ir.tokens)
            )

    def unreadable(self, result_id: str, version_id: int, why: str) -> None:
        """Never expected (ingest parsed it); indexed as unreadable so it is not retried on
        every request, and never matches a search."""
        logger.error("FHIR index: result %s cannot be read (%s)", result_id, why)
        self.resources.append(
            {
                "id": result_id,
                "result_id": result_id,
                "version_id": version_id,
                "resource_type": UNREADABLE,
                "entry": None,
                "status": None,
                "date_low": None,
                "date_high": None,
            }
        )

    async def replace(self, session: AsyncSession, result_ids: Sequence[str]) -> None:
        """Delete these results' rows and write the ones built (in the caller's transaction)."""
        for chunk in chunks(list(result_ids)):
            old = select(fhir_resource.c.id).where(one_of(fhir_resource.c.result_id, chunk))
            await session.execute(delete(fhir_token).where(fhir_token.c.resource_id.in_(old)))
            await session.execute(
                delete(fhir_resource).where(one_of(fhir_resource.c.result_id, chunk))
            )
        if self.resources:
            await insert_rows(session, fhir_resource, self.resources)
        if self.tokens:
            await insert_rows(session, fhir_token, self.tokens)


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


@functools.lru_cache(maxsize=64)
def zone_named(name: str) -> tzinfo:
    """A hospital's registered time zone (China Standard Time if the name is unknown)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def chunks(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]
