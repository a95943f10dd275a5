"""Clinical text and business identifiers at rest: what the index may keep in clear
(codes, dates, statuses, flags) and what it seals (summaries, values) or only hashes
(accession and other business identifiers, kept as a keyed hash plus their ciphertext).

Rows written before this existed are sealed by `seal_legacy_rows`, which `mrb db upgrade`
runs after the migrations (it needs the keys, which a migration never holds).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.security.sealed_fields import open_json, seal_json
from broker.storage.fhir_tables import fhir_resource, fhir_token
from broker.storage.tables import result, result_item

BUSINESS_ID_DOMAIN = "business-id"
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Protector:
    cipher: PayloadCipher
    pseudonyms: Pseudonymiser

    def business_key(self, hospital: str, business_id: str) -> str:
        """What the index stores and looks a result up by: a keyed hash, never the id."""
        return self.pseudonyms.of_text(BUSINESS_ID_DOMAIN, f"{hospital}|{business_id}")

    def resource_key(self, hospital: str, resource_id: str | None) -> str | None:
        if resource_id is None:
            return None
        return self.pseudonyms.of_text("resource-id", f"{hospital}|{resource_id}")[:40]

    def seal_business_id(self, result_id: str, business_id: str) -> bytes:
        return seal_json(self.cipher, business_id, context=f"business-id|{result_id}")

    def open_business_id(self, result_id: str, sealed: bytes) -> str:
        return str(open_json(self.cipher, sealed, context=f"business-id|{result_id}"))

    def seal_result(self, result_id: str, summary: str) -> bytes:
        return seal_json(self.cipher, {"summary": summary}, context=f"result|{result_id}")

    def seal_item(
        self, result_id: str, summary: str, value: str | None, images: str | None = None
    ) -> bytes:
        """An item's clinical text: summary, value and (imaging) the images link, which
        names the hospital's archive and the study, so it is sealed like the rest."""
        fields: dict[str, Any] = {"summary": summary, "value": value}
        if images:
            fields["images"] = images
        return seal_json(self.cipher, fields, context=f"result-item|{result_id}")

    def open_item(self, result_id: str, sealed: bytes | None, summary: str) -> tuple[str, Any]:
        """(summary, value) of an item row; a row from before sealing keeps its clear text."""
        found = self.open_item_fields(result_id, sealed, summary)
        return str(found.get("summary") or ""), found.get("value")

    def open_item_fields(
        self, result_id: str, sealed: bytes | None, summary: str
    ) -> dict[str, Any]:
        """Every sealed field of an item row ({"summary", "value", "images"?})."""
        if sealed is None:
            return {"summary": summary, "value": None}
        found = open_json(self.cipher, sealed, context=f"result-item|{result_id}")
        return found if isinstance(found, dict) else {"summary": "", "value": None}


async def has_legacy_rows(session: AsyncSession) -> bool:
    """Whether any row still holds clinical text or a business identifier in clear."""
    found = await session.execute(
        select(result.c.id).where(result.c.business_id_sealed.is_(None)).limit(1)
    )
    if found.first() is not None:
        return True
    found = await session.execute(
        select(result_item.c.id).where(result_item.c.clinical.is_(None)).limit(1)
    )
    if found.first() is not None:
        return True
    return await _clear_identifier_tokens(session)


async def _clear_identifier_tokens(session: AsyncSession) -> bool:
    """Whether the FHIR search index still holds an identifier value in clear (a keyed
    hash is 64 hex digits; the index was written before identifiers were hashed)."""
    codes = await session.execute(
        select(fhir_token.c.code).where(fhir_token.c.param == "identifier").limit(1000)
    )
    return any(not _HEX64.fullmatch(c) for c in codes.scalars())


async def seal_legacy_rows(session: AsyncSession, protector: Protector, *, batch: int = 500) -> int:
    """Seal summaries and hash business identifiers of rows stored in clear; returns how
    many rows changed. Idempotent: sealed rows are never touched again."""
    changed = 0
    while True:
        rows = (
            await session.execute(
                select(result.c.id, result.c.hospital_id, result.c.business_id, result.c.summary)
                .where(result.c.business_id_sealed.is_(None))
                .limit(batch)
            )
        ).all()
        for r in rows:
            await session.execute(
                update(result)
                .where(result.c.id == r.id)
                .values(
                    business_id=protector.business_key(r.hospital_id, r.business_id),
                    business_id_sealed=protector.seal_business_id(r.id, r.business_id),
                    clinical=protector.seal_result(r.id, r.summary),
                    summary="",
                )
            )
        changed += len(rows)
        if len(rows) < batch:
            break
    while True:
        items = (
            await session.execute(
                select(result_item.c.id, result_item.c.result_id, result_item.c.summary)
                .where(result_item.c.clinical.is_(None))
                .limit(batch)
            )
        ).all()
        for i in items:
            await session.execute(
                update(result_item)
                .where(result_item.c.id == i.id)
                .values(clinical=protector.seal_item(i.result_id, i.summary, None), summary="")
            )
        changed += len(items)
        if len(items) < batch:
            break
    if await _clear_identifier_tokens(session):
        # The search index is derived from the sealed payloads: drop it, it rebuilds hashed.
        await session.execute(delete(fhir_token))
        await session.execute(delete(fhir_resource))
        changed += 1
    return changed
